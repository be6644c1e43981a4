"""Framework bridges for jablate: ``bridges.torch`` runs torch modules through DLPack."""
