"""LGI-Former at sizes other than the released one, against a plain transcription of the official
forward (``bench/maedfer_reference.py``, itself equal to the golden official outputs bit for bit
in float64): other region sizes (narrower than the grid, whole frames, one time step), 112 px and
8 frames, 8-px patches; the region partition, the pretraining masks, targets and the official
encoder's grouping of visible tokens; checkpoints of other sizes, read and written; and the CPU inference path
(oneDNN) against the autograd path. Needs no golden files."""
from __future__ import annotations

import argparse
import dataclasses

import numpy as np
import pytest
import torch

from bench.maedfer_reference import ReferenceLGIFormer
from feature_extractors.checkpoints import load_torch_checkpoint
from feature_extractors.visual.lgi_former import (TubeWindowMaskGenerator, create_model, load_mae_dfer,
                                                  reconstruction_loss, reconstruction_targets, save_mae_dfer)


def close(actual: torch.Tensor, expected: torch.Tensor, atol: float) -> None:
    assert actual.shape == expected.shape
    err = (actual.double() - expected.double()).abs().max().item()
    assert err <= atol, f"max abs error {err:.3g} > {atol:.3g}"


OTHER_SIZES = {
    "regions_2x5x5": dict(region_size=(2, 5, 5)),                    # regions narrower than the grid
    "regions_2x10x10": dict(region_size=(2, 10, 10)),
    "regions_1x5x10": dict(region_size=(1, 5, 10)),
    "112px_8frames": dict(img_size=112, num_frames=8, region_size=(2, 7, 7)),
    "64px_patch8": dict(img_size=64, patch_size=8, num_frames=8, region_size=(1, 4, 8)),
}
SMALL = dict(embed_dim=32, depth=2, num_heads=4)


def _clips(cfg, batch: int = 2, dtype=torch.float64) -> torch.Tensor:
    return torch.randn(batch, 3, cfg.num_frames, cfg.img_size, cfg.img_size, generator=torch.Generator().manual_seed(1),
                       dtype=dtype)


@pytest.mark.parametrize("sizes", OTHER_SIZES.values(), ids=OTHER_SIZES.keys())
def test_other_sizes_match_the_official_forward_and_partition_regions(sizes):
    torch.manual_seed(0)
    model = create_model("lgi_former_tiny", num_classes=3, token_pool="org", **SMALL, **sizes).double().eval()
    ref = ReferenceLGIFormer.like(model)
    x = _clips(model.cfg, batch=1)
    with torch.no_grad():
        tokens = ref.forward_tokens(x)
        close(model.forward_tokens(x), tokens, 1e-10)
        close(model(x), ref(x), 1e-10)                                       # 'org' features and logits
        pooled = {"region": tokens[:, :, 0], "org": tokens[:, :, 1:].flatten(1, 2), "all": tokens.flatten(1, 2)}
        for pool in ("region", "all"):
            close(model.forward_features(x, pool), ref.fc_norm(pooled[pool].mean(1)), 1e-10)
    # the partition: a permutation of the raster tokens, each region a (t, h, w) box in raster order
    cfg = model.cfg
    n = cfg.num_tokens
    regions = model.to_regions(torch.arange(n, dtype=torch.float64).view(1, n, 1))[0, :, :, 0].long()
    assert sorted(regions.flatten().tolist()) == list(range(n))
    gt, gh, gw = cfg.token_grid
    t, h, w = regions // (gh * gw), regions // gw % gh, regions % gw
    for box in (t // cfg.region_size[0], h // cfg.region_size[1], w // cfg.region_size[2]):
        assert (box == box[:, :1]).all()                                     # one box per region
    assert (regions.diff(dim=1) > 0).all()                                   # raster order inside
    assert (model.region_index[regions] == torch.arange(cfg.num_regions).view(-1, 1)).all()


PRETRAIN_SIZES = {k: OTHER_SIZES[k] for k in ("regions_2x5x5", "regions_1x5x10", "64px_patch8")}


@pytest.mark.parametrize("sizes", PRETRAIN_SIZES.values(), ids=PRETRAIN_SIZES.keys())
def test_other_sizes_pretrain_masks_targets_and_the_official_encoder_grouping(sizes):
    torch.manual_seed(0)
    model = create_model("mae_dfer_pretrain_tiny", **SMALL, **sizes, decoder_embed_dim=16, decoder_depth=1,
                         decoder_num_heads=2).double().eval()
    cfg, enc = model.cfg, model.encoder
    gen = TubeWindowMaskGenerator(cfg.token_grid, 0.9, cfg.region_size[1:])   # windows of the region's (h, w)
    mask = torch.from_numpy(np.stack([gen(np.random.RandomState(i)) for i in range(2)]))
    x = _clips(cfg)
    q, p = cfg.tubelet_size, cfg.patch_size
    with torch.no_grad():
        out = model(x, mask)
        target = reconstruction_targets(x, mask)                               # patch size inferred from the mask
        assert out.shape == target.shape == (2, int(mask[0].sum()), 3 * q * p * p)
        assert torch.equal(target, reconstruction_targets(x, mask, patch_size=p, tubelet_size=q))
        assert torch.isfinite(reconstruction_loss(out, target))
        ref = ReferenceLGIFormer.like(enc)
        nothing = torch.zeros_like(mask)
        # nothing masked: the official regrouping of the pretraining encoder, for every size
        close(enc.forward_visible(x, nothing), ref.forward_pretrain_encoder(x, nothing, enc.norm), 1e-10)
        same_as_finetune = enc.norm(enc.forward_tokens(x)[:, :, 1:].flatten(1, 2))
        visible = enc.forward_visible(x, mask)
        groups = enc.region_index[enc.visible_order(mask)].view(2, cfg.num_regions, -1)
        assert (groups == torch.arange(cfg.num_regions).view(1, -1, 1)).all()     # each group one region
        if cfg.region_grid[2] == 1:
            # regions as wide as the grid (the official masks need it): the official grouping is the
            # spatial one, and with nothing masked the pretraining encoder is the fine-tune one + norm
            close(visible, ref.forward_pretrain_encoder(x, mask, enc.norm), 1e-10)
            close(enc.forward_visible(x, nothing), same_as_finetune, 1e-10)
        else:
            # narrower regions: the official runs of raster tokens are not regions (documented)
            assert (enc.forward_visible(x, nothing) - same_as_finetune).abs().max() > 1e-3


def test_checkpoints_of_other_sizes_load_with_their_sizes_from_args_or_arguments(tmp_path):
    torch.manual_seed(0)
    sizes = dict(embed_dim=40, depth=2, num_heads=5, mlp_ratio=2.5, img_size=112, num_frames=8,
                 region_size=(1, 7, 7), num_classes=4)
    model = create_model("lgi_former_tiny", **sizes).eval()
    args = argparse.Namespace(model="golden_vit_dim40_patch16_112", input_size=112, num_frames=8, embed_dim=40,
                              num_heads=5, mlp_ratio=2.5, lg_region_size=[1, 7, 7], nb_classes=4,
                              lg_classify_token_type="org", attn_type="local_global")
    torch.save({"model": model.state_dict(), "epoch": 3, "args": args}, tmp_path / "ft.pth")
    loaded, report = load_mae_dfer(str(tmp_path / "ft.pth"))
    assert report.config == dataclasses.replace(model.cfg, token_pool="org") and report.heads_source == "args.num_heads"
    x = _clips(model.cfg, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(loaded.forward_features(x, "region"), model.forward_features(x, "region"))
    # a bare state_dict: the sizes no tensor holds are given
    torch.save(model.state_dict(), tmp_path / "bare.pth")
    with pytest.raises(ValueError, match="pass img_size, num_frames or region_size"):
        load_mae_dfer(str(tmp_path / "bare.pth"), num_heads=5)
    loaded, report = load_mae_dfer(str(tmp_path / "bare.pth"), num_heads=5, img_size=112, num_frames=8,
                                   region_size=(1, 7, 7))
    assert report.config == model.cfg
    # a pretraining checkpoint of other sizes, decoder included (its MLP ratio, head count, outputs)
    pt = create_model("mae_dfer_pretrain_tiny", **{k: v for k, v in sizes.items() if k != "num_classes"},
                      decoder_embed_dim=30, decoder_depth=1, decoder_num_heads=3)
    pargs = argparse.Namespace(input_size=112, num_frames=8, lg_region_size=[1, 7, 7], encoder_num_heads=5,
                               decoder_num_heads=3, mlp_ratio=2.5)
    torch.save({"model": pt.state_dict(), "epoch": 0, "args": pargs}, tmp_path / "pt.pth")
    loaded, report = load_mae_dfer(str(tmp_path / "pt.pth"))
    assert report.config == pt.cfg and report.decoder == pt.decoder_cfg
    pargs.input_size = 160
    torch.save({"model": pt.state_dict(), "epoch": 0, "args": pargs}, tmp_path / "pt160.pth")
    with pytest.raises(ValueError, match="pass img_size, num_frames or region_size"):
        load_mae_dfer(str(tmp_path / "pt160.pth"))
    loaded, _ = load_mae_dfer(str(tmp_path / "pt160.pth"), img_size=112)       # arguments override args
    assert loaded.cfg == pt.cfg


def test_mlp_ratios_that_float_rounding_would_break_are_rebuilt_exactly():
    """The official MLP has int(dim * mlp_ratio) hidden units; hidden / dim does not always give
    them back (int(11 * (15 / 11)) == 14), so the ratio is nudged until it does."""
    from feature_extractors.visual.lgi_former.checkpoints import _mlp_ratio

    assert int(11 * (15 / 11)) == 14
    assert int(11 * _mlp_ratio(15, 11, None)) == 15
    assert _mlp_ratio(28, 40, 0.7) == 0.7 and _mlp_ratio(27, 40, 0.7) != 0.7   # args win when they fit
    assert _mlp_ratio(2048, 512, 4.0) == 4.0


def test_cpu_inference_through_onednn_equals_the_autograd_path_and_follows_weight_changes():
    torch.manual_seed(0)
    sizes = dict(num_classes=3, img_size=112, num_frames=8, region_size=(2, 7, 7))
    model = create_model("lgi_former_tiny", **sizes).eval()
    other = create_model("lgi_former_tiny", **sizes).eval()
    x = _clips(model.cfg, batch=1, dtype=torch.float32)

    def both(m):
        with torch.inference_mode():
            fast = m.forward_tokens(x)
        plain = m.forward_tokens(x)                           # autograd on: the plain path
        return fast, plain

    fast, plain = both(model)
    close(fast, plain, 1e-5)
    with torch.inference_mode():                              # the released feature skips the last S3
        region = model.forward_features(x, "region")
    close(region, model.forward_features(x, "region"), 1e-5)
    close(region, model.fc_norm(plain[:, :, 0].mean(1)), 1e-5)
    model.load_state_dict(other.state_dict())                 # the packed weights are rebuilt
    fast2, plain2 = both(model)
    close(fast2, plain2, 1e-5)
    assert (fast2 - fast).abs().max() > 1e-2
    with torch.no_grad():
        model.blocks[0].mlp.fc1.weight.mul_(2)                # an in-place change too
        fast3 = model.forward_tokens(x)
    close(fast3, model.forward_tokens(x), 1e-5)
    assert (fast3 - fast2).abs().max() > 1e-3


def test_saved_checkpoints_have_the_official_layout_and_reload_with_their_sizes(tmp_path):
    """save_mae_dfer writes what the official code reads (its keys, checked by loading them strictly
    into the transcription of the official model) and what load_mae_dfer rebuilds exactly."""
    torch.manual_seed(0)
    model = create_model("lgi_former_tiny", **SMALL, img_size=112, num_frames=8, region_size=(2, 7, 7),
                         num_classes=5, token_pool="all").eval()
    save_mae_dfer(model, str(tmp_path / "ft.pth"))
    ckpt = load_torch_checkpoint(tmp_path / "ft.pth")
    assert set(ckpt) == {"model", "optimizer", "epoch", "scaler", "args"} and ckpt["epoch"] == "best"
    assert isinstance(ckpt["args"], argparse.Namespace) and ckpt["args"].lg_region_size == [2, 7, 7]
    ReferenceLGIFormer(img_size=112, num_frames=8, embed_dim=32, depth=2, num_heads=4, region_size=(2, 7, 7),
                       num_classes=5).load_state_dict(ckpt["model"], strict=True)
    loaded, report = load_mae_dfer(str(tmp_path / "ft.pth"))
    assert report.config == model.cfg and not report.missing and not report.unused
    x = _clips(model.cfg, batch=1, dtype=torch.float32)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    pt = create_model("mae_dfer_pretrain_tiny", **SMALL, region_size=(1, 5, 10), decoder_embed_dim=24,
                      decoder_depth=1, decoder_num_heads=3, decoder_pos_order="fixed")
    save_mae_dfer(pt, str(tmp_path / "pt.pth"), epoch=7)
    loaded, report = load_mae_dfer(str(tmp_path / "pt.pth"))
    assert report.config == pt.cfg and report.decoder == pt.decoder_cfg and report.epoch == 7
    assert all(torch.equal(v, pt.state_dict()[k]) for k, v in loaded.state_dict().items())
