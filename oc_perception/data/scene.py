"""What recorded frames say about a scene before any training: how many things are in view, hence how many
slots a model needs.

    advice = advise_num_slots(video for video in videos)     # uint8 [T, H, W, 3] each
    print(advice.reason)                                      # "num_slots 9: ..."

A frame's *things* are its regions of even colour, counted at 64 x 64 pixels (the input size of our CNN recipes):
neighbouring pixels belong to one region when no channel steps by more than ``COLOR_STEP`` (so a shaded object
stays one region, and objects of another colour than what they touch stand apart); regions of fewer than
``MIN_REGION_PIXELS`` pixels (edges, specks) are left out, and so is the largest, the floor. The advice adds the
floor and a spare slot.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from oc_perception.frames import resize_frames_as_model_input

COUNT_SIZE = 64
# Largest colour step (any channel, in [0, 1]) between neighbours of one region: wide enough to keep the shaded
# faces of a rendered cube or robot link together, narrow enough to part objects from a floor of another colour.
COLOR_STEP = 0.2
MIN_REGION_PIXELS = 4  # at 64 x 64, the smallest object worth a slot of its own
PERCENTILE = 90  # busy frames count, a rare crowded one does not
SPARE_SLOTS = 2  # the floor and a spare
MAX_SLOTS = 16  # slot attention's cost grows with K; beyond this, crop the camera or accept shared slots


@dataclass(frozen=True)
class SlotAdvice:
    """``num_slots`` to train with, the region count it comes from (``regions``: the ``percentile``-th percentile
    over ``frames`` frames) and ``reason``, one printable line that says so."""

    num_slots: int
    regions: int
    percentile: int
    frames: int
    reason: str


def count_things(frame: np.ndarray) -> int:
    """Regions of even colour in one uint8 RGB frame ``[H, W, 3]``, the floor left out (see the module docstring)."""
    x = resize_frames_as_model_input(frame[None], COUNT_SIZE)[0].astype(np.float32) / 255
    h, w, _ = x.shape
    index = np.arange(h * w).reshape(h, w)
    right = np.abs(x[:, 1:] - x[:, :-1]).max(-1) <= COLOR_STEP
    down = np.abs(x[1:] - x[:-1]).max(-1) <= COLOR_STEP
    pairs = (np.concatenate([index[:, :-1][right], index[:-1][down]]),
             np.concatenate([index[:, 1:][right], index[1:][down]]))
    graph = coo_matrix((np.ones(len(pairs[0]), dtype=bool), pairs), shape=(h * w, h * w))
    _, labels = connected_components(graph, directed=False)
    return max(0, int((np.bincount(labels) >= MIN_REGION_PIXELS).sum()) - 1)


def advise_num_slots(videos: Iterable[np.ndarray], max_frames: int = 1000) -> SlotAdvice:
    """Slot count for videos uint8 ``[T, H, W, 3]`` (up to ``max_frames`` frames are read): the
    ``PERCENTILE``-th percentile of :func:`count_things` per frame, plus ``SPARE_SLOTS``, at most ``MAX_SLOTS``.

    Raises:
        ValueError: no frame to count.
    """
    counts: list[int] = []
    for video in videos:
        for frame in video[: max_frames - len(counts)]:
            counts.append(count_things(frame))
        if len(counts) >= max_frames:
            break
    if not counts:
        raise ValueError("no frames to count objects in")
    regions = math.ceil(np.percentile(counts, PERCENTILE))
    advised = regions + SPARE_SLOTS
    reason = (f"num_slots {min(advised, MAX_SLOTS)}: {PERCENTILE} % of {len(counts)} recorded frames show at most "
              f"{regions} region(s) of even colour besides the floor (median {np.median(counts):g}), + the floor and "
              "a spare")
    if advised > MAX_SLOTS:
        reason += f"; capped at {MAX_SLOTS} (slot attention's cost grows with the slots)"
    return SlotAdvice(min(advised, MAX_SLOTS), regions, PERCENTILE, len(counts), reason)
