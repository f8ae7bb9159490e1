"""First-frame slots: K learned vectors (the paper) or samples of a learned Gaussian (Slot Attention)."""

from __future__ import annotations

import math

import torch
from torch import nn


class RandomSlots(nn.Module):
    """Slots drawn from one learned Gaussian ``N(mu, sigma^2)`` shared by the K slots (Locatello et al., 2020).

    Slots are then exchangeable: none is tied to a place or kind of object before it sees the frame, which
    is what lets slot attention discover objects from pixels. While training every call draws new slots
    (reparameterised, so ``mu`` and ``sigma`` learn). In eval mode every call returns the *same* draw, made
    once from a generator seeded with ``eval_seed``: the slots of a stream are then a function of its frames
    alone, reproducible for any env seed, and the K starting slots still differ (the mean alone would start
    K identical slots, which slot attention can never tell apart).

    Args:
        num_slots: K.
        dim: slot dimension D.
        eval_seed: seed of the fixed eval-mode draw.
        positions: also draw a slot position in [-1, 1]^2 and scale (Invariant Slot Attention); ``forward``
            then returns them too.
    """

    def __init__(self, num_slots: int, dim: int, eval_seed: int = 0, positions: bool = False) -> None:
        super().__init__()
        self.num_slots, self.eval_seed = num_slots, eval_seed
        self.mu = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.log_sigma = nn.Parameter(torch.full((1, 1, dim), math.log(dim**-0.5)))
        gen = torch.Generator().manual_seed(eval_seed)
        self.register_buffer("eval_noise", torch.randn(1, num_slots, dim, generator=gen), persistent=False)
        self.positions = positions
        if positions:
            self.register_buffer("eval_positions", torch.rand(1, num_slots, 2, generator=gen) * 2 - 1,
                                 persistent=False)

    def with_num_slots(self, num_slots: int) -> "RandomSlots":
        """The same learned distribution drawing ``num_slots`` slots (its ``mu`` and ``sigma`` shared, not copied):
        slots drawn from one distribution are exchangeable, so their number is a choice at inference time."""
        other = RandomSlots(num_slots, self.mu.shape[-1], self.eval_seed, self.positions).to(self.mu.device)
        other.mu, other.log_sigma = self.mu, self.log_sigma
        return other.train(self.training)

    def forward(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        """-> (slots [B, K, D], positions [B, K, 4] (x, y, scale x, scale y) or None)."""
        shape = (batch_size, self.num_slots, self.mu.shape[-1])
        if self.training:
            noise = torch.randn(shape, device=self.mu.device, dtype=self.mu.dtype)
        else:
            noise = self.eval_noise.expand(shape)
        slots = self.mu + self.log_sigma.exp() * noise
        if not self.positions:
            return slots, None
        if self.training:
            xy = torch.rand(batch_size, self.num_slots, 2, device=self.mu.device) * 2 - 1
        else:
            xy = self.eval_positions.expand(batch_size, -1, -1)
        return slots, initial_positions(xy)


def initial_positions(xy: torch.Tensor, scale: float = 0.1) -> torch.Tensor:
    """xy [B, K, 2] -> positions [B, K, 4]: (x, y) and a small scale in both axes, as Invariant Slot Attention
    starts (0.1 of the [-1, 1] frame: about an object of our envs)."""
    return torch.cat([xy, torch.full_like(xy, scale)], dim=-1)
