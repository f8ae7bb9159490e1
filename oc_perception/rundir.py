"""A run's log dir: one run at a time, and a finished run is never overwritten by accident.

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
from dataclasses import dataclass
from pathlib import Path

from oc_perception.checkpoint import remove_partial_writes
from oc_perception.config import ConfigError
from oc_perception.io import write_error

LOCK_NAME = ".lock"


@dataclass(frozen=True)
class RunFiles:
    """What one kind of run writes into its log dir, as glob patterns relative to it."""

    results: tuple[str, ...]  # the run's work: a dir holding one of these holds a run, kept unless --overwrite
    resumable: tuple[str, ...]  # the results ``--continue`` resumes from
    # What else it writes (TensorBoard events, its config): removed with the run on --overwrite, and on their own
    # when no result is there (a run that stopped before it saved anything), so two runs' curves never mix.
    logs: tuple[str, ...]


TRAINING_RUN = RunFiles(results=("model.safetensors", "checkpoints/step_*.pt"),
                        resumable=("checkpoints/step_*.pt",),
                        logs=("config.yml", "events.out.tfevents.*", "checkpoints"))


class LogDirBusy(ConfigError):
    """Another live process trains in this log dir."""


def _matches(log_dir: Path, patterns: tuple[str, ...]) -> list[Path]:
    return sorted(p for pattern in patterns for p in log_dir.glob(pattern))


def previous_run(log_dir: Path, files: RunFiles = TRAINING_RUN) -> list[str]:
    """The results of an earlier run that ``log_dir`` holds, as the patterns that match (empty for a fresh dir)."""
    return [pattern for pattern in files.results if any(log_dir.glob(pattern))]


def _remove(paths: list[Path]) -> None:
    for target in paths:
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def claim_log_dir(log_dir: str | Path, resuming: bool, overwrite: bool = False, resumed_dir: str | Path | None = None,
                  files: RunFiles = TRAINING_RUN) -> Iterator[Path]:
    """Lock ``log_dir`` for this process (``flock`` on ``log_dir/.lock``, which also holds our pid).

    ``resuming`` continues the run of ``resumed_dir`` (default: ``log_dir`` itself); resuming into another dir
    needs that dir to hold no run (or ``overwrite``). ``files`` says what the kind of run writes.

    Raises:
        LogDirBusy: another live process holds the lock.
        ConfigError: the dir holds an earlier run and neither ``resuming`` it nor ``overwrite`` says what to do
            with it (the message names ``--continue`` where there is something to resume, a fresh ``--log-dir``
            and ``--overwrite``).
        WriteError: the dir cannot be made or written.
    """
    log_dir = Path(log_dir)
    continuing = resuming and (resumed_dir is None or Path(resumed_dir).resolve() == log_dir.resolve())
    earlier = previous_run(log_dir, files)
    if earlier and not continuing and not overwrite:
        found = ", ".join(earlier)
        if resuming:
            raise ConfigError(f"log dir {log_dir} already holds another run ({found}); the resumed run would mix its "
                              f"files with that one's: leave out --log-dir to go on in {resumed_dir}, pass a fresh "
                              f"--log-dir, or --overwrite to replace the run in {log_dir}")
        resume = f"--continue {log_dir} to resume it, " if _matches(log_dir, files.resumable) else ""
        raise ConfigError(f"log dir {log_dir} already holds a run ({found}): pass {resume}a fresh --log-dir, or "
                          "--overwrite to replace it")
    lock_path = log_dir / LOCK_NAME
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as e:
        raise write_error(lock_path, e) from e
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
        if not continuing:  # (no result is left here unless overwrite says so: checked above)
            _remove(_matches(log_dir, files.results + files.logs))
        for folder in (log_dir, log_dir / "checkpoints"):
            if folder.is_dir():
                remove_partial_writes(folder)
        yield log_dir
    finally:
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
        os.close(fd)
