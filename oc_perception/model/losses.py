"""SlotContrast losses: feature reconstruction and the slot-slot contrastive loss; the supervised mask loss and
the label-free background term for training from pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


def foreground_pixels(target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Pixels unlike their frame's background: a free signal from the video itself (no labels).

    target [..., M, F] RGB (F a multiple of 3: pixels, or patches of pixels) -> bool [..., M * F/3]: a pixel
    whose colour differs from its frame's median colour by more than ``threshold`` (any channel, in normalised
    units). On scenes with a plain floor (our envs, tabletops) the median colour is the floor's.
    """
    pixels = target.reshape(*target.shape[:-2], -1, 3)  # [..., M * F/3, 3]
    median = pixels.median(dim=-2, keepdim=True).values
    return (pixels - median).abs().amax(-1) > threshold


def foreground_cells(target: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """target [..., M, F] RGB cells (pixels, or patches of F/3 pixels) -> bool [..., M]: the cells that hold a
    :func:`foreground_pixels` pixel."""
    return foreground_pixels(target, threshold).reshape(*target.shape[:-1], -1).any(-1)


def feature_reconstruction_loss(reconstruction: torch.Tensor, target: torch.Tensor,
                                foreground_weight: float = 1.0, threshold: float = 0.1) -> torch.Tensor:
    """MSE over all elements; the target (frozen features or pixels) gets no gradient.

    reconstruction, target [..., M, F]. With ``foreground_weight`` != 1 the target is RGB (F a multiple of 3:
    pixels or patches of pixels) and a :func:`foreground_pixels` pixel weighs ``foreground_weight`` times more:
    on our envs' plain floors objects are ~2 % of the pixels, and the plain MSE is then best served by the mean
    image. The weighted mean is normalised by the weights, so the loss keeps the scale of the MSE.
    """
    target = target.detach()
    if foreground_weight == 1.0:
        return F.mse_loss(reconstruction, target)
    pixels = target.reshape(*target.shape[:-2], -1, 3)
    weight = 1.0 + (foreground_weight - 1.0) * foreground_pixels(target, threshold).float()
    error = ((reconstruction.reshape(pixels.shape) - pixels) ** 2).mean(-1)
    return (weight * error).sum() / weight.sum()


def background_ownership_loss(masks: torch.Tensor, target: torch.Tensor, threshold: float = 0.1,
                              eps: float = 1e-8) -> torch.Tensor:
    """Entropy of how the background is shared among the slots: low when one slot owns all of it.

    masks [..., K, M] (a distribution over the K slots at each of M cells), target [..., M, F] RGB at the same
    M cells (pixels, or patches of F/3 pixels) -> scalar. A cell is background when none of its pixels is a
    :func:`foreground_pixels` pixel. Per frame, ``u = mean over background cells of masks`` [K] and the loss is
    ``-sum u log u``, averaged over frames (frames without background count 0).

    Any slot may paint the plain floor around an object as well as any other, so reconstruction alone leaves
    the floor shared out among the slots and object masks spread past their objects (low mBO). This term gives
    the floor to one slot, which frees the others to fit their objects. It reads only the frames.
    """
    target = target.detach()
    fg = foreground_cells(target, threshold)  # [..., M]
    background = (~fg).to(masks.dtype).unsqueeze(-2)  # [..., 1, M]
    count = background.sum(-1)  # [..., 1]
    share = (masks * background).sum(-1) / count.clamp(min=1)  # [..., K]
    entropy = -(share * (share + eps).log()).sum(-1)  # [...]
    return entropy.mean()


def colour_smoothness_loss(masks: torch.Tensor, target: torch.Tensor, floor_weight: float = 0.0,
                           sigma: float = 0.1, threshold: float = 0.1) -> torch.Tensor:
    """How much the slot masks change between neighbouring foreground cells of the same colour.

    masks [..., K, M] (a distribution over the K slots at each of the M = side * side cells), target
    [..., M, F] RGB at the same cells (pixels, or patches of F/3 pixels, normalised) -> scalar. For each pair
    of 4-neighbours that both hold a :func:`foreground_pixels` pixel, the cost is ``1 - <m_p, m_q>``, the chance
    that the two cells fall to different slots when each draws its slot from its mask, weighted by the colour
    affinity ``exp(-||c_p - c_q||^2 / (2 sigma^2))`` of the cells' mean colours; the loss is the
    affinity-weighted mean over those pairs, plus ``floor_weight`` times the same mean over the pairs of floor
    cells (neither holds a foreground pixel). The cost is 0 only where both cells belong to the same slot
    outright: a region shared out softly costs as much as one cut in two (a squared difference of the masks
    would cost neither, and training with it blurred the masks past the objects).

    Reconstruction is as good when two slots share a uniformly coloured object as when one owns it, so
    label-free training leaves objects cut in two by a slot boundary. A boundary costs nothing here where the
    colour changes (between objects, or an object and the floor) and costs its length where it does not (across
    an object's inside). It reads only the frames. The floor term stops object masks from spreading past their
    objects onto the floor (a halo costs its outline there); it is off by default, as the whole floor falling to
    one slot before any object is found is how the background term collapsed from the start.
    """
    target = target.detach()
    cells = masks.shape[-1]
    side = int(round(cells ** 0.5))
    if side * side != cells:
        raise ValueError(f"colour smoothness: masks of {cells} cells are not a square grid")
    fg = foreground_cells(target, threshold)  # [..., M]
    colour = target.reshape(*target.shape[:-2], cells, -1, 3).mean(-2)  # [..., M, 3]
    m = rearrange(masks, "... k (h w) -> ... k h w", h=side)
    fg = rearrange(fg, "... (h w) -> ... h w", h=side)
    colour = rearrange(colour, "... (h w) c -> ... c h w", h=side)
    fg_cost, fg_norm, floor_cost, floor_norm = 0.0, 0.0, 0.0, 0.0
    for dim in (-1, -2):  # right and down neighbours
        n = m.shape[dim] - 1
        change = 1 - (m.narrow(dim, 0, n) * m.narrow(dim, 1, n)).sum(-3)  # [..., side', side'']
        affinity = torch.exp(-(colour.narrow(dim, 0, n) - colour.narrow(dim, 1, n)).pow(2).sum(-3) / (2 * sigma**2))
        fa, fb = fg.narrow(dim, 0, n), fg.narrow(dim, 1, n)
        both_fg, both_floor = (fa & fb).to(masks.dtype) * affinity, (~fa & ~fb).to(masks.dtype) * affinity
        fg_cost, fg_norm = fg_cost + (both_fg * change).sum(), fg_norm + both_fg.sum()
        floor_cost, floor_norm = floor_cost + (both_floor * change).sum(), floor_norm + both_floor.sum()
    loss = fg_cost / (fg_norm + 1e-6)
    if floor_weight > 0:
        loss = loss + floor_weight * floor_cost / (floor_norm + 1e-6)
    return loss


def temporal_consistency_loss(masks: torch.Tensor, target: torch.Tensor, sigma: float = 0.1,
                              threshold: float = 0.1) -> torch.Tensor:
    """How much the slot masks change from one frame to the next on foreground cells whose colour stays.

    masks [B, T, K, M] (a distribution over the K slots at each of the M cells of every frame), target
    [B, T, M, F] RGB at the same cells (pixels, or patches of F/3 pixels, normalised) -> scalar; 0 for T = 1.
    For each cell that holds a :func:`foreground_pixels` pixel in frames t and t+1, the cost is
    ``1 - <m_t, m_t+1>``, the chance that the cell falls to different slots in the two frames, weighted by the
    colour affinity ``exp(-||c_t - c_t+1||^2 / (2 sigma^2))`` of its mean colours; the loss is the
    affinity-weighted mean over those cells.

    Reconstruction is as good with an object's slot handed to another slot between two frames as without, so
    nothing in label-free training keeps an object in its slot: the slots can trade objects, and the pixels of
    a small object touching a large one can go over to the large one's slot. Where an object moves, its cells
    change colour and cost nothing; where a cell keeps its colour, it is (almost always) the same object, and a
    change of slot there costs. It reads only the frames.
    """
    if masks.shape[1] < 2:
        return masks.new_zeros(())
    target = target.detach()
    fg = foreground_cells(target, threshold)  # [B, T, M]
    colour = target.reshape(*target.shape[:-1], -1, 3).mean(-2)  # [B, T, M, 3]
    change = 1 - (masks[:, :-1] * masks[:, 1:]).sum(-2)  # [B, T-1, M]
    affinity = torch.exp(-(colour[:, :-1] - colour[:, 1:]).pow(2).sum(-1) / (2 * sigma**2))
    weight = (fg[:, :-1] & fg[:, 1:]).to(masks.dtype) * affinity
    return (weight * change).sum() / (weight.sum() + 1e-6)


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

    slots [B, T, K, D] -> scalar; 0 for T = 1 (a clip of one frame has no transition to contrast, and the mean
    over none would be NaN). Keeps an object in the same slot over time and different slots apart.
    """
    if slots.shape[1] < 2:
        return slots.new_zeros(())
    logits = slot_slot_logits(slots, temperature, batch_contrast)
    logits = rearrange(logits, "g t i j -> (g t j) i")
    target = torch.arange(logits.shape[-1], device=logits.device).repeat(logits.shape[0] // logits.shape[-1])
    return F.cross_entropy(logits, target)


def _segment_costs(masks: torch.Tensor, labels: torch.Tensor, ids: torch.Tensor, area_exponent: float,
                   eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """masks [T, K, M], labels [T, M], segment ids [G] -> (cross-entropy [G, K], 1 - soft IoU [G, K]).

    Per frame, the cross-entropy is ``-sum log mask`` over the segment's pixels divided by
    ``area ** p * M ** (1 - p)`` (p = ``area_exponent``: 0 gives each segment its share of the per-pixel
    cross-entropy, 1 the mean over its own pixels); both costs are averaged over the frames the segment is
    visible in (0 for a segment absent at this resolution: a small object can vanish from a coarse grid).
    """
    m = masks.shape[-1]
    log_masks = (masks + eps).log()
    onehot = (labels[None] == ids[:, None, None]).to(masks.dtype)  # [G, T, M]
    area = onehot.sum(-1)  # [G, T]
    visible = (area > 0).to(masks.dtype)
    norm = area.clamp(min=1) ** area_exponent * m ** (1 - area_exponent)
    ce = -torch.einsum("gtm,tkm->gtk", onehot, log_masks) / norm[..., None]
    inter = torch.einsum("gtm,tkm->gtk", onehot, masks)
    union = area[..., None] + masks.sum(-1)[None] - inter
    iou_cost = 1 - inter / union.clamp(min=eps)
    frames = visible.sum(1, keepdim=True).clamp(min=1)
    return ((ce * visible[..., None]).sum(1) / frames, (iou_cost * visible[..., None]).sum(1) / frames)


def segmentation_matching_loss(masks: torch.Tensor | list[torch.Tensor], labels: torch.Tensor | list[torch.Tensor],
                               area_exponent: float = 0.0, eps: float = 1e-6) -> torch.Tensor:
    """Supervised mask loss: each ground-truth segment of a clip is matched to one slot, which must own exactly
    its pixels in every frame.

    masks [B, T, K, M] (a distribution over the K slots at each of the M = h * w pixels); labels int
    [B, T, h, w] (segment ids, the same id for an object in every frame; 0, the background, is a segment too,
    so a slot learns the floor). Lists of masks and labels (e.g. the decoder masks and the slot-attention masks,
    each with labels at its resolution) are matched jointly: one assignment of segments to slots for all of
    them, their costs summed. Per clip, the Hungarian matching (scipy) pairs segments with slots once for all T
    frames, so an object is taught to stay in one slot over time; the cost of a pair is a cross-entropy plus
    ``1 - soft IoU`` (the mBO the masks are judged by), and the loss is the cost of the matched pairs.

    The IoU cost is a mean over segments: every segment counts alike whatever its area, so small objects do not
    drown in the floor. ``area_exponent`` p sets how the cross-entropy weighs pixels: 0, every pixel alike (the
    per-pixel cross-entropy of the matched assignment, a mean over clips, when every segment is in every
    frame: each segment's share is averaged over the frames it is visible in); 1, every segment alike (the mean
    over its own pixels, a mean over segments), which on our envs weighs an object pixel ~50x a floor pixel and
    grows the masks past the objects (higher FG-ARI, lower mBO: docs/checkpoints.md). Slots beyond the segments
    get no target.
    """
    from scipy.optimize import linear_sum_assignment  # only this loss needs scipy: not on the model's import path

    masks_list = masks if isinstance(masks, (list, tuple)) else [masks]
    labels_list = labels if isinstance(labels, (list, tuple)) else [labels]
    b, t, k, _ = masks_list[0].shape
    for m, lab in zip(masks_list, labels_list):
        if lab.shape[:2] != (b, t) or m.shape[:3] != (b, t, k) or lab[0, 0].numel() != m.shape[-1]:
            raise ValueError(f"segmentation loss: masks {tuple(m.shape)} and labels {tuple(lab.shape)} do not "
                             "match (labels must be [B, T, h, w] at the mask resolution)")
    ce_total, iou_total, count = masks_list[0].new_zeros(()), masks_list[0].new_zeros(()), 0
    for i in range(b):
        ids = torch.unique(torch.cat([lab[i].reshape(-1) for lab in labels_list]))
        costs = [_segment_costs(m[i], lab[i].reshape(t, -1).long(), ids, area_exponent, eps)
                 for m, lab in zip(masks_list, labels_list)]
        ce, iou_cost = sum(c[0] for c in costs), sum(c[1] for c in costs)
        rows, cols = linear_sum_assignment((ce + iou_cost).detach().cpu().numpy())
        rows, cols = torch.as_tensor(rows), torch.as_tensor(cols)
        ce_total = ce_total + ce[rows, cols].sum()
        iou_total = iou_total + iou_cost[rows, cols].sum()
        count += len(rows)
    count = max(count, 1)
    return ce_total / (count ** area_exponent * b ** (1 - area_exponent)) + iou_total / count
