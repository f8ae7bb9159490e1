"""Shared test fixtures: tiny model configs and the official parity fixtures."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO.parent / "shared" / "fixtures" / "slotcontrast_movi_c"

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    if not FIXTURES.is_dir():
        message = f"official parity fixtures not found at {FIXTURES} (shared/ sits beside the clone in CI)"
        if os.environ.get("CI"):  # CI always has them: a missing copy must not pass as skipped parity tests
            pytest.fail(message)
        pytest.skip(message)
    return FIXTURES


def tiny_overrides(backbone: str = "vit") -> list[str]:
    """A small but real model: random DINOv2 ViT-S/14 at 56 px (16 patches) or a CNN at 32 px."""
    common = ["model.num_slots=4", "model.slot_dim=32", "model.decoder.hidden_dims=[64, 64]"]
    if backbone == "cnn":
        return common + ["model.encoder.backbone=cnn", "model.encoder.input_size=32", "model.encoder.patch_size=4",
                         "model.encoder.feature_dim=32", "model.encoder.cnn_channels=[16, 32]",
                         "model.encoder.target=pixels"]
    return common + ["model.encoder.backbone=vit_small_patch14_dinov2", "model.encoder.pretrained=false",
                     "model.encoder.input_size=56", "model.encoder.patch_size=14", "model.encoder.feature_dim=384",
                     "model.encoder.target=features"]
