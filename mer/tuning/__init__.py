"""Hyperparameter search over the CV protocol: Optuna studies, workers, export of the best
configuration as a pinned experiment, nested CV (see :mod:`mer.tuning.study`)."""
