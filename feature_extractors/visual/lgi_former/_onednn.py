"""CPU inference through oneDNN: the packed weights and fused products :class:`~.model.LGBlock`
uses without autograd on a CPU in float32."""
from __future__ import annotations

import weakref
from typing import Any

import torch
import torch.nn as nn

# On CPUs PyTorch's float32 ``F.linear`` is MKL's sgemm after a copy of the bias into the output,
# and GELU and the residual add are further passes over the activations. oneDNN's matmul on
# weights packed once into its blocked layout adds the bias, the exact GELU and the residual in
# the same pass; its products run at the CPU's peak (about 50 GMAC/s a core here, as MKL's with
# one thread) and hold up better than MKL's with two threads on a busy machine. Same float32
# products, differences are rounding (about 1e-6). Used only where it cannot change anything else:
# CPU, float32, no autograd (``torch.no_grad``/``torch.inference_mode``), no autocast, no drop path.
# Packed copies live in a side table keyed by the block (never in the module or its state_dict)
# and are rebuilt when a parameter changes (its storage or version counter), e.g. after
# ``load_state_dict`` or an optimiser step; they double the blocks' weight memory.

_ONEDNN = (torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
           and hasattr(torch.ops.mkldnn, "_reorder_linear_weight"))
_PACKED: "weakref.WeakKeyDictionary[nn.Module, tuple[tuple, dict[str, Any]]]" = weakref.WeakKeyDictionary()


def _onednn_applies(x: torch.Tensor) -> bool:
    return (_ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_grad_enabled()
            and not torch.is_autocast_enabled("cpu"))


def _pack(weight: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach().contiguous(), None)


def _dnn_linear(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor | None], act: str = "none") -> torch.Tensor:
    """``act(x @ W.T + b)`` with a packed weight; ``act`` 'none' or 'gelu' (exact, erf)."""
    weight, bias = packed
    if act == "gelu":
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "gelu", [], "none")
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def _dnn_linear_add(x: torch.Tensor, packed: tuple[torch.Tensor, torch.Tensor | None],
                    residual: torch.Tensor) -> torch.Tensor:
    """``residual + (x @ W.T + b)`` in one pass (``residual`` may be a strided view)."""
    weight, bias = packed
    return torch.ops.mkldnn._linear_pointwise.binary(x, residual, weight, bias, "add")


def _packed_weights(block: nn.Module) -> dict[str, Any]:
    """An :class:`~.model.LGBlock`'s weights prepared for CPU inference, built on first use and
    after any parameter change: oneDNN-packed ``(weight, bias)`` pairs for :func:`_dnn_linear` (a
    self-attention's q and kv stacked into one matrix with bias ``[q_bias, 0, v_bias]``), and S3's
    q and output projections split by head for :meth:`~.model.LGBlock._cross_attend_folded`."""
    key = tuple((p.data_ptr(), p._version) for p in block.parameters())
    hit = _PACKED.get(block)
    if hit is not None and hit[0] == key:
        return hit[1]
    with torch.no_grad():
        packed: dict[str, Any] = {}
        for name in ("first", "second"):
            attn = getattr(block, f"{name}_attn")
            packed[f"{name}_qkv"] = (_pack(torch.cat((attn.q.weight, attn.kv.weight))), attn.qkv_bias().detach())
            packed[f"{name}_proj"] = (_pack(attn.proj.weight), attn.proj.bias.detach())
        first, third = block.first_attn, block.third_attn
        packed["first_kv"] = (_pack(first.kv.weight), first.kv_bias().detach())
        packed["third_kv"] = (_pack(third.kv.weight), third.kv_bias().detach())
        heads = third.num_heads
        dim = third.q.weight.shape[0]
        scale = (dim // heads) ** -0.5
        packed["third_q_heads"] = (third.q.weight * scale).view(heads, dim // heads, dim).contiguous()   # [H, d, C]
        packed["third_qb_heads"] = (third.q_bias * scale).view(heads, dim // heads, 1).contiguous()     # [H, d, 1]
        packed["third_proj_heads"] = third.proj.weight.view(dim, heads, -1).permute(1, 2, 0).contiguous()  # [H, d, C]
        packed["third_proj_bias_share"] = (third.proj.bias / heads).detach()
        packed["fc1"] = (_pack(block.mlp.fc1.weight), block.mlp.fc1.bias.detach())
        packed["fc2"] = (_pack(block.mlp.fc2.weight), block.mlp.fc2.bias.detach())
    _PACKED[block] = (key, packed)
    return packed
