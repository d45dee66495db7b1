"""SVFAP and HiCMAE figures: mer's encoders at full size against the official forward, same weights.

    python -m bench.encoders --model svfap                  # mer only: clips/s, parameters
    PYTHONPATH=/path/to/timm-0.4.12-and-einops python -m bench.encoders --model svfap \
        --official /path/to/SVFAP --threads 1
    PYTHONPATH=... python -m bench.encoders --model hicmae --official /path/to/HiCMAE --threads 1

``--official`` names a checkout of ``sunlicai/SVFAP`` or ``sunlicai/HiCMAE`` (never part of mer);
its model (``modeling_finetune.TPSBT`` as ``svfap_base_patch16_160``, 7 classes;
``modeling_finetune_av.AudioVisionTransformer`` as ``avit_dim512_patch16_160_a256`` with depths
10 / 10 / 2, 6 classes) is given seeded random weights, and mer's model loads the same state_dict. First their agreement (max abs difference of
``forward_features``; the golden tests hold the tiny models to 1e-5 in fp32), then
``forward_features`` with no grad at each batch size, the two alternating within every round,
medians over ``--repeat`` rounds after a warm-up, and the speed-up as the ratio of the medians
(beside it the median and range of the per-round ratios). The load average is printed before and
after: the figures are only as good as the machine was quiet. Nothing here asserts.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from functools import partial  # noqa: E402

from feature_extractors.visual.avit import AudioVisionTransformer, AViTConfig  # noqa: E402
from feature_extractors.visual.tpsbt import TPSBT, TPSBTConfig, count_parameters  # noqa: E402


def official_model(model: str, folder: str) -> torch.nn.Module:
    """The official full-size model from a checkout at ``folder`` (needs timm and einops)."""
    sys.path.insert(0, str(Path(folder).expanduser()))
    norm = partial(torch.nn.LayerNorm, eps=1e-6)
    if model == "svfap":
        import modeling_finetune  # the official module, from the given checkout  # noqa: PLC0415

        return modeling_finetune.TPSBT(
            img_size=160, patch_size=16, embed_dim=512, num_heads=8, mlp_ratio=4, qkv_bias=True, norm_layer=norm,
            num_classes=7, all_frames=16, tubelet_size=2, use_mean_pooling=True, stage_depths=(12, 6, 3),
            temporal_kernel_size=2, num_bottleneck_tokens=(8,)).eval()
    import modeling_finetune_av  # the official module, from the given checkout  # noqa: PLC0415

    return modeling_finetune_av.AudioVisionTransformer(
        img_size=160, patch_size=16, embed_dim=512, num_heads=8, mlp_ratio=4, qkv_bias=True,
        img_size_audio=(256, 128), patch_size_audio=16, embed_dim_audio=512, num_heads_audio=8, fusion_num_heads=8,
        norm_layer=norm, num_classes=6, all_frames=16, tubelet_size=2, depth=10, depth_audio=10, fusion_depth=2,
        attn_type="joint").eval()


def inputs(model: str, batch: int) -> tuple[torch.Tensor, ...]:
    video = torch.randn(batch, 3, 16, 160, 160)
    return (video,) if model == "svfap" else (video, torch.randn(batch, 1, 256, 128))


def _time(fn, x: tuple[torch.Tensor, ...]) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        fn(*x)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", choices=("svfap", "hicmae"), default="svfap")
    p.add_argument("--official", help="a checkout of sunlicai/SVFAP or sunlicai/HiCMAE (its model file)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mine: torch.nn.Module = (TPSBT(TPSBTConfig(num_classes=7)) if args.model == "svfap"
                             else AudioVisionTransformer(AViTConfig(num_classes=6))).eval()
    print(f"{args.model} (full size): {count_parameters(mine):,} parameters; threads {args.threads}; "
          f"load average {os.getloadavg()[0]:.2f}")
    ref = None
    if args.official:
        ref = official_model(args.model, args.official)
        with torch.no_grad():
            for prm in ref.parameters():
                prm.copy_(torch.randn_like(prm) * 0.02)
        missing, unused = mine.load_state_dict(ref.state_dict(), strict=False)
        if missing or unused:
            raise SystemExit(f"state_dicts differ: missing {missing[:3]}, unused {unused[:3]}")
        x = inputs(args.model, 2)
        with torch.no_grad():
            diff = (mine.forward_features(*x) - ref.forward_features(*x)).abs().max().item()
        print(f"agreement: max |mer - official| of forward_features = {diff:.2e}")
    print("| batch | mer clips/s | official clips/s | speed-up (ratio of medians) | per-round ratio median [min, max] |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for b in [int(v) for v in args.batch_sizes.split(",")]:
        x = inputs(args.model, b)
        _time(mine.forward_features, x)
        if ref is not None:
            _time(ref.forward_features, x)
        ours, theirs = [], []
        for _ in range(args.repeat):
            ours.append(_time(mine.forward_features, x))
            if ref is not None:
                theirs.append(_time(ref.forward_features, x))
        m = statistics.median(ours)
        if ref is None:
            print(f"| {b} | {b / m:.2f} | - | - | - |")
            continue
        o = statistics.median(theirs)
        ratios = [t / s for s, t in zip(ours, theirs)]
        print(f"| {b} | {b / m:.2f} | {b / o:.2f} | {o / m:.2f}x | {statistics.median(ratios):.2f} "
              f"[{min(ratios):.2f}, {max(ratios):.2f}] |")
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
