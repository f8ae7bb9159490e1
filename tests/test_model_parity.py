"""Numerical parity with the official SlotContrast implementation (../shared/fixtures/slotcontrast_movi_c)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from oc_perception.checkpoint import load_official
from oc_perception.config import load_config
from oc_perception.model.losses import slot_slot_contrastive_loss, slot_slot_logits

ATOL = 1e-4


@pytest.fixture(scope="module")
def parity(request):
    fixtures_dir = request.getfixturevalue("fixtures_dir")
    cfg = load_config("configs/pretrain/movi_c.yml", ["model.encoder.pretrained=false"])
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="no backbone weights"):
        model = load_official(load_file(fixtures_dir / "nonencoder_state_dict.safetensors"), cfg)
    features = load_file(fixtures_dir / "inputs.safetensors")["backbone_features"].float()
    with torch.no_grad():
        out, _ = model.forward_features(features)
        losses = model.loss(out)
    expected = load_file(fixtures_dir / "outputs.safetensors")
    scalars = json.loads((fixtures_dir / "expected_scalars.json").read_text())
    return model, features, out, losses, expected, scalars


@pytest.mark.parametrize("key", ["slots", "slots_predicted", "grouping_masks", "decoder_masks"])
def test_outputs_match_official(parity, key):
    _, _, out, _, expected, _ = parity
    torch.testing.assert_close(out[key], expected[key], atol=ATOL, rtol=0)


def test_projected_features_match_official(parity):
    model, features, _, _, expected, _ = parity
    with torch.no_grad():
        head = model.feature_mlp(features)[:, :, :16]
    torch.testing.assert_close(head, expected["projected_features_head"], atol=ATOL, rtol=0)


def test_reconstruction_matches_official(parity):
    _, features, out, _, expected, _ = parity
    sqerr = (out["reconstruction"] - features).pow(2).sum(-1)
    torch.testing.assert_close(sqerr, expected["recon_sqerr_per_patch"], rtol=1e-5, atol=ATOL)
    torch.testing.assert_close(out["reconstruction"].half().float(), expected["reconstruction_f16"].float(),
                               rtol=1e-3, atol=1e-3)


def test_contrastive_logits_match_official(parity):
    _, _, out, _, expected, _ = parity
    torch.testing.assert_close(slot_slot_logits(out["slots"], 0.1, True), expected["ss_logits"], atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", ["loss_featrec", "loss_ss", "loss_total"])
def test_losses_match_official(parity, name):
    _, _, _, losses, _, scalars = parity
    assert losses[name].item() == pytest.approx(scalars[name], abs=ATOL)


def test_loss_without_batch_contrast_matches_official(parity):
    _, _, out, _, _, scalars = parity
    value = slot_slot_contrastive_loss(out["slots"], 0.1, batch_contrast=False).item()
    assert value == pytest.approx(scalars["loss_ss_no_batch_contrast"], abs=ATOL)


def test_textbook_predictor_scale_breaks_parity(parity, fixtures_dir):
    """The official logit-scale quirk matters: without it the predicted slots differ."""
    model, features, _, _, expected, _ = parity
    model.predictor.logit_scale = model.predictor.logit_scale**-1
    try:
        with torch.no_grad():
            out, _ = model.forward_features(features)
    finally:
        model.predictor.logit_scale = model.predictor.logit_scale**-1
    assert (out["slots_predicted"] - expected["slots_predicted"]).abs().max() > 1e-2
