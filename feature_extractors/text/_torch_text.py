"""Helpers shared by the torch text encoders (hf_text, sentence_transformers, minilm)."""
from __future__ import annotations

from pathlib import Path


def local_model_dir(model_path: str | None, extractor: str, needs: str) -> Path:
    """``model_path`` as an existing folder, or an error that says what the folder must hold."""
    if model_path is None or str(model_path) in ("", "???"):
        raise ValueError(f"{extractor} needs model_path: a local folder with {needs} "
                         f"(nothing is downloaded)")
    path = Path(str(model_path)).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{extractor} model_path {path} is not a folder; it must be a local "
                                f"folder with {needs} (nothing is downloaded)")
    return path


def autocast_settings(device: str):
    """``(device_type, enabled, dtype)`` for ``torch.autocast``: bf16 (fp16 where bf16 is not
    supported) on CUDA, off elsewhere (CPU autocast is slower than fp32 for these models)."""
    import torch

    device_type = torch.device(device).type
    if device_type != "cuda":
        return device_type, False, torch.bfloat16   # unused while disabled; a dtype CPU autocast accepts
    return device_type, True, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def set_torch_threads(num_threads: int | None) -> None:
    if num_threads:
        import torch

        # On a shared or busy CPU, fewer threads than cores is often faster: idle OpenMP
        # threads spin (1 thread ran 3x faster than 2 on a loaded 2-core machine).
        torch.set_num_threads(int(num_threads))
