"""Slot attention (Locatello et al., 2020) in the variant SlotContrast uses."""

from __future__ import annotations

import torch
from torch import nn


class SlotAttention(nn.Module):
    """Slots compete for input features through a softmax over slots.

    One iteration: ``s_hat = LN(s)``, ``A = softmax_K(q(s_hat) k(x)^T / sqrt(D))``, weighted mean of the values
    over inputs, ``s = GRU(u, s_hat)``, ``s = s + MLP(s)``. The GRU's hidden state is the *normalised* slots,
    as in the official code (it changes the numbers, so parity needs it).

    Args:
        dim: slot (and input) dimension D.
        mlp_hidden_mult: hidden width of the residual MLP, as a multiple of D.
        eps: added to the attention before normalising over inputs (empty slots stay defined).
    """

    def __init__(self, dim: int, mlp_hidden_mult: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.norm_features = nn.LayerNorm(dim)
        self.norm_slots = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, mlp_hidden_mult * dim), nn.ReLU(),
            nn.Linear(mlp_hidden_mult * dim, dim),
        )

    def iterate(self, slots: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """One iteration. slots [B, K, D], keys/values [B, P, D] -> (slots [B, K, D], attention [B, K, P])."""
        b, k, d = slots.shape
        slots_hat = self.norm_slots(slots)
        logits = torch.einsum("bkd,bpd->bkp", self.to_q(slots_hat), keys) * self.scale
        attn = logits.softmax(dim=1)  # slots compete for each input
        weights = attn + self.eps
        weights = weights / weights.sum(dim=-1, keepdim=True)
        updates = torch.einsum("bkp,bpd->bkd", weights, values)
        slots = self.gru(updates.reshape(b * k, d), slots_hat.reshape(b * k, d)).reshape(b, k, d)
        return slots + self.mlp(slots), attn

    def forward(self, slots: torch.Tensor, inputs: torch.Tensor, iters: int | torch.Tensor):
        """slots [B, K, D], inputs [B, P, D] -> (slots [B, K, D], attention of the last iteration [B, K, P]).

        ``iters`` is an int, or a per-row int tensor [B] (rows stop at their own count; rows of a batch
        that mixes first frames (3 iterations) and later frames (2) are exact this way).
        """
        x = self.norm_features(inputs)
        keys, values = self.to_k(x), self.to_v(x)
        if isinstance(iters, int):
            attn = None
            for _ in range(iters):
                slots, attn = self.iterate(slots, keys, values)
            return slots, attn
        out_slots, out_attn = slots, None
        for i in range(int(iters.max())):
            slots, attn = self.iterate(slots, keys, values)
            done = (iters == i + 1).view(-1, 1, 1)
            out_slots = torch.where(done, slots, out_slots)
            out_attn = attn if out_attn is None else torch.where(done, attn, out_attn)
        return out_slots, out_attn


def grid_coordinates(side: int, device: torch.device | None = None) -> torch.Tensor:
    """Cell centres of a ``side x side`` grid in [-1, 1]^2, row-major -> [side * side, 2] as (x, y)."""
    ramp = (torch.arange(side, device=device, dtype=torch.float32) + 0.5) / side * 2 - 1
    y, x = torch.meshgrid(ramp, ramp, indexing="ij")
    return torch.stack([x, y], dim=-1).reshape(-1, 2)


def relative_grid(grid: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """grid [P, 2], positions [B, K, 4] (x, y, scale x, scale y) -> each slot's view of the grid [B, K, P, 2]."""
    return (grid - positions[:, :, None, :2]) / positions[:, :, None, 2:]


class InvariantSlotAttention(nn.Module):
    """Slot attention whose slots carry a position and scale (Biza et al., ICML 2023, translation and scale).

    Each iteration sees the inputs in every slot's own frame: ``rel = (grid - pos) / scale`` [B, K, P, 2],
    keys and values ``f(k(x) + g(rel))`` and ``f(v(x) + g(rel))`` per slot (``g`` linear, ``f`` an MLP), then
    the softmax over slots, the GRU and the residual MLP as in :class:`SlotAttention`. The position and scale
    of a slot become the mean and standard deviation of the grid under its attention. A slot thus describes
    an object *relative to where it is*, which makes localising small objects from pixels far more
    data-efficient than absolute position embeddings.

    Args:
        dim: slot (and input) dimension D.
        grid: side of the square input grid (P = grid ** 2).
        mlp_hidden_mult, eps: as in :class:`SlotAttention`.
        min_scale: floor of the scales (a slot that attends to one cell keeps a finite frame).
    """

    def __init__(self, dim: int, grid: int, mlp_hidden_mult: int = 4, eps: float = 1e-8,
                 min_scale: float = 0.02) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.min_scale = min_scale
        self.register_buffer("grid", grid_coordinates(grid), persistent=False)
        self.norm_features = nn.LayerNorm(dim)
        self.norm_slots = nn.LayerNorm(dim)
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.rel_proj = nn.Linear(2, dim)  # g
        self.rel_mlp = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))  # f
        self.gru = nn.GRUCell(dim, dim)
        self.mlp = nn.Sequential(
            nn.LayerNorm(dim), nn.Linear(dim, mlp_hidden_mult * dim), nn.ReLU(),
            nn.Linear(mlp_hidden_mult * dim, dim),
        )

    def update_positions(self, weights: torch.Tensor) -> torch.Tensor:
        """weights [B, K, P] (each row sums to 1) -> positions [B, K, 4]: mean and std of the grid under them."""
        mean = torch.einsum("bkp,pc->bkc", weights, self.grid)
        var = torch.einsum("bkp,bkpc->bkc", weights, (self.grid - mean[:, :, None]) ** 2)
        return torch.cat([mean, (var + 1e-8).sqrt().clamp(min=self.min_scale)], dim=-1)

    def iterate(self, slots: torch.Tensor, positions: torch.Tensor, keys: torch.Tensor, values: torch.Tensor):
        """slots [B, K, D], positions [B, K, 4], keys/values [B, P, D] (before the relative code)
        -> (slots, positions, attention [B, K, P])."""
        b, k, d = slots.shape
        rel = self.rel_proj(relative_grid(self.grid, positions))  # [B, K, P, D]
        slot_keys = self.rel_mlp(keys[:, None] + rel)
        slot_values = self.rel_mlp(values[:, None] + rel)
        slots_hat = self.norm_slots(slots)
        logits = torch.einsum("bkd,bkpd->bkp", self.to_q(slots_hat), slot_keys) * self.scale
        attn = logits.softmax(dim=1)
        weights = attn + self.eps
        weights = weights / weights.sum(dim=-1, keepdim=True)
        updates = torch.einsum("bkp,bkpd->bkd", weights, slot_values)
        slots = self.gru(updates.reshape(b * k, d), slots_hat.reshape(b * k, d)).reshape(b, k, d)
        return slots + self.mlp(slots), self.update_positions(weights), attn

    def forward(self, slots: torch.Tensor, positions: torch.Tensor, inputs: torch.Tensor,
                iters: int | torch.Tensor):
        """slots [B, K, D], positions [B, K, 4], inputs [B, P, D]
        -> (slots [B, K, D], positions [B, K, 4], attention of the last iteration [B, K, P]).

        ``iters``: an int or a per-row int tensor [B], as in :class:`SlotAttention`.
        """
        x = self.norm_features(inputs)
        keys, values = self.to_k(x), self.to_v(x)
        if isinstance(iters, int):
            attn = None
            for _ in range(iters):
                slots, positions, attn = self.iterate(slots, positions, keys, values)
            return slots, positions, attn
        out_slots, out_pos, out_attn = slots, positions, None
        for i in range(int(iters.max())):
            slots, positions, attn = self.iterate(slots, positions, keys, values)
            done = (iters == i + 1).view(-1, 1, 1)
            out_slots = torch.where(done, slots, out_slots)
            out_pos = torch.where(done, positions, out_pos)
            out_attn = attn if out_attn is None else torch.where(done, attn, out_attn)
        return out_slots, out_pos, out_attn
