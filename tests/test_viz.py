"""Mask overlays, slot panels, composition, video files and TensorBoard logging."""

from __future__ import annotations

import av
import numpy as np
import pytest
import torch
from PIL import Image

from oc_perception import io, viz
from oc_perception.metrics import masks_to_labels


def random_frames(t=3, h=16, w=24, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def block_masks(t=3, k=4, h=16, w=24) -> torch.Tensor:
    """One-hot soft masks [T, K, H, W]: slot i owns the i-th vertical band of the frame."""
    labels = torch.arange(w).mul(k).div(w, rounding_mode="floor").expand(t, h, w)
    return torch.nn.functional.one_hot(labels, k).permute(0, 3, 1, 2).float()


def decode(path) -> np.ndarray:
    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])


def test_palette_is_fixed_and_distinct():
    assert viz.PALETTE.dtype == np.uint8 and viz.PALETTE.shape[0] >= 24 and viz.PALETTE.shape[1] == 3
    assert len(np.unique(viz.PALETTE, axis=0)) == len(viz.PALETTE)
    assert not viz.PALETTE.flags.writeable


@pytest.mark.parametrize("as_labels", [False, True])
def test_overlay_owned_pixel_gets_its_slot_colour(as_labels):
    frames, masks, alpha = random_frames(), block_masks(), 0.4
    inputs = masks.argmax(dim=1) if as_labels else masks
    out = viz.overlay_masks(torch.from_numpy(frames), inputs, alpha=alpha, boundaries=False)
    assert out.shape == frames.shape and out.dtype == np.uint8
    for k, col in enumerate([2, 8, 14, 20]):  # one column inside each slot's band
        expected = (1 - alpha) * frames[:, :, col].astype(np.float32) + alpha * viz.PALETTE[k]
        np.testing.assert_allclose(out[:, :, col], expected, atol=0.51)


def test_overlay_boundaries_and_low_resolution_masks():
    frames = random_frames()
    masks = block_masks(h=4, w=4)  # 4 bands of one patch, upsampled to 16 x 24
    out = viz.overlay_masks(frames, masks, alpha=0.5)
    band = [int(x) for x in np.flatnonzero(np.all(out[0] == 255, axis=(0, 2)))]  # all-white columns
    assert band == [5, 11, 17]  # the last column of the first three bands (bilinear midpoints at 6, 12, 18)


def test_upsampled_argmax_matches_the_metrics():
    masks = torch.rand(2, 3, 5, 36).softmax(dim=2)  # [B, T, K, P]
    grid = viz.masks_to_grid(masks)
    assert grid.shape == (2, 3, 5, 6, 6)
    labels = viz.upsample_masks(grid, (20, 30)).argmax(dim=-3)
    torch.testing.assert_close(labels, masks_to_labels(grid, (20, 30)))


def test_masks_to_grid_needs_a_square_or_a_grid():
    with pytest.raises(ValueError, match="square grid"):
        viz.masks_to_grid(torch.rand(2, 3, 12))
    assert viz.masks_to_grid(torch.rand(2, 3, 12), grid=(3, 4)).shape == (2, 3, 3, 4)


def test_slot_grid_panels():
    frames, masks = random_frames(h=32, w=48), block_masks(k=4, h=32, w=48)
    grid = viz.slot_grid(frames, masks)
    assert grid.shape == (3, 32, 48, 3) and grid.dtype == np.uint8  # 2 x 2 panels of 16 x 24
    panel = grid[:, :16, :24]
    assert (panel[:, 0, 0] == viz.PALETTE[0]).all()  # border in the slot's colour
    small = viz.resize_frames(frames, (16, 24))
    np.testing.assert_array_equal(panel[:, 4:12, 2:5], small[:, 4:12, 2:5])  # slot 0 owns the left band
    assert (panel[:, 4:12, 9:20] == 0).all()  # ...and nothing else
    assert viz.slot_grid(frames, masks[:, :3]).shape == (3, 32, 48, 3)  # 3 slots: 2 x 2 with one empty panel


def test_compose_panels_pads_to_equal_height():
    a, b = random_frames(h=10, w=7), random_frames(h=16, w=5)
    out = viz.compose_panels(a, torch.from_numpy(b), gap=2)
    assert out.shape == (3, 16, 7 + 2 + 5, 3)
    np.testing.assert_array_equal(out[:, :10, :7], a)
    assert (out[:, 10:, :7] == 0).all() and (out[:, :, 7:9] == 0).all()
    with pytest.raises(ValueError, match="differ in length"):
        viz.compose_panels(a, random_frames(t=2))


def test_label_colors():
    labels = np.array([[[0, 1], [2, 31]]])
    colors = viz.label_colors(labels)
    assert colors.shape == (1, 2, 2, 3) and colors.dtype == np.uint8
    assert (colors[0, 0, 0] == 0).all()
    np.testing.assert_array_equal(colors[0, 1], viz.PALETTE[[2, 31 % len(viz.PALETTE)]])
    np.testing.assert_array_equal(viz.label_colors(labels, background=None)[0, 0, 0], viz.PALETTE[0])


def test_write_mp4_round_trip(tmp_path):
    frames = random_frames(t=12, h=33, w=47)
    path = io.write_video(tmp_path / "v.mp4", frames, fps=12, scale=1)
    video = decode(path)
    assert video.shape == (12, 34, 48, 3)  # padded to even dimensions
    with av.open(str(path)) as container:
        assert container.streams.video[0].average_rate == 12
    assert [p.name for p in tmp_path.iterdir()] == ["v.mp4"]  # no temporary file left


def test_write_video_scales_tiny_frames(tmp_path):
    frames = np.zeros((2, 20, 30, 3), np.uint8)
    frames[:, :10] = 255
    video = decode(io.write_video(tmp_path / "v.mp4", frames))
    assert video.shape == (2, 260, 390, 3)  # x13: the short side reaches MIN_VIDEO_SIDE
    assert video[:, :120].min() > 240 and video[:, 140:].max() < 15  # nearest: the edge stays sharp


def test_write_gif(tmp_path):
    path = io.write_video(tmp_path / "v.gif", random_frames(t=5), fps=5, scale=2)
    with Image.open(path) as gif:
        assert (gif.n_frames, gif.size, gif.info["duration"]) == (5, (48, 32), 200)


def test_failed_or_unsupported_writes_leave_nothing(tmp_path):
    with pytest.raises(RuntimeError, match="boom"), io.VideoWriter(tmp_path / "v.mp4") as writer:
        writer.write(random_frames())
        raise RuntimeError("boom")
    with pytest.raises(ValueError, match="unsupported video format"):
        io.VideoWriter(tmp_path / "v.avi")
    with pytest.raises(ValueError, match="no frames"):
        io.write_video(tmp_path / "v.mp4", np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="expected uint8 RGB"):
        io.write_video(tmp_path / "v.mp4", np.zeros((2, 8, 8, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


class FakeWriter:
    def __init__(self):
        self.calls = []

    def add_video(self, tag, video, step, fps):
        self.calls.append(("video", tag, tuple(video.shape), step, fps))

    def add_image(self, tag, image, step, dataformats):
        self.calls.append(("image", tag, image.shape, step, dataformats))


def test_add_video_falls_back_to_a_frame_strip(monkeypatch):
    frames = random_frames(t=20, h=8, w=6)
    monkeypatch.setattr(viz, "_tensorboard_encodes_video", lambda: False)
    writer = FakeWriter()
    viz.add_video(writer, "val/masks", frames, step=7)
    assert writer.calls == [("image", "val/masks", (8, 8 * 6 + 7 * 2, 3), 7, "HWC")]  # 8 frames, 2-px gaps
    monkeypatch.setattr(viz, "_tensorboard_encodes_video", lambda: True)
    viz.add_video(writer, "val/masks", frames, step=8, fps=5)
    assert writer.calls[-1] == ("video", "val/masks", (1, 20, 3, 8, 6), 8, 5)
