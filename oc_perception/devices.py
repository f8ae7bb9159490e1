"""The one device rule: ``"auto"`` is the (local-rank) CUDA device when there is one, else the CPU."""

from __future__ import annotations

import os

import torch


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` or None -> ``cuda:<LOCAL_RANK>`` when CUDA is available (``cuda:0`` outside torchrun), else the
    CPU; anything else as ``torch.device(name)``."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        return torch.device("cpu")
    return torch.device(name)
