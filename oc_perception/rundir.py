"""A training run's log dir: one run at a time, and a finished run is never overwritten by accident.

    with claim_log_dir(log_dir, resuming=False, overwrite=False):
        ...  # train; the lock is held until the block ends (or the process dies)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path

from oc_perception.checkpoint import remove_partial_writes
from oc_perception.config import ConfigError

LOCK_NAME = ".lock"
RUN_FILES = ("model.safetensors", "config.yml", "checkpoints")


class LogDirBusy(ConfigError):
    """Another live process trains in this log dir."""


def previous_run(log_dir: Path) -> list[str]:
    """What of an earlier run ``log_dir`` holds (empty for a fresh dir)."""
    found = [name for name in RUN_FILES if (log_dir / name).exists()]
    if "checkpoints" in found and not any((log_dir / "checkpoints").glob("step_*.pt")):
        found.remove("checkpoints")
    return found


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def claim_log_dir(log_dir: str | Path, resuming: bool, overwrite: bool = False) -> Iterator[Path]:
    """Lock ``log_dir`` for this process (``flock`` on ``log_dir/.lock``, which also holds our pid).

    Raises:
        LogDirBusy: another live process holds the lock.
        ConfigError: the dir holds an earlier run and neither ``resuming`` nor ``overwrite`` says what to do
            with it (the message names ``--continue``, a fresh ``--log-dir`` and ``--overwrite``).
    """
    log_dir = Path(log_dir)
    earlier = previous_run(log_dir)
    if earlier and not resuming and not overwrite:
        raise ConfigError(f"log dir {log_dir} already holds a run ({', '.join(earlier)}): pass --continue "
                          f"{log_dir} to resume it, a fresh --log-dir, or --overwrite to replace it")
    log_dir.mkdir(parents=True, exist_ok=True)
    lock_path = log_dir / LOCK_NAME
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise LogDirBusy(f"log dir {log_dir} is in use by a running training process (pid {holder}); wait "
                             "for it, stop it, or pass another --log-dir") from None
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
        if holder.isdigit() and int(holder) != os.getpid() and not _pid_alive(int(holder)):
            warnings.warn(f"log dir {log_dir}: taking over the lock of process {holder}, which is gone",
                          stacklevel=3)
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        if overwrite and not resuming:
            for name in RUN_FILES:
                target = log_dir / name
                if target.is_dir():
                    shutil.rmtree(target)
                elif target.exists():
                    target.unlink()
        for folder in (log_dir, log_dir / "checkpoints"):
            if folder.is_dir():
                remove_partial_writes(folder)
        yield log_dir
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
