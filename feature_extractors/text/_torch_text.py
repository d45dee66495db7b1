"""Helpers shared by the torch text encoders (hf_text, sentence_transformers, minilm)."""
from __future__ import annotations

from pathlib import Path

from mer.core.errors import UserError


def local_model_dir(model_path: str | None, extractor: str, needs: str, model_id: str | None = None) -> Path:
    """``model_path`` as an existing folder, or a one-line :class:`UserError` that says what the
    folder must hold and how to point at it (``model_id``: the Hugging Face id it should hold)."""
    what = f"a copy of {model_id}, i.e. {needs}" if model_id else needs
    if model_path is None or str(model_path) in ("", "???"):
        fetch = f"; to make one: huggingface-cli download {model_id} --local-dir FOLDER" if model_id else ""
        raise UserError(f"{extractor} needs model_path, a local folder with {what} (nothing is downloaded): "
                        f"set features.text.options.model_path=FOLDER{fetch}")
    path = Path(str(model_path)).expanduser()
    if not path.is_dir():
        fetch = (f" (on a machine with network: huggingface-cli download {model_id} --local-dir {path})"
                 if model_id else "")
        raise UserError(f"{extractor} model_path {path} is not a folder: put {what}, there{fetch}, or set "
                        f"features.text.options.model_path to the folder that holds it (nothing is downloaded)")
    return path


def autocast_settings(device: str):
    """``(device_type, enabled, dtype)`` for ``torch.autocast``: bf16 (fp16 where bf16 is not
    supported) on CUDA, off elsewhere (CPU autocast is slower than fp32 for these models)."""
    import torch  # deferred: loads torch only when used

    device_type = torch.device(device).type
    if device_type != "cuda":
        return device_type, False, torch.bfloat16   # unused while disabled; a dtype CPU autocast accepts
    return device_type, True, (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16)


def set_torch_threads(num_threads: int | None) -> None:
    if num_threads:
        import torch  # deferred: loads torch only when used

        # On a shared or busy CPU, fewer threads than cores is often faster: idle OpenMP
        # threads spin (1 thread ran 3x faster than 2 on a loaded 2-core machine).
        torch.set_num_threads(int(num_threads))
