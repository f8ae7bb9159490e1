"""SlotContrast losses: feature reconstruction and the slot-slot contrastive loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from scipy.optimize import linear_sum_assignment


def feature_reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor,
                                foreground_weight: float = 1.0, threshold: float = 0.1) -> torch.Tensor:
    """MSE over all elements; the target (frozen features or pixels) gets no gradient.

    reconstruction, target [..., M, F]. With ``foreground_weight`` != 1 the target is RGB (F a multiple of 3:
    pixels or patches of pixels) and a pixel whose colour differs from its frame's median colour by more than
    ``threshold`` (any channel, in normalised units) weighs ``foreground_weight`` times more: on our envs'
    plain floors objects are ~2 % of the pixels, and the plain MSE is then best served by the mean image.
    The weighted mean is normalised by the weights, so the loss keeps the scale of the MSE.
    """
    target = target.detach()
    if foreground_weight == 1.0:
        return F.mse_loss(reconstruction, target)
    pixels = target.reshape(*target.shape[:-2], -1, 3)  # [..., M * F/3, 3]
    median = pixels.median(dim=-2, keepdim=True).values
    weight = 1.0 + (foreground_weight - 1.0) * ((pixels - median).abs().amax(-1) > threshold).float()
    error = ((reconstruction.reshape(pixels.shape) - pixels) ** 2).mean(-1)
    return (weight * error).sum() / weight.sum()


def slot_slot_logits(slots: torch.Tensor, temperature: float = 0.1, batch_contrast: bool = True) -> torch.Tensor:
    """Cosine similarities of slots at t and t+1, divided by the temperature.

    slots [B, T, K, D] -> logits [G, T-1, M, M] where entry [.., i, j] compares slot i at t with slot j at t+1.
    With batch contrast G = 1 and M = B*K (slots of all videos pooled, video-major); without, G = B, M = K.
    """
    slots = F.normalize(slots, dim=-1)
    if batch_contrast:
        slots = rearrange(slots, "b t k d -> 1 t (b k) d")
    return torch.einsum("gtid,gtjd->gtij", slots[:, :-1], slots[:, 1:]) / temperature


def slot_slot_contrastive_loss(
    slots: torch.Tensor, temperature: float = 0.1, batch_contrast: bool = True
) -> torch.Tensor:
    """For each slot j at t+1, cross-entropy over the candidates i at t with target i = j; mean over j, t.

    slots [B, T, K, D] with T >= 2 -> scalar. Keeps an object in the same slot over time and different
    slots apart.
    """
    logits = slot_slot_logits(slots, temperature, batch_contrast)
    logits = rearrange(logits, "g t i j -> (g t j) i")
    target = torch.arange(logits.shape[-1], device=logits.device).repeat(logits.shape[0] // logits.shape[-1])
    return F.cross_entropy(logits, target)


def _segment_costs(masks: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, eps: float) -> torch.Tensor:
    """masks [T, K, M], labels [T, M], segment ids [G] -> cost [G, K] (0 for a segment absent at this
    resolution: a small object can vanish from a coarse grid)."""
    log_masks = (masks + eps).log()
    onehot = (labels[None] == ids[:, None, None]).to(masks.dtype)  # [G, T, M]
    area = onehot.sum(-1)  # [G, T]
    visible = (area > 0).to(masks.dtype)
    ce = -torch.einsum("gtm,tkm->gtk", onehot, log_masks) / area.clamp(min=1)[..., None]  # [G, T, K]
    inter = torch.einsum("gtm,tkm->gtk", onehot, masks)
    union = area[..., None] + masks.sum(-1)[None] - inter
    cost_t = ce + 1 - inter / union.clamp(min=eps)
    return (cost_t * visible[..., None]).sum(1) / visible.sum(1, keepdim=True).clamp(min=1)


def segmentation_matching_loss(masks: torch.Tensor | list[torch.Tensor], labels: torch.Tensor | list[torch.Tensor],
                               eps: float = 1e-6) -> torch.Tensor:
    """Supervised mask loss: each ground-truth segment of a clip is matched to one slot, which must own exactly
    its pixels in every frame.

    masks [B, T, K, M] (a distribution over the K slots at each of the M = h * w pixels); labels int
    [B, T, h, w] (segment ids, the same id for an object in every frame; 0, the background, is a segment too,
    so a slot learns the floor). Lists of masks and labels (e.g. the decoder masks and the slot-attention masks,
    each with labels at its resolution) are matched jointly: one assignment of segments to slots for all of
    them, their costs summed. Per clip, the Hungarian matching (scipy) pairs segments with slots once for all T
    frames, so an object is taught to stay in one slot over time. The cost of a (segment, slot) pair, averaged
    over the frames the segment is visible in, is the cross-entropy ``-mean log mask`` over the segment's pixels
    (the slot must cover the segment) plus ``1 - soft IoU`` (and nothing else: the mBO the masks are judged
    by). The loss is the cost of the matched pairs, averaged over segments and clips: every segment counts
    alike whatever its area, so small objects do not drown in the floor. Slots beyond the segments get no
    target.
    """
    masks_list = masks if isinstance(masks, (list, tuple)) else [masks]
    labels_list = labels if isinstance(labels, (list, tuple)) else [labels]
    b, t, k, _ = masks_list[0].shape
    for m, lab in zip(masks_list, labels_list):
        if lab.shape[:2] != (b, t) or m.shape[:3] != (b, t, k) or lab[0, 0].numel() != m.shape[-1]:
            raise ValueError(f"segmentation loss: masks {tuple(m.shape)} and labels {tuple(lab.shape)} do not "
                             "match (labels must be [B, T, h, w] at the mask resolution)")
    total, count = masks_list[0].new_zeros(()), 0
    for i in range(b):
        ids = torch.unique(torch.cat([lab[i].reshape(-1) for lab in labels_list]))
        cost = sum(_segment_costs(m[i], lab[i].reshape(t, -1).long(), ids, eps)
                   for m, lab in zip(masks_list, labels_list))
        rows, cols = linear_sum_assignment(cost.detach().cpu().numpy())
        total = total + cost[torch.as_tensor(rows), torch.as_tensor(cols)].sum()
        count += len(rows)
    return total / max(count, 1)
