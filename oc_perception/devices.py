"""The one device rule and the one precision rule.

``"auto"`` is the (local-rank) CUDA device when there is one, else the CPU. ``"bf16"`` is bfloat16 autocast on
either device: CUDA GPUs since Ampere and x86 CPUs with AMX-BF16 or AVX512-BF16 run it natively (a training
step ~2x, a large matmul 6-8x faster than float32 on such a CPU); elsewhere it runs, emulated, and slower.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Literal

import torch

Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16")


def resolve_device(name: str | torch.device | None = "auto") -> torch.device:
    """``"auto"`` or None -> ``cuda:<LOCAL_RANK>`` when CUDA is available (``cuda:0`` outside torchrun), else the
    CPU; anything else as ``torch.device(name)``."""
    if name is None or str(name) == "auto":
        if torch.cuda.is_available():
            return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
        return torch.device("cpu")
    return torch.device(name)


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes bfloat16 in hardware (AMX or AVX512-BF16 on a CPU, compute >= 8.0 on CUDA)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        cpu = torch.cpu
        return bool(getattr(cpu, "_is_amx_tile_supported", lambda: False)()
                    or getattr(cpu, "_is_avx512_bf16_supported", lambda: False)())
    return False


def check_precision(precision: str, device: torch.device) -> Precision:
    """``precision`` as a :data:`Precision`, or ValueError naming the choices; warns when ``device`` would only
    emulate bf16 (slower than fp32)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "bf16" and not native_bf16(device):
        warnings.warn(f"{device} has no native bfloat16 (AMX/AVX512-BF16 or an Ampere+ GPU): bf16 autocast runs "
                      "emulated there, slower than fp32", stacklevel=2)
    return precision  # type: ignore[return-value]


def autocast(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on ``device`` for ``"bf16"``, nothing for ``"fp32"``. Weights and optimiser state stay
    float32 (mixed precision); matmuls and convolutions run in bfloat16."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def keep_freed_memory() -> bool:
    """Let glibc keep freed blocks for reuse instead of returning each large one to the OS.

    By default glibc serves blocks over a (dynamic) threshold with mmap and unmaps them on free, so every
    training step maps its activations afresh and the kernel zeroes each page on first touch: on a CPU that was
    ~20 % of a step's time in system calls and page faults (``benchmarks/train_speed.py`` prints both). With
    large mmap and trim thresholds the heap keeps those pages; the resident size stays at its peak instead.
    Only for long-running loops (training); a no-op where the C library is not glibc. Returns whether it applied.
    """
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_top_pad, m_mmap_threshold = -1, -2, -3  # <malloc.h>
    return all(mallopt(param, value) == 1 for param, value in (
        (m_mmap_threshold, 1 << 30), (m_trim_threshold, (1 << 31) - 1), (m_top_pad, 1 << 28)))
