"""A study's best trial as a pinned Hydra experiment: ``<study run folder>/experiment/<study>.yaml``
(or ``<tune.export_dir>/<study>.yaml``), run with the command :func:`reproduce_command` prints,
``python -m mer.run --config-dir <run folder> +experiment=<study>``: ``--config-dir`` puts the
folder on Hydra's search path, where ``+experiment=`` finds ``experiment/<study>.yaml``. The tracked
``conf/experiment/`` is written only when ``tune.export_dir`` names it.

The file selects the config groups the study ran with (``override /fusion: mlp``...) and pins
every value a result depends on: training settings, fusion parameters, feature streams and their
options, the data settings (not the dataset's folder, which is machine-specific), seeds.
"""
from __future__ import annotations

import re
import shlex
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from mer.core.errors import UserError

from .space import CONF_DIR

GROUPS = ("data", "features/text", "features/audio", "features/visual", "fusion", "train", "track")


def safe_name(study: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", study).strip("._") or "study"


def group_choice(cfg: DictConfig, group: str, choices: Mapping[str, str] | None = None) -> str | None:
    """Which file of ``conf/<group>/`` a config node came from: Hydra's record when there is one,
    else the file whose ``name`` is the node's name."""
    if choices and choices.get(group):
        return str(choices[group])
    node = OmegaConf.select(cfg, group.replace("/", "."))
    if node is None:
        return None
    name = node.get("name") if isinstance(node, DictConfig) else None
    folder = CONF_DIR / group
    if name is None:
        return "none" if (folder / "none.yaml").is_file() else None
    if (folder / f"{name}.yaml").is_file():
        return str(name)
    for f in folder.glob("*.yaml"):             # a file named otherwise than its ``name``
        if OmegaConf.load(f).get("name") == name:
            return f.stem
    return None


def experiment_dict(cfg: DictConfig, choices: Mapping[str, str] | None = None) -> dict[str, Any]:
    defaults = []
    for g in GROUPS:
        c = group_choice(cfg, g, choices)
        if c is not None:
            defaults.append({f"override /{g}": c})
    data = OmegaConf.to_container(cfg.data, resolve=True)
    data.pop("root", None)
    out: dict[str, Any] = {"defaults": defaults, "data": data,
                           "features": OmegaConf.to_container(cfg.features, resolve=True),
                           "fusion": OmegaConf.to_container(cfg.fusion, resolve=True),
                           "train": OmegaConf.to_container(cfg.train, resolve=True),
                           "track": OmegaConf.to_container(cfg.track, resolve=True),
                           "modalities": list(cfg.modalities) if cfg.get("modalities") else None,
                           "seed": int(cfg.seed)}
    return out


def write_experiment(cfg: DictConfig, path: Path, *, header: str, choices: Mapping[str, str] | None = None) -> Path:
    """Write the experiment file atomically; ``header`` becomes its leading comment."""
    body = OmegaConf.to_yaml(OmegaConf.create(experiment_dict(cfg, choices)))
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# @package _global_"] + [f"# {ln}" if ln else "#" for ln in header.strip().splitlines()]
    lines.append(f"# written by python -m mer.tune, {stamp}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".yaml.tmp")
    tmp.write_text("\n".join(lines) + "\n" + body)
    tmp.replace(path)
    return path


def export_dir_for(export_dir: str | Path | None, study_dir: Path) -> Path:
    """Where the best configuration goes: ``tune.export_dir``, else ``<study_dir>/experiment``
    (the study's own run folder, never the tracked ``conf/experiment`` unless asked for). The
    folder must be named ``experiment``: Hydra finds ``+experiment=<name>`` as
    ``experiment/<name>.yaml`` under a search-path folder."""
    folder = (Path(export_dir).expanduser() if export_dir else Path(study_dir) / "experiment").resolve()
    if folder.name != "experiment":
        raise UserError(f"tune.export_dir={folder} must be a folder named 'experiment' (Hydra finds "
                        f"+experiment=<name> as experiment/<name>.yaml); e.g. "
                        f"tune.export_dir={folder / 'experiment'}")
    return folder


def reproduce_args(experiment: Path) -> list[str]:
    """The ``mer.run`` arguments that load the experiment file ``experiment``: ``--config-dir``
    (its folder's parent, on Hydra's search path) unless it lies in mer's own conf/ (``mer/conf``)."""
    folder = Path(experiment).resolve().parent
    pick = f"+experiment={Path(experiment).stem}"
    if folder == (CONF_DIR / "experiment").resolve():
        return [pick]
    return ["--config-dir", str(folder.parent), pick]


def reproduce_command(experiment: Path, data_root: str | None = None) -> str:
    """The shell command that runs ``experiment`` as it was tuned (quoted for a POSIX shell)."""
    args = ["python", "-m", "mer.run", *reproduce_args(experiment)]
    if data_root:
        args.append(f"data.root={data_root}")
    return " ".join(shlex.quote(a) for a in args)
