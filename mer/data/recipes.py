"""Registry of dataset recipes: ``prepare(root, **options) -> Manifest``, one per release layout.

Each recipe lives in ``mer/data/prepare_<layout>.py`` and registers itself here; configs name it
(``data.layout: mer2023``). Importing :func:`load_recipes` imports every recipe module.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Callable

from mer.registry import Registry

from .manifest import Manifest

Recipe = Callable[..., Manifest]
RECIPES: Registry[Recipe] = Registry("dataset layout")


def load_recipes() -> Registry[Recipe]:
    import mer.data as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name.startswith("prepare_"):
            importlib.import_module(f"mer.data.{mod.name}")
    return RECIPES


def prepare(layout: str, root, **options) -> Manifest:
    """Build the manifest of the dataset at ``root`` released in ``layout``."""
    return load_recipes().get(layout)(root, **options)
