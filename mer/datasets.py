"""A config's dataset as a manifest: the recipe its layout names (or the demo corpus), the
targets it learns, its labels checked before any extraction, and the cache folder it fills."""
from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from mer.core.config import plain
from mer.core.errors import UserError
from mer.core.run_dirs import data_dataset_name
from mer.core.samples import TARGETS
from mer.data.manifest import Manifest
from mer.data.recipes import prepare


def load_manifest(cfg: DictConfig) -> Manifest:
    data = cfg.data
    options = plain(data.get("options"))
    if options.get("dataset") is None:
        options["dataset"] = data_dataset_name(data)
    if data.name == "demo" and not data.root:
        from mer.demo import demo_corpus  # deferred: PyAV, OpenCV and SciPy, for the demo alone

        d = data.demo
        root = demo_corpus(Path(cfg.paths.cache_dir), seed=int(d.seed), n_train=int(d.n_train),
                           n_per_test=int(d.n_per_test), progress=bool(cfg.progress))
    elif not data.root:
        raise SystemExit(f"data={data.name} needs the dataset's folder: add data.root=/path/to/{data.name} "
                         f"(layout {data.layout!r}); or run the demo with `python -m mer.run`.")
    else:
        root = Path(str(data.root)).expanduser()
        if not root.is_dir():
            raise SystemExit(f"data.root={root} is not a folder")
    try:
        manifest = prepare(data.layout, root, **options)
    except (ValueError, FileNotFoundError) as err:   # a recipe's complaint about the dataset's files
        raise UserError(recipe_hint_as_override(str(err))) from err
    return with_targets(manifest, data.get("targets"))


def with_targets(manifest: Manifest, targets: Any) -> Manifest:
    """The manifest learning ``data.targets``: ``discrete``, ``valence`` or both (a list); ``null``
    = what the dataset has. A target the dataset lacks is a one-line error."""
    if targets is None:
        return manifest
    chosen = [str(targets)] if isinstance(targets, str) else [str(t) for t in targets]
    unknown = [t for t in chosen if t not in TARGETS]
    if unknown or not chosen:
        raise UserError(f"data.targets={chosen}: expected discrete, valence or [discrete,valence]")
    spec = manifest.label_spec
    has = {"discrete": bool(spec.classes) and spec.has_discrete, "valence": spec.has_valence}
    missing = [t for t in chosen if not has[t]]
    if missing:
        raise UserError(f"data.targets asks for {missing[0]}, which {manifest.dataset} has no labels of "
                        f"(it has: {', '.join(t for t in TARGETS if has[t]) or 'none'}); set data.targets="
                        f"{next((t for t in TARGETS if has[t]), 'null')}")
    spec = dataclasses.replace(spec, has_discrete="discrete" in chosen, has_valence="valence" in chosen)
    return Manifest(manifest.dataset, spec, manifest.samples, manifest.train_split, manifest.root,
                    manifest.protocol)


def recipe_hint_as_override(message: str) -> str:
    """A recipe speaks of its Python options ("pass check_media=False"); a run sets them as
    ``data.options.<name>`` overrides, so the hint says that instead."""
    message = re.sub(r"\bpass (\w+)=(False|True)\b", lambda m: f"set data.options.{m[1]}={m[2].lower()}", message)
    return re.sub(r"\bpass (\w+)=", r"set data.options.\1=", message)


def dataset_cache_id(cfg: DictConfig, manifest: Manifest) -> str:
    """Cache folder of a dataset: its name plus a short hash of its root, so two copies never mix."""
    if cfg.data.get("cache_id"):
        return str(cfg.data.cache_id)
    root = os.path.abspath(manifest.root or "")
    return f"{cfg.data.name}-{hashlib.sha1(root.encode()).hexdigest()[:8]}"
