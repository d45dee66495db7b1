"""Registry of dataset recipes: ``prepare(root, **options) -> Manifest``, one per release layout.

Each recipe lives in ``mer/data/prepare_<layout>.py`` and registers itself here; configs name it
(``data.layout: mer2023``). The registry imports every recipe module on its first lookup.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

from mer.core.registry import Registry

from .manifest import Manifest
from .recipe_io import refuse_external_links

Recipe = Callable[..., Manifest]
RECIPES: Registry[Recipe] = Registry("dataset layout", package="mer.data", prefix="prepare_")

COMMON_OPTIONS: tuple[str, ...] = ("allow_external_links",)
"""Options :func:`prepare` takes for every layout (``data.options.<name>``), beside the recipe's own."""


def prepare(layout: str, root, **options) -> Manifest:
    """Build the manifest of the dataset at ``root`` released in ``layout``.

    Media that link out of ``root`` are not followed unless ``allow_external_links=True``
    (:func:`~mer.data.recipe_io.refuse_external_links`): those samples fail as ``external_link``."""
    allow = bool(options.pop(COMMON_OPTIONS[0], False))
    manifest = RECIPES.get(layout)(root, **options)
    samples = refuse_external_links(manifest.samples, root, allow, manifest.dataset)
    if all(a is b for a, b in zip(samples, manifest.samples)):
        return manifest
    return dataclasses.replace(manifest, samples=samples)
