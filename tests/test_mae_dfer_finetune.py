"""MAE-DFER supervised fine-tuning: layer-wise learning-rate decay, mixup / cutmix with label
smoothing, the loop (official-format checkpoints the extractor reads, evaluation with the test
views, an exact resume) and ``python -m mer.finetune`` on the demo corpus, tracked in MLflow."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from feature_extractors.checkpoints import load_torch_checkpoint
from feature_extractors.visual.lgi_former import create_model, load_mae_dfer, save_mae_dfer
from feature_extractors.visual.mae_dfer import MAEDFERExtractor
from mer.core.samples import Sample
from mer.pretraining.finetune import FinetuneSettings, finetune, layer_decay_groups, mix_batch, soft_targets

CLASSES = ["calm", "bright"]


def _init_checkpoint(path: Path) -> str:
    model = create_model("mae_dfer_pretrain_micro")            # 8 frames of 112 px, 2 blocks of 32
    save_mae_dfer(model, str(path))
    return str(path)


def _faces(root: Path, n: int, frames: int = 24, size: int = 96) -> list[Sample]:
    """Face tracks whose brightness gives the class away."""
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        cls = CLASSES[i % 2]
        folder = root / f"f{i}"
        folder.mkdir(parents=True)
        level = 60 if cls == "calm" else 190
        track = np.clip(rng.normal(level, 20, (frames, size, size, 3)), 0, 255).astype(np.uint8)
        np.save(folder / f"f{i}.npy", track)
        out.append(Sample(f"f{i}", "train", face_path=str(folder), discrete=cls))
    return out


def _settings(init: str, **overrides) -> FinetuneSettings:
    base = dict(init_from=init, epochs=2, batch_size=2, warmup_epochs=1, lr=0.5, num_workers=0, save_every=2,
                sampling={"stride": 1}, source={"face": {"size": 96, "max_frames": 0}})
    return FinetuneSettings(**{**base, **overrides})


def test_layer_decay_scales_follow_the_official_layer_ids(tmp_path):
    model = load_mae_dfer(_init_checkpoint(tmp_path / "init.pth"), layout="finetune")[0]
    groups = layer_decay_groups(model, 2, 0.05, 0.5)
    scale = {n: g["lr_scale"] for g in groups for n in g["names"]}
    decay = {n: g["weight_decay"] for g in groups for n in g["names"]}
    assert scale["patch_embed.proj.weight"] == scale["lg_region_tokens"] == 0.5 ** 3
    assert scale["blocks.0.mlp.fc1.weight"] == 0.25 and scale["blocks.1.mlp.fc1.weight"] == 0.5
    assert scale["fc_norm.weight"] == 1.0
    assert decay["lg_region_tokens"] == decay["blocks.0.mlp.fc1.bias"] == decay["fc_norm.weight"] == 0.0
    assert decay["blocks.0.mlp.fc1.weight"] == 0.05
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_mixup_and_cutmix_mix_the_batch_with_its_reverse(tmp_path):
    x = torch.stack([torch.zeros(3, 2, 8, 8), torch.ones(3, 2, 8, 8)])
    y = torch.tensor([0, 1])
    smooth = soft_targets(y, 2, 0.1)
    assert torch.allclose(smooth, torch.tensor([[0.95, 0.05], [0.05, 0.95]]))
    s = _settings("unused", mixup=0.0, cutmix=1.0)
    mixed, target, info = mix_batch(x, y, 2, s, np.random.RandomState(3))
    assert info["cutmix"] == 1.0
    share = float(mixed[0].mean())                           # the box of sample 0 holds sample 1's ones
    assert share == pytest.approx(1 - info["lam"]) and torch.allclose(target.sum(1), torch.ones(2))
    assert target[0, 1] == pytest.approx(0.05 * info["lam"] + 0.95 * (1 - info["lam"]))
    assert bool((mixed[:, :, 0] == mixed[:, :, 1]).all())    # one box over every frame
    mixed, target, info = mix_batch(x, y, 2, _settings("unused", cutmix=0.0), np.random.RandomState(0))
    assert info["cutmix"] == 0.0 and float(mixed[0, 0, 0, 0, 0]) == pytest.approx(1 - info["lam"])
    same, target, _ = mix_batch(x, y, 2, _settings("unused", mixup_prob=0.0), np.random.RandomState(0))
    assert torch.equal(same, x) and torch.equal(target, smooth)


class Killed(Exception):
    pass


def test_finetune_writes_checkpoints_the_extractor_reads_and_resumes_exactly(tmp_path):
    init = _init_checkpoint(tmp_path / "init.pth")
    samples = _faces(tmp_path / "faces", 6)
    train, held = samples[:4], samples[4:]
    settings = _settings(init)
    whole = finetune(settings, train, CLASSES, tmp_path / "whole", frames_root=tmp_path / "frames",
                     eval_samples=held, progress=False)
    assert whole.steps == 4 and sorted(whole.epoch_stats) == [0, 1]
    assert {"train_loss", "eval_acc", "eval_wf1", "eval_uar"} <= set(whole.epoch_stats[1])
    last = tmp_path / "whole" / "checkpoint-1.pth"
    assert whole.checkpoints == [last] and whole.best is not None and whole.best.is_file()
    ckpt = load_torch_checkpoint(last)
    assert ckpt["args"].class_names == CLASSES and ckpt["args"].layer_decay == 0.75 and ckpt["args"].nb_classes == 2
    model, report = load_mae_dfer(str(last))
    assert report.kind == "finetune" and model.head.out_features == 2 and model.cfg.drop_path_rate == 0.0
    probs = MAEDFERExtractor(weights=str(last), head_probs=True, sampling_stride=1,
                             face={"size": 96, "max_frames": 0}).extract_batch(held[:1])[0]
    assert probs.shape == (32 + 2,) and probs[32:].sum() == pytest.approx(1, abs=1e-5)

    def kill(epoch: int, stats: dict) -> None:
        raise Killed

    with pytest.raises(Killed):
        finetune(settings, train, CLASSES, tmp_path / "killed", frames_root=tmp_path / "frames", progress=False,
                 on_epoch=kill)
    resumed = finetune(settings, train, CLASSES, tmp_path / "killed", frames_root=tmp_path / "frames", progress=False)
    assert resumed.resumed_from == (1, 0) and resumed.steps == 2
    assert resumed.step_losses == pytest.approx(whole.step_losses[2:], abs=1e-6)
    done = load_torch_checkpoint(tmp_path / "killed" / "checkpoint-1.pth")["model"]
    assert all(torch.allclose(done[k], v, atol=1e-6) for k, v in ckpt["model"].items())


def test_the_loss_falls_on_separable_clips(tmp_path):
    init = _init_checkpoint(tmp_path / "init.pth")
    samples = _faces(tmp_path / "faces", 8)
    result = finetune(_settings(init, epochs=6, batch_size=4, lr=2.0, warmup_epochs=0, mixup=0.0, cutmix=0.0,
                                drop_path=0.0, save_every=10), samples, CLASSES, tmp_path / "run",
                      frames_root=tmp_path / "frames", eval_samples=samples, progress=False)
    losses = [result.epoch_stats[e]["train_loss"] for e in range(6)]
    assert losses[-1] < losses[0] - 0.1, losses
    assert result.epoch_stats[5]["eval_acc"] == 1.0


def test_refuses_odd_batches_and_too_few_clips(tmp_path):
    with pytest.raises(ValueError, match="even"):
        FinetuneSettings(batch_size=3)
    init = _init_checkpoint(tmp_path / "init.pth")
    with pytest.raises(ValueError, match="at least batch_size"):
        finetune(_settings(init, batch_size=4), _faces(tmp_path / "faces", 2), CLASSES, tmp_path / "run",
                 frames_root=tmp_path / "frames", progress=False)


@pytest.mark.slow
def test_finetune_cli_on_the_demo_is_tracked(tmp_path):
    from mer.finetune import run

    init = _init_checkpoint(tmp_path / "init.pth")
    conf = Path(__file__).resolve().parents[1] / "mer" / "conf"
    runs = tmp_path / "runs"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("finetune", overrides=[
            "progress=false", "device=cpu", f"paths.runs_dir={runs}", "data.demo.n_train=12", "data.demo.n_per_test=2",
            "max_clips=8", "eval_split=test1", f"finetuning.init_from={init}", "finetuning.epochs=1",
            "finetuning.batch_size=4", "finetuning.warmup_epochs=0", "finetuning.num_workers=0",
            "finetuning.sampling.stride=1", "finetuning.source.face.size=96", "finetuning.source.face.max_frames=16",
            f"out_dir={tmp_path / 'run'}"])
    result = run(cfg)
    assert result.clips == 8 and result.steps == 2 and (tmp_path / "run" / "checkpoint-0.pth").is_file()
    with sqlite3.connect(runs / "mlflow.db") as db:
        keys = {k for (k,) in db.execute("select key from metrics")}
    assert {"train_loss", "train_loss_step", "eval_wf1", "eval_acc", "seconds_total"} <= keys
