"""SVFAP TPSBT figures: mer's encoder at full size against the official forward, same weights.

    python -m bench.svfap                                   # mer only: clips/s, parameters
    PYTHONPATH=/path/to/timm-0.4.12-and-einops python -m bench.svfap --official /path/to/SVFAP --threads 1

``--official`` names a checkout of ``sunlicai/SVFAP`` (never part of mer); its
``modeling_finetune.TPSBT`` is built as ``svfap_base_patch16_160`` (7 classes), given seeded random
weights, and mer's TPSBT loads the same state_dict. First their agreement (max abs difference of
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

from feature_extractors.visual.tpsbt import TPSBT, TPSBTConfig, count_parameters  # noqa: E402


def official_model(folder: str) -> torch.nn.Module:
    """The official full-size model from a checkout at ``folder`` (needs timm and einops)."""
    from functools import partial  # deferred: only with --official

    sys.path.insert(0, str(Path(folder).expanduser()))
    import modeling_finetune  # the official module, from the given checkout  # noqa: PLC0415

    return modeling_finetune.TPSBT(
        img_size=160, patch_size=16, embed_dim=512, num_heads=8, mlp_ratio=4, qkv_bias=True,
        norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_classes=7, all_frames=16, tubelet_size=2,
        use_mean_pooling=True, stage_depths=(12, 6, 3), temporal_kernel_size=2, num_bottleneck_tokens=(8,)).eval()


def _time(fn, x) -> float:
    t0 = time.perf_counter()
    with torch.no_grad():
        fn(x)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--official", help="a checkout of sunlicai/SVFAP (its modeling_finetune.py)")
    p.add_argument("--threads", type=int, default=torch.get_num_threads())
    p.add_argument("--batch-sizes", default="1,4")
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    mine = TPSBT(TPSBTConfig(num_classes=7)).eval()
    print(f"TPSBT (svfap_base_patch16_160): {count_parameters(mine):,} parameters; threads {args.threads}; "
          f"load average {os.getloadavg()[0]:.2f}")
    ref = None
    if args.official:
        ref = official_model(args.official)
        with torch.no_grad():
            for prm in ref.parameters():
                prm.copy_(torch.randn_like(prm) * 0.02)
        missing, unused = mine.load_state_dict(ref.state_dict(), strict=False)
        if missing or unused:
            raise SystemExit(f"state_dicts differ: missing {missing[:3]}, unused {unused[:3]}")
        x = torch.randn(2, 3, 16, 160, 160)
        with torch.no_grad():
            diff = (mine.forward_features(x) - ref.forward_features(x)).abs().max().item()
        print(f"agreement: max |mer - official| of forward_features = {diff:.2e}")
    print("| batch | mer clips/s | official clips/s | speed-up (ratio of medians) | per-round ratio median [min, max] |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for b in [int(v) for v in args.batch_sizes.split(",")]:
        x = torch.randn(b, 3, 16, 160, 160)
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
