"""Models: registry, forward/backward over every registered model, attention placement,
identity at init, torchvision weight import, frame weights, compile and channels_last."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torchvision
from torch import nn

import vidattn.models._pretrained as pretrained_mod
from vidattn.errors import VidattnError
from vidattn.layers import NonLocalBlock, ShapeError, collect_attention, list_attn
from vidattn.models import (
    AttentionPoolHead,
    PeakPoolHead,
    _registry,
    create_model,
    expand_time_weights,
    list_models,
    register_model,
)
from vidattn.models._pretrained import attention_param_names, torchvision_checkpoint_path
from vidattn.models.resnet import VideoResNet, frame_differences

TINY = ["mc3_tiny", "r2plus1d_tiny", "r3d_tiny"]
FULL_18 = ["mc3_18", "r2plus1d_18", "r3d_18"]
FULL_34 = ["mc3_34", "r2plus1d_34", "r3d_34"]
SMALL_INPUT = (1, 3, 4, 32, 32)


def _randomise_bn(model: nn.Module) -> None:
    """Non-trivial BN statistics so equality tests do not pass by accident."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm3d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)


# --- registry ----------------------------------------------------------------------------------


def test_registry_lists_the_family():
    assert set(TINY + FULL_18 + FULL_34) <= set(list_models())
    assert list_models("*tiny") == TINY


def test_duplicate_registration_raises():
    def r3d_18(**kwargs):  # same name as a registered builder
        return nn.Identity()

    with pytest.raises(ValueError, match="already registered"):
        register_model(r3d_18)


def test_unknown_model_and_argument_are_user_errors():
    with pytest.raises(VidattnError, match="did you mean 'r2plus1d_18'"):
        create_model("r2plus1d18")
    with pytest.raises(VidattnError, match="did you mean 'num_classes'"):
        create_model("r3d_tiny", num_clases=3)
    with pytest.raises(VidattnError, match="unknown attention"):
        create_model("r3d_tiny", attn="sse")
    with pytest.raises(VidattnError, match="unknown head"):
        create_model("r3d_tiny", head="max")


def test_argument_suggestions_follow_the_signatures(monkeypatch):
    """`accepted_kwargs` is read from the signatures, so a new VideoResNet argument is suggested too."""
    fixed = {"conv_makers", "layers", "stem"}  # what each builder sets itself
    expected = {*inspect.signature(VideoResNet).parameters} - fixed | {"pretrained"}
    for name in TINY + FULL_18 + FULL_34:
        assert set(_registry.get_model_builder(name).accepted_kwargs) == expected
    with pytest.raises(VidattnError, match="did you mean 'temporal_padding'"):
        create_model("r3d_tiny", temporal_paddin="replicate")

    def plain_builder(*, width: int = 4, depth: int = 1) -> nn.Module:  # no accepted_kwargs attribute
        return nn.Identity()

    monkeypatch.setitem(_registry._MODELS, "plain_builder", plain_builder)
    with pytest.raises(VidattnError, match="did you mean 'width'"):
        create_model("plain_builder", widht=3)


def test_create_model_drops_none_kwargs():
    model = create_model("r3d_tiny", num_classes=None, attn=None, pretrained=None, head=None)
    assert model.num_classes == 400 and model.head.__class__.__name__ == "AttentionPoolHead"


# --- every registered model ----------------------------------------------------------------------


def _params(name: str) -> list:
    marks = [pytest.mark.slow] if name in FULL_34 else []
    return [pytest.param(name, marks=marks, id=name)]


@pytest.mark.parametrize("name", [p for n in list_models() for p in _params(n)])
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, num_classes=5, attn="stc" if name in TINY else None)
    x = torch.randn(SMALL_INPUT)
    feats = model.forward_features(x)
    b, _, t, h, w = SMALL_INPUT
    assert feats.shape == (
        b,
        model.num_features,
        math.ceil(t / model.temporal_stride),
        math.ceil(h / model.spatial_stride),
        math.ceil(w / model.spatial_stride),
    )
    out = model.forward_head(feats)
    assert out.shape == (1, 5) and model.num_classes == 5
    assert torch.isfinite(out).all()
    out.sum().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing
    assert all(torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", TINY + FULL_18)
def test_bad_input_shapes_raise(name):
    model = create_model(name, num_classes=3)
    with pytest.raises(ShapeError, match=r"\(B, C, T, H, W\)"):
        model(torch.randn(1, 3, 32, 32))
    with pytest.raises(ShapeError, match="expected 3 channels, got 1"):
        model(torch.randn(1, 1, 4, 32, 32))


@pytest.mark.parametrize("attn", list_attn())
def test_every_attention_in_a_tiny_model(attn):
    torch.manual_seed(0)
    model = create_model("r2plus1d_tiny", num_classes=3, attn=attn)
    x = torch.randn(2, 3, 4, 32, 32)
    with collect_attention(model) as weights:
        out = model(x)
    assert out.shape == (2, 3) and torch.isfinite(out).all()
    assert "head" in weights and any(k.startswith("layer1.0.attn") for k in weights)
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_per_stage_attention_and_nonlocal_stages():
    model = create_model("r3d_tiny", attn=[None, "se", "temporal", "stc"], nonlocal_stages=(3, 4))
    kinds = [type(model.layer1[0].attn).__name__, type(model.layer2[0].attn).__name__]
    assert kinds == ["Identity", "SqueezeExcite"]
    assert isinstance(model.layer3[-1], NonLocalBlock) and isinstance(model.layer4[-1], NonLocalBlock)
    assert not isinstance(model.layer2[-1], NonLocalBlock)
    with pytest.raises(ValueError, match="one entry per stage"):
        create_model("r3d_tiny", attn=["se", "se"])
    with pytest.raises(ValueError, match="nonlocal_stages"):
        create_model("r3d_tiny", nonlocal_stages=(5,))


@pytest.mark.parametrize("attn", ["stc", "cbam", "tsa", ["se", "local", "temporal", "eca"]])
def test_identity_init_matches_the_model_without_attention(tmp_path, attn):
    torch.manual_seed(0)
    plain = create_model("r2plus1d_tiny", num_classes=4, head="avg").eval()
    _randomise_bn(plain)
    path = tmp_path / "plain.pt"
    torch.save(plain.state_dict(), path)
    with_attn = create_model(
        "r2plus1d_tiny", num_classes=4, attn=attn, nonlocal_stages=(4,), head="attn", pretrained=str(path)
    ).eval()
    x = torch.randn(2, 3, 8, 32, 32)
    with torch.no_grad():
        assert (with_attn(x) - plain(x)).abs().max().item() < 1e-5


# --- torchvision weights -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def torchvision_r2plus1d(tmp_path_factory):
    torch.manual_seed(0)
    tv = torchvision.models.video.r2plus1d_18().eval()  # random weights, no download
    _randomise_bn(tv)
    path = tmp_path_factory.mktemp("tv") / "r2plus1d_18.pth"
    torch.save(tv.state_dict(), path)
    return tv, path


@pytest.mark.parametrize("attn", [None, "stc"])
def test_torchvision_weights_give_torchvision_outputs(torchvision_r2plus1d, attn):
    tv, path = torchvision_r2plus1d
    x = torch.randn(SMALL_INPUT)
    model = create_model("r2plus1d_18", attn=attn, head="attn" if attn else "avg", pretrained=str(path)).eval()
    with torch.no_grad():
        assert (model(x) - tv(x)).abs().max().item() < 1e-5


def test_torchvision_weights_from_the_hub_cache(torchvision_r2plus1d, tmp_path, monkeypatch):
    tv, path = torchvision_r2plus1d
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    cached = torchvision_checkpoint_path("r2plus1d_18")
    assert cached.name == "r2plus1d_18-91a641e6.pth" and cached.parent == tmp_path / "checkpoints"
    cached.parent.mkdir()
    cached.write_bytes(path.read_bytes())
    model = create_model("r2plus1d_18", num_classes=7, attn="se", pretrained=True).eval()
    assert model.head.fc.out_features == 7  # new classifier, everything else loaded
    torch.testing.assert_close(model.layer2[0].conv1[0][0].weight, tv.layer2[0].conv1[0][0].weight)
    with torch.no_grad():
        torch.testing.assert_close(model.forward_head(model.forward_features(torch.ones(SMALL_INPUT)), pre_logits=True),
                                   _tv_pooled(tv, torch.ones(SMALL_INPUT)))  # fmt: skip


def _tv_pooled(tv: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = tv.stem(x)
    for layer in (tv.layer1, tv.layer2, tv.layer3, tv.layer4):
        x = layer(x)
    return tv.avgpool(x).flatten(1)


def test_missing_weights_are_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(VidattnError, match="not cached at .*r2plus1d_18-91a641e6.pth.*network is unreachable"):
        create_model("r2plus1d_18", pretrained="torchvision")
    with pytest.raises(VidattnError, match="not found"):
        create_model("r2plus1d_18", pretrained=str(tmp_path / "nope.pth"))
    with pytest.raises(VidattnError, match="no torchvision weights for 'r3d_tiny'"):
        create_model("r3d_tiny", pretrained=True)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(VidattnError, match="cannot read weights"):
        create_model("r3d_tiny", pretrained=str(tmp_path / "junk.pth"))
    assert pretrained_mod.TORCHVISION_WEIGHTS["r3d_18"] == "R3D_18_Weights"


def test_mismatched_weights_are_rejected(tmp_path):
    torch.save(create_model("r3d_tiny").state_dict(), tmp_path / "r3d.pt")
    with pytest.raises(VidattnError, match="shape mismatch"):
        create_model("r2plus1d_tiny", pretrained=str(tmp_path / "r3d.pt"))
    state = create_model("r3d_tiny").state_dict()
    state.pop("layer1.0.conv1.1.weight")  # a backbone key missing: not silently ignored
    torch.save(state, tmp_path / "partial.pt")
    with pytest.raises(VidattnError, match="missing: layer1.0.conv1.1.weight"):
        create_model("r3d_tiny", pretrained=str(tmp_path / "partial.pt"))


def test_only_attention_parameters_may_be_missing():
    model = create_model("r3d_tiny", attn="stc", nonlocal_stages=(4,))
    names = attention_param_names(model)
    assert names and all(".attn." in n or n.startswith("layer4.1.") or n.startswith("head.attn.") for n in names)
    assert not any(n.startswith("head.fc") for n in names)


# --- frame weights -------------------------------------------------------------------------------


def test_frame_weights_attention_head():
    torch.manual_seed(0)
    model = create_model("r2plus1d_tiny", num_classes=3, attn="temporal").eval()
    assert model.temporal_stride == 1
    x = torch.randn(2, 3, 16, 32, 32)
    logits, weights = model.frame_weights(x, return_logits=True)
    assert weights.shape == (2, 16) and logits.shape == (2, 3)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    torch.testing.assert_close(weights, torch.full((2, 16), 1 / 16))  # uniform at init (zero-init scorer)
    with collect_attention(model) as recorded:
        model(x)
    torch.testing.assert_close(recorded["head"], weights)


def test_frame_weights_map_back_through_temporal_stride():
    torch.manual_seed(0)
    model = create_model("r3d_18", num_classes=3).eval()  # avg head, temporal stride 8
    assert model.temporal_stride == 8
    with torch.no_grad():
        weights = model.frame_weights(torch.randn(1, 3, 16, 32, 32))
    assert weights.shape == (1, 16)
    torch.testing.assert_close(weights.sum(1), torch.ones(1))
    assert torch.equal(weights[0, :8], weights[0, :1].expand(8))  # frames 0-7 share feature step 0
    step = torch.tensor([[0.25, 0.75]])
    torch.testing.assert_close(expand_time_weights(step, 4), torch.tensor([[0.125, 0.125, 0.375, 0.375]]))
    odd = expand_time_weights(torch.tensor([[0.2, 0.3, 0.5]]), 7)  # T not a multiple of T'
    torch.testing.assert_close(odd.sum(1), torch.ones(1))


def test_attention_head_weights_follow_the_scores():
    """The head's softmax over time peaks where its scorer fires, and pools with those weights."""
    head = AttentionPoolHead(4, 2)
    with torch.no_grad():  # score(f_t) = 10 * tanh(f_t[0])
        head.attn[0].weight.zero_()
        head.attn[0].weight[0, 0] = 1.0
        head.attn[2].weight.zero_()
        head.attn[2].weight[0, 0] = 10.0
    feats = torch.zeros(1, 4, 6, 2, 2)
    feats[0, 0, 4] = 3.0  # the event is at feature step 4
    weights = head.time_weights(feats)
    assert weights.argmax(1).item() == 4 and weights[0, 4] > 0.9
    torch.testing.assert_close(head(feats, pre_logits=True), (weights[:, None, :] * feats.mean((3, 4))).sum(-1))


@pytest.mark.parametrize("length", [8, 64])
def test_peak_head_keeps_a_moment_and_drops_what_is_always_there(length):
    """Peak pooling: a feature present all clip long pools to 0, a one-step rise to its height at any length."""
    head = PeakPoolHead(3, 2)
    feats = torch.zeros(2, 3, length, 2, 2)
    feats[:, 0] = 5.0  # clutter: the same all along
    feats[:, 1] = torch.linspace(0, 1, length)[None, :, None, None]  # a slow drift
    feats[0, 2, length // 2, 1, 0] = 4.0  # an event at one step, at one place
    pooled = head(feats, pre_logits=True)
    assert pooled[:, 0].abs().max() < 1e-6
    torch.testing.assert_close(pooled[0, 2], torch.tensor(4.0 * (1 - 1 / length)))
    assert pooled[1, 2] == 0  # no event, nothing rises
    with torch.no_grad():
        head.fc.weight.zero_()
        head.fc.weight[1, 2] = 1.0
    weights = head.time_weights(feats, torch.tensor([1, 1]))
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert weights[0].argmax().item() == length // 2


def test_peak_head_in_models_and_glimpses():
    """``head="peak"`` builds in a backbone and in a glimpse model; an unknown head is a user error."""
    x = torch.randn(2, 3, 16, 32, 32)
    for name in ("r2plus1d_tiny", "r2plus1d_glimpse"):
        model = create_model(name, num_classes=3, head="peak").eval()
        logits, weights = model.frame_weights(x, return_logits=True)
        assert logits.shape == (2, 3) and weights.shape == (2, 16)
        torch.testing.assert_close(weights.sum(1), torch.ones(2))
    assert isinstance(create_model("r2plus1d_tiny", num_classes=3, head="peak").head, PeakPoolHead)
    # With peak pooling the glimpse model's whole-video context also carries the scorer's peak rise: a burst in
    # a few of 96 frames moves it as much as in a 16-frame input (the softmax average alone dilutes it).
    glimpse = create_model("r2plus1d_glimpse", num_classes=3, head="peak").eval()
    assert glimpse.peak_context and not create_model("r2plus1d_glimpse", num_classes=3).peak_context
    with torch.no_grad():
        feats, _ = glimpse.scorer(torch.zeros(1, 3, 96, 32, 32))
        burst = torch.zeros(1, 3, 96, 32, 32)
        burst[:, :, 40:44] = 3.0
        feats_b, _ = glimpse.scorer(burst)
        _, ctx0, _ = glimpse._select(torch.zeros(1, 3, 96, 32, 32))
        _, ctx1, _ = glimpse._select(burst)
    rise = (feats_b - feats_b.mean(2, keepdim=True)).amax(2) - (feats - feats.mean(2, keepdim=True)).amax(2)
    assert rise.abs().max() > 0 and (ctx1 - ctx0).abs().max() >= 0.5 * rise.abs().max()
    for name in ("r2plus1d_tiny", "r2plus1d_glimpse"):
        with pytest.raises(VidattnError, match="unknown head 'max'"):
            create_model(name, num_classes=3, head="max")


# --- compile / channels_last ---------------------------------------------------------------------


def _channels_last(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return model.to(memory_format=torch.channels_last_3d)(x.to(memory_format=torch.channels_last_3d))


def _compiled(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    return torch.compile(model)(x)


@pytest.mark.parametrize(
    ("run", "tol"),
    [
        pytest.param(_channels_last, 1e-5, id="channels_last_3d"),
        pytest.param(_compiled, 1e-4, id="torch_compile", marks=pytest.mark.slow),
    ],
)
def test_fast_path_matches_eager(run, tol):
    torch.manual_seed(0)
    model = create_model("r2plus1d_tiny", num_classes=3, attn="stc").eval()
    x = torch.randn(SMALL_INPUT)
    with torch.no_grad():
        ref = model(x)
        out = run(model, x)
    assert (out - ref).abs().max().item() < tol


# --- hard attention: top-k selection and the glimpse model ---------------------------------------


def test_topk_selection_passes_gradients_to_the_scorer():
    from vidattn.layers import select_topk

    torch.manual_seed(0)
    scores = torch.randn(3, 20, requires_grad=True)
    values = torch.randn(3, 20)
    mask, index, soft = select_topk(scores, 4, min_gap=3)
    torch.testing.assert_close(mask.detach(), torch.zeros(3, 20).scatter_(1, index, 1.0))  # 0/1 forward
    assert (index.diff(dim=1) >= 3).all()  # non-maximum suppression: picks are apart
    (mask * values).sum().backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0  # the discrete pick is trained through
    # More picks than room: suppression gives way, a position is never picked twice.
    _, index, _ = select_topk(torch.randn(2, 6), 5, min_gap=4)
    assert all(len(set(row)) == 5 for row in index.tolist())


def _event_batch(
    gen: torch.Generator, batch: int, frames: int = 24, size: int = 16
) -> tuple[torch.Tensor, torch.Tensor]:
    """Noise videos with one bright square for 4 frames at a random moment, moving right (class 1) or left (0)."""
    x = torch.randn(batch, 3, frames, size, size, generator=gen) * 0.1
    y = torch.randint(0, 2, (batch,), generator=gen)
    for b in range(batch):
        start = int(torch.randint(0, frames - 4, (1,), generator=gen))
        for j in range(4):
            col = 2 + 3 * j if y[b] == 1 else size - 5 - 3 * j
            x[b, :, start + j, 6:10, col : col + 3] = 2.0
    return x, y


def test_glimpse_model_trains_on_cpu_and_runs_the_backbone_on_glimpses_only():
    torch.manual_seed(0)
    model = create_model("r2plus1d_glimpse", num_classes=2, attn="stc", k=2, glimpse_len=4, scorer_size=16)
    seen: list[tuple[int, ...]] = []
    model.backbone.stem.register_forward_hook(lambda m, i, o: seen.append(tuple(i[0].shape)))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    scorer_before = model.scorer.score[2].weight.detach().clone()
    losses = []
    for _ in range(8):
        x, y = _event_batch(gen, 8)
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(math.isfinite(v) for v in losses)
    assert not torch.equal(model.scorer.score[2].weight, scorer_before)  # the scorer is trained end to end
    assert seen[0] == (8 * 2, 3, 4, 16, 16)  # the 3D-CNN sees 2 glimpses of 4 frames, not 24 frames
    model.eval()
    x, _ = _event_batch(gen, 2)
    logits, weights = model.frame_weights(x, return_logits=True)
    assert logits.shape == (2, 2) and weights.shape == (2, 24)
    torch.testing.assert_close(weights.sum(1), torch.ones(2))
    with collect_attention(model) as recorded:
        model(x)
    assert recorded[""].shape == (2, 24)
    torch.testing.assert_close(recorded[":mask"].sum(1), torch.full((2,), 2.0))


def test_frame_differences_keep_the_shape_and_only_see_what_moved():
    clip = torch.rand(1, 3, 1, 8, 8).expand(2, 3, 6, 8, 8).clone()  # a still scene
    assert torch.equal(frame_differences(clip), torch.zeros_like(clip))
    clip[:, :, 3:, 2, 2] += 1.0  # one pixel changes at frame 3 and stays
    d = frame_differences(clip)
    assert d.shape == clip.shape
    moved = torch.zeros_like(clip)
    moved[:, :, 3, 2, 2] = 1.0
    assert torch.allclose(d, moved, atol=1e-6)  # only at the moment and the place it changed
    assert torch.equal(frame_differences(clip[:, :, :1]), torch.zeros_like(clip[:, :, :1]))


@pytest.mark.parametrize("name", ["r2plus1d_tiny", "r2plus1d_glimpse"])
def test_diff_input_ignores_the_static_scene(name):
    """With input_mode="diff" a model's output does not depend on the background, only on what moves."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, input_mode="diff").eval()
    moving = torch.zeros(2, 3, 12, 32, 32)
    for t in range(12):
        moving[:, :, t, 10:16, 2 + t : 8 + t] = 1.0
    background = torch.rand(2, 3, 1, 32, 32)
    with torch.no_grad():
        assert torch.allclose(model(moving), model(moving + background), atol=1e-5)
        rgb = create_model(name, num_classes=4).eval()
        assert not torch.allclose(rgb(moving), rgb(moving + background), atol=1e-3)
    with pytest.raises(ValueError, match="input_mode"):
        create_model(name, num_classes=4, input_mode="flow")
