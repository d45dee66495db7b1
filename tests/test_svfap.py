"""SVFAP (TPSBT): mer's encoder against outputs of the official code, checkpoint loading (fine-tuned
and pretraining files), the full-size key list, and the ``svfap`` extractor on face tracks and the demo.

The golden files in ``tests/golden/svfap`` were made from the official repository
(``sunlicai/SVFAP`` at ``8e386b9``: ``modeling_finetune.py``, ``modeling_pretrain.py``, and the
``--finetune`` key rule of ``run_class_finetuning.py``), run in a scratch environment outside the
repository (torch 2.13.0+cpu, timm 0.4.12, einops 0.6.1; timm's import of torchvision answered by
an empty stand-in, the model code never calls it). No official code is in the repository.

* ``svfap_tiny_a_finetune.pth``: ``modeling_finetune.TPSBT`` built with the ``svfap_base_patch16_160``
  constructor's kwargs (patch 16, mlp_ratio 4, q/v biases, LayerNorm eps 1e-6) and
  ``run_class_finetuning.py``'s (``all_frames=16, tubelet_size=2, drop_path_rate=0.1,
  use_mean_pooling=True, init_scale=0.001, temporal_kernel_size=2``), with ``img_size=64,
  embed_dim=64, num_heads=4, stage_depths=(2, 2, 2), num_bottleneck_tokens=(4,), num_classes=6``;
  parameters drawn from ``torch.Generator().manual_seed(1)`` (``N(0, 0.02)`` matrices, ``N(0, 0.1)``
  vectors, 1 added to norm weights); saved as ``utils.save_model`` does (``model``, ``optimizer``,
  ``epoch``, ``scaler``, ``args`` with the official argument names; ``args.model`` the released name,
  so the head count is given to mer: 4).
* ``svfap_tiny_b_finetune.pth``: the same with ``img_size=48, embed_dim=48, num_heads=3,
  stage_depths=(1, 3, 2), num_bottleneck_tokens=(3, 5), num_classes=7``, seed 2.
* ``svfap_tiny_pretrain.pth``: ``modeling_pretrain.PretrainVisionTransformer`` (``img_size=64,
  encoder_embed_dim=64, encoder_num_heads=4, decoder_embed_dim=32, decoder_depth=1,
  decoder_num_heads=4, stage_depths=(2, 2, 2), num_bottleneck_tokens=(4,)``), seed 3.
* ``svfap_tiny_golden.pt``: for a and b the input (``[2, 3, 16, S, S]``, ``N(0, 1)`` from seed 10) and,
  in fp32 and in fp64 (``model.double()``), ``forward_features``, the head's logits and the last
  block's output tokens; for the pretraining file, the fine-tune model's features after the official
  ``--finetune`` rule (``encoder.`` stripped, ``fc_norm`` at weight 1 / bias 0).
* ``svfap_full_keys.json``: keys, shapes and the parameter count of the full-size
  ``svfap_base_patch16_160`` fine-tuned on 7 classes (DFEW).
"""
from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from conftest import REPO
from feature_extractors.base import EXTRACTORS, build_extractor
from feature_extractors.visual.lgi_former import IMAGENET_MEAN, IMAGENET_STD
from feature_extractors.visual.mae_dfer import official_view_indices
from feature_extractors.visual.svfap import SVFAPExtractor
from feature_extractors.visual.lgi_former.checkpoints import read_checkpoint
from feature_extractors.visual.tpsbt import TPSBT, TPSBTConfig, count_parameters, infer_config, load_svfap, save_svfap
from feature_extractors.weights import WEIGHT_TAGS
from mer.core.failures import ExtractionFailure
from mer.core.samples import Sample
from mer.core.timebase import times_of

GOLDEN = REPO / "tests" / "golden" / "svfap"
TINY_A, TINY_B = str(GOLDEN / "svfap_tiny_a_finetune.pth"), str(GOLDEN / "svfap_tiny_b_finetune.pth")
PRETRAIN = str(GOLDEN / "svfap_tiny_pretrain.pth")
HEADS = {"a": 4, "b": 3}


@pytest.fixture(scope="module")
def golden():
    return torch.load(GOLDEN / "svfap_tiny_golden.pt", weights_only=True)


def _outputs(model, x):
    tokens = {}
    hook = model.blocks[-1].register_forward_hook(lambda m, i, o: tokens.__setitem__("t", o))
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model.head(feats)
    hook.remove()
    return {"features": feats, "logits": logits, "tokens": tokens["t"]}


@pytest.mark.parametrize("name", ["a", "b"])
def test_outputs_equal_the_official_code_in_fp32_and_fp64(golden, name):
    model, report = load_svfap(str(GOLDEN / f"svfap_tiny_{name}_finetune.pth"), num_heads=HEADS[name])
    assert report.kind == "finetune" and report.missing == [] and report.unused == []
    x = golden[name]["input"]
    got = _outputs(model, x)
    for key, tol in (("features", 1e-5), ("logits", 1e-5), ("tokens", 5e-5)):
        assert (got[key] - golden[name]["fp32"][key]).abs().max() <= tol, key
    got = _outputs(model.double(), x.double())
    for key in ("features", "logits", "tokens"):
        assert (got[key] - golden[name]["fp64"][key]).abs().max() <= 1e-9, key


def test_sizes_come_from_the_checkpoint_and_its_args():
    model, report = load_svfap(TINY_B, num_heads=3)
    cfg = report.config
    assert (cfg.img_size, cfg.embed_dim, cfg.stage_depths, cfg.num_bottleneck_tokens, cfg.num_classes) == \
        (48, 48, (1, 3, 2), (3, 5), 7)
    assert cfg.output_steps == 2 and report.heads_source == "given"
    assert load_svfap(TINY_B)[1].heads_source == "args.model=svfap_base_patch16_160"   # the released name: 8 heads
    sd = read_checkpoint(TINY_B)[0]
    with pytest.raises(ValueError, match="say how they split"):
        infer_config(sd, {}, num_heads=3)                       # a bare state_dict: 5 cross-self blocks, 2 stages
    assert infer_config(sd, {}, num_heads=3, stage_depths=(1, 3, 2))[0].stage_depths == (1, 3, 2)
    with pytest.raises(ValueError, match="does not fit"):
        infer_config(sd, {}, num_heads=3, stage_depths=(1, 2, 3, 0))
    sd["blocks.0.gamma_1"] = torch.ones(48)
    with pytest.raises(ValueError, match="layer scale"):
        infer_config(sd, {}, num_heads=3, stage_depths=(1, 3, 2))


def test_a_pretraining_file_loads_by_the_official_finetune_rule(golden):
    model, report = load_svfap(PRETRAIN, num_heads=4)
    assert report.kind == "pretrain" and sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight"]
    assert "encoder.norm.weight" in report.unused and any(k.startswith("decoder.") for k in report.unused)
    with torch.no_grad():
        feats = model.forward_features(golden["pretrain_as_finetune"]["input"])
    assert (feats - golden["pretrain_as_finetune"]["features"]).abs().max() <= 1e-5


def test_full_size_keys_and_parameters_match_the_official_model():
    full = json.loads((GOLDEN / "svfap_full_keys.json").read_text())["finetune_dfew"]
    model = TPSBT(TPSBTConfig(num_classes=7))
    assert {k: list(v.shape) for k, v in model.state_dict().items()} == full["keys"]
    assert count_parameters(model) == full["parameters"] == 77_635_351


def test_saved_checkpoints_load_back_with_their_sizes(tmp_path, golden):
    model, _ = load_svfap(TINY_A, num_heads=4)
    path = tmp_path / "copy.pth"
    save_svfap(model, str(path))
    again, report = load_svfap(str(path))                       # args carry num_heads now
    assert report.config == model.cfg
    x = golden["a"]["input"]
    with torch.no_grad():
        assert torch.equal(again.forward_features(x), model.forward_features(x))


def _face_track(tmp_path: Path, name: str, frames: int, size: int = 64) -> Sample:
    folder = tmp_path / name
    folder.mkdir()
    track = np.random.default_rng(frames).integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
    track[:, :4, :4] = np.arange(frames, dtype=np.uint8)[:, None, None, None]
    np.save(folder / f"{name}.npy", track)
    return Sample(name, "train", face_path=str(folder))


def _normalised(clips: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(clips).permute(0, 4, 1, 2, 3).float() / 255
    return (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)


def test_tags_say_where_to_fetch_the_weights(monkeypatch, tmp_path):
    monkeypatch.setenv("MER_WEIGHTS_DIR", str(tmp_path))
    assert {"svfap_voxceleb2", "svfap_dfew_fold5", "svfap_mafw_fold1", "svfap_ferv39k"} <= set(WEIGHT_TAGS)
    assert WEIGHT_TAGS["svfap_dfew_fold1"].classes[0] == "happy"
    ex = build_extractor("svfap", {})
    assert EXTRACTORS.get("svfap") is SVFAPExtractor and ex._model is None
    with pytest.raises(FileNotFoundError, match=r"sharepoint.*svfap_voxceleb2/checkpoint-99\.pth"):
        ex.weights_digest()


def test_the_extractor_takes_the_official_views_at_the_checkpoints_size(tmp_path):
    good = _face_track(tmp_path, "clip_a", frames=50)
    ex = SVFAPExtractor(weights=TINY_A, num_heads=4, face={"max_frames": 0, "size": 64})
    views = ex.load(good)                                        # the workers read the size from the args
    assert views.shape == (2, 16, 64, 64, 3) and ex._model is None
    assert (views[:, :, 0, 0, 0] == official_view_indices(50, 16, 4, 2)).all()
    out = ex.extract_batch([Sample("gone", "train", face_path=str(tmp_path / "nowhere")), good])
    assert isinstance(out[0], ExtractionFailure) and out[0].reason == "missing_file"
    with torch.no_grad():
        want = ex._model.forward_features(_normalised(views)).mean(0).numpy()
    assert out[1].shape == (64,) and np.allclose(out[1], want, atol=1e-5)
    clone = pickle.loads(pickle.dumps(ex))
    assert clone._model is None and not clone._ready


def test_frame_level_gives_one_row_per_time_step_left(tmp_path):
    sample = _face_track(tmp_path, "clip_f", frames=100)          # 25 strided frames: 2 clips, 2 steps each
    ex = SVFAPExtractor(weights=TINY_A, num_heads=4, level="frame", face={"max_frames": 0, "size": 64})
    loaded = ex.load(sample)
    out = ex.extract_batch([sample])[0]
    assert out.shape == (4, 64)                                    # ceil(25 / 8) rows of 8 strided frames
    with torch.no_grad():
        rows = ex._model.forward_steps(_normalised(loaded.clips)).reshape(4, 64).numpy()
    assert np.allclose(out, rows, atol=1e-5)
    assert times_of(out) is None                                   # a face track has no frame rate
    probs = SVFAPExtractor(weights=TINY_A, num_heads=4, level="frame", head_probs=True,
                           face={"max_frames": 0, "size": 64}).extract_batch([sample])[0]
    assert probs.shape == (4, 64 + 6) and np.allclose(probs[:, 64:].sum(1), 1, atol=1e-5)


@pytest.mark.slow
def test_svfap_features_on_the_demo_are_cached(tmp_path):
    from mer.pipeline import run

    def cfg(out):
        with initialize_config_dir(str(REPO / "mer" / "conf"), version_base="1.3"):
            return compose("config", overrides=[
                f"paths.runs_dir={tmp_path / 'runs'}", "progress=false", "tracking=none", "data.demo.n_train=24",
                "data.demo.n_per_test=3", "train.n_folds=2", "train.epochs=3", "features/text=none",
                "features/audio=none", "features/visual=svfap", f"features.visual.options.weights={TINY_A}",
                "features.visual.options.num_heads=4", "features.visual.options.face.size=64",
                "ablate_modalities=false"])

    def visual(res):
        return json.loads((res.out_dir / "results.json").read_text())["features"]["visual"]

    first = visual(run(cfg(tmp_path / "one"), out_dir=tmp_path / "one"))
    assert (first["extractor"], first["dim"], first["present"]) == ("svfap", 64, first["total"])
    assert first["extracted_now"] == first["total"] == 33
    second = run(cfg(tmp_path / "two"), out_dir=tmp_path / "two")
    again = visual(second)
    assert (again["extracted_now"], again["from_cache"], again["cache_key"]) == (0, 33, first["cache_key"])
    assert "cv_wf1" in second.metrics
