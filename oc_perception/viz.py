"""Slot-mask pictures: colour overlays, per-slot panels, side-by-side composition and TensorBoard videos.
Shared by training, inference, agents and dynamics; files (mp4/gif/PNG) are written by ``oc_perception.io``.

Shapes: ``T`` frames of ``H x W`` pixels, ``K`` slots, ``P = h * w`` patches. Frames are uint8 RGB
``[T, H, W, 3]``, numpy or torch; every function that returns pixels returns a numpy uint8 array, ready for
:func:`oc_perception.io.write_video`. Masks are soft (softmax over slots, e.g. ``out["decoder_masks"]``) at any resolution;
they are resized bilinearly, as the metrics do (the argmax of :func:`upsample_masks` is
:func:`oc_perception.metrics.masks_to_labels`).

    masks = masks_to_grid(out["decoder_masks"][0])               # [T, K, P] -> [T, K, h, w]
    video = compose_panels(frames, overlay_masks(frames, masks), slot_grid(frames, masks))
    io.write_video("slots.mp4", video, fps=10)
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from oc_perception.frames import resize_labels
from oc_perception.io import as_frames

ArrayLike = np.ndarray | torch.Tensor

_PALETTE_HEX = (
    # tab10 (the dark half of matplotlib's tab20), then its light half, then darker and mid tones of tab20b:
    # neighbouring slot indices get clearly different hues.
    "1f77b4 ff7f0e 2ca02c d62728 9467bd 8c564b e377c2 7f7f7f bcbd22 17becf "
    "aec7e8 ffbb78 98df8a ff9896 c5b0d5 c49c94 f7b6d2 c7c7c7 dbdb8d 9edae5 "
    "393b79 637939 8c6d31 843c39 7b4173 6b6ecf b5cf6b e7ba52 d6616b ce6dbd"
)
PALETTE: np.ndarray = np.array([[int(h[i : i + 2], 16) for i in (0, 2, 4)] for h in _PALETTE_HEX.split()],
                               dtype=np.uint8)
"""uint8 [30, 3]: the colour of slot ``k`` (and of label ``k``) is ``PALETTE[k % 30]``."""
PALETTE.flags.writeable = False
_PALETTE_T = torch.tensor(PALETTE)  # a copy: torch cannot wrap a read-only array

BOUNDARY_COLOR = (255, 255, 255)


# ---------------------------------------------------------------------------------------------- inputs


def _colors(n: int) -> torch.Tensor:
    """float32 [n, 3] palette colours of indices 0..n-1 (wrapping around)."""
    return _PALETTE_T[torch.arange(n) % len(_PALETTE_T)].float()


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return images.round().clamp(0, 255).to(torch.uint8).numpy()


# ---------------------------------------------------------------------------------------------- masks


def masks_to_grid(masks: ArrayLike, grid: tuple[int, int] | None = None) -> torch.Tensor:
    """Patch masks ``[..., K, P]`` -> ``[..., K, h, w]`` on the patch grid (row-major, as the encoders emit).

    ``grid`` defaults to the square ``sqrt(P) x sqrt(P)`` of our models (their input is square).
    """
    masks = torch.as_tensor(masks)
    p = masks.shape[-1]
    if grid is None:
        side = math.isqrt(p)
        if side * side != p:
            raise ValueError(f"masks: {p} patches do not form a square grid; pass grid=(h, w)")
        grid = (side, side)
    if grid[0] * grid[1] != p:
        raise ValueError(f"masks: {p} patches do not fit the grid {tuple(grid)}")
    return masks.reshape(*masks.shape[:-1], *grid)


def upsample_masks(masks: ArrayLike, size: Sequence[int]) -> torch.Tensor:
    """Soft masks ``[..., K, h, w]`` -> float32 ``[..., K, H, W]``, bilinear (``align_corners=False``, no
    antialias, as the metrics resize them); ``size = (H, W)``. Use :func:`masks_to_grid` on patch masks first.
    """
    masks = torch.as_tensor(masks).float().cpu()
    if masks.ndim < 3:
        raise ValueError(f"masks: expected [..., K, h, w], got shape {tuple(masks.shape)}")
    size = (int(size[0]), int(size[1]))
    if masks.shape[-2:] == size:
        return masks
    lead = masks.shape[:-2]
    out = F.interpolate(masks.reshape(-1, 1, *masks.shape[-2:]), size=size, mode="bilinear", align_corners=False)
    return out.reshape(*lead, *size)


def resize_frames(frames: ArrayLike, size: Sequence[int]) -> np.ndarray:
    """uint8 ``[T, H, W, 3]`` -> uint8 ``[T, *size, 3]``, bilinear with antialiasing: for display only (the
    model's input transform is ``model.preprocess``)."""
    return _to_uint8(_resize(as_frames(frames), size))


def _resize(frames: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """uint8 [T, H, W, 3] tensor -> float32 [T, *size, 3] in 0..255."""
    x = rearrange(frames, "t h w c -> t c h w").float()
    if x.shape[-2:] != tuple(size):
        x = F.interpolate(x, size=tuple(int(s) for s in size), mode="bilinear", align_corners=False, antialias=True)
    return rearrange(x, "t c h w -> t h w c")


# ---------------------------------------------------------------------------------------------- pictures


def label_colors(labels: ArrayLike, background: int | None = 0) -> np.ndarray:
    """Integer labels ``[..., H, W]`` -> uint8 ``[..., H, W, 3]``: label ``i`` gets ``PALETTE[i % 30]``, the
    ``background`` label (ground truth: 0) black. Pass ``background=None`` for slot indices."""
    labels = torch.as_tensor(labels).cpu().long()
    colors = _PALETTE_T[labels % len(_PALETTE_T)]
    if background is not None:
        colors[labels == background] = 0
    return colors.numpy()


def _boundaries(labels: torch.Tensor) -> torch.Tensor:
    """bool [T, H, W]: pixels whose right or lower neighbour has another label (1-pixel lines)."""
    edge = torch.zeros_like(labels, dtype=torch.bool)
    edge[:, :, :-1] |= labels[:, :, :-1] != labels[:, :, 1:]
    edge[:, :-1, :] |= labels[:, :-1, :] != labels[:, 1:, :]
    return edge


def overlay_masks(frames: ArrayLike, masks: ArrayLike, alpha: float = 0.5, boundaries: bool = True) -> np.ndarray:
    """Colour the frames by slot: uint8 ``[T, H, W, 3]``.

    Args:
        frames: uint8 RGB ``[T, H, W, 3]``.
        masks: soft masks float ``[T, K, h, w]`` (colour = mask-weighted mix of slot colours, so uncertain
            pixels look mixed) or integer slot labels ``[T, h, w]`` (colour ``PALETTE[label]``); any
            resolution, resized to the frames (bilinear / nearest).
        alpha: weight of the colour; a pixel fully owned by slot ``k`` becomes
            ``(1 - alpha) * frame + alpha * PALETTE[k]``.
        boundaries: draw 1-pixel white lines where the argmax slot changes.
    """
    x = as_frames(frames)
    size = x.shape[1:3]
    masks = torch.as_tensor(masks).cpu()
    if masks.dtype.is_floating_point:
        if masks.ndim != 4 or masks.shape[0] != x.shape[0]:
            raise ValueError(f"masks: expected soft [T, K, h, w] with T={x.shape[0]}, got {tuple(masks.shape)}")
        soft = upsample_masks(masks, size)
        color = torch.einsum("tkhw,kc->thwc", soft, _colors(soft.shape[1]))
        labels = soft.max(dim=1).indices  # = argmax (first maximum), several times faster on the CPU
    else:
        if masks.ndim != 3 or masks.shape[0] != x.shape[0]:
            raise ValueError(f"masks: expected labels [T, h, w] with T={x.shape[0]}, got {tuple(masks.shape)}")
        labels = resize_labels(masks.long(), tuple(size))
        color = torch.from_numpy(label_colors(labels, background=None)).float()
    out = (1 - alpha) * x.float() + alpha * color
    if boundaries:
        out[_boundaries(labels)] = torch.tensor(BOUNDARY_COLOR, dtype=out.dtype)
    return _to_uint8(out)


def slot_grid(frames: ArrayLike, masks: ArrayLike, rows: int | None = None) -> np.ndarray:
    """Per-slot panels, the frame multiplied by each slot's soft mask, tiled in a grid with a border in the
    slot's colour: uint8 ``[T, rows * h', cols * w', 3]``.

    Args:
        frames: uint8 RGB ``[T, H, W, 3]``.
        masks: soft masks float ``[T, K, h, w]`` at any resolution.
        rows: grid rows (default ``round(sqrt(K))``, ``cols = ceil(K / rows)``). Panels are the frame shrunk
            by ``rows``, so the grid is as high as the frames (up to rounding).
    """
    x = as_frames(frames)
    masks = torch.as_tensor(masks)
    if masks.ndim != 4 or masks.shape[0] != x.shape[0]:
        raise ValueError(f"masks: expected soft [T, K, h, w] with T={x.shape[0]}, got {tuple(masks.shape)}")
    k = masks.shape[1]
    rows = rows or max(1, round(math.sqrt(k)))
    cols = math.ceil(k / rows)
    tile = (max(1, x.shape[1] // rows), max(1, x.shape[2] // rows))
    panels = _resize(x, tile)[:, None] * upsample_masks(masks, tile)[..., None]  # [T, K, h', w', 3]
    border = torch.zeros(tile, dtype=torch.bool)
    b = max(1, min(tile) // 24)
    border[:b], border[-b:], border[:, :b], border[:, -b:] = True, True, True, True
    panels = torch.where(border[..., None], _colors(k)[:, None, None], panels)
    empty = panels.new_zeros(panels.shape[0], rows * cols - k, *panels.shape[2:])
    grid = rearrange(torch.cat([panels, empty], dim=1), "t (r c) h w ch -> t (r h) (c w) ch", r=rows)
    return _to_uint8(grid)


def compose_panels(*videos: ArrayLike, gap: int = 2) -> np.ndarray:
    """Videos uint8 ``[T, H_i, W_i, 3]`` side by side -> ``[T, max H_i, sum W_i + gaps, 3]``; shorter ones are
    padded with black at the bottom, ``gap`` black columns separate them."""
    if not videos:
        raise ValueError("compose_panels: need at least one video")
    tensors = [as_frames(v) for v in videos]
    t, height = tensors[0].shape[0], max(v.shape[1] for v in tensors)
    if any(v.shape[0] != t for v in tensors):
        raise ValueError(f"compose_panels: videos differ in length: {[v.shape[0] for v in tensors]}")
    parts = []
    for i, v in enumerate(tensors):
        if i:
            parts.append(v.new_zeros(t, height, gap, 3))
        parts.append(F.pad(v, (0, 0, 0, 0, 0, height - v.shape[1])))
    return torch.cat(parts, dim=2).numpy()


# ---------------------------------------------------------------------------------------------- files


# ---------------------------------------------------------------------------------------------- TensorBoard


@functools.cache
def _tensorboard_encodes_video() -> bool:
    try:  # torch's add_video encodes its gif with moviepy < 2 (moviepy.editor)
        import moviepy.editor  # noqa: F401
    except ImportError:
        return False
    return True


def add_video(writer: Any, tag: str, frames: ArrayLike, step: int, fps: float = 4.0, max_strip: int = 8) -> None:
    """Log uint8 RGB frames ``[T, H, W, 3]`` to a ``torch.utils.tensorboard.SummaryWriter``.

    An animated ``add_video`` when moviepy (< 2) is installed; otherwise an image strip of up to ``max_strip``
    evenly spaced frames side by side, so logging never needs an extra dependency.
    """
    x = as_frames(frames)
    if _tensorboard_encodes_video():
        writer.add_video(tag, rearrange(x, "t h w c -> 1 t c h w"), step, fps=fps)
        return
    picked = np.unique(np.linspace(0, x.shape[0] - 1, min(max_strip, x.shape[0])).round().astype(int))
    writer.add_image(tag, compose_panels(*x[picked, None]).squeeze(0), step, dataformats="HWC")
