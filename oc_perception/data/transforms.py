"""Training and validation clip transforms, on the frame helpers of :mod:`oc_perception.frames` (the resizes
the model and the wrappers share). Two layouts:

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

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch

from oc_perception.frames import normalize, resize_labels, resize_short_side, resize_square, to_float_frames

TRANSFORM_MODES = ("resize", "short_side_crop")


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
