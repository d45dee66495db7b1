"""``python -m mer.tune [key=value ...]`` — an Optuna study over mer.run's CV protocol.

    python -m mer.tune                                  # demo, attention fusion, 30 trials
    python -m mer.tune tune.workers=4                   # four worker processes on one study
    python -m mer.tune tune.storage=postgresql://u:p@host/optuna   # the same on every machine
    python -m mer.tune tune.fusion_models=[attention,mlp] tune.n_trials=50
    python -m mer.run --config-dir <run folder> +experiment=<study>   # the best configuration, pinned
                                                        # (the command is printed at the end)

Run the same command again to resume a study (same ``tune.study`` and storage).
"""
from __future__ import annotations

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from mer.core.env import configure_environment
from mer.core.errors import run_cli, user_errors
from mer.core.redact import mask_secrets

configure_environment()


@hydra.main(version_base="1.3", config_path="conf", config_name="tune")
@user_errors
def main(cfg: DictConfig) -> float:
    from mer.tuning.study import run_study  # deferred: loads optuna, sklearn, torch, tqdm only when used

    hc = HydraConfig.get()
    result = run_study(cfg, overrides=list(hc.overrides.task), choices=dict(hc.runtime.choices),
                       study_dir=hc.runtime.output_dir)
    print(f"\nstudy {result.study_name}: {result.counts} ({mask_secrets(result.storage)})")
    print(f"best trial {result.best['number']}: cv_{cfg.tune.objective} {result.best['value']:.4f} "
          f"{result.best['params']}")
    if result.experiment:
        print(f"pinned: {result.experiment}\nreproduce: {result.reproduce}")
    for track, path in result.comparison.get("submissions", {}).items():
        print(f"submission ({track}): {path}")
    print(f"outputs: {result.study_dir}", flush=True)
    return float(result.best["value"])


if __name__ == "__main__":
    run_cli(main)
