"""The dataset name runs are filed under: ``runs/<dataset>/<track>/<time>``.

``data.dataset`` when set; otherwise, for the layouts that serve any dataset (``data=generic``,
``data=merbench``), the dataset root folder's name (``/data/cmumosi-process`` ->
``cmumosi-process``); otherwise ``data.name`` (``mer2023``, ``iemocap``...). Hydra's
``hydra.run.dir`` reads it through the ``mer_dataset`` resolver, and
:func:`mer.pipeline.default_out_dir` (a run without Hydra) and the manifest's dataset name
through :func:`dataset_name`, so the three always agree.
"""
from __future__ import annotations

import os
from typing import Any

from omegaconf import OmegaConf

ANY_DATASET_CONFIGS: frozenset[str] = frozenset({"generic", "merbench"})
"""``data.name`` of the configs that describe a layout rather than one dataset."""

RESOLVER = "mer_dataset"


def dataset_name(name: Any, dataset: Any = None, root: Any = None) -> str:
    """The dataset's own name (see the module docstring)."""
    if dataset:
        return str(dataset)
    if str(name) in ANY_DATASET_CONFIGS and root:
        base = os.path.basename(os.path.normpath(os.path.expanduser(str(root))))
        if base:
            return base
    return str(name)


def data_dataset_name(data) -> str:
    """:func:`dataset_name` of a ``data`` config node."""
    return dataset_name(data.get("name"), data.get("dataset"), data.get("root"))


def register_resolvers() -> None:
    """Register ``${mer_dataset:<name>,<dataset>,<root>}`` with OmegaConf (once per process)."""
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, dataset_name)
