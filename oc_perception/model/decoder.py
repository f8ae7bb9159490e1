"""Decoders: slots -> a reconstruction and one mask per slot (softmax of a per-slot alpha over slots).

``MLPDecoder`` (the paper) reconstructs every patch from every slot; ``BroadcastDecoder`` (spatial broadcast,
Watters et al. 2019, as in Slot Attention) renders each slot as an image with transposed convolutions.
"""

from __future__ import annotations

from typing import get_args

import torch
from einops import rearrange
from torch import nn

from oc_perception.config import PositionEmbedding
from oc_perception.model.encoder import SoftPositionEmbedding
from oc_perception.model.slot_attention import grid_coordinates, relative_grid


class MLPDecoder(nn.Module):
    """slots [N, K, D] -> (reconstruction [N, P, F], masks [N, K, P]).

    Each slot is broadcast to the P patch positions and a position embedding is added; a shared MLP maps
    each (slot, position) to F values plus one alpha logit; masks are the softmax of alpha over slots and
    the reconstruction their weighted sum.

    ``pos_emb``: ``"learned"`` (a free [1, 1, P, D] parameter, the official model) or ``"soft"`` (a linear map
    of the grid coordinates, which trains much faster from scratch; P must be a square).

    ``relative``: positions come from the slots' own frames (Invariant Slot Attention): ``forward`` takes the
    slot positions [N, K, 4] and each slot decodes the grid relative to its position and scale.
    """

    def __init__(self, slot_dim: int, output_dim: int, num_patches: int, hidden_dims: list[int],
                 pos_emb: PositionEmbedding = "learned", relative: bool = False) -> None:
        super().__init__()
        self.num_patches = num_patches
        self.pos_emb_kind = pos_emb
        if pos_emb not in get_args(PositionEmbedding):
            raise ValueError(f"decoder pos_emb={pos_emb!r}: must be one of {', '.join(get_args(PositionEmbedding))}")
        if relative:
            pass  # positions come from the slots (below)
        elif pos_emb == "learned":
            self.pos_emb = nn.Parameter(torch.randn(1, 1, num_patches, slot_dim) * slot_dim**-0.5)
        elif pos_emb == "soft":
            self.soft_pos_emb = SoftPositionEmbedding(slot_dim, int(round(num_patches**0.5)))
        self.relative = relative
        if relative:
            self.rel_emb = nn.Linear(2, slot_dim)
            self.register_buffer("grid", grid_coordinates(int(round(num_patches**0.5))), persistent=False)
        layers: list[nn.Module] = []
        dims = [slot_dim, *hidden_dims]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], output_dim + 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, slots: torch.Tensor,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """slots [N, K, D] (with ``relative``, the slot positions [N, K, 4])."""
        if self.relative:
            if positions is None:
                raise ValueError("this decoder decodes in slot-relative coordinates: pass positions [N, K, 4]")
            pos = self.rel_emb(relative_grid(self.grid, positions))  # [N, K, P, D]
        else:
            pos = self.pos_emb if self.pos_emb_kind == "learned" else self.soft_pos_emb().unsqueeze(1)
        # The first layer is linear in (slot + position): projecting K slots and P positions apart and
        # broadcasting the sum skips a [N, K, P, D] tensor and its gradient (benchmarks/train_speed.py).
        first, last = self.mlp[0], self.mlp[-1]
        hidden = self.mlp[1:-1](first(slots).unsqueeze(2) + nn.functional.linear(pos, first.weight))  # [N, K, P, H]
        alpha = nn.functional.linear(hidden, last.weight[-1:], last.bias[-1:]).squeeze(-1)  # [N, K, P]
        masks = alpha.softmax(dim=1)
        # The last layer is affine and the masks sum to 1 over slots, so mixing the slots' hidden vectors first
        # and projecting once gives the same reconstruction with a K times smaller last matmul
        # (benchmarks/official_speed.py).
        mixed = torch.einsum("nkp,nkph->nph", masks, hidden)  # [N, P, H]
        return nn.functional.linear(mixed, last.weight[:-1], last.bias[:-1]), masks


class BroadcastDecoder(nn.Module):
    """Spatial-broadcast decoder. slots [N, K, D] -> (reconstruction [N, S*S, C], masks [N, K, S*S]).

    Each slot is tiled on a ``broadcast_size`` grid with a position code, and stride-2 transposed convolutions
    (one per entry of ``conv_channels``) render it at ``S = broadcast_size * 2 ** len(conv_channels)`` as C
    values plus an alpha logit per pixel; masks are the softmax of alpha over slots and the reconstruction
    their weighted sum. Unlike the MLP decoder a slot's output is spatially smooth by construction, so its
    mask takes the shape of what it renders (Slot Attention, SAVi).

    Args:
        slot_dim: D.
        output_dim: C, values per output pixel (3 for RGB).
        broadcast_size: side of the grid each slot is tiled on.
        conv_channels: widths of the transposed convolutions.
        relative: position code in each slot's own frame (positions [N, K, 4] passed to ``forward``).
    """

    def __init__(self, slot_dim: int, output_dim: int = 3, broadcast_size: int = 8,
                 conv_channels: list[int] | tuple[int, ...] = (32, 32, 32), relative: bool = False) -> None:
        super().__init__()
        self.side = broadcast_size * 2 ** len(conv_channels)
        self.relative = relative
        if relative:
            self.rel_emb = nn.Linear(2, slot_dim)
            self.register_buffer("grid", grid_coordinates(broadcast_size), persistent=False)
        else:
            self.pos_emb = SoftPositionEmbedding(slot_dim, broadcast_size)
        self.broadcast_size = broadcast_size
        layers: list[nn.Module] = []
        c_in = slot_dim
        for c_out in conv_channels:
            layers += [nn.ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1), nn.ReLU()]
            c_in = c_out
        layers.append(nn.Conv2d(c_in, output_dim + 1, 3, padding=1))
        self.convs = nn.Sequential(*layers)

    def forward(self, slots: torch.Tensor,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """slots [N, K, D] (with ``relative``, positions [N, K, 4])."""
        n, k, _ = slots.shape
        if self.relative:
            if positions is None:
                raise ValueError("this decoder decodes in slot-relative coordinates: pass positions [N, K, 4]")
            pos = self.rel_emb(relative_grid(self.grid, positions))  # [N, K, s*s, D]
        else:
            pos = self.pos_emb().unsqueeze(1)  # [1, 1, s*s, D]
        x = rearrange(slots.unsqueeze(2) + pos, "n k (h w) d -> (n k) d h w", h=self.broadcast_size)
        out = rearrange(self.convs(x), "(n k) c h w -> n k (h w) c", n=n, k=k)
        values, alpha = out[..., :-1], out[..., -1]
        masks = alpha.softmax(dim=1)  # [N, K, S*S]
        return torch.einsum("nkp,nkpc->npc", masks, values), masks
