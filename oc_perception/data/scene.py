"""What recorded frames say about a scene before any training: how many things are in view, hence how many
slots a model needs.

    advice = advise_num_slots(video for video in videos)     # uint8 [T, H, W, 3] each
    print(advice.reason)                                      # "num_slots 9: ..."

A frame's *things* are the connected blobs of pixels unlike the frame's median colour (the floor, on plain
scenes: the same test as the reconstruction loss's ``foreground_weight``), after a 3 x 3 opening that removes
what is thinner than 3 pixels (grid lines, edges, noise). Touching objects count as one blob, so the count errs
low; the advice adds the floor and a spare slot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
from scipy import ndimage

from oc_perception.model.losses import foreground_pixels

# A pixel is foreground when a channel differs from the frame's median colour by more than this (in [0, 1]):
# the reconstruction loss's threshold (0.1 in units normalised with std 0.5).
COLOR_THRESHOLD = 0.05
MIN_BLOB_PIXELS = 4  # at 64 x 64, the smallest object worth a slot of its own
PERCENTILE = 90  # busy frames count, a rare crowded one does not
SPARE_SLOTS = 2  # the floor and a spare
MAX_SLOTS = 16  # slot attention's cost grows with K; beyond this, crop the camera or accept shared slots


@dataclass(frozen=True)
class SlotAdvice:
    """``num_slots`` to train with, the blob count it comes from (``percentile`` over ``frames`` frames) and
    ``reason``, one printable line that says so."""

    num_slots: int
    blobs: int
    percentile: int
    frames: int
    reason: str


def count_blobs(frame: np.ndarray) -> int:
    """Foreground blobs of one uint8 RGB frame ``[H, W, 3]`` (see the module docstring)."""
    pixels = torch.from_numpy(np.ascontiguousarray(frame)).float().div_(255).reshape(1, -1, 3)
    foreground = foreground_pixels(pixels, COLOR_THRESHOLD).reshape(frame.shape[:2]).numpy()
    opened = ndimage.binary_opening(foreground, structure=np.ones((3, 3), dtype=bool))
    labels, count = ndimage.label(opened)
    if count == 0:
        return 0
    areas = np.bincount(labels.ravel(), minlength=count + 1)[1:]
    return int((areas >= MIN_BLOB_PIXELS).sum())


def advise_num_slots(videos: Iterable[np.ndarray], max_frames: int = 1000) -> SlotAdvice:
    """Slot count for videos uint8 ``[T, H, W, 3]`` (up to ``max_frames`` frames are read): the
    ``PERCENTILE``-th percentile of :func:`count_blobs` per frame, plus ``SPARE_SLOTS``, at most ``MAX_SLOTS``.

    Raises:
        ValueError: no frame to count.
    """
    counts: list[int] = []
    for video in videos:
        for frame in video[: max_frames - len(counts)]:
            counts.append(count_blobs(frame))
        if len(counts) >= max_frames:
            break
    if not counts:
        raise ValueError("no frames to count objects in")
    blobs = math.ceil(np.percentile(counts, PERCENTILE))
    advised = blobs + SPARE_SLOTS
    reason = (f"num_slots {min(advised, MAX_SLOTS)}: {PERCENTILE} % of {len(counts)} recorded frames show at most "
              f"{blobs} blob(s) unlike the frame's median colour (median {np.median(counts):g}), + the floor and "
              "a spare")
    if advised > MAX_SLOTS:
        reason += f"; capped at {MAX_SLOTS} (slot attention's cost grows with the slots)"
    return SlotAdvice(min(advised, MAX_SLOTS), blobs, PERCENTILE, len(counts), reason)
