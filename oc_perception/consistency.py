"""Slot consistency in the env loop: does each object keep its slot over an episode?

:func:`slot_identity_stats` assigns every ground-truth object, in every frame where it is visible, to the slot
whose hard mask overlaps it best (max IoU), and counts how often that assignment changes (identity switches);
:class:`SlotConsistency` collects an episode's masks and segmentations and reports these figures at its end.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from oc_perception.metrics import masks_to_labels, video_ari, video_mbo

__all__ = ["SlotConsistency", "best_iou_slots", "slot_identity_stats"]


def best_iou_slots(labels: torch.Tensor, seg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Each object's slot in each frame: the slot whose pixels overlap the object's with the highest IoU.

    labels: slot per pixel, int ``[T, H, W]``; seg: object id per pixel, int ``[T, H, W]``, 0 = background.
    Returns ``(object_ids [O], slot [T, O], visible [T, O])``: the nonzero ids of ``seg`` in ascending order,
    the best-IoU slot of object ``object_ids[o]`` in frame t, and whether it has a pixel there (where it does
    not, its slot is meaningless).
    """
    t = seg.shape[0]
    ids, objects = torch.unique(seg, return_inverse=True)  # objects: [T, H, W] in 0..O (0 = background if present)
    if ids[0] != 0:  # no background pixel anywhere: keep index 0 for the background
        objects = objects + 1
    else:
        ids = ids[1:]
    num_objects, num_slots = int(objects.max()), int(labels.max()) + 1
    # Per frame: contingency [T, O + 1, K] of object x slot pixel counts.
    flat = (torch.arange(t).view(t, 1, 1) * (num_objects + 1) + objects) * num_slots + labels
    counts = torch.bincount(flat.reshape(-1), minlength=t * (num_objects + 1) * num_slots)
    counts = counts.reshape(t, num_objects + 1, num_slots).double()
    inter = counts[:, 1:]  # [T, O, K]
    union = inter.sum(-1, keepdim=True) + counts.sum(1, keepdim=True) - inter
    return ids, (inter / union.clamp(min=1)).argmax(-1), inter.sum(-1) > 0


def slot_identity_stats(masks: np.ndarray | torch.Tensor,
                        segmentation: np.ndarray | torch.Tensor) -> dict[str, int | float]:
    """Identity switches, kept fraction and video FG-ARI of one episode.

    Args:
        masks: soft slot masks ``[T, K, h, w]`` (any grid; bilinearly resized to the segmentation's size and
            argmaxed over slots, as the FG-ARI evaluation does) or integer slot labels ``[T, H, W]``.
        segmentation: integer ``[T, H, W]``, 0 = background, one id per object.

    Returns:
        ``identity_switches``: over all objects, the number of frames (among those where the object is visible)
        in which its best-IoU slot differs from the one at its previous visible frame; two objects swapping
        slots once count 2. ``kept_fraction``: the fraction of objects visible in the episode that never switch
        (NaN without objects). ``frames_kept``: over every (object, frame it is visible in), the fraction in which
        its best-IoU slot is the slot it has most often in the episode (NaN without objects): how much of the
        time an object is in "its" slot. ``first_slot_share``: over every (object, visible frame after its first
        visible frame), the fraction in which its best-IoU slot is the slot of its first visible frame (NaN when
        no object is visible twice): whether an object keeps the slot it was first given, the property a policy
        reading slot k relies on. ``second_frame_switches``: of the switches, those at an object's second visible
        frame, where the first frame's slots are first handed to the predictor. ``objects``: how many objects
        were visible at some frame.
        ``video_fg_ari``: FG-ARI over all frames (``oc_perception.metrics.video_ari``); ``video_mbo``: the mean
        best overlap of the objects over all frames (``oc_perception.metrics.video_mbo``; NaN without objects).
    """
    seg = torch.as_tensor(np.asarray(segmentation)).long()
    masks = torch.as_tensor(np.asarray(masks))
    if seg.ndim != 3:
        raise ValueError(f"segmentation: expected [T, H, W], got shape {tuple(seg.shape)}")
    if masks.is_floating_point():
        if masks.ndim != 4:
            raise ValueError(f"masks: expected soft masks [T, K, h, w], got shape {tuple(masks.shape)}")
        labels = masks_to_labels(masks[None], seg.shape[-2:])[0]
    else:
        labels = masks.long()
    if labels.shape != seg.shape or labels.shape[0] == 0:
        raise ValueError(f"slot labels {tuple(labels.shape)} and segmentation {tuple(seg.shape)} must both be "
                         "[T, H, W] with T >= 1")
    _, assigned, visible = best_iou_slots(labels, seg)
    sequences = [seq for seq in (assigned[visible[:, o], o] for o in range(assigned.shape[1])) if seq.numel()]
    switches = [int((seq[1:] != seq[:-1]).sum()) for seq in sequences]
    in_own_slot = sum(int((seq == seq.mode().values).sum()) for seq in sequences)
    visible_frames = sum(seq.numel() for seq in sequences)
    in_first_slot = sum(int((seq[1:] == seq[0]).sum()) for seq in sequences)
    later_frames = visible_frames - len(sequences)
    ari = video_ari(labels[None], seg[None])[0].item()
    mbo = video_mbo(labels[None], seg[None])[0].item()
    return {
        "identity_switches": sum(switches),
        "kept_fraction": float(np.mean([s == 0 for s in switches])) if switches else float("nan"),
        "frames_kept": in_own_slot / visible_frames if visible_frames else float("nan"),
        "first_slot_share": in_first_slot / later_frames if later_frames else float("nan"),
        "second_frame_switches": sum(int(seq.numel() > 1 and seq[1] != seq[0]) for seq in sequences),
        "objects": len(switches),
        "video_fg_ari": ari,
        "video_mbo": mbo,
    }


class SlotConsistency(gym.Wrapper[Any, Any, Any, Any], gym.utils.RecordConstructorArgs):
    """Put ``info["slot_consistency"]`` (:func:`slot_identity_stats` of the episode) into the last step's info.

    Apply it outside ``SlotObservation(env, include_masks=True)`` (it reads ``obs["masks"]``) of an env that
    reports ``info["segmentation"]`` (int ``[H, W]``, 0 = background), and outside ``TimeLimit`` so truncated
    episodes report too: ``SlotConsistency(oc_perception.make(id, wrappers=[partial(SlotObservation,
    include_masks=True)]))``. The value is :func:`slot_identity_stats`'s dict.
    """

    def __init__(self, env: gym.Env) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        if not (isinstance(env.observation_space, spaces.Dict) and "masks" in env.observation_space.spaces):
            raise ValueError("SlotConsistency reads the slot masks: apply it outside "
                             "SlotObservation(env, include_masks=True)")
        self._masks: list[np.ndarray] = []
        self._segmentations: list[np.ndarray] = []

    def _record(self, obs: dict[str, np.ndarray], info: dict[str, Any]) -> None:
        if "segmentation" not in info:
            raise KeyError('SlotConsistency needs info["segmentation"] (int [H, W], 0 = background) at every step')
        self._masks.append(obs["masks"])
        self._segmentations.append(np.asarray(info["segmentation"]))

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._masks, self._segmentations = [], []
        self._record(obs, info)
        return obs, info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self._record(obs, info)
        if terminated or truncated:
            stats = slot_identity_stats(np.stack(self._masks), np.stack(self._segmentations))
            info = {**info, "slot_consistency": stats}
        return obs, reward, terminated, truncated, info
