"""SlotContrast behaviour: streaming equals clip forward, per-row restarts, gradients, input checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import tiny_overrides
from oc_perception import SlotContrast
from oc_perception.config import load_config


def make_model(backbone: str = "vit", extra: list[str] | None = None) -> SlotContrast:
    torch.manual_seed(0)
    cfg = load_config("configs/pretrain/movi_c.yml", tiny_overrides(backbone) + (extra or []))
    return SlotContrast(cfg.model).eval()


@pytest.fixture(scope="module", params=["vit", "cnn"])
def model(request):
    return make_model(request.param)


def random_video(model, b=2, t=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    s = model.input_size
    return model.preprocess(torch.randint(0, 256, (b, t, s, s, 3), generator=g, dtype=torch.uint8))


def test_forward_shapes(model):
    video = random_video(model)
    with torch.no_grad():
        out, _ = model(video)
    k, d, p = model.cfg.num_slots, model.cfg.slot_dim, model.num_patches
    f = model.decoder.mlp[-1].out_features - 1
    assert out["slots"].shape == (2, 5, k, d)
    assert out["slots_predicted"].shape == (2, 5, k, d)
    assert out["grouping_masks"].shape == (2, 5, k, p)
    assert out["decoder_masks"].shape == (2, 5, k, p)
    assert out["reconstruction"].shape == out["target"].shape == (2, 5, p, f)
    torch.testing.assert_close(out["decoder_masks"].sum(2), torch.ones(2, 5, p))
    torch.testing.assert_close(out["grouping_masks"].sum(2), torch.ones(2, 5, p))


def test_streaming_equals_clip_forward(model):
    video = random_video(model)
    with torch.no_grad():
        clip, _ = model(video)
        state = model.init_state(2)
        for t in range(video.shape[1]):
            out, state = model.step(video[:, t], state, decode=True)
            for key in ("slots", "slots_predicted", "grouping_masks", "decoder_masks"):
                torch.testing.assert_close(out[key], clip[key][:, t], atol=1e-5, rtol=1e-5)


def test_chunked_forward_continues_the_stream(model):
    video = random_video(model, b=2, t=5)
    with torch.no_grad():
        whole, _ = model(video)
        first, state = model(video[:, :2])
        second, _ = model(video[:, 2:], state=state)
    torch.testing.assert_close(torch.cat([first["slots"], second["slots"]], 1), whole["slots"], atol=1e-5, rtol=1e-5)


def test_per_row_restart(model):
    """Row 1 restarts at frame 2: its slots equal a fresh stream started there; row 0 continues."""
    video = random_video(model, b=2, t=4)
    with torch.no_grad():
        clip, _ = model(video)
        fresh, _ = model(video[1:, 2:])
        state = model.init_state(2)
        for t in range(4):
            if t == 2:
                state = state.restart(torch.tensor([False, True]))
            out, state = model.step(video[:, t], state)
            torch.testing.assert_close(out["slots"][0], clip["slots"][0, t], atol=1e-5, rtol=1e-5)
            expected_row1 = fresh["slots"][0, t - 2] if t >= 2 else clip["slots"][1, t]
            torch.testing.assert_close(out["slots"][1], expected_row1, atol=1e-5, rtol=1e-5)


def test_restart_uses_first_frame_iterations(model):
    """A restarted row runs 3 iterations from the initial slots, not 2: the result differs from 2 iterations."""
    video = random_video(model, b=1, t=1)
    with torch.no_grad():
        inputs = model.feature_mlp(model.encode_frames(video[:, 0])[0])
        two, _ = model.slot_attention(model.initial_slots, inputs, 2)
        out, _ = model.step(video[:, 0], model.init_state(1))
    assert not torch.allclose(out["slots"], two, atol=1e-4)


def test_gradients_reach_trainable_parameters_not_frozen_backbone():
    model = make_model("vit").train()
    out, _ = model(random_video(model, b=2, t=3))
    model.loss(out)["loss_total"].backward()
    for name, p in model.named_parameters():
        if name.startswith("encoder.backbone."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.grad is not None and p.grad.abs().sum() > 0, f"no gradient reaches {name}"
    assert not model.encoder.backbone.training  # frozen backbone stays in eval mode


def test_cnn_encoder_is_trained():
    model = make_model("cnn").train()
    out, _ = model(random_video(model, b=2, t=3))
    model.loss(out)["loss_total"].backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_preprocess_accepts_numpy_and_any_leading_dims(model):
    s = model.input_size
    frames = np.random.default_rng(0).integers(0, 256, (3, 2, 20, 30, 3), dtype=np.uint8)
    x = model.preprocess(frames)
    assert x.shape == (3, 2, 3, s, s) and x.dtype == torch.float32


@pytest.mark.parametrize(
    "bad, match",
    [
        (torch.zeros(2, 56, 56, 4, dtype=torch.uint8), r"\[\.\.\., H, W, 3\]"),
        (torch.zeros(2, 56, 56, 3, dtype=torch.float32), "uint8"),
    ],
)
def test_preprocess_rejects_bad_frames(bad, match):
    with pytest.raises(ValueError, match=match):
        make_model().preprocess(bad)


def test_forward_rejects_bad_input():
    model = make_model()
    s = model.input_size
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        model(torch.zeros(1, 3, s, s))  # missing time axis
    with pytest.raises(ValueError, match=r"\[B, T, 3, H, W\]"):
        model(torch.zeros(1, 2, 4, s, s))  # 4 channels
    with pytest.raises(ValueError, match="uint8|float"):
        model(torch.zeros(1, 2, 3, s, s, dtype=torch.uint8))
    with pytest.raises(ValueError, match=f"expected {s}x{s}"):
        model(torch.zeros(1, 2, 3, s + 14, s + 14))
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model.step(torch.zeros(1, 1, 3, s, s), model.init_state(1))
    with pytest.raises(ValueError, match="streams"):
        model.step(torch.zeros(2, 3, s, s), model.init_state(1))
    with pytest.raises(ValueError, match=r"\[B, T, 16, 384\]"):
        model.forward_features(torch.zeros(1, 2, 16, 100))


def test_config_errors_name_the_problem():
    with pytest.raises(ValueError, match="not a multiple of the patch size 14"):
        make_model(extra=["model.encoder.input_size=50"])
    with pytest.raises(ValueError, match="patch size 14 and feature dim 384"):
        make_model(extra=["model.encoder.feature_dim=768"])
    with pytest.raises(ValueError, match="target=pixels"):
        make_model("cnn", extra=["model.encoder.target=features"])


def test_decoder_matches_the_plain_formula():
    """The decoder's split first layer gives what slot + position through the whole MLP gives."""
    model = make_model("cnn").train()
    video = random_video(model, b=2, t=3)
    out, _ = model(video)
    pos = model.decoder.soft_pos_emb().unsqueeze(1) if model.decoder.pos_emb_kind == "soft" else model.decoder.pos_emb
    features, alpha = model.decoder.mlp(out["slots"][:, 0].unsqueeze(2) + pos).split(
        [out["reconstruction"].shape[-1], 1], dim=-1)
    masks = alpha[..., 0].softmax(dim=1)
    torch.testing.assert_close(out["decoder_masks"][:, 0], masks)
    torch.testing.assert_close(out["reconstruction"][:, 0], torch.einsum("bkp,bkpf->bpf", masks, features))


def test_retired_options_load_only_at_their_neutral_value():
    from oc_perception.config import ConfigError, model_config_from_dict, to_dict

    stored = to_dict(make_model("cnn").cfg)
    stored["slot_attention"]["bilevel"] = False
    stored["decoder"]["mix"] = "alpha"
    assert model_config_from_dict(stored) == make_model("cnn").cfg
    stored["decoder"]["mix"] = "attention"
    with pytest.raises(ConfigError, match="model.decoder.mix='attention' was used to train this model"):
        model_config_from_dict(stored)


def test_decoder_pos_emb_must_be_known():
    with pytest.raises(ValueError, match="model.decoder.pos_emb='grid': must be one of learned, soft"):
        make_model("cnn", ["model.decoder.pos_emb=grid"])
