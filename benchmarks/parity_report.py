"""Max abs differences between our model and the official SlotContrast outputs (../shared/fixtures).

    python benchmarks/parity_report.py [--fixtures ../shared/fixtures/slotcontrast_movi_c]

The same comparison tests/test_model_parity.py asserts (atol 1e-4), printed as figures.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import torch
from safetensors.torch import load_file

from oc_perception.checkpoint import load_official
from oc_perception.config import REPO_ROOT
from oc_perception.config import load_config
from oc_perception.model.losses import slot_slot_contrastive_loss, slot_slot_logits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--fixtures", type=Path, default=REPO_ROOT.parent / "shared" / "fixtures" / "slotcontrast_movi_c")
    fx = ap.parse_args().fixtures
    cfg = load_config(REPO_ROOT / "configs" / "pretrain" / "movi_c.yml", ["model.encoder.pretrained=false"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the fixture has no backbone weights, by design
        model = load_official(load_file(fx / "nonencoder_state_dict.safetensors"), cfg)
    features = load_file(fx / "inputs.safetensors")["backbone_features"].float()
    expected = load_file(fx / "outputs.safetensors")
    scalars = json.loads((fx / "expected_scalars.json").read_text())
    with torch.no_grad():
        out, _ = model.forward_features(features)
        losses = model.loss(out)
    rows = {k: (out[k] - expected[k]).abs().max().item()
            for k in ("slots", "slots_predicted", "grouping_masks", "decoder_masks")}
    sqerr = (out["reconstruction"] - features).pow(2).sum(-1)
    rows["recon_sqerr_per_patch"] = (sqerr - expected["recon_sqerr_per_patch"]).abs().max().item()
    rows["ss_logits"] = (slot_slot_logits(out["slots"]) - expected["ss_logits"]).abs().max().item()
    for k in ("loss_featrec", "loss_ss", "loss_total"):
        rows[k] = abs(losses[k].item() - scalars[k])
    no_bc = slot_slot_contrastive_loss(out["slots"], 0.1, batch_contrast=False).item()
    rows["loss_ss_no_batch_contrast"] = abs(no_bc - scalars["loss_ss_no_batch_contrast"])
    print(f"{'output':<28}{'max abs diff':>14}")
    for k, v in rows.items():
        print(f"{k:<28}{v:>14.2e}")


if __name__ == "__main__":
    main()
