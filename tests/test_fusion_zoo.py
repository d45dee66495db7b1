"""The fusion zoo on tiny inputs: TFN/LMF algebra, masks (absent modalities, padded steps), and
every registered model learning a tiny task."""
import pytest
import torch
import torch.nn.functional as F

from fusion.base import FUSION, build_fusion

DIMS = {"audio": 5, "text": 7, "visual": 3}
UTTERANCE = ["attention", "mlp", "tfn", "lmf", "lf_dnn"]
FRAME = ["lstm", "gru", "tcn", "mult"]


def utt_batch(B=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return ({m: torch.randn(B, d, generator=g) for m, d in DIMS.items()},
            {m: torch.ones(B, dtype=torch.bool) for m in DIMS})


def seq_batch(B=5, T=None, lengths=None, seed=0):
    """Unaligned sequences: each modality its own length; padded steps hold garbage (NaN)."""
    g = torch.Generator().manual_seed(seed)
    T = T or {"audio": 9, "text": 6, "visual": 4}
    lengths = lengths or {m: torch.tensor([T[m], 2, 1, T[m] - 1, 0])[:B] for m in DIMS}
    x, p = {}, {}
    for m, d in DIMS.items():
        mask = torch.arange(T[m])[None] < lengths[m][:, None]
        x[m] = torch.where(mask[..., None], torch.randn(B, T[m], d, generator=g), torch.tensor(float("nan")))
        p[m] = mask
    return x, p


def test_every_model_is_registered_and_declares_its_level():
    names = FUSION.names()
    assert set(UTTERANCE + FRAME) <= set(names)
    for n in UTTERANCE:
        assert FUSION.get(n).input_level == "utterance", n
    for n in FRAME:
        assert FUSION.get(n).input_level == "frame", n


def test_lmf_equals_its_explicit_tensor_form():
    torch.manual_seed(0)
    model = build_fusion("lmf", DIMS, 6, True, hidden_dim=4, fusion_dim=3, rank=3, dropout=0.0).eval()
    x, p = utt_batch(B=4)
    p = dict(p, visual=torch.tensor([True, False, True, True]))
    zs = model.factor_inputs(x, p)
    low_rank = model.fuse(zs)
    W = model.full_weight()                                       # [4, 4, 4, hidden]
    assert W.shape == (4, 4, 4, 4)
    explicit = torch.einsum("bi,bj,bk,ijko->bo", zs["audio"], zs["text"], zs["visual"], W) + model.bias
    torch.testing.assert_close(low_rank, explicit, rtol=1e-5, atol=1e-5)
    assert torch.all(zs["visual"][1, 1:] == 0) and zs["visual"][1, 0] == 1   # absent: only the constant


def test_tfn_tensor_holds_every_interaction_and_absent_keeps_lower_orders():
    model = build_fusion("tfn", DIMS, 6, False, fusion_dim=2, hidden_dim=8, dropout=0.0).eval()
    x, p = utt_batch(B=2)
    p = dict(p, text=torch.tensor([True, False]))
    fused = model.fused(x, p).view(2, 3, 3, 3)                    # (1 + fusion_dim) per modality
    za, zt, zv = (model.subnets[m](x[m]) for m in ("audio", "text", "visual"))
    assert torch.allclose(fused[0, 0, 0, 0], torch.tensor(1.0))
    torch.testing.assert_close(fused[0, 1:, 0, 0], za[0])
    torch.testing.assert_close(fused[0, 1:, 1:, 1:], torch.einsum("i,j,k->ijk", za[0], zt[0], zv[0]))
    assert torch.all(fused[1, :, 1:, :] == 0)                     # text absent: no term with text
    with pytest.raises(ValueError, match="lmf"):
        build_fusion("tfn", {f"m{i}": 4 for i in range(6)}, 6, False, fusion_dim=16)


@pytest.mark.parametrize("name", UTTERANCE)
def test_utterance_models_never_read_absent_rows(name):
    model = build_fusion(name, DIMS, 6, True).eval()
    x, p = utt_batch(B=4)
    p = dict(p, visual=torch.tensor([False, False, True, True]))
    a = model(x, p)
    b = model(dict(x, visual=x["visual"] + 1000.0), p)
    torch.testing.assert_close(a["logits"][:2], b["logits"][:2])
    torch.testing.assert_close(a["valence"][:2], b["valence"][:2])
    assert not torch.allclose(a["logits"][2:], b["logits"][2:])


@pytest.mark.parametrize("name", FRAME)
def test_padded_steps_never_change_outputs(name):
    model = build_fusion(name, DIMS, 6, True).eval()
    x, p = seq_batch()
    a = model(x, p)                                               # padding holds NaN
    assert torch.isfinite(a["logits"]).all() and torch.isfinite(a["valence"]).all()
    zeros = {m: torch.nan_to_num(v, nan=0.0) for m, v in x.items()}
    torch.testing.assert_close(model(zeros, p)["logits"], a["logits"])
    # extra all-padding steps at the end change nothing either
    wider = {m: F.pad(v, (0, 0, 0, 3), value=7.0) for m, v in zeros.items()}
    wider_p = {m: F.pad(v, (0, 3), value=False) for m, v in p.items()}
    torch.testing.assert_close(model(wider, wider_p)["logits"], a["logits"], rtol=1e-5, atol=1e-5)
    # each row depends on its own steps only: a row alone gives what it gave in the batch
    one = {m: zeros[m][:1] for m in DIMS}, {m: p[m][:1] for m in DIMS}
    torch.testing.assert_close(model(*one)["logits"], a["logits"][:1], rtol=1e-5, atol=1e-5)
    # but real steps matter
    changed = dict(zeros, text=zeros["text"] + p["text"][..., None] * 3.0)
    assert not torch.allclose(model(changed, p)["logits"][0], a["logits"][0])


@pytest.mark.parametrize("name", FRAME)
def test_frame_models_take_aligned_single_step_and_single_modality_inputs(name):
    model = build_fusion(name, DIMS, 4, False).eval()
    aligned = seq_batch(T={m: 6 for m in DIMS}, lengths={m: torch.tensor([6, 3, 1, 5, 2]) for m in DIMS})
    assert model(*aligned)["logits"].shape == (5, 4)
    one_step = ({m: torch.randn(3, 1, d) for m, d in DIMS.items()}, {m: torch.ones(3, 1, dtype=torch.bool)
                                                                     for m in DIMS})
    assert model(*one_step)["logits"].shape == (3, 4)
    solo = build_fusion(name, {"text": 7}, 4, True).eval()
    x, p = seq_batch()
    assert solo({"text": torch.nan_to_num(x["text"])}, {"text": p["text"]})["valence"].shape == (5,)


def _tiny_task(level, n=48, seed=0):
    """Class = sign pattern of the text evidence; at frame level the evidence sits in one step."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    v = y.float() - 1.0
    if level == "utterance":
        x = {m: torch.randn(n, d, generator=g) * 0.3 for m, d in DIMS.items()}
        x["text"][:, :3] += F.one_hot(y, 3).float() * 2
        return x, {m: torch.ones(n, dtype=torch.bool) for m in DIMS}, y, v
    T = 6
    x = {m: torch.randn(n, T, d, generator=g) * 0.3 for m, d in DIMS.items()}
    where = torch.randint(0, T, (n,), generator=g)
    x["text"][torch.arange(n), where, :3] += F.one_hot(y, 3).float() * 3
    return x, {m: torch.ones(n, T, dtype=torch.bool) for m in DIMS}, y, v


@pytest.mark.parametrize("name", UTTERANCE + FRAME)
def test_every_model_lowers_its_loss_on_tiny_data(name):
    torch.manual_seed(0)
    cls = FUSION.get(name)
    small = {"mult": {"hidden_dim": 16, "layers": 1}, "tcn": {"hidden_dim": 32}}.get(name, {})
    model = build_fusion(name, DIMS, 3, True, **small)
    x, p, y, v = _tiny_task(cls.input_level)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def loss_now():
        out = model(x, p)
        return F.cross_entropy(out["logits"], y) + F.mse_loss(out["valence"], v)

    model.eval()
    with torch.no_grad():
        before = float(loss_now())
    model.train()
    for _ in range(40):
        opt.zero_grad()
        loss = loss_now()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = float(loss_now())
    assert after < 0.6 * before, (before, after)
