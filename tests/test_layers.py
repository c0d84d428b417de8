"""Attention layers: shapes, identity at init, recorded weights, gradients, bad input, toy training."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from vidattn.errors import VidattnError
from vidattn.layers import (
    HardTemporalAttention,
    ShapeError,
    SpatialAttention,
    SpatialTransformer,
    STCAttention,
    TemporalSelfAttention,
    collect_attention,
    create_attn,
    list_attn,
)
from vidattn.layers._base import GatingAttention

C, SHAPE = 16, (2, 16, 6, 8, 8)  # (B, C, T, H, W)

# name -> {recorded key suffix: (shape as a function of B, C, T, H, W, kind)}; kind: sigmoid | softmax | mask | theta
EXPECTED = {
    "se": {"": ("BC", "sigmoid")},
    "eca": {"": ("BC", "sigmoid")},
    "cbam": {"channel": ("BC", "sigmoid"), "spatial": ("BTHW", "sigmoid")},
    "spatial": {"": ("BTHW", "sigmoid")},
    "local": {"": ("BTHW", "sigmoid")},
    "temporal": {"": ("BT", "sigmoid")},
    "tsa": {"": ("B4TT", "softmax")},
    "nonlocal": {"": ("BNM", "softmax")},
    "stc": {"channel": ("BC", "sigmoid"), "spatial": ("BTHW", "sigmoid"), "temporal": ("BT", "sigmoid")},
    "hard": {"": ("BT", "softmax"), ":mask": ("BT", "mask")},
    "stn": {"": ("BT23", "theta")},
}


def _shape(code: str, b: int, c: int, t: int, h: int, w: int) -> tuple[int, ...]:
    dims = {"B": b, "C": c, "T": t, "H": h, "W": w, "N": t * h * w, "M": t * (h // 2) * (w // 2)}
    return tuple(dims[ch] if ch in dims else int(ch) for ch in code)


def test_registry_covers_the_family():
    assert set(EXPECTED) == set(list_attn())


@pytest.mark.parametrize("name", [None, "none", "", "None"])
def test_create_attn_none(name):
    assert create_attn(name, C) is None


def test_create_attn_unknown_name_suggests():
    with pytest.raises(VidattnError, match="did you mean 'stc'"):
        create_attn("stcc", C)
    with pytest.raises(VidattnError, match="does not take|unexpected"):
        create_attn("se", C, not_an_arg=3)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_identity_at_init_and_shape(name):
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    kw = {"k": SHAPE[2]} if name == "hard" else {}  # hard attention is the identity only when it keeps every frame
    layer = create_attn(name, C, **kw).eval()
    with torch.no_grad():
        y = layer(x)
    assert y.shape == x.shape
    assert (y - x).abs().max().item() < 1e-5


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_recorded_weights_shape_and_range(name):
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    layer = create_attn(name, C, identity_init=False)
    assert not any(isinstance(v, torch.Tensor) for v in vars(layer).values())
    with collect_attention(layer) as weights:
        layer(x)
    assert set(weights) == set(EXPECTED[name])
    b, c, t, h, w = SHAPE
    for key, (code, kind) in EXPECTED[name].items():
        wt = weights[key]
        assert not wt.requires_grad
        assert tuple(wt.shape) == _shape(code, b, c, t, h, w), key
        assert torch.isfinite(wt).all()
        if kind == "sigmoid":
            assert wt.min() >= 0 and wt.max() <= 1
        elif kind == "softmax":
            assert wt.min() >= 0
            torch.testing.assert_close(wt.sum(-1), torch.ones(wt.shape[:-1]))
        elif kind == "mask":
            assert set(wt.unique().tolist()) <= {0.0, 1.0}
            assert (wt.sum(-1) == t // 2).all()
    # nothing is kept once the block is over
    layer(x)
    assert all(m._attn_sink is None for m in layer.modules() if hasattr(m, "_attn_sink"))


@pytest.mark.parametrize("identity_init", [True, False])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_backward_reaches_every_parameter(name, identity_init):
    torch.manual_seed(0)
    x = torch.randn(SHAPE, requires_grad=True)
    layer = create_attn(name, C, identity_init=identity_init).train()
    layer(x).square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        if not identity_init:
            assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bad_shapes_raise(name):
    layer = create_attn(name, C)
    with pytest.raises(ShapeError, match=r"\(B, C, T, H, W\)"):
        layer(torch.randn(2, C, 8, 8))  # an image batch, not a clip
    with pytest.raises(ShapeError, match="expected 16 channels, got 8"):
        layer(torch.randn(2, 8, 4, 8, 8))


@pytest.mark.parametrize("name", ["se", "eca", "spatial", "local", "temporal"])
def test_gating_layers_multiply_by_their_gate(name):
    """The gating layers share one forward: ``x * gate(x)``, after the input check."""
    torch.manual_seed(0)
    layer = create_attn(name, C, identity_init=False).eval()
    assert isinstance(layer, GatingAttention)
    x = torch.randn(SHAPE)
    torch.testing.assert_close(layer(x), x * layer.gate(x))
    with pytest.raises(ShapeError):
        layer(torch.randn(2, C + 1, 6, 8, 8))


def test_shape_error_is_a_value_error():
    assert issubclass(ShapeError, ValueError) and issubclass(ShapeError, VidattnError)


@pytest.mark.parametrize("mode", ["sequential", "parallel"])
@pytest.mark.parametrize("order", ["cst", "tsc", "ct"])
def test_stc_order_and_mode(order, mode):
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    layer = STCAttention(C, order=order, mode=mode).eval()
    assert torch.equal(layer(x), x)  # identity at init, exactly
    layer = STCAttention(C, order=order, mode=mode, identity_init=False)
    with collect_attention(layer) as weights:
        y = layer(x)
    assert y.shape == x.shape
    assert set(weights) == {{"c": "channel", "s": "spatial", "t": "temporal"}[k] for k in order}


def test_stc_parallel_equals_product_of_gates():
    torch.manual_seed(0)
    x = torch.randn(SHAPE)
    layer = STCAttention(C, mode="parallel", identity_init=False)
    expected = x * layer.channel.gate(x) * layer.spatial.gate(x) * layer.temporal.gate(x)
    torch.testing.assert_close(layer(x), expected)


def test_stc_rejects_bad_order():
    with pytest.raises(ValueError, match="order"):
        STCAttention(C, order="csx")
    with pytest.raises(ValueError, match="mode"):
        STCAttention(C, mode="both")


def test_spatial_3d_kernel_mixes_frames():
    torch.manual_seed(0)
    layer2d = SpatialAttention(C, kernel_size=(1, 7, 7), identity_init=False)
    layer3d = create_attn("spatial3d", C, identity_init=False)
    assert layer3d.conv.kernel_size == (3, 7, 7)
    x = torch.randn(SHAPE)
    x2 = x.clone()
    x2[:, :, 0] += 5.0  # change frame 0 only
    for layer, frame1_changes in ((layer2d, False), (layer3d, True)):
        with collect_attention(layer) as a:
            layer(x)
        with collect_attention(layer) as b:
            layer(x2)
        assert (not torch.allclose(a[""][:, 1], b[""][:, 1])) == frame1_changes


def test_tsa_positional_encoding_breaks_permutation_symmetry():
    torch.manual_seed(0)
    x = torch.randn(1, C, 5, 2, 2)
    perm = torch.tensor([4, 2, 0, 1, 3])
    for pos, equivariant in (("none", True), ("sincos", False), ("learned", False)):
        layer = TemporalSelfAttention(C, heads=4, pos=pos, identity_init=False).eval()
        out_perm = layer(x[:, :, perm])
        assert torch.allclose(out_perm, layer(x)[:, :, perm], atol=1e-5) == equivariant, pos
    with pytest.raises(ValueError, match="divisible"):
        TemporalSelfAttention(10, heads=4)


def test_hard_attention_modes_and_estimators():
    torch.manual_seed(0)
    x = torch.randn(2, C, 8, 4, 4)
    gather = HardTemporalAttention(C, k=3, output="gather", identity_init=False).eval()
    with collect_attention(gather) as w:
        y = gather(x)
    assert y.shape == (2, C, 3, 4, 4)
    idx = w[":mask"].nonzero()[:, 1].view(2, 3)
    for b in range(2):  # the kept frames, in temporal order, unchanged
        torch.testing.assert_close(y[b], x[b][:, idx[b]])
    gumbel = HardTemporalAttention(C, k=2, estimator="gumbel", identity_init=False)
    gumbel.train()
    picks = set()
    for _ in range(10):
        with collect_attention(gumbel) as w:
            gumbel(x)
        picks.add(tuple(w[":mask"][0].nonzero().flatten().tolist()))
    assert len(picks) > 1  # sampling while training
    gumbel.eval()
    assert torch.equal(gumbel(x), gumbel(x))  # deterministic in eval
    with pytest.raises(ValueError, match="estimator"):
        HardTemporalAttention(C, estimator="reinforce")


def _signal_clips(n: int, t: int = 8, channels: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips of noise where one random frame carries the class: channel ``y`` (0 or 1) lights up there.

    A frame without the signal says nothing about the class, so a low loss needs the right frame.
    """
    g = torch.Generator().manual_seed(seed)
    x = 0.3 * torch.randn(n, channels, t, 4, 4, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    where = torch.randint(0, t, (n,), generator=g)
    x[torch.arange(n), 2:, where] += 1.0  # the informative frame stands out on the other channels...
    x[torch.arange(n), y, where] += 2.0  # ...and carries the label
    return x, y


def test_hard_attention_trains_on_a_toy_task():
    torch.manual_seed(0)
    hard = HardTemporalAttention(8, k=1, output="gather", identity_init=False)
    clf = nn.Linear(8, 2)
    opt = torch.optim.Adam([*hard.parameters(), *clf.parameters()], lr=0.05)
    x, y = _signal_clips(64)
    losses = []
    for _ in range(60):
        opt.zero_grad()
        loss = F.cross_entropy(clf(hard(x).mean((2, 3, 4))), y)
        loss.backward()
        assert hard.conv1.weight.grad.abs().sum() > 0  # gradients reach the scorer through the top-k
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5
    hard.eval()
    with collect_attention(hard) as w:
        hard(x)
    picked = w[":mask"].argmax(1)
    true_frame = (x[:, 2:].mean((1, 3, 4))).argmax(1)
    assert (picked == true_frame).float().mean() > 0.8  # it learned to pick the informative frame


def test_spatial_transformer_trains_on_a_toy_task():
    torch.manual_seed(0)
    # Frames with a bright blob; the target is the same frames shifted right: the STN must learn the shift.
    g = torch.Generator().manual_seed(1)
    n, t, hw = 8, 2, 16
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, hw), torch.linspace(-1, 1, hw), indexing="ij")
    centres = torch.rand(n, t, 2, generator=g) * 0.8 - 0.4
    blob = torch.exp(-((xx - centres[..., 0, None, None]) ** 2 + (yy - centres[..., 1, None, None]) ** 2) / 0.05)
    shifted = torch.exp(
        -((xx - centres[..., 0, None, None] - 0.3) ** 2 + (yy - centres[..., 1, None, None]) ** 2) / 0.05
    )
    x = blob[:, None].repeat(1, 4, 1, 1, 1)  # (n, 4, t, hw, hw)
    target = shifted[:, None].repeat(1, 4, 1, 1, 1)
    stn = SpatialTransformer(4)
    with torch.no_grad():
        assert (stn(x) - x).abs().max() < 1e-5  # identity at init
    opt = torch.optim.Adam(stn.parameters(), lr=0.01)
    losses = []
    for _ in range(80):
        opt.zero_grad()
        loss = F.mse_loss(stn(x), target)
        loss.backward()
        assert stn.fc.weight.grad is not None and stn.fc.bias.grad.abs().sum() > 0
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    with collect_attention(stn) as w:
        stn(x)
    assert w[""].shape == (n, t, 2, 3)
    assert w[""][..., 0, 2].mean() < -0.1  # translation to the left in sampling coordinates = content moves right


def test_collect_attention_nested_modules_and_cleanup():
    torch.manual_seed(0)
    net = nn.Sequential(create_attn("se", C), nn.Identity(), create_attn("stc", C))
    x = torch.randn(SHAPE)
    with collect_attention(net) as w:
        net(x)
    assert set(w) == {"0", "2.channel", "2.spatial", "2.temporal"}
    assert all(getattr(m, "_attn_sink", None) is None for m in net.modules())
    with pytest.raises(RuntimeError), collect_attention(net):
        raise RuntimeError("boom")
    assert all(getattr(m, "_attn_sink", None) is None for m in net.modules())
    with collect_attention(net) as outer:  # nested blocks both record
        with collect_attention(net[2]) as inner:
            net(x)
        assert set(inner) == {"channel", "spatial", "temporal"}
        assert set(outer) == set(w)
    assert all(getattr(m, "_attn_sink", None) is None for m in net.modules())
