"""``python -m mer.run [key=value ...]`` — one track on one dataset, end to end (``-m`` sweeps)."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mer.core.env import configure_environment
from mer.core.errors import run_cli, user_errors
from mer.core.redact import mask_secrets

configure_environment()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> float:
    from mer.pipeline import run  # deferred: loads pandas, sklearn, torch, tqdm only when used

    result = run(cfg)
    print_result(result)
    return objective(result.metrics)


def objective(metrics) -> float:
    """What a sweep optimises: the CV figure of the track's headline metric (combined where valence
    exists, else weighted F1; sentiment data: non-zero F1)."""
    for key in ("cv_combined", "cv_wf1", "cv_non0_f1"):
        if key in metrics:
            return float(metrics[key])
    return 0.0


def print_result(result) -> None:
    lines = ["", result.table, ""] + [*getattr(result, "notes", [])]
    for track, path in result.submissions.items():
        lines.append(f"submission ({track}): {path}")
    lines.append(f"outputs: {result.out_dir}")
    if result.run_id:
        lines.append(f"MLflow run: {result.run_id} in {mask_secrets(result.tracking_uri)}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    run_cli(main)
