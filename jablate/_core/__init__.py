"""The core every other room uses, importing none of them: errors (``InputError``), input
checks and conversions at the front door (``frontdoor``), file input and atomic output
(``io``), random keys and seeds (``random``), result containers (``results``), the device
policy (``placement``), every cache (``caches``), the values jablate's functions carry
(``behaviour``) and switches of how models are lowered (``lowering``)."""
