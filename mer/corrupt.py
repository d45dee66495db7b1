"""``python -m mer.corrupt [key=value ...]`` — a MER-NOISE-style noisy copy of a whole dataset.

Examples::

    python -m mer.corrupt                                         # the demo corpus, condition mixed
    python -m mer.corrupt data=mer2023 data.root=/data/MER2023 out_dir=/data/MER2023-noisy
    python -m mer.corrupt condition=snr5 splits=[test1] corruption.noise_dir=/data/musan/speech

The copy keeps the release layout, so ``data.root=<out_dir>`` reads it like the original. With the
same seed (``corruption.seed``) the files are byte-identical; a rerun finishes what is missing.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import hydra
from omegaconf import DictConfig

from mer.config_check import check_config
from mer.core.config import plain
from mer.core.env import configure_environment
from mer.core.errors import run_cli, user_errors
from mer.datasets import dataset_cache_id, load_manifest

configure_environment()


@hydra.main(version_base="1.3", config_path="conf", config_name="corrupt")
@user_errors
def main(cfg: DictConfig) -> None:
    # deferred: loads tqdm only when used
    # deferred: loads tqdm only when used
    from mer.data.corrupt import CorruptionSettings, corrupt_manifest, corrupted_root, parse_condition

    check_config(cfg)
    manifest = load_manifest(cfg)
    condition = parse_condition(str(cfg.condition))
    settings = CorruptionSettings.from_config(plain(cfg.corruption))
    splits = list(cfg.splits) if cfg.get("splits") else manifest.splits
    unknown = [s for s in splits if s not in manifest.splits]
    if unknown:
        raise SystemExit(f"splits={unknown}: {manifest.dataset} has the splits {manifest.splits}")
    names = [s.name for s in manifest.samples if s.split in splits]
    out = Path(str(cfg.out_dir)).expanduser() if cfg.get("out_dir") else \
        corrupted_root(cfg.paths.cache_dir, dataset_cache_id(cfg, manifest), settings.tag(condition))
    _, copy = corrupt_manifest(manifest, condition, settings, out, names=names,
                               workers=None if cfg.get("workers") is None else int(cfg.workers),
                               progress=bool(cfg.progress))
    recs = [copy.records[n] for n in names if n in copy.records]
    snrs = Counter(r["snr_db"] for r in recs if r["snr_db"] is not None)
    blurs = Counter(r["blur_factor"] for r in recs)
    print(f"{len(recs)} clips of {', '.join(splits)} corrupted ({copy.tag}) into {out}")
    print("  SNR dB: " + (", ".join(f"{k}: {v}" for k, v in sorted(snrs.items())) or "untouched"))
    print("  blur:   " + ", ".join(f"x{k}: {v}" for k, v in sorted(blurs.items())))
    if copy.failed:
        print(f"  {len(copy.failed)} clips could not be corrupted (see <split>-corruption.csv)")
    tables = ", ".join(sorted({f"{r['split']}-corruption.csv" for r in recs}))
    print(f"  per-clip settings: <clip>.corruption.json beside each clip, and {tables}")


if __name__ == "__main__":
    run_cli(main)
