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
        bilevel: BO-QSA gradients (Jia et al., ICLR 2023): gradients flow through the last iteration only,
            and straight through to the initial slots. The forward values are unchanged; off in the paper's
            setting. BO-QSA's authors found fixed learned initial slots train better this way from scratch.
    """

    def __init__(self, dim: int, mlp_hidden_mult: int = 4, eps: float = 1e-8, bilevel: bool = False) -> None:
        super().__init__()
        self.scale = dim**-0.5
        self.eps = eps
        self.bilevel = bilevel
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

    @staticmethod
    def _straight_through(slots: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
        """Slots entering the last iteration under BO-QSA: same values, gradient straight to ``init``."""
        return slots.detach() + (init - init.detach())

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
        init = slots
        if isinstance(iters, int):
            attn = None
            for i in range(iters):
                if self.bilevel and i < iters - 1:
                    with torch.no_grad():  # no gradient goes through these iterations: skip their graph
                        slots, attn = self.iterate(slots, keys, values)
                    continue
                if self.bilevel:
                    slots = self._straight_through(slots, init)
                slots, attn = self.iterate(slots, keys, values)
            return slots, attn
        out_slots, out_attn = slots, None
        for i in range(int(iters.max())):
            if self.bilevel:  # rows at their last iteration take the straight-through path, others no gradient
                slots = torch.where((iters == i + 1).view(-1, 1, 1), self._straight_through(slots, init),
                                    slots.detach())
            slots, attn = self.iterate(slots, keys, values)
            done = (iters == i + 1).view(-1, 1, 1)
            out_slots = torch.where(done, slots, out_slots)
            out_attn = attn if out_attn is None else torch.where(done, attn, out_attn)
        return out_slots, out_attn
