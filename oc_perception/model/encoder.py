"""Feature encoders: a frozen timm ViT (DINOv2, the paper) or a small CNN trained from pixels, and the
feature MLP that maps encoder features to slot space.

timm (which imports torchvision) is imported where a ViT is built: a CNN model, and ``import oc_perception``,
never load it.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

import torch
from einops import rearrange
from torch import nn

from oc_perception.config import EncoderConfig


class BackboneWeightsError(RuntimeError):
    """Pretrained backbone weights that are needed but cannot be had (offline and not cached)."""


def pretrained_weights_available(name: str, timeout: float = 3.0) -> bool:
    """Whether timm can get the pretrained weights of ``name`` now: in the local hub cache, or the hub reachable.

    Asked before ``timm.create_model(pretrained=True)``, whose hub client otherwise retries for tens of
    seconds offline before failing with a message that does not say what is missing.
    """
    import timm
    from huggingface_hub import constants, try_to_load_from_cache

    pretrained_cfg = timm.models.get_pretrained_cfg(name)
    repo = getattr(pretrained_cfg, "hf_hub_id", None)
    if repo:
        for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
            if isinstance(try_to_load_from_cache(repo, filename), str):
                return True
    if constants.HF_HUB_OFFLINE or os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    host = urlparse(constants.ENDPOINT).hostname
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
    except OSError:
        return False
    return True


class ViTEncoder(nn.Module):
    """Frozen timm ViT. ``images`` [N, 3, H, W] -> patch features [N, P, F], P = (H/ps) * (W/ps).

    Features are the output of the last block *before* the final norm, prefix (CLS/register) tokens dropped,
    as in SlotContrast. The final norm is replaced by an identity so a state dict has exactly the official
    checkpoint's backbone keys. ``dynamic_img_size`` keeps the 518-px position embedding (the official key
    shape) and resamples it to the input grid at run time.
    """

    def __init__(self, name: str, pretrained: bool = True, weights: str | None = None) -> None:
        super().__init__()
        import timm

        if not timm.is_model(name):
            raise ValueError(f"unknown backbone '{name}': timm has no model of that name; use 'cnn' or a timm ViT "
                             "such as vit_small_patch14_dinov2 (timm.list_models('*dinov2*') lists more)")
        overlay = None
        if weights is not None:
            if not Path(weights).is_file():
                raise FileNotFoundError(
                    f"backbone weights file not found: {weights} (set model.encoder.weights to an existing "
                    "file, or model.encoder.pretrained=false for random weights)"
                )
            overlay = {"file": str(weights)}
        elif pretrained and not pretrained_weights_available(name):
            raise BackboneWeightsError(
                f"the pretrained weights of backbone '{name}' are needed (the checkpoint or config holds no "
                "backbone weights) but are not in the local cache and the model hub cannot be reached. Download "
                "them once and set model.encoder.weights=/path/to/weights.safetensors, or use a checkpoint that "
                "includes the backbone (model.encoder.pretrained=false gives random weights: tests only)."
            )
        try:
            self.backbone = timm.create_model(
                name, pretrained=pretrained or weights is not None, num_classes=0,
                dynamic_img_size=True, pretrained_cfg_overlay=overlay,
            )
        except RuntimeError as e:
            if not pretrained or weights is not None:
                raise
            raise RuntimeError(
                f"could not load pretrained weights for '{name}' through timm ({e}). Offline? Download them "
                "once and set model.encoder.weights=/path/to/weights.safetensors, or set "
                "model.encoder.pretrained=false (random backbone: only for tests and checkpoints that hold "
                "the backbone)."
            ) from e
        self.backbone.norm = nn.Identity()
        self.patch_size = self.backbone.patch_embed.patch_size[0]
        self.feature_dim = self.backbone.num_features
        self.backbone.requires_grad_(False)
        self.backbone.eval()

    def train(self, mode: bool = True) -> "ViTEncoder":
        # Frozen: stays in eval mode whatever the parent does (no dropout / drop-path while training).
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        tokens = self.backbone.forward_features(images)  # [N, prefix + P, F]
        return tokens[:, self.backbone.num_prefix_tokens :]


class SoftPositionEmbedding(nn.Module):
    """Position embedding as a linear map of the cell coordinates (x, y, 1 - x, 1 - y) of a ``grid x grid``
    grid (Locatello et al., 2020) -> [1, grid * grid, dim]. Neighbouring cells get similar codes from the
    start, which a free per-cell parameter only learns slowly."""

    def __init__(self, dim: int, grid: int) -> None:
        super().__init__()
        ramp = torch.linspace(0.0, 1.0, grid)
        y, x = torch.meshgrid(ramp, ramp, indexing="ij")
        coords = torch.stack([x, y, 1 - x, 1 - y], dim=-1).reshape(1, grid * grid, 4)
        self.register_buffer("coords", coords, persistent=False)
        self.proj = nn.Linear(4, dim)

    def forward(self) -> torch.Tensor:
        return self.proj(self.coords)


class CNNEncoder(nn.Module):
    """Small convolutional encoder trained from scratch (where no pretrained ViT is available).

    ``images`` [N, 3, H, W] -> features [N, P, F] on a grid of stride ``patch_size`` (a power of two), with
    a soft position embedding added (``position_embedding``) so slot attention can tell apart objects that
    look alike; Invariant Slot Attention does without it.
    """

    def __init__(self, channels: list[int], patch_size: int, input_size: int,
                 position_embedding: bool = True) -> None:
        super().__init__()
        downsamples = patch_size.bit_length() - 1
        if patch_size < 1 or 2**downsamples != patch_size or downsamples > len(channels):
            raise ValueError(
                f"CNN encoder: patch_size must be a power of two <= 2**len(cnn_channels) "
                f"(= {2 ** len(channels)}), got {patch_size}"
            )
        if input_size % patch_size:
            raise ValueError(f"CNN encoder: input_size {input_size} is not a multiple of patch_size {patch_size}")
        layers: list[nn.Module] = []
        c_in = 3
        for i, c_out in enumerate(channels):
            stride = 2 if i < downsamples else 1
            layers += [nn.Conv2d(c_in, c_out, 5, stride=stride, padding=2), nn.ReLU()]
            c_in = c_out
        self.convs = nn.Sequential(*layers[:-1])  # no ReLU on the output features
        self.pos_emb = SoftPositionEmbedding(c_in, input_size // patch_size) if position_embedding else None
        self.patch_size = patch_size
        self.feature_dim = c_in

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        feats = rearrange(self.convs(images), "n f h w -> n (h w) f")
        return feats if self.pos_emb is None else feats + self.pos_emb()


def build_encoder(cfg: EncoderConfig) -> nn.Module:
    """The encoder named by ``cfg.backbone``; checks that the config's patch size and F match it."""
    if cfg.backbone == "cnn":
        encoder: nn.Module = CNNEncoder(cfg.cnn_channels, cfg.patch_size, cfg.input_size, cfg.position_embedding)
    else:
        encoder = ViTEncoder(cfg.backbone, cfg.pretrained, cfg.weights)
    if encoder.patch_size != cfg.patch_size or encoder.feature_dim != cfg.feature_dim:
        raise ValueError(
            f"model.encoder: backbone '{cfg.backbone}' has patch size {encoder.patch_size} and feature dim "
            f"{encoder.feature_dim}, but the config says patch_size={cfg.patch_size}, "
            f"feature_dim={cfg.feature_dim}"
        )
    return encoder


class FeatureMLP(nn.Module):
    """Encoder features -> slot-attention inputs: LayerNorm(F) -> Linear(F, H) -> ReLU -> Linear(H, D).

    ``features`` [..., F] -> [..., D]. Biases start at zero, as in the official model.
    """

    def __init__(self, feature_dim: int, hidden_dim: int, slot_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(feature_dim)
        self.fc1 = nn.Linear(feature_dim, hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, slot_dim)
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(self.norm(features))))
