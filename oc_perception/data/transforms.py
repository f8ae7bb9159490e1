"""Frame transforms shared by training, inference and the env wrappers, so every path feeds the model
exactly what it was trained on.

Geometry and interpolation follow the official SlotContrast pipeline (``slotcontrast/data/transforms.py``):
frames are resized bicubically *without* antialiasing and clamped to [0, 1]; segmentations use
``nearest-exact``. Two layouts:

- ``"resize"`` (MOVi, our envs): the whole frame is resized to ``size x size``.
- ``"short_side_crop"`` (YT-VIS): train resizes the short side to ``size`` (long side
  ``floor(long / short * size)``) and takes a random ``size x size`` crop; validation takes the centred
  full square (side = short side) and resizes it to ``size x size``.

Training clips may be flipped horizontally (the same flip for all frames). Segmentations follow the same
crop and flip but keep their native resolution unless a ``mask_size`` is given (then ``nearest-exact`` to
``mask_size x mask_size``, as the official code does with the input size). The one exception is a train
random crop, which lives on the resized grid: there the segmentation is first brought to that grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

TRANSFORM_MODES = ("resize", "short_side_crop")


def rgb_conversion(dtype: np.dtype | torch.dtype, frame_shape: Sequence[int]) -> str:
    """What turns frames of ``dtype`` and per-frame shape ``frame_shape`` into uint8 RGB ``[H, W, 3]``: the fix
    an error message names (e.g. "drop the alpha channel (x[..., :3])")."""
    shape, name = tuple(frame_shape), str(dtype).removeprefix("torch.")
    steps = []
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        steps.append("move the channels last (np.moveaxis(x, -3, -1))")
        shape = (*shape[1:], shape[0])
    if len(shape) == 2:
        steps.append("stack the grey frames to RGB (np.repeat(x[..., None], 3, axis=-1))")
    elif len(shape) == 3 and shape[-1] == 4:
        steps.append("drop the alpha channel (x[..., :3])")
    elif len(shape) == 3 and shape[-1] == 1:
        steps.append("repeat the grey channel (np.repeat(x, 3, axis=-1))")
    if "float" in name:
        steps.append("map floats in [0, 1] to uint8 ((x * 255).round().astype(np.uint8))")
    elif name != "uint8":
        steps.append(f"rescale the {name} values to 0..255 and cast them (x.astype(np.uint8))")
    return "; ".join(steps) or "give uint8 RGB frames [H, W, 3]"


def check_rgb_uint8(frames: torch.Tensor, name: str = "frames") -> None:
    """Raise a ValueError unless ``frames`` is uint8 RGB ``[..., H, W, 3]``."""
    if frames.dtype != torch.uint8:
        raise ValueError(f"{name}: expected uint8 RGB [..., H, W, 3], got dtype {frames.dtype}")
    if frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 RGB [..., H, W, 3], got shape {tuple(frames.shape)}")
    if frames.shape[-3] == 0 or frames.shape[-2] == 0:
        raise ValueError(f"{name}: frames of {frames.shape[-3]}x{frames.shape[-2]} pixels hold no image")


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Float ``images`` [N, C, H, W] in [0, 1] -> [N, C, *size], the official way: no antialias, and
    bicubic overshoot clamped back to [0, 1]."""
    if images.shape[-2:] == size:
        return images
    out = F.interpolate(images, size=size, mode=mode)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def resize_square(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Resize float ``images`` [N, C, H, W] in [0, 1] to [N, C, size, size]."""
    return _resize(images, (size, size), mode)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H', W') with the short side scaled to ``size`` and the long side to ``floor(long / short * size)``."""
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def resize_short_side(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Float ``images`` [N, C, H, W] in [0, 1] -> [N, C, H', W'] with the short side equal to ``size``."""
    return _resize(images, short_side_size(*images.shape[-2:], size), mode)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Integer ``labels`` [T, H, W] -> [T, *size] by ``nearest-exact`` (exact for ids below 2^24)."""
    if labels.shape[-2:] == size:
        return labels
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].to(labels.dtype)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``images`` [..., 3, H, W] in [0, 1] -> (x - mean) / std per channel."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - m) / s


def to_float_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [N, H, W, 3] -> float32 [N, 3, H, W] in [0, 1]."""
    check_rgb_uint8(frames)
    return rearrange(frames, "n h w c -> n c h w").float().div_(255.0)


def preprocess_frames(
    frames: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 RGB ``[..., H, W, 3]`` -> normalised float32 ``[..., 3, size, size]``."""
    check_rgb_uint8(frames)
    lead = frames.shape[:-3]
    x = to_float_frames(frames.reshape(-1, *frames.shape[-3:]))
    x = normalize(resize_square(x, size), mean, std)
    return x.reshape(*lead, 3, size, size)


def resize_frames_as_model_input(frames: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """uint8 RGB ``[T, H, W, 3]`` -> uint8 ``[T, size, size, 3]``, resized as :func:`preprocess_frames` resizes
    (bicubic, no antialias, clamped): frames stored at the model's input size are what the model makes of the
    env's frames at their own size, so training and the env wrappers see the same pixels (up to rounding)."""
    frames = torch.as_tensor(np.asarray(frames))
    check_rgb_uint8(frames)
    if frames.shape[-3:-1] == (size, size):
        return frames.numpy()
    x = resize_square(to_float_frames(frames), size)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def sample_chunk_start(num_frames: int, chunk_size: int, rng: np.random.Generator) -> int:
    """Start frame of one random ``chunk_size`` chunk of a video.

    As in the official pipeline the video is cut into ``num_frames // chunk_size`` consecutive chunks
    starting at multiples of ``chunk_size`` (a remainder at the end is never used) and one is drawn.
    """
    num_chunks = num_frames // chunk_size
    if num_chunks == 0:
        raise ValueError(f"a video of {num_frames} frames is shorter than one {chunk_size}-frame chunk")
    return int(rng.integers(num_chunks)) * chunk_size


def center_square_box(height: int, width: int) -> tuple[int, int, int]:
    """(top, left, side) of the centred full square, rounded like torchvision's ``center_crop``."""
    side = min(height, width)
    return int(round((height - side) / 2.0)), int(round((width - side) / 2.0)), side


class Clip(NamedTuple):
    """A transformed clip.

    video: float32 [T, 3, S, S], normalised. labels: int64 [T, h, w] or None. flipped: the clip was mirrored.
    """

    video: torch.Tensor
    labels: torch.Tensor | None
    flipped: bool


@dataclass(frozen=True)
class VideoTransform:
    """uint8 video [T, H, W, 3] (+ int labels [T, H, W]) -> a normalised model-input :class:`Clip`.

    ``train`` selects the random crop (``short_side_crop``) and the flip (with ``flip_prob``); validation is
    deterministic. Randomness comes only from the ``rng`` passed in, so a seeded stream is reproducible.
    """

    size: int
    mean: Sequence[float]
    std: Sequence[float]
    mode: str = "resize"
    train: bool = False
    flip_prob: float = 0.0
    mask_size: int | None = None

    def __post_init__(self) -> None:
        if self.mode not in TRANSFORM_MODES:
            raise ValueError(f"unknown transform '{self.mode}'; choose one of {', '.join(TRANSFORM_MODES)}")

    def __call__(
        self, video: np.ndarray, labels: np.ndarray | None = None, rng: np.random.Generator | None = None
    ) -> Clip:
        if self.train and rng is None:
            raise ValueError("a training transform needs an rng (numpy Generator) for its random crop and flip")
        frames = to_float_frames(torch.from_numpy(np.ascontiguousarray(video)))
        seg = None if labels is None else torch.from_numpy(np.ascontiguousarray(labels)).long()
        if seg is not None and seg.shape[-2:] != frames.shape[-2:] and self.mode != "resize":
            raise ValueError(
                f"segmentation {tuple(seg.shape)} and video {tuple(video.shape)} differ in size; "
                "a crop needs them on the same grid"
            )
        frames, seg = self._geometry(frames, seg, rng)
        flipped = self.train and self.flip_prob > 0 and rng.random() < self.flip_prob
        if flipped:
            frames = frames.flip(-1)
            seg = None if seg is None else seg.flip(-1)
        if seg is not None and self.mask_size is not None:
            seg = resize_labels(seg, (self.mask_size, self.mask_size))
        return Clip(normalize(frames, self.mean, self.std), seg, bool(flipped))

    def _geometry(
        self, frames: torch.Tensor, seg: torch.Tensor | None, rng: np.random.Generator | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Resize/crop ``frames`` [T, 3, H, W] to the model input; crop ``seg`` [T, H, W] alike."""
        if self.mode == "resize":
            return resize_square(frames, self.size), seg
        if self.train:
            frames = resize_short_side(frames, self.size)
            height, width = frames.shape[-2:]
            top, left = int(rng.integers(height - self.size + 1)), int(rng.integers(width - self.size + 1))
            crop = (slice(top, top + self.size), slice(left, left + self.size))
            seg = None if seg is None else resize_labels(seg, (height, width))[..., crop[0], crop[1]]
            return frames[..., crop[0], crop[1]], seg
        top, left, side = center_square_box(*frames.shape[-2:])
        crop = (slice(top, top + side), slice(left, left + side))
        seg = None if seg is None else seg[..., crop[0], crop[1]]
        return resize_square(frames[..., crop[0], crop[1]], self.size), seg
