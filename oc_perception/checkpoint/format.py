"""The safetensors format of our files: tensors plus string metadata that names the kind of file, holds what
rebuilds the model, and a digest of the weights; every write is atomic (``io.atomic_write``).

Each kind of file (perception model, slot dynamics model) is a :class:`TensorFormat`: one writer and one reader
for all, so each gets the same checks: the kind named in the metadata, the stored digest and finite weights.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from oc_perception.io import atomic_write


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model it is loaded into."""


def weights_digest(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (in key order): damage anywhere changes it."""
    h = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().contiguous().cpu().reshape(-1)
        h.update(f"{key}|{t.dtype}|{tuple(state[key].shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def check_weights(state: Mapping[str, torch.Tensor], meta: Mapping[str, str], source: str) -> None:
    """A damaged file whose header survived loads without complaint: compare the stored digest (files written
    since it was added) and refuse NaN/inf weights."""
    stored = meta.get("weights_sha256")
    if stored is not None and stored != weights_digest(state):
        raise CheckpointError(f"{source}: the weights do not match the digest stored when it was written; the "
                              "file is damaged: re-download, re-copy or re-train it")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{source}: non-finite (NaN/inf) weights in {', '.join(bad[:5])}"
                              + (f" (+{len(bad) - 5} more)" if len(bad) > 5 else "")
                              + "; the file is damaged or was saved from a diverged run")


def stored_digest(path: str | Path) -> str | None:
    """The weights digest stored in one of our files (None for other files, or ours written before digests)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("weights_sha256")
    except (SafetensorError, OSError, ValueError):
        return None


def checkpoint_kind(path: Path) -> str | None:
    """"safetensors", "torch" (zip or pickle, as ``torch.save`` writes) or None, from the first bytes."""
    with path.open("rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{" and int.from_bytes(head[:8], "little") < path.stat().st_size:
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    if head.startswith(b"PK\x03\x04") or head[:1] == b"\x80":
        return "torch"
    return None


@dataclass(frozen=True)
class TensorFormat:
    """One kind of safetensors file of ours.

    Attributes:
        tag: the ``format`` metadata value that marks the kind.
        name: the kind as messages name it, with its article ("an oc-perception checkpoint").
        elsewhere: where a file of another kind goes instead (the fix a foreign-file message names).
    """

    tag: str
    name: str
    elsewhere: str

    def write(self, path: str | Path, state: Mapping[str, torch.Tensor],
              metadata: Mapping[str, str] | None = None) -> Path:
        """Write ``state`` with ``metadata``, the format tag and the weights digest, atomically."""
        state = {k: v.detach().contiguous().cpu() for k, v in state.items()}
        meta = {"format": self.tag, "weights_sha256": weights_digest(state), **(metadata or {})}
        return atomic_write(Path(path), lambda tmp: save_file(state, tmp, metadata=meta))

    def read_metadata(self, path: str | Path) -> dict[str, str]:
        """The metadata of a file of this kind, read without its tensors.

        Raises:
            FileNotFoundError: no such file.
            CheckpointError: unreadable, or a file of another kind; one line that names the fix.
        """
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint not found: {path}")
        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise self._unreadable(path, e) from e
        if meta.get("format") != self.tag:
            raise CheckpointError(f"{path} is a safetensors file but not {self.name} (metadata "
                                  f"format={meta.get('format')!r}, expected {self.tag!r}); {self.elsewhere}")
        return meta

    def read(self, path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """(tensors, metadata) of a file of this kind, checked against the stored digest and for NaN/inf.

        Raises:
            FileNotFoundError: no such file.
            CheckpointError: unreadable, another kind, damaged or non-finite weights; one line.
        """
        meta = self.read_metadata(path)
        try:
            tensors = load_file(str(path))
        except (SafetensorError, OSError, ValueError) as e:
            raise self._unreadable(Path(path), e) from e
        check_weights(tensors, meta, str(path))
        return tensors, meta

    def _unreadable(self, path: Path, error: Exception) -> CheckpointError:
        return CheckpointError(f"{path} is not a readable safetensors checkpoint ({error}); it may be truncated or "
                               f"corrupt: re-download or re-train it ({self.elsewhere})")
