"""MAE-DFER's LGI-Former: equivalence with the official code, official checkpoints, the extractor.

Golden data are read in place from ``../shared/golden/maedfer/`` (the tests skip when it is
absent): outputs of the official ``sunlicai/MAE-DFER`` code at commit 80b651d4 run on CPU with seeded
random weights, two tiny checkpoints in the official ``utils.save_model`` layout (``args`` is an
``argparse.Namespace``), the official outputs in fp32 and fp64 for one input, and the key names and
shapes of the full-size official models.
"""
from __future__ import annotations

import argparse
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from feature_extractors.checkpoints import load_torch_checkpoint, unwrap_state_dict
from feature_extractors.visual.lgi_former import (IMAGENET_MEAN, IMAGENET_STD, LGIFormer, LGIFormerConfig,
                                                  MAEDFERPretrain, MODELS, checkpoint_filter_fn, count_parameters,
                                                  TubeWindowMaskGenerator, create_model, infer_config, load_mae_dfer,
                                                  reconstruction_loss, reconstruction_targets, sincos_table)

from tests.conftest import golden_dir, needs_golden

FIXTURES = golden_dir("maedfer")
FINETUNE = FIXTURES / "maedfer_tiny_finetune.pth"
PRETRAIN = FIXTURES / "maedfer_tiny_pretrain.pth"
pytestmark = needs_golden("maedfer")

# Tolerances: the official code's own fp32-vs-fp64 gaps are <= 6.7e-6 (README section 5).
FP64_ATOL = 1e-10
FP32_ATOL = 1e-5   # features, logits, tokens, encoder and decoder outputs, targets and loss alike


def load_golden() -> dict[str, torch.Tensor]:
    """The golden tensors, plus ``input_uint8``: the pixels the input was made from
    (``(u8 / 255 - mean) / std`` in float32 gives the official input bit for bit)."""
    g = torch.load(FIXTURES / "maedfer_tiny_golden.pt", map_location="cpu", weights_only=True)
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1, 1)
    u8 = torch.round((g["input"] * std + mean) * 255).to(torch.uint8)
    assert torch.equal((u8.float() / 255 - mean) / std, g["input"]), "the golden input is not a normalised uint8 clip"
    g["input_uint8"] = u8
    return g


@pytest.fixture(scope="module")
def golden() -> dict[str, torch.Tensor]:
    return load_golden()


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    assert actual.shape == expected.shape
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol:.3g}"


# --- golden equivalence --------------------------------------------------------------------

@pytest.mark.parametrize("pool", ["region", "org", "all"])
def test_finetune_features_and_logits_match_the_official_code(golden, pool):
    model, _ = load_mae_dfer(str(FINETUNE), token_pool=pool)
    x = golden["input"]
    with torch.no_grad():
        close(model.forward_features(x), golden[f"ft_{pool}_feature_fp32"], FP32_ATOL)
        close(model(x), golden[f"ft_{pool}_logits_fp32"], FP32_ATOL)
        model.double()
        close(model.forward_features(x.double()), golden[f"ft_{pool}_feature_fp64"], FP64_ATOL)
        close(model(x.double()), golden[f"ft_{pool}_logits_fp64"], FP64_ATOL)


def test_last_block_tokens_match_region_by_region(golden):
    """Token order inside the model: region n = nt*2 + nh, (t, h, w) inside, index 0 = representative."""
    model, _ = load_mae_dfer(str(FINETUNE))
    x = golden["input"]
    with torch.no_grad():
        close(model.forward_tokens(x), golden["ft_last_block_tokens_fp64"], FP32_ATOL)
        close(model.double().forward_tokens(x.double()), golden["ft_last_block_tokens_fp64"], FP64_ATOL)


def test_pretraining_forward_targets_and_loss_match_the_official_code(golden):
    model, report = load_mae_dfer(str(PRETRAIN))
    assert isinstance(model, MAEDFERPretrain) and report.kind == "pretrain"
    x, mask, sel = golden["input"], golden["pt_mask"], golden["pt_sel_index"]
    for dtype, suffix, atol in ((torch.float32, "fp32", FP32_ATOL), (torch.float64, "fp64", FP64_ATOL)):
        m, xx = model.to(dtype), x.to(dtype)
        with torch.no_grad():
            close(m.encoder.forward_visible(xx, mask), golden[f"pt_encoder_visible_{suffix}"], atol)
            out = m(xx, mask)
            target = reconstruction_targets(xx, mask)
            close(out[:, sel], golden[f"pt_decoder_out_sel_{suffix}"], atol)
            close(target[:, sel], golden[f"pt_target_sel_{suffix}"], atol)
            close(reconstruction_loss(out, target), golden[f"pt_loss_{suffix}"], FP32_ATOL if suffix == "fp32" else FP64_ATOL)
            allvis = m.encoder.forward_visible(xx, torch.zeros_like(mask)).mean(1)
            close(allvis, golden[f"pt_encoder_allvisible_mean_{suffix}"], FP32_ATOL if suffix == "fp32" else FP64_ATOL)
    assert out.shape == (2, 720, 1536)
    close(out.sum(-1), golden["pt_decoder_out_rowsum_fp64"], FP64_ATOL)
    close(target.sum(-1), golden["pt_target_rowsum_fp64"], FP64_ATOL)


def test_the_decoder_position_quirk_is_what_the_golden_needs(golden):
    """'fixed' gives each visible token its own decoder position: a different (not the released) output."""
    model, _ = load_mae_dfer(str(PRETRAIN))
    fixed = MAEDFERPretrain(model.cfg, type(model.decoder_cfg)(**{**model.decoder_cfg.__dict__,
                                                                  "decoder_pos_order": "fixed"}))
    fixed.load_state_dict(model.state_dict())
    x, mask = golden["input"].double(), golden["pt_mask"]
    with torch.no_grad():
        official, other = model.double()(x, mask), fixed.double().eval()(x, mask)
    close(official[:, golden["pt_sel_index"]], golden["pt_decoder_out_sel_fp64"], FP64_ATOL)
    assert (official - other).abs().max() > 1e-3


def test_pretrain_checkpoint_as_finetune_model_follows_the_official_finetune_rule(golden):
    model, report = load_mae_dfer(str(PRETRAIN), layout="finetune")
    assert isinstance(model, LGIFormer) and model.head is None
    assert sorted(report.missing) == ["fc_norm.bias", "fc_norm.weight"]
    keys = json.loads((FIXTURES / "maedfer_full_keys.json").read_text())["finetune_load_from_pretrain"]
    # the same kinds of keys go unused as in the official full-size load
    kinds = {k.split(".")[0] if not k.startswith("encoder.") else "encoder.norm" for k in report.unused}
    assert kinds == {"mask_token", "encoder.norm", "decoder", "encoder_to_decoder"}
    assert all(k.startswith(("mask_token", "norm.", "decoder.", "encoder_to_decoder"))
               for k in keys["pretrain_keys_unused_after_strip"])
    with torch.no_grad():
        close(model.double().forward_features(golden["input"].double()),
              golden["pt_as_ft_region_feature_fp64"], FP64_ATOL)


def test_the_mask_generator_draws_the_official_masks(golden):
    rng = np.random.RandomState(4)                       # the golden: np.random.seed(4), two calls
    gen = TubeWindowMaskGenerator((8, 10, 10), 0.9, (5, 10))
    masks = np.stack([gen(rng), gen(rng)])
    assert np.array_equal(masks, golden["pt_mask"].numpy())
    assert gen.num_visible == 80 and (~masks).sum(1).tolist() == [80, 80]
    # 5 visible per 5x10 window and time slot, the same in every slot (a tube)
    grid = (~masks[0]).reshape(8, 2, 5, 10)
    assert (grid.sum((2, 3)) == 5).all() and (grid == grid[:1]).all()


# --- architecture and official keys ----------------------------------------------------------

def _keys(model: torch.nn.Module) -> dict[str, list[int]]:
    return {k: list(v.shape) for k, v in model.state_dict().items()}


def test_full_size_models_have_the_official_keys_shapes_and_counts():
    official = json.loads((FIXTURES / "maedfer_full_keys.json").read_text())
    with torch.device("meta"):
        ft = create_model("lgi_former_base", num_classes=7, init=False)
        ft11 = create_model("lgi_former_base", num_classes=11, init=False)
        feat = create_model("lgi_former_base", init=False)
        pt = create_model("mae_dfer_pretrain_base", init=False)
    assert _keys(ft) == official["finetune"]["state_dict"]                   # names, shapes and order
    assert list(_keys(pt)) == list(official["pretrain"]["state_dict"])
    assert _keys(pt) == official["pretrain"]["state_dict"]
    assert count_parameters(ft) == official["finetune"]["num_params"] == 84_878_343
    assert count_parameters(feat) == official["finetune"]["num_params_without_head"] == 84_874_752
    assert count_parameters(ft11) == official["finetune"]["num_params_11_classes"] == 84_880_395
    assert count_parameters(pt) == official["pretrain"]["num_params"] == 92_760_192
    assert count_parameters(pt.encoder) == official["pretrain"]["num_params_encoder"]
    assert not any("pos_embed" in k or "cls_token" in k for k in _keys(pt))


def test_sincos_table_is_interleaved_and_float32():
    table = sincos_table(800, 512)
    assert table.shape == (1, 800, 512) and table.dtype == torch.float32
    pos = 37
    assert table[0, pos, 0].item() == pytest.approx(np.sin(pos), abs=1e-7)
    assert table[0, pos, 1].item() == pytest.approx(np.cos(pos), abs=1e-7)
    assert table[0, pos, 2].item() == pytest.approx(np.sin(pos / 10000 ** (2 / 512)), abs=1e-7)


def test_regions_follow_the_official_partition():
    model = create_model("lgi_former_tiny")
    cfg = model.cfg
    assert cfg.token_grid == (8, 10, 10) and cfg.region_grid == (4, 2, 1) and cfg.num_regions == 8
    raster = torch.arange(800).view(1, 800, 1).float()
    regions = model.to_regions(raster)[0, :, :, 0].long()                     # [8, 100] raster ids
    t, h, w = regions // 100, regions // 10 % 10, regions % 10
    for n in range(8):
        assert (t[n] // 2 == n // 2).all() and (h[n] // 5 == n % 2).all()     # n = nt*2 + nh
    assert regions[3, :3].tolist() == [250, 251, 252]                        # (t, h, w) order inside
    assert model.region_index[regions[5]].eq(5).all()


def test_a_mask_with_uneven_regions_is_refused():
    model = create_model("mae_dfer_pretrain_tiny")
    rng = np.random.RandomState(0)
    per_frame = np.zeros(100, dtype=bool)
    per_frame[rng.permutation(100)[:90]] = True                              # plain tube masking
    while (~per_frame[:50]).sum() == 5:                                      # make it uneven
        per_frame = np.roll(per_frame, 1)
    mask = torch.from_numpy(np.tile(per_frame, 8))[None]
    with pytest.raises(ValueError, match="same number of visible tokens"):
        model(torch.zeros(1, 3, 16, 160, 160), mask)


def test_backward_works_and_drop_path_draws_per_sample():
    torch.manual_seed(0)
    model = create_model("mae_dfer_pretrain_tiny")
    gen = TubeWindowMaskGenerator()
    x = torch.randn(2, 3, 16, 160, 160)
    mask = torch.from_numpy(np.stack([gen(np.random.RandomState(i)) for i in range(2)]))
    loss = reconstruction_loss(model(x, mask), reconstruction_targets(x, mask))
    loss.backward()                                       # the official blocks needed .clone() patches
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    ft = create_model("lgi_former_tiny", drop_path_rate=0.5, num_classes=3).train()
    with torch.no_grad():
        a, b = ft(x[:1]), ft(x[:1])
    assert not torch.equal(a, b)                          # stochastic in training
    ft.eval()
    with torch.no_grad():
        assert torch.equal(ft(x[:1]), ft(x[:1]))


def test_the_pretrain_encoder_with_nothing_masked_is_the_finetune_encoder_plus_norm(golden):
    pt, _ = load_mae_dfer(str(PRETRAIN), layout="pretrain_encoder")
    ft, _ = load_mae_dfer(str(PRETRAIN), layout="finetune")
    x = golden["input"][:1].double()
    with torch.no_grad():
        enc = pt.double().forward_visible(x, torch.zeros(1, 800, dtype=torch.bool))
        tokens = ft.double().forward_tokens(x)[:, :, 1:].flatten(1, 2)
    close(enc, pt.norm(tokens), 1e-12)


def test_registry_lists_variants_and_rejects_unknown_options():
    assert {"lgi_former_base", "mae_dfer_pretrain_base", "lgi_former_tiny", "mae_dfer_pretrain_tiny"} <= set(MODELS.names())
    with pytest.raises(TypeError, match="unknown option"):
        create_model("lgi_former_tiny", depthh=3)
    with pytest.raises(TypeError, match="no decoder"):
        create_model("lgi_former_tiny", decoder_depth=2)
    with pytest.raises(KeyError, match="known"):
        create_model("lgi_former_huge")
    with pytest.raises(ValueError, match="does not tile"):
        LGIFormerConfig(region_size=(2, 3, 10))


# --- checkpoints ----------------------------------------------------------------------------

def test_official_checkpoints_load_weights_only_with_their_namespace_args():
    ckpt = load_torch_checkpoint(FINETUNE)
    assert set(ckpt) == {"model", "optimizer", "epoch", "scaler", "args"}
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["epoch"] == "best"
    with pytest.raises(Exception):                        # a plain weights-only load refuses the Namespace
        torch.load(FINETUNE, weights_only=True)
    _, report = load_mae_dfer(str(FINETUNE))
    assert report.kind == "finetune" and report.epoch == "best" and not report.missing and not report.unused
    assert report.config == LGIFormerConfig(embed_dim=64, depth=3, num_heads=4, num_classes=6)
    assert report.heads_source == "args.num_heads"
    _, report = load_mae_dfer(str(PRETRAIN))
    assert report.decoder.embed_dim == 48 and report.decoder.depth == 2 and report.decoder.num_heads == 4
    assert report.epoch == 49


def _rewrite_pickle(src: Path, dst: Path, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            if item.filename.endswith("data.pkl"):
                assert old in data
                data = data.replace(old, new)
            zout.writestr(item, data)


def test_checkpoints_with_numpy_learning_rates_load_from_numpy_1_and_2(tmp_path):
    """The official schedule puts numpy.float64 learning rates into the saved optimizer state; a
    file pickled under numpy 1.x names their constructor numpy.core.multiarray.scalar."""
    ckpt = load_torch_checkpoint(FINETUNE)
    for group in ckpt["optimizer"]["param_groups"]:
        group["lr"] = np.float64(group["lr"]) * np.float64(0.5)
    torch.save(ckpt, tmp_path / "np2.pth")
    _rewrite_pickle(tmp_path / "np2.pth", tmp_path / "np1.pth", b"numpy._core.multiarray\nscalar",
                    b"numpy.core.multiarray\nscalar")
    for name in ("np2.pth", "np1.pth"):
        lr = load_torch_checkpoint(tmp_path / name)["optimizer"]["param_groups"][0]["lr"]
        assert isinstance(lr, np.float64)
        model, _ = load_mae_dfer(str(tmp_path / name))
        assert isinstance(model, LGIFormer)


def test_a_checkpoint_holding_code_is_refused(tmp_path):
    ckpt = load_torch_checkpoint(FINETUNE)
    ckpt["args"] = {"hook": shutil.rmtree}                # any other global must be refused
    torch.save(ckpt, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match="refuses"):
        load_torch_checkpoint(tmp_path / "evil.pth")


def test_bare_and_module_wrapped_state_dicts_load_with_explicit_heads(tmp_path):
    sd = unwrap_state_dict(load_torch_checkpoint(FINETUNE))
    torch.save(sd, tmp_path / "bare.pth")
    torch.save({"module": {f"module.{k}": v for k, v in sd.items()}}, tmp_path / "wrapped.pth")
    ref, _ = load_mae_dfer(str(FINETUNE))
    x = torch.randn(1, 3, 16, 160, 160)
    for name in ("bare.pth", "wrapped.pth"):
        model, report = load_mae_dfer(str(tmp_path / name), num_heads=4)
        assert report.heads_source == "given"
        with torch.no_grad():
            assert torch.equal(model(x), ref(x))
    _, report = load_mae_dfer(str(tmp_path / "bare.pth"))    # no args: 64-dim heads assumed, and said
    assert report.config.num_heads == 1 and report.heads_source.startswith("assumed")


def test_checkpoints_of_other_variants_and_wrong_shapes_are_refused(tmp_path):
    ckpt = load_torch_checkpoint(FINETUNE)
    ckpt["args"].lg_third_attn_type = "self"
    torch.save(ckpt, tmp_path / "variant.pth")
    with pytest.raises(ValueError, match="released variant"):
        load_mae_dfer(str(tmp_path / "variant.pth"))
    sd = unwrap_state_dict(load_torch_checkpoint(FINETUNE))
    model = create_model("lgi_former_tiny", num_classes=6)
    sd["blocks.0.mlp.fc1.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="blocks.0.mlp.fc1.weight"):
        checkpoint_filter_fn(sd, model)
    del sd["blocks.0.mlp.fc1.weight"]
    torch.save({"model": sd, "args": load_torch_checkpoint(FINETUNE)["args"]}, tmp_path / "short.pth")
    with pytest.raises(ValueError, match="lacks 1 keys"):
        load_mae_dfer(str(tmp_path / "short.pth"))
    with pytest.raises(ValueError, match="not an LGI-Former"):
        infer_config({"foo.weight": torch.zeros(1)})

