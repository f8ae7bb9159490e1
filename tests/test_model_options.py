"""The from-pixels model options: random initial slots, the broadcast decoder, Invariant Slot Attention and the
foreground-weighted reconstruction loss. Each keeps streaming equal to the clip forward."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_overrides
from oc_perception import SlotContrast
from oc_perception.config import load_config
from oc_perception.model.losses import (colour_smoothness_loss, feature_reconstruction_loss,
                                        temporal_consistency_loss)
from oc_perception.model.slot_attention import InvariantSlotAttention, grid_coordinates
from oc_perception.wrappers import SlotObservation

VARIANTS = {
    "random": ["model.initializer=random"],
    "broadcast": ["model.initializer=random", "model.decoder.kind=broadcast", "model.decoder.broadcast_size=4",
                  "model.decoder.conv_channels=[8, 8]"],
    "relative": ["model.initializer=random", "model.slot_attention.relative=true"],
    "relative_fixed": ["model.slot_attention.relative=true"],
    "relative_broadcast": ["model.initializer=random", "model.slot_attention.relative=true",
                           "model.decoder.kind=broadcast", "model.decoder.broadcast_size=4",
                           "model.decoder.conv_channels=[8, 8]"],
    "first_frame_passes": ["model.initializer=random", "model.slot_attention.first_frame_passes=3"],
    "broadcast_colour_terms": ["model.initializer=random", "model.decoder.kind=broadcast",
                               "model.decoder.broadcast_size=4", "model.decoder.conv_channels=[8, 8]",
                               "model.loss.smoothness_weight=1.0", "model.loss.temporal_weight=1.0"],
    "relative_first_frame_passes": ["model.initializer=random", "model.slot_attention.relative=true",
                                    "model.slot_attention.first_frame_passes=2"],
    "relative_dormant": ["model.initializer=random", "model.slot_attention.relative=true",
                         "model.slot_attention.dormant_below=15"],
}


def make_model(extra: list[str]) -> SlotContrast:
    torch.manual_seed(0)
    cfg = load_config("configs/pretrain/movi_c.yml", tiny_overrides("cnn") + extra)
    return SlotContrast(cfg.model).eval()


def random_video(model: SlotContrast, b: int = 3, t: int = 4, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    s = model.input_size
    return model.preprocess(torch.randint(0, 256, (b, t, s, s, 3), generator=g, dtype=torch.uint8))


@pytest.fixture(scope="module", params=list(VARIANTS))
def variant(request) -> SlotContrast:
    return make_model(VARIANTS[request.param])


@pytest.mark.parametrize("relative", [False, True])
def test_first_frame_passes_show_the_first_frame_again(relative):
    """``first_frame_passes=3`` gives the slots that the first frame shown 3 times in a row gives a model with one
    pass: the extra passes are the recurrence on the same frame."""
    extra = ["model.initializer=random"] + (["model.slot_attention.relative=true"] if relative else [])
    once, passes = make_model(extra), make_model(extra + ["model.slot_attention.first_frame_passes=3"])
    video = random_video(once)
    with torch.no_grad():
        repeated, _ = once(torch.cat([video[:, :1], video[:, :1], video], dim=1))
        settled, _ = passes(video)
    for key in ("slots", "grouping_masks", "decoder_masks"):
        torch.testing.assert_close(settled[key], repeated[key][:, 2:], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(settled["slots"], once(video)[0]["slots"], atol=1e-3)  # the passes changed them


@pytest.mark.parametrize("relative", [False, True])
def test_dormant_slots_keep_their_state_and_the_others_take_the_predictors(relative):
    """With ``dormant_below``, a slot whose attention holds fewer input patches than that in a frame carries the
    state it started the frame with to the next one; every other slot, and every slot on an episode's first
    frame, carries the predictor's output, as without the option."""
    extra = ["model.initializer=random"] + (["model.slot_attention.relative=true"] if relative else [])
    model = make_model(extra + ["model.slot_attention.dormant_below=15"])
    video = random_video(model, t=5)
    dormant_seen = active_seen = 0
    with torch.no_grad():
        state = model.init_state(3)
        for t in range(video.shape[1]):
            before = state
            out, state = model.step(video[:, t], state)
            predicted = model.predictor(out["slots"])
            held = out["grouping_masks"].sum(-1) < 15  # [B, K]; the tiny model has 64 patches over 4 slots
            if t == 0:
                held = torch.zeros_like(held)
            torch.testing.assert_close(state.slots[held], before.slots[held])
            torch.testing.assert_close(state.slots[~held], predicted[~held])
            if relative:
                torch.testing.assert_close(state.positions[held], before.positions[held])
                torch.testing.assert_close(state.positions[~held], out["positions"][~held])
            dormant_seen, active_seen = dormant_seen + int(held.sum()), active_seen + int((~held).sum())
        # the weights are those of a model without the option (it adds none): only the carried state differs
        plain = make_model(extra)
        plain.load_state_dict(model.state_dict())
        clip, _ = plain(video)
        torch.testing.assert_close(clip["slots"][:, :2], model(video)[0]["slots"][:, :2])
    assert dormant_seen and active_seen  # both cases were exercised
    assert not torch.allclose(clip["slots"], model(video)[0]["slots"])


@pytest.mark.parametrize("relative", [False, True])
def test_num_slots_is_free_at_inference_with_random_initial_slots(relative):
    model = make_model(["model.initializer=random"] + (["model.slot_attention.relative=true"] if relative else []))
    mu = model.initializer.mu
    model.set_num_slots(6)
    assert model.initializer.mu is mu and model.cfg.num_slots == 6  # the learned distribution, shared
    video = random_video(model)
    with torch.no_grad():
        out, _ = model(video)
        state = model.init_state(3)
        for t in range(video.shape[1]):
            step, state = model.step(video[:, t], state, decode=True)
    assert out["slots"].shape[2] == 6 and out["decoder_masks"].shape[2] == 6
    torch.testing.assert_close(step["slots"], out["slots"][:, -1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out["decoder_masks"].sum(2), torch.ones_like(out["decoder_masks"][:, :, 0]))
    fixed = make_model([])
    with pytest.raises(ValueError, match="random initial slots"):
        fixed.set_num_slots(6)


def test_streaming_with_restarts_equals_clip_forward(variant):
    """Frame by frame, with rows restarting mid-stream, each row sees what a clip forward of its episode sees."""
    model = variant
    video = random_video(model)
    with torch.no_grad():
        clip, _ = model(video)
        restarted, _ = model(video[:, 2:])
        state = model.init_state(3)
        for t in range(4):
            if t == 2:
                state = state.restart(torch.tensor([True, False, True]))
            out, state = model.step(video[:, t], state, decode=True)
            for key in ("slots", "grouping_masks", "decoder_masks"):
                expected = clip[key][:, t].clone()
                if t >= 2:
                    expected[[0, 2]] = restarted[key][[0, 2], t - 2]
                torch.testing.assert_close(out[key], expected, atol=1e-5, rtol=1e-5)
    masks = clip["decoder_masks"]
    assert masks.shape[-1] == model.mask_side**2
    torch.testing.assert_close(masks.sum(2), torch.ones_like(masks[:, :, 0]))


def test_every_variant_trains(variant):
    model = variant.train()
    try:
        out, _ = model(random_video(model))
        losses = model.loss(out)
        lc = model.cfg.loss
        for key, weight in (("loss_smooth", lc.smoothness_weight), ("loss_temporal", lc.temporal_weight)):
            assert (key in losses) == (weight > 0) and (weight == 0 or torch.isfinite(losses[key]))
        losses["loss_total"].backward()
        grads = {n: p.grad for n, p in model.named_parameters()}
        missing = [n for n, g in grads.items() if g is None or not torch.isfinite(g).all()]
        assert not missing, f"no finite gradient for {missing}"
    finally:
        model.zero_grad(set_to_none=True)
        model.eval()


def test_random_initializer_draws_in_training_and_is_fixed_in_eval():
    model = make_model(VARIANTS["random"])
    model.train()
    a, _ = model.first_slots(2)
    b, _ = model.first_slots(2)
    assert not torch.allclose(a, b), "training must draw new initial slots"
    model.eval()
    c, _ = model.first_slots(2)
    d, _ = model.first_slots(2)
    torch.testing.assert_close(c, d)
    torch.testing.assert_close(c[0], c[1])  # every stream starts from the same draw
    assert torch.cdist(c[0], c[0]).add(torch.eye(c.shape[1]) * 1e3).min() > 1e-3, "eval slots must differ"
    # The learned mean and scale shape the draw.
    with torch.no_grad():
        model.initializer.mu.add_(1.0)
    torch.testing.assert_close(model.first_slots(1)[0], c[:1] + 1.0)


def test_random_init_slots_reproducible_through_the_wrapper():
    from test_wrappers import TinyImageEnv

    model = make_model(VARIANTS["random"])
    runs = []
    for _ in range(2):
        env = SlotObservation(TinyImageEnv("rgb_array", max_len=50), checkpoint=model)
        obs, _ = env.reset(seed=3)
        trajectory = [obs] + [env.step(env.action_space.sample())[0] for _ in range(3)]
        env.action_space.seed(0)
        runs.append(np.stack(trajectory))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])


def test_broadcast_masks_in_the_wrapper_have_the_decoder_resolution():
    from test_wrappers import TinyImageEnv

    model = make_model(VARIANTS["broadcast"])
    assert model.mask_side == 16 and model.grid == 8
    env = SlotObservation(TinyImageEnv("rgb_array", max_len=50), checkpoint=model, include_masks=True)
    obs, _ = env.reset(seed=0)
    assert obs["masks"].shape == env.observation_space["masks"].shape == (4, 16, 16)
    assert env.observation_space.contains(obs)


def test_broadcast_target_is_the_pooled_frame():
    model = make_model(VARIANTS["broadcast"])
    video = random_video(model, b=1, t=2)
    with torch.no_grad():
        out, _ = model(video)
    pooled = F.avg_pool2d(video[0], model.input_size // model.mask_side)  # [T, 3, 16, 16]
    torch.testing.assert_close(out["target"][0], pooled.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("extra, match", [
    (["model.decoder.kind=broadcast", "model.decoder.broadcast_size=3"], "does not divide the input size"),
    (["model.decoder.kind=conv"], "model.decoder.kind=.conv.: must be one of mlp, broadcast"),
    (["model.initializer=gauss"], "model.initializer=.gauss.: must be one of fixed, random"),
    (["model.slot_attention.dormant_below=-1"], "model.slot_attention.dormant_below=-1"),
])
def test_bad_options_are_named(extra, match):
    with pytest.raises(ValueError, match=match):
        make_model(extra)


@pytest.mark.parametrize("term", ["background_weight", "smoothness_weight", "temporal_weight"])
def test_colour_terms_need_a_pixel_target(term):
    cfg = load_config("configs/pretrain/movi_c.yml", tiny_overrides("vit") + [f"model.loss.{term}=1"])
    with pytest.raises(ValueError, match=f"{term} reads the frames' colours: it needs model.encoder.target"):
        SlotContrast(cfg.model)


def test_isa_positions_are_the_attention_statistics():
    torch.manual_seed(0)
    isa = InvariantSlotAttention(dim=8, grid=4)
    weights = torch.rand(2, 3, 16)
    weights = weights / weights.sum(-1, keepdim=True)
    pos = isa.update_positions(weights)
    grid = grid_coordinates(4)
    for b in range(2):
        for k in range(3):
            mean = (weights[b, k, :, None] * grid).sum(0)
            std = ((weights[b, k, :, None] * (grid - mean) ** 2).sum(0)).sqrt().clamp(min=isa.min_scale)
            torch.testing.assert_close(pos[b, k], torch.cat([mean, std]))


def test_isa_keys_are_computed_in_each_slots_frame():
    """Two slots at different places see different keys for the same input; at the same place, the same."""
    torch.manual_seed(0)
    isa = InvariantSlotAttention(dim=8, grid=4)
    inputs = torch.randn(1, 16, 8)
    slots = torch.randn(1, 1, 8).expand(1, 3, 8)
    pos = torch.tensor([[[-0.5, -0.5, 0.2, 0.2], [0.5, 0.5, 0.2, 0.2], [-0.5, -0.5, 0.2, 0.2]]])
    out, _, _ = isa(slots, pos, inputs, 1)
    torch.testing.assert_close(out[0, 0], out[0, 2])
    assert not torch.allclose(out[0, 0], out[0, 1], atol=1e-3)


def test_foreground_weight_weighs_the_pixels_unlike_the_floor():
    target = torch.zeros(1, 10, 3)  # ten black pixels ...
    target[0, 4] = 1.0  # ... and one coloured
    recon = target.clone()
    recon[0, 4] = 0.0  # wrong only there: squared error 1 per channel
    torch.testing.assert_close(feature_reconstruction_loss(recon, target), torch.tensor(1 / 10))
    torch.testing.assert_close(feature_reconstruction_loss(recon, target, 5.0), torch.tensor(5 / (9 + 5)))
    floor_wrong = target.clone()
    floor_wrong[0, 0] = 1.0  # the same error on a floor pixel counts once
    torch.testing.assert_close(feature_reconstruction_loss(floor_wrong, target, 5.0), torch.tensor(1 / 14))


def _two_square_scene() -> torch.Tensor:
    """target [1, 64, 3] on an 8 x 8 grid: a black floor, a red square in rows/cols 1-3, a green one in 5-7."""
    frame = torch.zeros(8, 8, 3)
    frame[1:4, 1:4, 0] = 1.0
    frame[5:8, 5:8, 1] = 1.0
    return frame.reshape(1, 64, 3)


def _masks(owner: torch.Tensor, k: int = 3) -> torch.Tensor:
    """owner int [8, 8] -> one-hot masks [1, K, 64]."""
    return F.one_hot(owner.reshape(-1), k).T.float().unsqueeze(0)


def test_colour_smoothness_costs_a_cut_inside_an_object_and_nothing_at_its_edges():
    target = _two_square_scene()
    whole = torch.zeros(8, 8, dtype=torch.long)
    whole[1:4, 1:4], whole[5:8, 5:8] = 1, 2  # each square in a slot of its own, the floor in slot 0
    assert colour_smoothness_loss(_masks(whole), target).item() == pytest.approx(0.0, abs=1e-6)
    cut = whole.clone()
    cut[1:4, 3] = 2  # the red square's last column goes to the green square's slot
    # 6 + 6 foreground same-colour pairs per square; the cut crosses 3 of the 24, each costing 1
    assert colour_smoothness_loss(_masks(cut), target).item() == pytest.approx(3 / 24, abs=1e-4)
    floor_cut = whole.clone()
    floor_cut[:, 4] = 2  # a boundary across the floor costs nothing: the floor is left out
    assert colour_smoothness_loss(_masks(floor_cut), target).item() == pytest.approx(0.0, abs=1e-6)
    # ... unless the floor counts: the share of floor-floor pairs (all of one colour) the boundary crosses
    floor = (target[0, :, 0] + target[0, :, 1] == 0).reshape(8, 8).numpy()
    owner = floor_cut.numpy()
    pairs = [(p, q) for p in np.ndindex(8, 8) for q in ((p[0], p[1] + 1), (p[0] + 1, p[1]))
             if q[0] < 8 and q[1] < 8 and floor[p] and floor[q]]
    crossed = sum(owner[p] != owner[q] for p, q in pairs)
    assert crossed == 10
    assert colour_smoothness_loss(_masks(floor_cut), target, floor_weight=0.5).item() == pytest.approx(
        0.5 * crossed / len(pairs), abs=1e-4)
    soft = _masks(whole) * 0.5 + 0.5 / 3  # the same owners, each cell half shared out evenly
    assert colour_smoothness_loss(soft, target).item() == pytest.approx(0.5, abs=1e-4)  # 1 - (4/9 + 2/36)
    masks = _masks(cut).requires_grad_()
    colour_smoothness_loss(masks, target).backward()
    assert masks.grad[0, :, 1 * 8 + 3].abs().sum() > 0 and masks.grad[0, :, 0].abs().sum() == 0
    with pytest.raises(ValueError, match="not a square grid"):
        colour_smoothness_loss(torch.ones(1, 3, 10) / 3, torch.zeros(1, 10, 3))


def test_temporal_consistency_costs_a_slot_change_where_the_colour_stays():
    frame = _two_square_scene()  # [1, 64, 3]
    owner = torch.zeros(8, 8, dtype=torch.long)
    owner[1:4, 1:4], owner[5:8, 5:8] = 1, 2
    clip = torch.stack([frame, frame], 1)  # [1, 2, 64, 3]: nothing moves
    kept = torch.stack([_masks(owner), _masks(owner)], 1)  # [1, 2, K, 64]
    assert temporal_consistency_loss(kept, clip).item() == pytest.approx(0.0, abs=1e-6)
    swapped = owner.clone()
    swapped[1:4, 1:4], swapped[5:8, 5:8] = 2, 1  # the two squares trade slots
    traded = torch.stack([_masks(owner), _masks(swapped)], 1)
    assert temporal_consistency_loss(traded, clip).item() == pytest.approx(1.0, abs=1e-4)
    half = owner.clone()
    half[1:4, 3] = 2  # 3 of the 18 foreground cells go over to the other square's slot
    assert temporal_consistency_loss(torch.stack([_masks(owner), _masks(half)], 1), clip).item() == pytest.approx(
        3 / 18, abs=1e-4)
    floor = owner.clone()
    floor[0, :] = 2  # the floor changing slot costs nothing: only foreground cells count
    assert temporal_consistency_loss(torch.stack([_masks(owner), _masks(floor)], 1), clip).item() == pytest.approx(
        0.0, abs=1e-6)
    moved = torch.zeros(8, 8, 3)
    moved[1:4, 1:4, 1] = 1.0  # green now where red was, red where green was: every cell changes colour
    moved[5:8, 5:8, 0] = 1.0
    moved_clip = torch.stack([frame, moved.reshape(1, 64, 3)], 1)
    assert temporal_consistency_loss(traded, moved_clip).item() == pytest.approx(0.0, abs=1e-4)
    assert temporal_consistency_loss(kept[:, :1], clip[:, :1]).item() == 0.0  # one frame: no transition
    masks = traded.clone().requires_grad_()
    temporal_consistency_loss(masks, clip).backward()
    assert masks.grad[0, 1, :, 1 * 8 + 1].abs().sum() > 0 and masks.grad[0, 1, :, 0].abs().sum() == 0


def test_segmentation_loss_matches_segments_to_slots_once_per_clip():
    from oc_perception.model.losses import segmentation_matching_loss

    labels = torch.zeros(1, 2, 4, 4, dtype=torch.long)
    labels[0, :, :2, :2] = 3  # a small object in both frames; the rest is background (a segment too)
    k = 3
    obj, floor = (labels[0, 0].flatten() == 3).float(), (labels[0, 0].flatten() == 0).float()
    perfect = torch.zeros(1, 2, k, 16)
    perfect[0, :, 2], perfect[0, :, 0] = obj, floor  # slot 2 holds the object, slot 0 the floor, slot 1 nothing
    assert segmentation_matching_loss(perfect, labels) < 1e-4
    # Uniform masks: cross-entropy log K, and the soft IoU of a 1/K mask over the whole frame.
    uniform = torch.full((1, 2, k, 16), 1 / k)
    iou_obj = (4 / k) / (4 + 16 / k - 4 / k)
    iou_floor = (12 / k) / (12 + 16 / k - 12 / k)
    expected = np.log(k) + 1 - (iou_obj + iou_floor) / 2
    for area_exponent in (0.0, 1.0):  # per pixel or per segment, the cross-entropy is log K here
        torch.testing.assert_close(segmentation_matching_loss(uniform, labels, area_exponent),
                                   torch.tensor(expected).float(), atol=1e-4, rtol=1e-4)
    # The object switching slots between frames costs: one slot per segment for the whole clip.
    switched = perfect.clone()
    switched[0, 1, 2], switched[0, 1, 1] = 0, obj
    assert segmentation_matching_loss(switched, labels) > 1
    # Oversized masks cost through the IoU although they cover the object.
    blob = perfect.clone()
    blob[0, :, 2] = 1.0
    blob[0, :, 0] = 0.0
    assert segmentation_matching_loss(blob, labels) > 0.5
    with pytest.raises(ValueError, match="labels must be"):
        segmentation_matching_loss(perfect, torch.zeros(1, 2, 8, 8, dtype=torch.long))


def test_segmentation_loss_weighs_every_pixel_alike_in_the_cross_entropy():
    # area_exponent=0: the matched cross-entropy is the plain per-pixel one (every pixel alike).
    from oc_perception.model.losses import _segment_costs

    gen = torch.Generator().manual_seed(0)
    labels = torch.zeros(2, 16, dtype=torch.long)  # [T, M]: background and two objects of unequal areas
    labels[:, :2], labels[:, 5:10] = 4, 7
    masks = torch.softmax(torch.randn(2, 3, 16, generator=gen), dim=1)  # [T, K, M]
    ids = torch.tensor([0, 4, 7])
    ce, _ = _segment_costs(masks, labels, ids, area_exponent=0.0, eps=0.0)
    slot_of = torch.tensor([2, 0, 1])  # segment g -> slot
    per_pixel_slot = slot_of[torch.bucketize(labels, ids)]  # [T, M]
    expected = F.nll_loss(masks.log(), per_pixel_slot)  # mean over every pixel of every frame
    torch.testing.assert_close(ce[torch.arange(3), slot_of].sum(), expected)
    # area_exponent=1: the mean over each segment's own pixels.
    ce, _ = _segment_costs(masks, labels, ids, area_exponent=1.0, eps=0.0)
    own = [-masks.log()[:, slot_of[g]][labels == ids[g]].mean() for g in range(3)]
    torch.testing.assert_close(ce[torch.arange(3), slot_of], torch.stack(own))


def test_supervised_training_reads_segmentations(tmp_path):
    from oc_perception.data.shards import write_shards
    from oc_perception.train import main as train_main
    from test_train import moving_squares, overrides

    write_shards(moving_squares(4, seed=0), str(tmp_path / "sq" / "sq-train-%06d.tar"), videos_per_shard=4)
    write_shards(moving_squares(2, seed=1), str(tmp_path / "sq" / "sq-validation-%06d.tar"), videos_per_shard=2)
    for kind in (["model.decoder.kind=mlp"], ["model.decoder.kind=broadcast", "model.decoder.broadcast_size=4",
                                                "model.decoder.conv_channels=[8]"]):
        log = tmp_path / kind[0].split("=")[1]
        train_main(["configs/pretrain/shapes_stage1.yml", *overrides("cnn", 2), "model.loss.segmentation_weight=1",
                    *kind, "--data-dir", str(tmp_path), "--log-dir", str(log)])
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(log))
        events.Reload()
        assert events.Scalars("train/loss_seg")[-1].value > 0


def test_broadcast_masks_through_inference_and_dynamics_decoding(tmp_path):
    from oc_perception import io
    from oc_perception.dynamics.evaluate import decode_masks
    from oc_perception.inference import infer_video

    model = make_model(VARIANTS["broadcast"])
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    src = io.write_video(tmp_path / "in.mp4", frames, fps=5, scale=1)
    infer_video(model, src, out=tmp_path / "out.mp4", slots_out=tmp_path / "slots.npz", progress=False)
    with np.load(tmp_path / "slots.npz") as data:
        assert data["masks"].shape == (3, 4, 16, 16)  # the decoder's 16 x 16, not the 8 x 8 patch grid
    masks = decode_masks(model, torch.randn(5, 4, 32))
    assert masks.shape == (5, 4, 256)
    torch.testing.assert_close(masks.sum(1), torch.ones(5, 256))


def test_segmentation_loss_matches_several_mask_sets_jointly():
    from oc_perception.model.losses import segmentation_matching_loss

    labels = torch.zeros(1, 1, 4, 4, dtype=torch.long)
    labels[0, 0, :2, :2] = 1
    masks = torch.softmax(torch.randn(1, 1, 3, 16, generator=torch.Generator().manual_seed(0)), dim=2)
    single = segmentation_matching_loss(masks, labels)
    torch.testing.assert_close(segmentation_matching_loss([masks, masks], [labels, labels]), 2 * single)
    coarse = labels[..., ::2, ::2]  # the same segments on a 2 x 2 grid
    both = segmentation_matching_loss([masks, masks[..., :4]], [labels, coarse])
    assert both > single
    # A segment that vanishes from the coarse grid still counts at the fine one.
    tiny = labels.clone()
    tiny[0, 0, 3, 3] = 2
    assert segmentation_matching_loss([masks, masks[..., :4]], [tiny, tiny[..., ::2, ::2]]) > 0
