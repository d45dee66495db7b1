"""Fusion models: output shapes, softmax attention, and masking of absent modalities."""
import pytest
import torch

from fusion.base import build_fusion

DIMS = {"audio": 5, "text": 7, "visual": 3}


def batch(B=4, present=None):
    g = torch.Generator().manual_seed(0)
    x = {m: torch.randn(B, d, generator=g) for m, d in DIMS.items()}
    p = present or {m: torch.ones(B, dtype=torch.bool) for m in DIMS}
    return x, p


@pytest.mark.parametrize("name", ["attention", "mlp"])
@pytest.mark.parametrize("has_valence", [True, False])
def test_shapes(name, has_valence):
    model = build_fusion(name, DIMS, 6, has_valence).eval()
    out = model(*batch())
    assert out["logits"].shape == (4, 6)
    assert ("valence" in out) == has_valence
    if has_valence:
        assert out["valence"].shape == (4,)


def test_attention_weights_are_a_softmax_that_masks_absent_modalities():
    model = build_fusion("attention", DIMS, 6, True).eval()
    present = {"audio": torch.tensor([1, 1, 0, 0], dtype=torch.bool),
               "text": torch.tensor([1, 0, 1, 0], dtype=torch.bool),
               "visual": torch.tensor([1, 1, 1, 0], dtype=torch.bool)}
    out = model(*batch(present=present))
    w = out["attention"]                      # [B, M] in sorted modality order audio, text, visual
    mask = torch.stack([present[m] for m in model.modalities], 1)
    assert torch.all(w[~mask] == 0)
    assert torch.allclose(w[:3].sum(1), torch.ones(3))
    assert torch.all(w[3] == 0)               # nothing observed: no weights at all


@pytest.mark.parametrize("name", ["attention", "mlp"])
def test_absent_modality_values_are_never_read(name):
    model = build_fusion(name, DIMS, 6, True).eval()
    x, p = batch()
    p = dict(p, visual=torch.tensor([0, 0, 1, 1], dtype=torch.bool))
    a = model(x, p)
    x2 = dict(x, visual=x["visual"] + 1000.0)     # garbage in absent rows only matters where present
    b = model(x2, p)
    assert torch.allclose(a["logits"][:2], b["logits"][:2])
    assert not torch.allclose(a["logits"][2:], b["logits"][2:])


def test_mlp_distinguishes_absent_from_zero():
    model = build_fusion("mlp", DIMS, 6, False).eval()
    x, p = batch()
    x = dict(x, visual=torch.zeros(4, 3))
    absent = dict(p, visual=torch.zeros(4, dtype=torch.bool))
    assert not torch.allclose(model(x, p)["logits"], model(x, absent)["logits"])


def test_official_unnormalised_variant_available():
    model = build_fusion("attention", DIMS, 6, True, normalize="none").eval()
    w = model(*batch())["attention"]
    assert not torch.allclose(w.sum(1), torch.ones(4))


def test_unknown_fusion_lists_known():
    with pytest.raises(KeyError, match="known: .*attention.*mlp"):
        build_fusion("atention", DIMS, 6, True)
