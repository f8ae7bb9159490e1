"""Frames as the model takes them: uint8 RGB checks, the official resizes, normalisation and preprocessing.

Shared by training, inference and the env wrappers, so every path feeds the model exactly what it was trained on.
Geometry and interpolation follow the official SlotContrast pipeline (``slotcontrast/data/transforms.py``):
frames are resized bicubically *without* antialiasing and clamped to [0, 1]; segmentations use
``nearest-exact``. This module needs only torch and numpy: the model and the wrappers import it without the
data pipeline (shards, loaders).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange


def rgb_conversion(dtype: np.dtype | torch.dtype, frame_shape: Sequence[int]) -> str:
    """What turns frames of ``dtype`` and per-frame shape ``frame_shape`` into uint8 RGB ``[H, W, 3]``: the fix
    an error message names (e.g. "drop the alpha channel (x[..., :3])")."""
    shape, name = tuple(frame_shape), str(dtype).removeprefix("torch.")
    steps = []
    if len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
        steps.append("move the channels last (np.moveaxis(x, -3, -1))")
        shape = (*shape[1:], shape[0])
    if len(shape) == 2:
        steps.append("stack the grey frames to RGB (np.repeat(x[..., None], 3, axis=-1))")
    elif len(shape) == 3 and shape[-1] == 4:
        steps.append("drop the alpha channel (x[..., :3])")
    elif len(shape) == 3 and shape[-1] == 1:
        steps.append("repeat the grey channel (np.repeat(x, 3, axis=-1))")
    if "float" in name:
        steps.append("map floats in [0, 1] to uint8 ((x * 255).round().astype(np.uint8))")
    elif name != "uint8":
        steps.append(f"rescale the {name} values to 0..255 and cast them (x.astype(np.uint8))")
    return "; ".join(steps) or "give uint8 RGB frames [H, W, 3]"


def check_rgb_uint8(frames: torch.Tensor, name: str = "frames") -> None:
    """Raise a ValueError unless ``frames`` is uint8 RGB ``[..., H, W, 3]``."""
    if frames.dtype != torch.uint8:
        raise ValueError(f"{name}: expected uint8 RGB [..., H, W, 3], got dtype {frames.dtype}")
    if frames.ndim < 3 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected uint8 RGB [..., H, W, 3], got shape {tuple(frames.shape)}")
    if frames.shape[-3] == 0 or frames.shape[-2] == 0:
        raise ValueError(f"{name}: frames of {frames.shape[-3]}x{frames.shape[-2]} pixels hold no image")


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Float ``images`` [N, C, H, W] in [0, 1] -> [N, C, *size], the official way: no antialias, and
    bicubic overshoot clamped back to [0, 1]."""
    if images.shape[-2:] == size:
        return images
    out = F.interpolate(images, size=size, mode=mode)
    return out.clamp_(0.0, 1.0) if mode == "bicubic" else out


def resize_square(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Resize float ``images`` [N, C, H, W] in [0, 1] to [N, C, size, size]."""
    return _resize(images, (size, size), mode)


def short_side_size(height: int, width: int, size: int) -> tuple[int, int]:
    """(H', W') with the short side scaled to ``size`` and the long side to ``floor(long / short * size)``."""
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def resize_short_side(images: torch.Tensor, size: int, mode: str = "bicubic") -> torch.Tensor:
    """Float ``images`` [N, C, H, W] in [0, 1] -> [N, C, H', W'] with the short side equal to ``size``."""
    return _resize(images, short_side_size(*images.shape[-2:], size), mode)


def resize_labels(labels: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Integer ``labels`` [T, H, W] -> [T, *size] by ``nearest-exact`` (exact for ids below 2^24)."""
    if labels.shape[-2:] == size:
        return labels
    out = F.interpolate(labels[:, None].float(), size=size, mode="nearest-exact")
    return out[:, 0].to(labels.dtype)


def normalize(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """``images`` [..., 3, H, W] in [0, 1] -> (x - mean) / std per channel."""
    m = torch.as_tensor(mean, dtype=images.dtype, device=images.device).view(3, 1, 1)
    s = torch.as_tensor(std, dtype=images.dtype, device=images.device).view(3, 1, 1)
    return (images - m) / s


def to_float_frames(frames: torch.Tensor) -> torch.Tensor:
    """uint8 RGB [N, H, W, 3] -> float32 [N, 3, H, W] in [0, 1]."""
    check_rgb_uint8(frames)
    return rearrange(frames, "n h w c -> n c h w").float().div_(255.0)


def preprocess_frames(
    frames: torch.Tensor, size: int, mean: Sequence[float], std: Sequence[float]
) -> torch.Tensor:
    """uint8 RGB ``[..., H, W, 3]`` -> normalised float32 ``[..., 3, size, size]``."""
    check_rgb_uint8(frames)
    lead = frames.shape[:-3]
    x = to_float_frames(frames.reshape(-1, *frames.shape[-3:]))
    x = normalize(resize_square(x, size), mean, std)
    return x.reshape(*lead, 3, size, size)


def resize_frames_as_model_input(frames: np.ndarray | torch.Tensor, size: int) -> np.ndarray:
    """uint8 RGB ``[T, H, W, 3]`` -> uint8 ``[T, size, size, 3]``, resized as :func:`preprocess_frames` resizes
    (bicubic, no antialias, clamped): frames stored at the model's input size are what the model makes of the
    env's frames at their own size, so training and the env wrappers see the same pixels (up to rounding)."""
    frames = torch.as_tensor(np.asarray(frames))
    check_rgb_uint8(frames)
    if frames.shape[-3:-1] == (size, size):
        return frames.numpy()
    x = resize_square(to_float_frames(frames), size)
    return (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
