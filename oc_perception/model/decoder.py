"""MLP decoder: every slot reconstructs every patch; a per-slot alpha decides who owns it."""

from __future__ import annotations

import torch
from torch import nn

from oc_perception.model.encoder import SoftPositionEmbedding


class MLPDecoder(nn.Module):
    """slots [N, K, D] -> (reconstruction [N, P, F], masks [N, K, P]).

    Each slot is broadcast to the P patch positions and a position embedding is added; a shared MLP maps
    each (slot, position) to F values plus one alpha logit; masks are the softmax of alpha over slots and
    the reconstruction their weighted sum.

    ``mix``: ``"alpha"`` (the official model) or ``"attention"``: the reconstruction mixes the slots' outputs with
    the slot attention masks of the frame (given to ``forward``), so the reconstruction error falls straight
    on the grouping. The returned masks are still the alpha masks, which ``loss_mask`` trains towards the
    attention masks, so masks can be decoded from slots alone (e.g. predicted slots).

    ``pos_emb``: ``"learned"`` (a free [1, 1, P, D] parameter, the official model) or ``"soft"`` (a linear map
    of the grid coordinates, which trains much faster from scratch; P must be a square).
    """

    def __init__(self, slot_dim: int, output_dim: int, num_patches: int, hidden_dims: list[int],
                 pos_emb: str = "learned", mix: str = "alpha") -> None:
        super().__init__()
        if mix not in ("alpha", "attention"):
            raise ValueError(f"decoder mix must be 'alpha' or 'attention', got '{mix}'")
        self.mix = mix
        self.num_patches = num_patches
        self.pos_emb_kind = pos_emb
        if pos_emb == "learned":
            self.pos_emb = nn.Parameter(torch.randn(1, 1, num_patches, slot_dim) * slot_dim**-0.5)
        elif pos_emb == "soft":
            self.soft_pos_emb = SoftPositionEmbedding(slot_dim, int(round(num_patches**0.5)))
        else:
            raise ValueError(f"decoder pos_emb must be 'learned' or 'soft', got '{pos_emb}'")
        layers: list[nn.Module] = []
        dims = [slot_dim, *hidden_dims]
        for d_in, d_out in zip(dims[:-1], dims[1:]):
            layers += [nn.Linear(d_in, d_out), nn.ReLU()]
        layers.append(nn.Linear(dims[-1], output_dim + 1))
        self.mlp = nn.Sequential(*layers)

    def forward(self, slots: torch.Tensor, attention: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """slots [N, K, D] (and, with ``mix="attention"``, the slot attention masks [N, K, P] to mix with)."""
        pos = self.pos_emb if self.pos_emb_kind == "learned" else self.soft_pos_emb().unsqueeze(1)
        # The first layer is linear in (slot + position): projecting K slots and P positions apart and
        # broadcasting the sum skips a [N, K, P, D] tensor and its gradient (benchmarks/train_speed.py).
        first = self.mlp[0]
        hidden = (first(slots).unsqueeze(2) + nn.functional.linear(pos, first.weight))  # [N, K, P, H]
        out = self.mlp[1:](hidden)  # [N, K, P, F + 1]
        features, alpha = out[..., :-1], out[..., -1]
        masks = alpha.softmax(dim=1)  # [N, K, P]
        if self.mix == "attention":
            if attention is None:
                raise ValueError("this decoder mixes with the slot attention masks: pass attention [N, K, P]")
            reconstruction = torch.einsum("nkp,nkpf->npf", attention, features)
        else:
            reconstruction = torch.einsum("nkp,nkpf->npf", masks, features)
        return reconstruction, masks
