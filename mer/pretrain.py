"""``python -m mer.pretrain [key=value ...]`` -- MAE-DFER pretraining on a dataset's own clips.

The manifest comes from the same ``data`` configs as ``mer.run``; checkpoints land in ``out_dir``
in the official layout, ready for ``features/visual=mae_dfer features.visual.options.weights=...``.
The run is tracked (MLflow by default, a sqlite store under ``paths.runs_dir``): the settings, the
loss per optimiser step (``train_loss_step``) and per epoch (``train_loss``), the learning rate,
sample reconstructions (``reconstructions/epoch-<e>-{appearance,motion}.png``) and ``log.txt``.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mer.config_check import check_config
from mer.core.env import configure_environment
from mer.core.errors import run_cli, user_errors
from mer.datasets import load_manifest
from mer.tracking import build_tracker, git_commit

configure_environment()


def run(cfg: DictConfig):
    """The whole job without Hydra's decorator (tests call this)."""
    from mer.pretraining.train import PretrainSettings, pretrain  # deferred: loads torch only when used
    from mer.training.estimator import resolve_device  # deferred: loads sklearn, torch only when used

    check_config(cfg)
    manifest = load_manifest(cfg)
    samples = [s for s in manifest.samples if not cfg.splits or s.split in set(cfg.splits)]
    if cfg.max_clips:
        samples = samples[: int(cfg.max_clips)]
    settings = PretrainSettings(**OmegaConf.to_container(cfg.pretraining, resolve=True))
    device = resolve_device(str(cfg.device))
    tracker = build_tracker(cfg.get("tracking"), cfg.paths.runs_dir)
    with tracker.start(f"pretrain-{settings.model}", tags={"task": "pretrain", "dataset": str(cfg.data.name)}):
        tracker.log_params({"pretraining": OmegaConf.to_container(cfg.pretraining, resolve=True),
                            "data": str(cfg.data.name), "clips": len(samples), "device": device, **git_commit()})
        result = pretrain(
            settings, samples, cfg.out_dir, frames_root=Path(cfg.paths.cache_dir) / "pretrain_frames",
            device=device, progress=bool(cfg.progress),
            on_step=lambda step, stats: tracker.log_metrics(
                {"train_loss_step": stats["loss"], "lr": stats["lr"]}, step=step),
            on_epoch=lambda epoch, stats: tracker.log_metrics(
                {"train_loss": stats["train_loss"], "train_lr": stats["train_lr"]}, step=epoch),
            on_images=lambda epoch, paths: [tracker.log_artifact(p, subdir="reconstructions") for p in paths])
        tracker.log_metrics({"seconds_total": result.seconds})
        if (Path(cfg.out_dir) / "log.txt").is_file():
            tracker.log_artifact(Path(cfg.out_dir) / "log.txt")
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="pretrain")
@user_errors
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    losses = ", ".join(f"{e}: {v:.4f}" for e, v in result.epoch_losses.items())
    print(f"pretrained {result.n_parameters / 1e6:.2f} M parameters on {result.clips} clips, "
          f"{result.steps} steps in {result.seconds:.0f} s; loss by epoch: {losses or '-'}")
    for path in result.checkpoints:
        print(f"checkpoint: {path}")


if __name__ == "__main__":
    run_cli(main)
