"""Tests for oc_perception.metrics: parity with the official SlotContrast metrics (fixture),
independent cross-checks written from the definitions, properties and input validation."""

from __future__ import annotations

import os

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from oc_perception.metrics import (
    SegmentationMetrics,
    adjusted_rand_index,
    image_ari,
    image_ari_per_frame,
    image_mbo,
    image_mbo_per_frame,
    labels_to_onehot,
    masks_to_labels,
    masks_to_onehot,
    mean_valid,
    video_ari,
    video_mbo,
)

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
MOVI_C = FIXTURES / "slotcontrast_movi_c"


def _require_fixtures() -> None:
    if not (MOVI_C / "metrics_inputs.safetensors").is_file():
        message = f"reference fixtures not found at {MOVI_C} (expected shared/ beside the repo)"
        if os.environ.get("CI"):  # CI always has them: a missing copy must not pass as skipped tests
            pytest.fail(message)
        pytest.skip(message)


def _load(name: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(MOVI_C / name))


def _expected_metrics() -> dict[str, float]:
    return json.loads((MOVI_C / "expected_scalars.json").read_text())["metrics"]


# ----------------------------------------------------------------------------------------------
# Independent reference implementations (numpy, written from the definitions)
# ----------------------------------------------------------------------------------------------


def _ari_pair_counting(true_labels: np.ndarray, pred_labels: np.ndarray) -> float:
    """ARI by literally counting point pairs (i < j); 1.0 when the denominator vanishes."""
    n = len(true_labels)
    same_true = same_pred = same_both = 0
    for i in range(n):
        for j in range(i + 1, n):
            st = true_labels[i] == true_labels[j]
            sp = pred_labels[i] == pred_labels[j]
            same_true += st
            same_pred += sp
            same_both += st and sp
    total = n * (n - 1) / 2
    expected = same_true * same_pred / total if total > 0 else 0.0
    max_index = (same_true + same_pred) / 2
    if max_index - expected == 0:
        return 1.0
    return (same_both - expected) / (max_index - expected)


def _mbo_loops(true_labels: np.ndarray, pred_labels: np.ndarray, objects, n_slots: int) -> float:
    """Mean over non-empty objects of the best IoU with any slot (all pixels count for slots)."""
    scores = []
    for obj in objects:
        t = true_labels == obj
        if not t.any():
            continue
        best = 0.0
        for k in range(n_slots):
            p = pred_labels == k
            union = np.logical_or(t, p).sum()
            if union:
                best = max(best, np.logical_and(t, p).sum() / union)
        scores.append(best)
    return float(np.mean(scores)) if scores else float("nan")


def _random_maps(seed: int, b=3, t=2, h=4, w=5, n_true=4, n_slots=5):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, n_true, (b, t, h, w), generator=g)
    pred = torch.randint(0, n_slots, (b, t, h, w), generator=g)
    return true, pred


def _onehot_pred(pred_labels: torch.Tensor, k: int) -> torch.Tensor:
    return F.one_hot(pred_labels, k).permute(0, 1, 4, 2, 3).to(torch.uint8)


# ----------------------------------------------------------------------------------------------
# Parity with the official implementation
# ----------------------------------------------------------------------------------------------


def test_fixture_parity_accumulator():
    _require_fixtures()
    data = _load("metrics_inputs.safetensors")
    expected = _expected_metrics()
    got = {}
    for ignore_background in (True, False):
        metrics = SegmentationMetrics(ignore_background=ignore_background)
        metrics.update(data["pred_masks_hard"], data["true_masks"])
        got.update(metrics.compute())
    for key in ("video_ari_fg", "image_ari_fg", "video_mbo_fg", "image_mbo_fg",
                "video_ari_all", "video_mbo_all"):
        assert key in expected
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-4), key


def test_fixture_parity_functions_and_label_maps():
    _require_fixtures()
    data = _load("metrics_inputs.safetensors")
    expected = _expected_metrics()
    pred, true = data["pred_masks_hard"], data["true_masks"]
    true_labels = true.argmax(dim=2)  # one-hot -> label map, 0 = background
    pred_labels = pred.argmax(dim=2)
    for t in (true, true_labels, true.bool(), true.float()):
        for p in (pred, pred_labels, pred.bool()):
            assert mean_valid(video_ari(p, t)) == pytest.approx(expected["video_ari_fg"], abs=1e-4)
            assert mean_valid(image_ari_per_frame(p, t)) == pytest.approx(
                expected["image_ari_fg"], abs=1e-4)
            assert mean_valid(video_mbo(p, t)) == pytest.approx(expected["video_mbo_fg"], abs=1e-4)
            assert mean_valid(image_mbo_per_frame(p, t)) == pytest.approx(
                expected["image_mbo_fg"], abs=1e-4)
            assert mean_valid(video_ari(p, t, ignore_background=False)) == pytest.approx(
                expected["video_ari_all"], abs=1e-4)
            assert mean_valid(video_mbo(p, t, ignore_background=False)) == pytest.approx(
                expected["video_mbo_all"], abs=1e-4)
    # All frames count here, so the per-video means average to the global image means.
    assert image_ari(pred, true).mean().item() == pytest.approx(expected["image_ari_fg"], abs=1e-4)
    assert image_mbo(pred, true).mean().item() == pytest.approx(expected["image_mbo_fg"], abs=1e-4)


def test_fixture_accumulates_over_batches_like_official():
    _require_fixtures()
    data = _load("metrics_inputs.safetensors")
    expected = _expected_metrics()
    metrics = SegmentationMetrics()
    for i in range(2):  # one video per update: sum / count gives the same numbers
        metrics.update(data["pred_masks_hard"][i : i + 1], data["true_masks"][i : i + 1])
    got = metrics.compute()
    for key in ("video_ari_fg", "image_ari_fg", "video_mbo_fg", "image_mbo_fg"):
        assert got[key] == pytest.approx(expected[key], abs=1e-4)
    assert metrics.counts() == {"video_ari_fg": 2, "image_ari_fg": 8,
                                "video_mbo_fg": 2, "image_mbo_fg": 8}


def test_fixture_decoder_masks_to_onehot():
    _require_fixtures()
    outputs = _load("outputs.safetensors")
    data = _load("metrics_inputs.safetensors")
    onehot = masks_to_onehot(outputs["decoder_masks"], (24, 24))
    assert onehot.shape == (2, 4, 11, 24, 24)
    assert torch.equal(onehot.to(torch.uint8), data["pred_masks_hard"])


# ----------------------------------------------------------------------------------------------
# Independent cross-checks
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ignore_background", [True, False])
def test_ari_matches_pair_counting(seed, ignore_background):
    n_true = [1, 2, 3, 5, 2, 4][seed]  # includes degenerate single-cluster truths
    n_slots = [1, 3, 2, 6, 1, 4][seed]
    true, pred = _random_maps(seed, n_true=n_true, n_slots=n_slots)
    got_video = video_ari(_onehot_pred(pred, n_slots), true, ignore_background=ignore_background)
    got_frame = image_ari_per_frame(pred, true, ignore_background=ignore_background)
    tn, pn = true.numpy(), pred.numpy()
    for b in range(true.shape[0]):
        keep = tn[b] > 0 if ignore_background else np.ones_like(tn[b], dtype=bool)
        ref = _ari_pair_counting(tn[b][keep], pn[b][keep])
        assert got_video[b].item() == pytest.approx(ref, abs=1e-10)
        for t in range(true.shape[1]):
            keep_t = keep[t]
            ref_t = _ari_pair_counting(tn[b, t][keep_t], pn[b, t][keep_t])
            assert got_frame[b, t].item() == pytest.approx(ref_t, abs=1e-10)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ignore_background", [True, False])
def test_mbo_matches_loops(seed, ignore_background):
    n_true, n_slots = [(2, 3), (4, 2), (6, 6), (3, 7), (5, 1), (1, 4)][seed]
    true, pred = _random_maps(100 + seed, n_true=n_true, n_slots=n_slots)
    objects = range(1, n_true) if ignore_background else range(n_true)
    got_video = video_mbo(_onehot_pred(pred, n_slots), true, ignore_background=ignore_background)
    got_frame = image_mbo_per_frame(pred, true, ignore_background=ignore_background)
    tn, pn = true.numpy(), pred.numpy()
    for b in range(true.shape[0]):
        ref = _mbo_loops(tn[b], pn[b], objects, n_slots)
        np.testing.assert_allclose(got_video[b].item(), ref, atol=1e-12)
        for t in range(true.shape[1]):
            ref_t = _mbo_loops(tn[b, t], pn[b, t], objects, n_slots)
            np.testing.assert_allclose(got_frame[b, t].item(), ref_t, atol=1e-12)


def test_ari_known_values():
    def ari(t, p):
        t = F.one_hot(torch.tensor([t]))
        p = F.one_hot(torch.tensor([p]))
        return adjusted_rand_index(t, p).item()

    assert ari([0, 0, 1, 1], [0, 0, 1, 1]) == pytest.approx(1.0)
    assert ari([0, 0, 1, 1], [1, 1, 0, 0]) == pytest.approx(1.0)
    assert ari([0, 0, 1, 1], [0, 0, 1, 2]) == pytest.approx(4 / 7)
    assert ari([0, 0, 1, 1], [0, 1, 2, 3]) == pytest.approx(0.0)
    assert ari([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(-0.5)
    # No labelled point at all: denominator 0 -> 1.
    no_labels = torch.zeros(1, 4, 2)
    assert adjusted_rand_index(no_labels, F.one_hot(torch.tensor([[0, 0, 1, 1]]))).item() == 1.0


def test_large_video_is_fast_enough():
    g = torch.Generator().manual_seed(0)
    decoder_masks = torch.rand(1, 24, 11, 576, generator=g).softmax(dim=2)
    labels = torch.randint(0, 11, (1, 24, 128, 128), generator=g)
    pred = masks_to_onehot(decoder_masks, (128, 128))
    metrics = SegmentationMetrics()
    metrics.update(pred, labels)
    out = metrics.compute()
    assert all(math.isfinite(v) for v in out.values())
    assert abs(out["video_ari_fg"]) < 0.05  # random prediction: chance level


# ----------------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------------


def _scene(seed: int = 0):
    """Two videos of blocky objects with background, plus a noisy prediction."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.randint(0, 5, (2, 3, 4, 4), generator=g)
    true = coarse.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)  # [2, 3, 16, 16]
    noise = torch.randint(0, 7, true.shape, generator=g)
    flip = torch.rand(true.shape, generator=g) < 0.3
    pred = torch.where(flip, noise, true)
    return true, pred


def _all_metrics(pred, true, **kwargs):
    out = {}
    for ignore_background in (True, False):
        m = SegmentationMetrics(ignore_background=ignore_background, **kwargs)
        m.update(pred, true)
        out.update(m.compute())
    return out


def test_perfect_prediction_scores_one():
    true, _ = _scene()
    k = 7
    pred = _onehot_pred((true + 2) % k, k)  # same partition, different slot ids
    for key, value in _all_metrics(pred, true).items():
        assert value == pytest.approx(1.0), key
    assert torch.allclose(video_ari(pred, true), torch.ones(2, dtype=torch.float64))
    assert torch.allclose(image_mbo(pred, true, ignore_background=False),
                          torch.ones(2, dtype=torch.float64))


def test_slot_permutation_invariance():
    true, pred_labels = _scene(1)
    pred = _onehot_pred(pred_labels, 7)
    base = _all_metrics(pred, true)
    for perm in (torch.randperm(7, generator=torch.Generator().manual_seed(s)) for s in range(3)):
        permuted = _all_metrics(pred[:, :, perm], true)
        for key in base:
            assert permuted[key] == pytest.approx(base[key], abs=1e-12), key
    # Relabelling the foreground objects of the truth changes nothing either.
    relabel = torch.tensor([0, 3, 1, 4, 2])
    relabelled = _all_metrics(pred, relabel[true])
    for key in ("video_ari_fg", "image_ari_fg", "video_mbo_fg", "image_mbo_fg"):
        assert relabelled[key] == pytest.approx(base[key], abs=1e-12)


def test_merging_all_objects_gives_zero_fg_ari():
    true, _ = _scene(2)
    assert (true.flatten(1).amax(dim=1) >= 2).all()  # >= 2 objects in each video
    pred = torch.zeros_like(true)  # a single slot covers everything
    assert torch.equal(video_ari(pred, true), torch.zeros(2, dtype=torch.float64))
    frames = image_ari_per_frame(pred, true)
    n_objects = torch.stack([torch.stack([(f[f > 0].unique().numel()) * torch.ones(())
                                          for f in v]) for v in true])
    expected = torch.where(n_objects >= 2, 0.0, 1.0).to(torch.float64)
    assert torch.equal(frames, expected)
    # Edge case of the formula: with a single foreground object, one merged slot is a perfect
    # partition (denominator 0 -> ARI 1); splitting that object gives 0.
    one_object = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    one_object[..., :2, :] = 1
    assert video_ari(torch.zeros_like(one_object), one_object).item() == 1.0
    split = torch.arange(16).reshape(1, 1, 4, 4) % 2
    assert video_ari(split, one_object).item() == 0.0


def test_video_without_foreground():
    true, pred_labels = _scene(3)
    true[1] = 0  # second video: background only
    pred = _onehot_pred(pred_labels, 7)

    # mBO: no object -> excluded (NaN per video, not counted).
    mbo = video_mbo(pred, true)
    assert not torch.isnan(mbo[0]) and torch.isnan(mbo[1])
    assert mean_valid(mbo) == pytest.approx(mbo[0].item())
    assert torch.isnan(image_mbo(pred, true)[1])

    # FG-ARI, official semantics: the video still has labelled (background) pixels, its ARI has
    # a zero denominator and counts as 1.0.
    ari = video_ari(pred, true)
    assert ari[1].item() == 1.0
    # Opt-in: exclude videos without foreground from the mean.
    ari_excl = video_ari(pred, true, exclude_empty_foreground=True)
    assert torch.isnan(ari_excl[1]) and ari_excl[0] == ari[0]

    official = SegmentationMetrics()
    official.update(pred, true)
    out = official.compute()
    assert out["video_mbo_fg"] == pytest.approx(mbo[0].item())
    assert out["video_ari_fg"] == pytest.approx((ari[0].item() + 1.0) / 2)
    assert official.counts()["video_mbo_fg"] == 1 and official.counts()["image_mbo_fg"] == 3
    assert official.counts()["video_ari_fg"] == 2 and official.counts()["image_ari_fg"] == 6

    excluding = SegmentationMetrics(exclude_empty_foreground=True)
    excluding.update(pred, true)
    out = excluding.compute()
    assert out["video_ari_fg"] == pytest.approx(ari[0].item())
    assert excluding.counts()["video_ari_fg"] == 1 and excluding.counts()["image_ari_fg"] == 3

    # No labelled pixel at all (one-hot truth with zero channels set, ignore_background=False).
    empty = torch.zeros(2, 3, 5, 16, 16, dtype=torch.bool)
    assert torch.isnan(video_ari(pred, empty, ignore_background=False)).all()
    m = SegmentationMetrics(ignore_background=False)
    m.update(pred, empty)
    assert all(math.isnan(v) for v in m.compute().values())


def test_unlabelled_zero_convention_matches_ytvis_style():
    """0 = unlabelled (YT-VIS): object-only channels + ignore_background=False (official config)
    equals the label map with ignore_background=True and exclude_empty_foreground=True."""
    true, pred = _scene(4)
    true[0, 1] = 0  # one frame without any labelled pixel
    objects_only = labels_to_onehot(true, 5, zero_is_unlabelled=True)
    assert objects_only.shape == (2, 3, 4, 16, 16)
    a = SegmentationMetrics(ignore_background=False)
    a.update(pred, objects_only)
    a = a.compute()
    # Unlabelled pixels are only allowed with ignore_background=False (as in the official code).
    with pytest.raises(ValueError, match="one-hot"):
        SegmentationMetrics(ignore_background=True).update(pred, objects_only)
    b = SegmentationMetrics(ignore_background=True, exclude_empty_foreground=True)
    b.update(pred, true)
    b = b.compute()
    for name in ("video_ari", "image_ari", "video_mbo", "image_mbo"):
        assert a[name + "_all"] == pytest.approx(b[name + "_fg"], abs=1e-12)


def test_ignore_overlaps():
    # Row 0 object 1, row 1 object 2, row 2 overlap of objects 1 and 2 (no background channel).
    true = torch.zeros(1, 1, 3, 3, 2, dtype=torch.uint8)
    true[0, 0, 0, 0] = 1
    true[0, 0, 1, 1] = 1
    true[0, 0, 2, 2] = 1
    true[0, 0, 1, 2] = 1
    pred_good = torch.tensor([[[[0, 0], [1, 1], [2, 3]]]])
    with pytest.raises(ValueError, match="overlaps"):
        video_ari(pred_good, true, ignore_background=False)
    assert video_ari(pred_good, true, ignore_background=False, ignore_overlaps=True).item() == 1.0
    assert video_mbo(pred_good, true, ignore_background=False, ignore_overlaps=True).item() == 1.0
    pred_bad = torch.tensor([[[[0, 1], [2, 3], [4, 4]]]])
    assert video_ari(pred_bad, true, ignore_background=False, ignore_overlaps=True).item() == 0.0
    assert video_mbo(pred_bad, true, ignore_background=False,
                     ignore_overlaps=True).item() == pytest.approx(0.5)


# ----------------------------------------------------------------------------------------------
# Mask conversion
# ----------------------------------------------------------------------------------------------


def test_masks_to_onehot_bilinear_resize():
    g = torch.Generator().manual_seed(5)
    masks = torch.rand(2, 3, 6, 64, generator=g).softmax(dim=2)
    out = masks_to_onehot(masks, (20, 20))
    manual = F.interpolate(masks.reshape(6, 6, 8, 8), size=(20, 20), mode="bilinear",
                           align_corners=False).argmax(dim=1)
    assert out.shape == (2, 3, 6, 20, 20) and out.dtype == torch.bool
    assert (out.sum(dim=2) == 1).all()
    assert torch.equal(out.to(torch.long).argmax(dim=2).reshape(6, 20, 20), manual)
    # Same result from the spatial grid form.
    assert torch.equal(masks_to_onehot(masks.reshape(2, 3, 6, 8, 8), (20, 20)), out)
    assert torch.equal(masks_to_labels(masks, (20, 20)).reshape(6, 20, 20), manual)


def test_masks_to_onehot_non_square_and_errors():
    masks = torch.full((1, 1, 2, 12), 0.5)
    masks[:, :, 1, 5] = 0.6
    out = masks_to_onehot(masks, (30, 40), dtype=torch.float32)  # 12 patches -> 3 x 4 grid
    assert out.shape == (1, 1, 2, 30, 40) and out.dtype == torch.float32
    assert out[0, 0, 0].sum() < 30 * 40 and out[0, 0, 1].sum() > 0
    # Ties go to the lowest slot index (torch.argmax).
    tie = masks_to_onehot(torch.full((1, 1, 3, 4), 1 / 3), (2, 2))
    assert tie[:, :, 0].all() and not tie[:, :, 1:].any()
    with pytest.raises(ValueError, match="patches"):
        masks_to_onehot(torch.full((1, 1, 2, 10), 0.5), (8, 8))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        masks_to_onehot(torch.randn(1, 1, 2, 16) * 5, (8, 8))
    with pytest.raises(ValueError, match=r"\[B, T, K, P\]"):
        masks_to_onehot(torch.rand(2, 16), (4, 4))


def test_labels_to_onehot():
    labels = torch.tensor([[[[0, 1], [2, 0]]]])
    onehot = labels_to_onehot(labels)
    assert onehot.shape == (1, 1, 3, 2, 2) and onehot.dtype == torch.bool
    assert torch.equal(onehot.long().argmax(dim=2), labels)
    assert labels_to_onehot(labels, 5).shape == (1, 1, 5, 2, 2)
    with pytest.raises(ValueError, match="num_classes"):
        labels_to_onehot(labels, 2)
    with pytest.raises(ValueError, match=r"\[B, T, H, W\]"):
        labels_to_onehot(labels[0])


# ----------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------


def test_shape_errors_name_expected_shape():
    true = torch.zeros(2, 3, 4, 8, 8, dtype=torch.bool)
    true[:, :, 0] = True
    pred = torch.zeros(2, 3, 5, 8, 8, dtype=torch.bool)
    pred[:, :, 0] = True
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\] = \[2, 3, C, 8, 8\]"):
        video_ari(pred, true[:, :, :, :4])
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\] = \[2, 3, C, 8, 8\]"):
        video_mbo(pred, true[:1])
    with pytest.raises(ValueError, match=r"\[B, T, K, H, W\]"):
        image_ari(pred[0], true)  # 4-D bool is neither one-hot nor a label map
    with pytest.raises(ValueError, match=r"\[B, T, K, H, W\]"):
        SegmentationMetrics().update(pred.flatten(3), true)
    with pytest.raises(ValueError, match=r"\[B, T, C, H, W\]"):
        image_mbo(pred, true.flatten(3))
    with pytest.raises(ValueError, match=r"\[B, N, C\]"):
        adjusted_rand_index(torch.zeros(2, 4), torch.zeros(2, 4))


def test_value_errors():
    true = torch.zeros(1, 1, 3, 4, 4)
    true[:, :, 0] = 1
    pred = torch.zeros(1, 1, 2, 4, 4)
    pred[:, :, 1] = 1
    bad = pred.clone()
    bad[..., 0, 0] = 2
    with pytest.raises(ValueError, match="binary"):
        video_ari(bad, true)
    bad = pred.clone()
    bad[:, :, 0, 0, 0] = 1  # two slots on one pixel
    with pytest.raises(ValueError, match="one-hot"):
        video_mbo(bad, true)
    missing = true.clone()
    missing[..., 0, 0] = 0  # pixel without class is not allowed with ignore_background
    with pytest.raises(ValueError, match="one-hot"):
        video_ari(pred, missing)
    assert not torch.isnan(video_ari(pred, missing, ignore_background=False)).any()
    with pytest.raises(ValueError, match="non-negative"):
        video_ari(torch.full((1, 1, 4, 4), -1), true)


def test_all_combinations_of_dtypes_agree():
    true, pred = _scene(6)
    ref = _all_metrics(pred, true)
    for tdtype, pdtype in itertools.product((torch.bool, torch.uint8, torch.float32),
                                            (torch.bool, torch.uint8, torch.float64)):
        t = labels_to_onehot(true).to(tdtype)
        p = _onehot_pred(pred, 7).to(pdtype)
        got = _all_metrics(p, t)
        for key in ref:
            assert got[key] == pytest.approx(ref[key], abs=1e-12), (key, tdtype, pdtype)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    true, pred = _scene(7)
    ref = _all_metrics(_onehot_pred(pred, 7), true)
    got = _all_metrics(_onehot_pred(pred, 7).cuda(), true.cuda())
    for key in ref:
        assert got[key] == pytest.approx(ref[key], abs=1e-12), key
    masks = torch.rand(2, 3, 6, 64).softmax(dim=2)
    on_gpu = masks_to_labels(masks.cuda(), (20, 20)).cpu()
    # Float rounding may flip exact near-ties between devices; anything else must agree.
    assert (on_gpu == masks_to_labels(masks, (20, 20))).float().mean() > 0.999


# ---------------------------------------------------------------- label-free signals


def test_label_free_signals_on_known_masks():
    from oc_perception.signals import LabelFreeSignals

    # 1 video, 3 frames, 2 slots on a 2 x 2 mask grid; cell 1 moves to slot 1 at frame 1, where its colour changes.
    labels = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [0, 1, 1, 1]])
    masks = torch.nn.functional.one_hot(labels, 2).permute(0, 2, 1).float()[None]  # [1, 3, 2, 4]
    video = torch.zeros(1, 3, 3, 4, 4)
    video[0, 1:, :, :2, 2:] = 1.0  # the top-right 2 x 2 pixels = cell 1, from frame 1 on
    target = torch.zeros(1, 3, 16, 3)
    target[0, 0, 0] = 1.0  # a bright pixel that moves: pixel 0 in frame 0, pixel 1 in frames 1 and 2
    target[0, 1:, 1] = 1.0
    mean_image = target.mean(dim=(0, 1), keepdim=True).expand_as(target)
    signals = LabelFreeSignals(pixels=True)
    signals.update({"decoder_masks": masks, "target": target, "reconstruction": target}, video)
    signals.update({"decoder_masks": masks, "target": target, "reconstruction": mean_image}, video)
    results = signals.compute()
    assert results["label_free/slots_used"] == 2
    assert results["label_free/mask_change"] == pytest.approx(2 / 16)  # 1 of 8 cell pairs, twice
    assert results["label_free/mask_change_static"] == 0  # the one change is where the colour moved
    assert results["label_free/objects_drawn"] == pytest.approx(0.5)  # drawn exactly once, the mean image once
    assert "label_free/objects_drawn" not in LabelFreeSignals(pixels=False).compute()
