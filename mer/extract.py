"""``python -m mer.extract [key=value ...]`` — fill the feature caches of a dataset, nothing else.

Same config as ``mer.run`` (data, features/*, paths, extract). Examples::

    python -m mer.extract                                    # the demo corpus, default extractors
    python -m mer.extract data=mer2023 data.root=/data/MER2023 features/audio=hf_audio \\
        features.audio.options.model_path=/models/chinese-hubert-large extract.workers=4
    python -m mer.extract extract.shards=4                   # 4 local processes, each a quarter of the clips
    python -m mer.extract extract.launcher=ray extract.shards=16 extract.address=auto

Killed or crashed, the same command resumes: only clips that are not in the cache yet are done.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mer.config_check import check_config
from mer.core.env import configure_environment
from mer.core.errors import run_cli, user_errors

configure_environment()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> None:
    from mer.features import extract_all  # deferred: loads tqdm only when used
    from mer.training.estimator import resolve_device  # deferred: loads sklearn, torch only when used

    check_config(cfg)
    rows = extract_all(cfg, resolve_device(str(cfg.device)))
    print_rows(rows)


def print_rows(rows: list[dict]) -> None:
    cols = ["stream", "extractor", "requested", "cached", "extracted", "failed", "seconds"]
    table = [[str(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(cols)]
    print("  ".join(c.ljust(w) for c, w in zip(cols, widths)))
    for r, t in zip(rows, table):
        line = "  ".join(v.ljust(w) for v, w in zip(t, widths))
        if r["reasons"]:
            line += "  " + ", ".join(f"{k} {v}" for k, v in sorted(r["reasons"].items()))
        print(line)
    for entry in sorted({r["entry"] for r in rows}):
        print(f"entry: {entry}")


if __name__ == "__main__":
    run_cli(main)
