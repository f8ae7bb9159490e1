"""A permutation-invariant features extractor for slot sets, for Stable-Baselines3 policies.

Slots come in no particular order (slot ``k`` of one episode need not be slot ``k`` of the next), so the
extractor is a transformer over the set of slots with a learned CLS token and no positional encoding: permuting
the slots permutes the tokens, and the CLS output (the features) stays the same.

    policy_kwargs = dict(features_extractor_class=SlotSetExtractor, features_extractor_kwargs=dict(embed_dim=64))
    PPO("MlpPolicy", slot_venv, policy_kwargs=policy_kwargs)        # Box (K, D) slot observations
    PPO("MultiInputPolicy", slot_mask_venv, policy_kwargs=...)      # Dict slots + masks, with use_masks=True
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

MASK_GRID = 8  # masks are average-pooled to at most MASK_GRID x MASK_GRID: coarse position and extent


class SlotSetExtractor(BaseFeaturesExtractor):
    """Slot set -> features ``[B, embed_dim]``: the CLS output of a pre-LN transformer encoder over the slots.

    Observation space: ``Box(-inf, inf, (K, D))`` of slots, or ``Dict(slots=Box (K, D), masks=Box(0, 1, (K, g, g)))``
    as ``VecSlotObservation(include_masks=True)`` gives. Each slot ``[D]`` becomes a token through
    ``LayerNorm + Linear``; with ``use_masks`` its mask, pooled to ``m x m`` (``m = min(g, 8)``) and flattened, and
    the mask's moments (area, centre x and y, spread), each through a ``Linear``, are added to the token, so the
    policy also sees where each slot is; with the centres, the offset between two slots (the agent and an
    object) is a linear function of their tokens.

    Args:
        observation_space: the slot observation space (see above).
        embed_dim: token width, and the number of features.
        num_layers: transformer encoder layers.
        num_heads: attention heads (must divide ``embed_dim``).
        use_masks: add the masks to the tokens (needs the Dict space with ``"masks"``).
    """

    def __init__(self, observation_space: spaces.Box | spaces.Dict, embed_dim: int = 64, num_layers: int = 2,
                 num_heads: int = 4, use_masks: bool = False) -> None:
        super().__init__(observation_space, features_dim=embed_dim)
        slot_space = observation_space["slots"] if isinstance(observation_space, spaces.Dict) else observation_space
        if not isinstance(slot_space, spaces.Box) or len(slot_space.shape) != 2:
            raise ValueError(f"SlotSetExtractor takes slots Box (K, D) or Dict(slots=..., masks=...), got "
                             f"{observation_space}")
        if use_masks and not (isinstance(observation_space, spaces.Dict) and "masks" in observation_space.spaces):
            raise ValueError("use_masks=True needs a Dict observation space with 'masks' "
                             "(VecSlotObservation(..., include_masks=True))")
        if embed_dim % num_heads:
            raise ValueError(f"num_heads ({num_heads}) must divide embed_dim ({embed_dim})")
        slot_dim = slot_space.shape[1]
        self.use_masks = use_masks
        self.slot_proj = nn.Sequential(nn.LayerNorm(slot_dim), nn.Linear(slot_dim, embed_dim))
        if use_masks:
            grid = observation_space["masks"].shape[-1]
            self.mask_grid = min(grid, MASK_GRID)
            self.mask_proj = nn.Linear(self.mask_grid ** 2, embed_dim)
            self.moment_proj = nn.Linear(4, embed_dim)
            self.register_buffer("coords", torch.linspace(-1, 1, grid), persistent=False)
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        layer = nn.TransformerEncoderLayer(embed_dim, num_heads, dim_feedforward=4 * embed_dim, dropout=0.0,
                                           batch_first=True, norm_first=True)
        # Pre-LN blocks leave the residual stream un-normalised: the final LayerNorm does it.
        self.encoder = nn.TransformerEncoder(layer, num_layers, norm=nn.LayerNorm(embed_dim),
                                             enable_nested_tensor=False)

    def _moments(self, masks: torch.Tensor) -> torch.Tensor:
        """masks [B, K, g, g] -> [B, K, 4]: area (fraction of the image), centre x, centre y (in [-1, 1]), spread."""
        mass = masks.sum((-2, -1))  # [B, K]
        weights = masks / mass.clamp(min=1e-6)[..., None, None]
        cx = (weights.sum(-2) * self.coords).sum(-1)  # columns: x
        cy = (weights.sum(-1) * self.coords).sum(-1)  # rows: y
        spread = (weights * ((self.coords[None, :] - cx[..., None, None]) ** 2
                             + (self.coords[:, None] - cy[..., None, None]) ** 2)).sum((-2, -1)).sqrt()
        return torch.stack([mass / masks[0, 0].numel(), cx, cy, spread], dim=-1)

    def forward(self, observations: torch.Tensor | dict[str, torch.Tensor]) -> torch.Tensor:
        """Slots ``[B, K, D]`` (or a dict with ``"slots"`` and ``"masks"`` ``[B, K, g, g]``) -> ``[B, embed_dim]``."""
        slots = observations["slots"] if isinstance(observations, dict) else observations
        tokens = self.slot_proj(slots)  # [B, K, E]
        if self.use_masks:
            masks = observations["masks"]
            b, k = masks.shape[:2]
            pooled = F.adaptive_avg_pool2d(masks.flatten(0, 1), self.mask_grid)  # [B*K, m, m]
            tokens = tokens + self.mask_proj(pooled.reshape(b, k, -1)) + self.moment_proj(self._moments(masks))
        x = torch.cat([self.cls_token.expand(tokens.shape[0], -1, -1), tokens], dim=1)  # [B, 1 + K, E]
        return self.encoder(x)[:, 0]
