"""``python -m mer.run [key=value ...]`` — one track on one dataset, end to end (``-m`` sweeps)."""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

from mer.setup_env import configure_environment

configure_environment()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def main(cfg: DictConfig) -> float:
    from mer.pipeline import run

    result = run(cfg)
    print_result(result)
    return float(result.metrics.get("cv_" + ("combined" if "cv_combined" in result.metrics else "wf1"), 0.0))


def print_result(result) -> None:
    lines = ["", result.table, ""]
    for track, path in result.submissions.items():
        lines.append(f"submission ({track}): {path}")
    lines.append(f"outputs: {result.out_dir}")
    if result.run_id:
        lines.append(f"MLflow run: {result.run_id} in {result.tracking_uri}")
    print("\n".join(lines), flush=True)


if __name__ == "__main__":
    main()
