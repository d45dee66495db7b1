"""MAE-DFER pretraining: schedule, weight-decay groups, clip sampling, the loop (gradient
accumulation, checkpoints, resuming a killed run), reconstruction images, and ``python -m
mer.pretrain`` on the demo corpus (the loss falls, the checkpoint reloads, MLflow records it). The
objective itself (masks, targets, loss, model, backward) is checked against the official code in
test_mae_dfer.py."""
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
from mer.core.samples import Sample
from mer.pretraining.clips import (MULTISCALE, ClipSampling, FrameSource, FrameStore, PretrainClips,
                                   multiscale_crop_box, train_clip_indices)
from feature_extractors.visual.lgi_former import (IMAGENET_MEAN, IMAGENET_STD, TubeWindowMaskGenerator,
                                                  reconstruction_targets)
from mer.pretraining.mae_dfer import cosine_schedule, param_groups, reconstruction_images
from mer.pretraining.train import PretrainSettings, latest_checkpoint, pretrain, resume_point

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


class Killed(Exception):
    """Stands for the process being killed after a given optimiser step."""


def tiny_settings(**overrides) -> PretrainSettings:
    """A run of the 8-frame, 112-px micro variant: the loop at a size other than the released one
    (clips, mask windows and targets follow the model)."""
    base = dict(model="mae_dfer_pretrain_micro", epochs=2, batch_size=3, warmup_epochs=1, lr=1e-2, num_workers=0,
                save_every=1, sampling={"stride": 1}, source={"face": {"size": 96, "max_frames": 0}},
                reconstruction_every=0)
    return PretrainSettings(**{**base, **overrides})


def test_pretrain_writes_official_checkpoints_that_load_and_a_killed_run_resumes_exactly(tmp_path):
    samples = face_samples(tmp_path / "faces", 4)
    out = tmp_path / "run"
    settings = tiny_settings(epochs=1, batch_size=2, checkpoint_every_steps=1)      # 2 steps per epoch
    result = pretrain(settings, samples, out, frames_root=tmp_path / "frames", progress=False)
    assert result.clips == 4 and result.steps == 2 and sorted(result.epoch_losses) == [0]
    assert latest_checkpoint(out) == (out / "checkpoint-0.pth", 0)
    ckpt = load_torch_checkpoint(out / "checkpoint-0.pth")
    assert set(ckpt) == {"model", "optimizer", "epoch", "scaler", "args"} and ckpt["epoch"] == 0
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["args"].encoder_num_heads == 2
    assert ckpt["args"].lr == pytest.approx(1e-2 * 2 / 256) and ckpt["args"].mask_type == "part_window"
    assert ckpt["args"].part_win_size == [2, 7, 7] and ckpt["args"].window_size == (4, 7, 7)
    assert (ckpt["args"].input_size, ckpt["args"].num_frames) == (112, 8)
    model, report = load_mae_dfer(str(out / "checkpoint-0.pth"))
    assert isinstance(model, MAEDFERPretrain) and report.heads_source.startswith("args.encoder_num_heads")
    assert model.cfg == create_model("mae_dfer_pretrain_micro").cfg
    for key, value in model.state_dict().items():
        assert torch.equal(value, ckpt["model"][key])
    log = [json.loads(line) for line in (out / "log.txt").read_text().splitlines()]
    assert [row["epoch"] for row in log] == [0] and np.isfinite(log[0]["train_loss"])
    # the same run killed after its first optimiser step (resume.pth is written every step)
    # and started again: it continues with the second step and ends where the whole run ended
    def kill_after(step: int):
        def on_step(it: int, stats: dict) -> None:
            if it == step:
                raise Killed
        return on_step

    killed = tmp_path / "killed"
    with pytest.raises(Killed):
        pretrain(settings, samples, killed, frames_root=tmp_path / "frames", progress=False, on_step=kill_after(0))
    assert latest_checkpoint(killed) is None and (killed / "resume.pth").is_file()
    resumed = pretrain(settings, samples, killed, frames_root=tmp_path / "frames", progress=False)
    assert resumed.resumed_from == (0, 1) and resumed.steps == 1
    assert resumed.step_losses == pytest.approx(result.step_losses[1:], abs=1e-6)
    done = load_torch_checkpoint(killed / "checkpoint-0.pth")["model"]
    assert all(torch.allclose(done[k], v, atol=1e-6) for k, v in ckpt["model"].items())
    # a finished run started again with a longer schedule goes on after its last epoch
    assert resume_point(out, 2)[1:] == (1, 0)


def test_gradient_accumulation_takes_the_step_of_the_whole_batch(tmp_path):
    """3 forwards of 1 clip per optimiser step = 1 forward of 3 clips: same clips per step, same
    learning rate (it scales with batch_size x grad_accum), same update up to rounding."""
    samples = face_samples(tmp_path / "faces", 3)
    common = dict(epochs=1, warmup_epochs=0, save_every=1)
    whole = pretrain(tiny_settings(**common), samples, tmp_path / "whole", frames_root=tmp_path / "frames",
                     progress=False)
    accum = pretrain(tiny_settings(batch_size=1, grad_accum=3, **common), samples, tmp_path / "accum",
                     frames_root=tmp_path / "frames", progress=False)
    assert whole.steps == accum.steps == 1
    assert accum.step_losses == pytest.approx(whole.step_losses, abs=1e-5)
    a = load_torch_checkpoint(whole.checkpoints[0])
    b = load_torch_checkpoint(accum.checkpoints[0])
    assert b["args"].lr == a["args"].lr and b["args"].update_freq == 3
    assert all(torch.allclose(a["model"][k], b["model"][k], atol=1e-5) for k in a["model"])
    before = create_model("mae_dfer_pretrain_micro").state_dict()     # the run changed the weights
    assert any(not torch.allclose(before[k], a["model"][k]) for k in before)


def test_pretrain_refuses_too_few_clips_and_mismatched_sampling(tmp_path):
    samples = face_samples(tmp_path / "faces", 2)
    with pytest.raises(ValueError, match="at least batch_size x grad_accum = 4"):
        pretrain(tiny_settings(batch_size=2, grad_accum=2), samples, tmp_path / "run",
                 frames_root=tmp_path / "frames", progress=False)
    with pytest.raises(ValueError, match="does not fit"):
        pretrain(tiny_settings(batch_size=2, sampling={"input_size": 160}), samples, tmp_path / "run",
                 frames_root=tmp_path / "frames", progress=False)


def test_sampling_follows_the_model_size():
    """Unset sizes come from the model, and the mask windows from its region (h, w), as the
    official scripts pass --part_win_size equal to --lg_region_size."""
    model = create_model("mae_dfer_pretrain_tiny", img_size=112, num_frames=8, region_size=(1, 7, 7))
    s = ClipSampling().for_model(model.cfg)
    assert (s.num_frames, s.input_size, s.token_grid, s.mask_window) == (8, 112, (4, 7, 7), (7, 7))
    with pytest.raises(ValueError, match="does not fit"):
        ClipSampling(input_size=160).for_model(model.cfg)


def test_reconstruction_images_give_the_clip_back_for_a_perfect_prediction():
    gen = TubeWindowMaskGenerator()
    t = torch.linspace(0, 1, 16).view(16, 1, 1)
    yy, xx = torch.linspace(0, 1, 160).view(1, 160, 1), torch.linspace(0, 1, 160).view(1, 1, 160)
    x = torch.stack([torch.sin(6 * xx + 3 * t + c + 2 * yy) for c in range(3)])          # [3, 16, 160, 160]
    mask = torch.from_numpy(gen(np.random.RandomState(0)))
    target = reconstruction_targets(x[None], mask[None])[0]
    images = reconstruction_images(x, mask, target, columns=4)
    app, motion = images["appearance"], images["motion"]
    assert app.shape == (3 * 160, 4 * 160, 3) and motion.shape == (2 * 160, 4 * 160, 3) and app.dtype == np.uint8
    assert np.array_equal(app[:160], app[320:]) and np.array_equal(motion[:160], motion[160:])
    pixels = (x * torch.tensor(IMAGENET_STD).view(3, 1, 1, 1) + torch.tensor(IMAGENET_MEAN).view(3, 1, 1, 1))
    first = (pixels[:, 0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round()
    assert np.abs(app[:160, :160].astype(float) - first).max() <= 1                   # frame 0 as it is
    wrong = reconstruction_images(x, mask, torch.zeros_like(target))["appearance"]
    assert np.array_equal(wrong[:320], app[:320]) and not np.array_equal(wrong[320:], app[320:])


@pytest.mark.slow
def test_python_m_mer_pretrain_on_the_demo_corpus_lowers_the_loss_and_reloads(tmp_path):
    """The CPU demo: the tiny recipe on demo clips, tracked in a real MLflow sqlite store."""
    import sqlite3

    from hydra import compose, initialize_config_dir

    from mer.pretrain import run

    conf = Path(__file__).resolve().parents[1] / "mer" / "conf"
    runs = tmp_path / "runs"
    with initialize_config_dir(config_dir=str(conf), version_base="1.3"):
        cfg = compose("pretrain", overrides=[
            "pretraining=tiny", "progress=false", "max_clips=6", "device=cpu", f"paths.runs_dir={runs}",
            "data.demo.n_train=6", "data.demo.n_per_test=1", "pretraining.epochs=2", "pretraining.batch_size=3",
            "pretraining.lr=0.3", "pretraining.warmup_epochs=0", "pretraining.num_workers=0",
            "pretraining.save_every=1", "pretraining.source.face.max_frames=16",
            f"out_dir={tmp_path / 'run'}"])
    result = run(cfg)
    losses = [result.epoch_losses[e] for e in range(2)]
    assert result.clips == 6 and result.steps == 4
    assert losses[1] < losses[0] - 0.02, losses                   # the loss falls
    assert result.checkpoints == [tmp_path / "run" / "checkpoint-0.pth", tmp_path / "run" / "checkpoint-1.pth"]
    model, report = load_mae_dfer(str(result.checkpoints[-1]))    # the checkpoint reloads, weights intact
    saved = load_torch_checkpoint(result.checkpoints[-1])["model"]
    assert isinstance(model, MAEDFERPretrain) and report.epoch == 1
    assert all(torch.equal(v, saved[k]) for k, v in model.state_dict().items())
    encoder, _ = load_mae_dfer(str(result.checkpoints[-1]), layout="finetune")
    assert encoder.cfg.embed_dim == 64
    clip = np.random.default_rng(0).integers(0, 256, (1, 16, 160, 160, 3), dtype=np.uint8)
    feats = MAEDFERExtractor(weights=str(result.checkpoints[-1]), feature="encoder_norm").embed_clips(clip)
    assert feats.shape == (1, 64) and np.isfinite(feats).all()                # the extractor reads it
    # MLflow: the loss per step and per epoch, the reconstructions (epochs 0 and 1) and log.txt
    con = sqlite3.connect(runs / "mlflow.db")
    (run_id, status), = con.execute("select run_uuid, status from runs").fetchall()
    assert status == "FINISHED"
    steps = [v for v, in con.execute("select value from metrics where run_uuid=? and key='train_loss_step' "
                                     "order by step", (run_id,))]
    assert steps == pytest.approx(result.step_losses)
    art = runs / "mlartifacts"
    files = sorted(p.name for p in art.rglob("*.png"))
    assert files == [f"epoch-00{e}-{kind}.png" for e in (0, 1) for kind in ("appearance", "motion")]
    epochs = [v for v, in con.execute("select value from metrics where run_uuid=? and key='train_loss' order by step",
                                      (run_id,))]
    assert epochs == pytest.approx(losses)
    assert any(p.name == "log.txt" for p in art.rglob("*"))


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
