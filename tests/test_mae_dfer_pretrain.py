"""MAE-DFER pretraining: schedule, weight-decay groups, clip sampling, the loop, its checkpoints,
and ``python -m mer.pretrain``. The objective itself (masks, targets, loss, model) is checked
against the official code in test_mae_dfer.py."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_extractors.checkpoints import load_torch_checkpoint
from feature_extractors.visual.lgi_former import MAEDFERPretrain, create_model, load_mae_dfer
from feature_extractors.visual.mae_dfer import MAEDFERExtractor
from mer.data.manifest import Sample
from mer.pretraining.clips import (MULTISCALE, ClipSampling, FrameSource, FrameStore, PretrainClips,
                                   multiscale_crop_box, train_clip_indices)
from mer.pretraining.mae_dfer import (TubeWindowMaskGenerator, cosine_schedule, param_groups,
                                      reconstruction_loss, reconstruction_targets)
from mer.pretraining.train import PretrainSettings, latest_checkpoint, pretrain

# The released run's log (saved/.../log_50_epochs.txt): the epoch mean of the learning rate.
RELEASED_LR_BY_EPOCH = {0: 1.8747801489124698e-05, 2: 9.374999999999999e-05, 5: 0.00018748348684423973,
                        10: 0.0001860011258806349, 49: 0.00010585081071234312}


def test_schedule_reproduces_the_released_runs_logged_learning_rates():
    batch, steps = 160, 1_091_726 // 160        # 1,091,726 usable VoxCeleb2 clips, batch 160
    lr = cosine_schedule(3e-4 * batch / 256, 1e-5 * batch / 256, 100, steps, 5, 0.0)   # warmup from 0
    assert len(lr) == 100 * steps and lr.max() == pytest.approx(1.875e-4)
    for epoch, logged in RELEASED_LR_BY_EPOCH.items():
        assert lr[epoch * steps:(epoch + 1) * steps].mean() == pytest.approx(logged, rel=1e-9)


def test_weight_decay_groups_keep_the_official_name_matching():
    model = create_model("mae_dfer_pretrain_tiny")
    decay, no_decay = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    exempt = {names[id(p)] for p in no_decay["params"]}
    assert "mask_token" in exempt and "encoder.blocks.0.first_attn.q_bias" in exempt
    assert "encoder.lg_region_tokens" in decayed          # the released quirk: a prefixed name is not matched
    assert "encoder.blocks.0.first_attn.kv.weight" in decayed and "decoder.head.bias" in exempt
    assert decay["weight_decay"] == 0.05 and no_decay["weight_decay"] == 0.0
    assert len(decayed) + len(exempt) == len(list(model.parameters()))


def test_train_clip_indices_follow_the_official_loader():
    rng = np.random.RandomState(0)
    starts = set()
    for _ in range(200):
        idx = train_clip_indices(100, rng)
        assert (np.diff(idx) == 4).all()
        starts.add(int(idx[0]))
    assert min(starts) == 0 and max(starts) == 36      # offsets 0 .. total - 64
    short = train_clip_indices(20, np.random.RandomState(0))
    assert short.tolist() == [0, 4, 8, 12, 16] + [16] * 11


def test_multiscale_crops_are_the_official_sizes_and_positions():
    rng = np.random.RandomState(1)
    sizes = set()
    for _ in range(500):
        left, top, w, h = multiscale_crop_box(160, 160, 160, rng)
        assert 0 <= left and left + w <= 160 and 0 <= top and top + h <= 160
        sizes.add((w, h))
    sides = [int(160 * s) for s in MULTISCALE]          # 160, 140, 120, 105
    assert sizes == {(sides[j], sides[i]) for i in range(4) for j in range(4) if abs(i - j) <= 1}


def face_samples(root: Path, n: int, frames: int = 24, size: int = 96) -> list[Sample]:
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        folder = root / f"s{i}"
        folder.mkdir(parents=True)
        base = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
        drift = np.arange(frames, dtype=np.uint8)[:, None, None, None]
        np.save(folder / f"s{i}.npy", (base + drift).astype(np.uint8))
        out.append(Sample(f"s{i}", "train", face_path=str(folder)))
    return out


def test_clips_dataset_is_deterministic_per_epoch_and_index(tmp_path):
    samples = face_samples(tmp_path / "faces", 3)
    store = FrameStore(tmp_path / "frames", FrameSource(face={"size": 96, "max_frames": 0}))
    usable = store.prepare(samples + [Sample("gone", "train", face_path=str(tmp_path / "none"))], progress=False)
    assert [s.name for s in usable] == ["s0", "s1", "s2"]
    failures = (store.dir / "failures.jsonl").read_text().splitlines()
    assert json.loads(failures[0])["name"] == "gone"
    ds = PretrainClips([s.name for s in usable], store, ClipSampling(stride=1), seed=3)
    clip, mask = ds[1]
    assert clip.shape == (3, 16, 160, 160) and clip.dtype == torch.float32
    assert mask.shape == (800,) and mask.dtype == torch.bool and int((~mask).sum()) == 80
    again, mask2 = ds[1]
    assert torch.equal(clip, again) and torch.equal(mask, mask2)
    ds.set_epoch(1)
    other, mask3 = ds[1]
    assert not torch.equal(mask, mask3)


def test_optimisation_steps_lower_the_loss_on_a_batch():
    """Gradients reach every parameter and point downhill: a few AdamW steps on one smooth batch
    lower its loss (a check of the objective and backward, not of learning quality)."""
    torch.manual_seed(0)
    model = create_model("mae_dfer_pretrain_tiny")
    t = torch.linspace(0, 1, 16).view(16, 1, 1)
    yy, xx = torch.linspace(0, 1, 160).view(1, 160, 1), torch.linspace(0, 1, 160).view(1, 1, 160)
    x = torch.stack([torch.sin(6 * xx + 3 * t + c + 2 * yy) for c in range(3)])[None]     # [1, 3, 16, 160, 160]
    mask = torch.from_numpy(TubeWindowMaskGenerator()(np.random.RandomState(0)))[None]
    target = reconstruction_targets(x, mask)
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=2e-3, betas=(0.9, 0.95))
    losses = []
    for _ in range(5):
        loss = reconstruction_loss(model(x, mask), target)
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters())
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.02


def test_pretrain_writes_official_checkpoints_that_load_and_resume(tmp_path):
    samples = face_samples(tmp_path / "faces", 6)
    settings = PretrainSettings(model="mae_dfer_pretrain_tiny", epochs=2, batch_size=3, warmup_epochs=1,
                                lr=1e-2, num_workers=0, save_every=1, sampling={"stride": 1},
                                source={"face": {"size": 96, "max_frames": 0}})
    out = tmp_path / "run"
    result = pretrain(settings, samples, out, frames_root=tmp_path / "frames", progress=False)
    assert result.clips == 6 and result.steps == 4 and sorted(result.epoch_losses) == [0, 1]
    assert latest_checkpoint(out) == (out / "checkpoint-1.pth", 1)
    ckpt = load_torch_checkpoint(out / "checkpoint-1.pth")
    assert set(ckpt) == {"model", "optimizer", "epoch", "scaler", "args"} and ckpt["epoch"] == 1
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["args"].encoder_num_heads == 4
    assert ckpt["args"].lr == pytest.approx(1e-2 * 3 / 256) and ckpt["args"].mask_type == "part_window"
    model, report = load_mae_dfer(str(out / "checkpoint-1.pth"))
    assert isinstance(model, MAEDFERPretrain) and report.heads_source.startswith("args.encoder_num_heads")
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key])
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [0, 1] and all(np.isfinite(row["train_loss"]) for row in log)
    # the extractor reads the checkpoint (both feature definitions)
    for feature in ("region", "encoder_norm"):
        feats = MAEDFERExtractor(weights=str(out / "checkpoint-1.pth"), feature=feature,
                                 face={"size": 96, "max_frames": 0}).extract_batch(samples[:2])
        assert all(f.shape == (64,) and np.isfinite(f).all() for f in feats)
    # a longer schedule in the same folder resumes after epoch 1
    longer = PretrainSettings(**{**settings.__dict__, "epochs": 3})
    resumed = pretrain(longer, samples, out, frames_root=tmp_path / "frames", progress=False)
    assert sorted(resumed.epoch_losses) == [2] and resumed.steps == 2
    assert latest_checkpoint(out)[1] == 2


def test_pretrain_refuses_too_few_clips_and_mismatched_sampling(tmp_path):
    samples = face_samples(tmp_path / "faces", 2)
    with pytest.raises(ValueError, match="at least batch_size=4"):
        pretrain(PretrainSettings(model="mae_dfer_pretrain_tiny", batch_size=4, num_workers=0,
                                  source={"face": {"size": 96, "max_frames": 0}}),
                 samples, tmp_path / "run", frames_root=tmp_path / "frames", progress=False)
    with pytest.raises(ValueError, match="does not fit"):
        pretrain(PretrainSettings(model="mae_dfer_pretrain_tiny", batch_size=2, num_workers=0,
                                  sampling={"input_size": 192}, source={"face": {"size": 96, "max_frames": 0}}),
                 samples, tmp_path / "run", frames_root=tmp_path / "frames", progress=False)


@pytest.mark.slow
def test_python_m_mer_pretrain_on_the_demo_corpus(tmp_path):
    from hydra import compose, initialize_config_dir

    from mer.pretrain import run

    conf = Path(__file__).resolve().parents[1] / "conf"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("pretrain", overrides=[
            "pretraining=tiny", "tracking=none", "progress=false", "max_clips=6", "device=cpu",
            "data.demo.n_train=6", "data.demo.n_per_test=1",
            "pretraining.epochs=1", "pretraining.batch_size=3", "pretraining.num_workers=0",
            "pretraining.source.face.max_frames=16", f"out_dir={tmp_path / 'run'}"])
    result = run(cfg)
    assert result.clips == 6 and result.checkpoints == [tmp_path / "run" / "checkpoint-0.pth"]
    model, report = load_mae_dfer(str(result.checkpoints[0]), layout="finetune")
    assert report.kind == "pretrain" and model.cfg.embed_dim == 64


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["fp16", "bf16"])
def test_pretrain_on_cuda_with_mixed_precision(tmp_path, amp):
    samples = face_samples(tmp_path / "faces", 4)
    settings = PretrainSettings(model="mae_dfer_pretrain_tiny", epochs=2, batch_size=2, warmup_epochs=1,
                                num_workers=0, amp=amp, sampling={"stride": 1},
                                source={"face": {"size": 96, "max_frames": 0}})
    result = pretrain(settings, samples, tmp_path / "run", frames_root=tmp_path / "frames", device="cuda",
                      progress=False)
    assert all(np.isfinite(v) for v in result.epoch_losses.values())
    ckpt = load_torch_checkpoint(result.checkpoints[-1])
    assert all(v.device.type == "cpu" and v.dtype == torch.float32 for v in ckpt["model"].values())
    assert bool(ckpt["scaler"]) == (amp == "fp16")
