"""``python -m mer.finetune [key=value ...]`` -- MAE-DFER supervised fine-tuning on a dataset's
labelled clips (the official recipe: :mod:`mer.pretraining.finetune`).

The manifest comes from the same ``data`` configs as ``mer.run``; checkpoints land in ``out_dir``
in the official layout (``checkpoint-best.pth`` with ``eval_split``), ready for
``features/visual=mae_dfer features.visual.options.weights=.../checkpoint-best.pth``. The run is
tracked (MLflow by default): the settings, the loss and learning rate per step, and per epoch the
training loss and, with ``eval_split``, accuracy, weighted F1 and UAR.
"""
from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mer.config_check import check_config
from mer.core.env import configure_environment
from mer.core.errors import UserError, run_cli, user_errors
from mer.datasets import load_manifest
from mer.tracking import build_tracker, git_commit

configure_environment()


def run(cfg: DictConfig):
    """The whole job without Hydra's decorator (tests call this)."""
    from mer.pretraining.finetune import FinetuneSettings, finetune  # deferred: loads torch only when used
    from mer.training.estimator import resolve_device  # deferred: loads sklearn, torch only when used

    check_config(cfg)
    manifest = load_manifest(cfg)
    if not manifest.label_spec.has_discrete:
        raise UserError(f"fine-tuning needs discrete labels; {manifest.dataset} has none")
    split = str(cfg.train_split or manifest.train_split)
    if split not in manifest.splits:
        raise UserError(f"train_split={split} is not a split of {manifest.dataset} ({manifest.splits})")
    train = [s for s in manifest.split(split) if s.is_labelled]
    if cfg.max_clips:
        train = train[: int(cfg.max_clips)]
    evals = []
    if cfg.eval_split:
        if cfg.eval_split not in manifest.splits:
            raise UserError(f"eval_split={cfg.eval_split} is not a split of {manifest.dataset} ({manifest.splits})")
        evals = [s for s in manifest.split(str(cfg.eval_split)) if s.is_labelled]
    settings = FinetuneSettings(**OmegaConf.to_container(cfg.finetuning, resolve=True))
    device = resolve_device(str(cfg.device))
    tracker = build_tracker(cfg.get("tracking"), cfg.paths.runs_dir)
    with tracker.start("finetune-mae_dfer", tags={"task": "finetune", "dataset": str(cfg.data.name)}):
        tracker.log_params({"finetuning": OmegaConf.to_container(cfg.finetuning, resolve=True),
                            "data": str(cfg.data.name), "clips": len(train), "eval_clips": len(evals),
                            "device": device, **git_commit()})
        result = finetune(
            settings, train, manifest.label_spec.classes, cfg.out_dir,
            frames_root=Path(cfg.paths.cache_dir) / "pretrain_frames", eval_samples=evals, device=device,
            progress=bool(cfg.progress),
            on_step=lambda step, stats: tracker.log_metrics({"train_loss_step": stats["loss"], "lr": stats["lr"]},
                                                            step=step),
            on_epoch=lambda epoch, stats: tracker.log_metrics({k: v for k, v in stats.items() if k != "epoch"},
                                                              step=epoch))
        tracker.log_metrics({"seconds_total": result.seconds})
        if (Path(cfg.out_dir) / "log.txt").is_file():
            tracker.log_artifact(Path(cfg.out_dir) / "log.txt")
    return result


@hydra.main(version_base="1.3", config_path="conf", config_name="finetune")
@user_errors
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    last = result.epoch_stats[max(result.epoch_stats)] if result.epoch_stats else {}
    print(f"fine-tuned {result.n_parameters / 1e6:.2f} M parameters on {result.clips} clips, {result.steps} steps "
          f"in {result.seconds:.0f} s; last epoch: " + ", ".join(f"{k} {v:.4f}" for k, v in last.items() if k != "epoch"))
    for path in [*result.checkpoints, *([result.best] if result.best else [])]:
        print(f"checkpoint: {path}")


if __name__ == "__main__":
    run_cli(main)
