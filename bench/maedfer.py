"""MAE-DFER LGI-Former figures: speed against a plain transcription of the official code, size,
agreement with the official outputs on the device, pretraining step time, extractor throughput.

    python -m bench.maedfer                                   # CPU, 2 threads: speed (B=1, 4) + model
    python -m bench.maedfer --repeat 7 --compile              # also a torch.compile'd mer encoder
    python -m bench.maedfer --device cuda --batch-sizes 1,16,64 --precisions fp32,bf16
    python -m bench.maedfer --sections golden,pretrain,extract

Sections (each printed as a small table):

* ``speed``     full-size ``forward_features`` (random weights, inference mode) of mer's encoder
                and of :mod:`bench.maedfer_reference` (the official forward written out plainly:
                separate q/kv products, explicit softmax attention, slice copies and slice
                assignment) with the same weights; first their agreement (max abs difference,
                asserted <= 1e-5 for features and logits in float32), then clips per second for
                each batch size, runs alternating between the two, medians over ``--repeat``
                runs after a warm-up, and the speed-up (ratio of the medians; beside it the median
                and range of the ratios within a round, which a machine shared with other work
                disturbs less). On CUDA each precision runs under autocast. The
                load average is printed before and after: the figures are only as good as the
                machine was quiet;
* ``model``     parameters of the released variants and multiply-accumulates of one 16x160x160
                clip (``torch.utils.flop_counter``, FLOPs / 2; the paper counts MACs: "50 G"), and
                those mer's CPU path does for the released feature;
* ``golden``    max abs difference, on the device and in each precision, between the tiny
                official-format checkpoint's outputs and the official code's fp64 outputs
                (../shared/golden/maedfer; the CPU tests require <= 1e-5 in fp32);
* ``pretrain``  one full pretraining step (targets, forward, loss, backward, AdamW; fp16 AMP with
                a gradient scaler on CUDA, as released): seconds per step, clips per second, peak
                memory, and what one epoch of VoxCeleb2 dev (1,091,726 clips) would take;
* ``extract``   the ``mae_dfer`` extractor end to end on synthetic organiser-style face tracks
                (``.npy`` crops, 112 px, 100 frames: read, official views, resize, forward), with
                a full-size random checkpoint written in the official layout.

CUDA timings synchronise. Nothing here asserts but the agreement check: see the tests.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

if __package__ in (None, ""):   # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch

from bench.maedfer_reference import ReferenceLGIFormer
from feature_extractors.visual.lgi_former import count_parameters, create_model, load_mae_dfer

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "golden" / "maedfer"   # read in place
VOXCELEB2_CLIPS = 1_091_726
DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def table(title: str, head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(head)] if rows else [len(h) for h in head]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed(fn: Callable[[], object], device: str, repeat: int) -> float:
    """Median seconds of ``fn`` over ``repeat`` runs after one warm-up."""
    fn()
    sync(device)
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_mb(device: str) -> str:
    if not device.startswith("cuda"):
        return "-"
    return f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"


def reset_peak(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def autocast(device: str, precision: str):
    dtype = DTYPES[precision]
    return torch.autocast(torch.device(device).type, dtype=dtype or torch.float32, enabled=dtype is not None)


# --- sections -----------------------------------------------------------------------------------

def model_section() -> None:
    from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

    # torch counts the CUDA attention kernels but not the CPU one; count it the same way.
    def cpu_sdpa(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return sdpa_flop_count(query_shape, key_shape, value_shape)

    cpu_attention = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: cpu_sdpa}

    def gmacs(fn: Callable[[], object]) -> float:
        counter = FlopCounterMode(display=False, custom_mapping=cpu_attention)
        with counter, torch.no_grad():
            fn()
        return counter.get_total_flops() / 2e9

    rows = []
    x = torch.zeros(1, 3, 16, 160, 160)
    for name, kw in (("lgi_former_base (7 classes)", {"num_classes": 7}), ("lgi_former_base (no head)", {}),
                     ("mae_dfer_pretrain_base", {})):
        variant = name.split(" ")[0]
        model = create_model(variant, init=False, **kw).eval()
        macs = mer_macs = "-"
        if variant == "lgi_former_base":
            for blk in model.blocks:          # count the plain path: the counter does not see oneDNN's ops
                blk.use_onednn = False
            macs = f"{gmacs(lambda: model.forward_features(x, 'all')):.2f}"      # every token, as the official forward
            # the released feature as mer computes it on a CPU: the last block's local tokens are skipped
            # (counted) and S3 is re-associated (oneDNN path, its saving computed from the shapes)
            cfg = model.cfg
            n, c, keys = cfg.num_tokens, cfg.embed_dim, cfg.num_heads * cfg.num_regions
            fold_saving = 2 * n * c * c + 2 * n * c * cfg.num_regions - (2 * n * keys * c + 2 * keys * c * c // cfg.num_heads)
            mer_macs = f"{gmacs(lambda: model.forward_features(x, 'region')) - (cfg.depth - 1) * fold_saving / 1e9:.2f}"
        rows.append((name, f"{count_parameters(model):,}", macs, mer_macs))
    table("model (official: 84,878,343 / 84,874,752 / 92,760,192 parameters; paper: 85 M, 50 G MACs)",
          ("variant", "parameters", "GMACs/clip", "mer, region feature on CPU"), rows)


def golden_section(device: str, precisions: Sequence[str]) -> None:
    if not FIXTURES.is_dir():
        print(f"golden check skipped: {FIXTURES} is absent")
        return
    z = torch.load(FIXTURES / "maedfer_tiny_golden.pt", map_location="cpu", weights_only=True)
    feat64, tokens64 = z["ft_region_feature_fp64"].numpy(), z["ft_last_block_tokens_fp64"].numpy()
    enc64 = z["pt_encoder_visible_fp64"].numpy()
    mask = z["pt_mask"].to(device)
    x = z["input"].to(device)
    ft, _ = load_mae_dfer(str(FIXTURES / "maedfer_tiny_finetune.pth"))
    pt, _ = load_mae_dfer(str(FIXTURES / "maedfer_tiny_pretrain.pth"))
    ft, pt = ft.to(device), pt.to(device)
    rows = []
    for precision in precisions:
        with torch.no_grad(), autocast(device, precision):
            feat = ft.forward_features(x).double().cpu().numpy()
            tokens = ft.forward_tokens(x).double().cpu().numpy()
            enc = pt.encoder.forward_visible(x, mask).double().cpu().numpy()
        rows.append((precision, f"{np.abs(feat - feat64).max():.2e}", f"{np.abs(tokens - tokens64).max():.2e}",
                     f"{np.abs(enc - enc64).max():.2e}"))
    table(f"golden: max abs difference from the official fp64 outputs on {device} "
          f"(TF32 matmul {torch.backends.cuda.matmul.allow_tf32}, cuDNN TF32 {torch.backends.cudnn.allow_tf32})",
          ("precision", "features", "last-block tokens", "pretrain encoder"), rows)


def load_average() -> str:
    try:
        return "load average " + " ".join(f"{v:.2f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "load average unknown"


def speed_section(device: str, batch_sizes: Sequence[int], precisions: Sequence[str], repeat: int,
                  compile_mer: bool) -> None:
    torch.manual_seed(0)
    mer = create_model("lgi_former_base", num_classes=7).eval().to(device)
    ref = ReferenceLGIFormer.like(mer.cpu()).to(device)
    mer.to(device)
    models: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {"reference": ref.forward_features,
                                                                 "mer": mer.forward_features}
    if compile_mer:
        # inductor compiles the plain path (it packs and fuses on its own; oneDNN's opaque packed
        # weights are not traceable)
        plain = create_model("lgi_former_base", num_classes=7, init=False).eval()
        plain.load_state_dict(mer.state_dict())
        for blk in plain.blocks:
            blk.use_onednn = False
        compiled = torch.compile(plain.to(device).forward_features)
        x = torch.randn(1, 3, 16, 160, 160, device=device)
        t0 = time.perf_counter()
        with torch.inference_mode():
            compiled(x)
        print(f"torch.compile of mer's encoder: first call {time.perf_counter() - t0:.0f} s")
        models["mer compiled"] = compiled

    x = torch.randn(2, 3, 16, 160, 160, device=device)
    feats = {}
    with torch.inference_mode():
        for name, f in models.items():
            feat = f(x)
            feats[name] = (feat.double(), (ref if name == "reference" else mer).head(feat.to(device)).double())
    rows = []
    for name, (feat, logits) in feats.items():
        if name == "reference":
            continue
        d_feat = (feat - feats["reference"][0]).abs().max().item()
        d_logit = (logits - feats["reference"][1]).abs().max().item()
        rows.append((name, f"{d_feat:.2e}", f"{d_logit:.2e}"))
        if not device.startswith("cuda"):
            assert d_feat <= 1e-5 and d_logit <= 1e-5, f"{name} differs from the reference: {d_feat}, {d_logit}"
    table(f"agreement with the reference on {device} (float32, same weights, 2 random clips)",
          ("model", "features max abs diff", "logits max abs diff"), rows)

    print(f"\n{load_average()} (before)")
    rows = []
    for precision in precisions:
        for b in batch_sizes:
            x = torch.randn(b, 3, 16, 160, 160, device=device)
            times: dict[str, list[float]] = {k: [] for k in models}
            peaks: dict[str, str] = {}
            with torch.inference_mode(), autocast(device, precision):
                for name, f in models.items():            # warm-up (and oneDNN weight packing)
                    reset_peak(device)
                    f(x)
                    sync(device)
                    peaks[name] = peak_mb(device)
                for r in range(repeat):
                    names = list(models) if r % 2 == 0 else list(reversed(models))
                    for name in names:
                        t0 = time.perf_counter()
                        models[name](x)
                        sync(device)
                        times[name].append(time.perf_counter() - t0)
            med = {k: statistics.median(v) for k, v in times.items()}
            for name in models:
                speedup, rounds = "1.00", "-"
                if name != "reference":
                    per_round = sorted(r / m for r, m in zip(times["reference"], times[name]))
                    speedup = f"{med['reference'] / med[name]:.2f}"
                    rounds = f"{statistics.median(per_round):.2f} [{per_round[0]:.2f}-{per_round[-1]:.2f}]"
                rows.append((precision, str(b), name, f"{med[name]:.3f}", f"{b / med[name]:.2f}", speedup, rounds,
                             peaks[name]))
    threads = f"{torch.get_num_threads()} threads" if not device.startswith("cuda") else torch.cuda.get_device_name()
    table(f"speed: lgi_former_base forward_features on {device} ({threads}), median of {repeat} runs",
          ("precision", "batch", "model", "s/batch", "clips/s", "x reference", "per round: median [range]",
           "peak MB"), rows)
    print(f"{load_average()} (after)")


def pretrain_section(device: str, batch: int, amp: str, repeat: int) -> None:
    from feature_extractors.visual.lgi_former import TubeWindowMaskGenerator, reconstruction_loss, reconstruction_targets
    from mer.pretraining.mae_dfer import param_groups

    model = create_model("mae_dfer_pretrain_base").to(device).train()
    opt = torch.optim.AdamW(param_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    on_cuda = device.startswith("cuda")
    amp = amp if on_cuda else "fp32"
    scaler = torch.amp.GradScaler("cuda", enabled=on_cuda and amp == "fp16")
    gen = TubeWindowMaskGenerator()
    x = torch.randn(batch, 3, 16, 160, 160, device=device).clamp_(-2, 2)
    mask = torch.from_numpy(np.stack([gen(np.random.RandomState(i)) for i in range(batch)])).to(device)
    reset_peak(device)

    def step() -> None:
        with torch.no_grad():
            target = reconstruction_targets(x, mask)
        with autocast(device, amp):
            loss = reconstruction_loss(model(x, mask).float(), target)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    seconds = timed(step, device, repeat)
    epoch_h = VOXCELEB2_CLIPS / batch * seconds / 3600
    table(f"pretrain: one step of mae_dfer_pretrain_base on {device} (data loading excluded)",
          ("amp", "batch", "s/step", "clips/s", "peak MB", "VoxCeleb2 epoch (h)"),
          [(amp, str(batch), f"{seconds:.3f}", f"{batch / seconds:.1f}", peak_mb(device), f"{epoch_h:.2f}")])


def extract_section(device: str, n: int, precision: str, batch: int) -> None:
    from feature_extractors.visual.mae_dfer import MAEDFERExtractor
    from mer.core.samples import Sample

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = create_model("lgi_former_base", num_classes=7)
        ckpt = root / "checkpoint-best.pth"
        torch.save({"model": model.state_dict(), "epoch": "best",
                    "args": argparse.Namespace(model="vit_base_dim512_no_depth_patch16_160")}, ckpt)
        rng = np.random.default_rng(0)
        samples = []
        for i in range(n):
            folder = root / f"clip_{i:04d}"
            folder.mkdir()
            np.save(folder / f"clip_{i:04d}.npy", rng.integers(0, 256, (100, 112, 112, 3), dtype=np.uint8))
            samples.append(Sample(f"clip_{i:04d}", "test", face_path=str(folder)))
        ex = MAEDFERExtractor(weights=str(ckpt), precision=precision, batch_size=batch)
        t0 = time.perf_counter()
        ex.setup(device)
        setup_s = time.perf_counter() - t0
        ex.extract_batch(samples[:batch])                                   # warm-up
        sync(device)
        t0 = time.perf_counter()
        load_s = 0.0
        for i in range(0, n, batch):
            chunk = samples[i:i + batch]
            t1 = time.perf_counter()
            inputs = [ex.load(s) for s in chunk]
            load_s += time.perf_counter() - t1
            ex.forward(chunk, inputs)
        sync(device)
        total = time.perf_counter() - t0
    table(f"extract: mae_dfer on {n} face tracks (2 views of 16 frames each) on {device}, one process",
          ("precision", "batch", "setup s", "clips/s", "load share"),
          [(precision, str(batch), f"{setup_s:.2f}", f"{n / total:.1f}", f"{load_s / total:.0%}")])


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sections", default="speed,model",
                        help="comma-separated: speed, model, golden, pretrain, extract")
    parser.add_argument("--batch-sizes", default="1,4")
    parser.add_argument("--precisions", default="fp32", help="comma-separated: fp32, bf16, fp16")
    parser.add_argument("--pretrain-batch", type=int, default=2)
    parser.add_argument("--amp", default="fp16", help="pretraining autocast on CUDA: fp16 | bf16 | fp32")
    parser.add_argument("--extract-n", type=int, default=16)
    parser.add_argument("--extract-batch", type=int, default=8)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--compile", action="store_true", help="also time torch.compile(mer's encoder)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    sections = set(args.sections.split(","))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"{os.cpu_count()} CPU cores"
    print(f"device {args.device} ({name}); torch {torch.__version__}; {torch.get_num_threads()} threads")
    if "speed" in sections:
        speed_section(args.device, [int(b) for b in args.batch_sizes.split(",")], precisions, args.repeat,
                      args.compile)
    if "model" in sections:
        model_section()
    if "golden" in sections:
        golden_section(args.device, precisions)
    if "pretrain" in sections:
        pretrain_section(args.device, args.pretrain_batch, args.amp, args.repeat)
    if "extract" in sections:
        extract_section(args.device, args.extract_n, precisions[-1], args.extract_batch)


if __name__ == "__main__":
    main()
