"""SlotContrast losses: feature reconstruction and the slot-slot contrastive loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange


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
