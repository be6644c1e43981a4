"""Framework bridges for jablate: ``jablate.bridges.torch`` runs torch modules through DLPack."""
