"""Self-supervised pretraining of feature extractors on a dataset's own clips (``python -m mer.pretrain``)."""
