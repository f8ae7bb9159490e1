"""What our command-line entry points share: one line instead of a traceback for the user's errors and for
interrupts, SIGTERM handled as Ctrl-C, and YAML arguments read by the one YAML loader."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from typing import Any

from oc_perception.config import ConfigError, load_yaml, show
from oc_perception.io import WriteError

INTERRUPTED_EXIT = 130  # the shell's code for a command stopped by SIGINT


class Interrupted(Exception):
    """Ctrl-C or SIGTERM stopped a command after it saved what it had; the message says what was kept and how
    to go on (e.g. ``--continue``)."""


def _terminate_as_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within the block SIGTERM (a scheduler or ``kill``) raises ``KeyboardInterrupt`` as Ctrl-C does, so
    partial files are removed and training saves its state, instead of the process dying on the spot."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGTERM, _terminate_as_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def one_line(error: BaseException) -> str:
    """The message of ``error`` on one line (newlines and runs of spaces folded)."""
    return " ".join(str(error).split())


def run_or_exit(fn: Callable[..., Any], *args: Any, errors: tuple[type[BaseException], ...]) -> Any:
    """``fn(*args)``, but an error of the given types (bad config, data, checkpoint: the user's to fix) or a
    ``WriteError`` ends the program with one line ``error: ...`` on stderr and exit code 2 instead of a traceback;
    Ctrl-C or SIGTERM end it with one line ``interrupted: ...`` and exit code 130."""
    try:
        with sigterm_as_interrupt():
            return fn(*args)
    except Interrupted as e:
        print(f"interrupted: {one_line(e)}", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except KeyboardInterrupt:
        print("interrupted: stopped before the end; files that were being written were removed", file=sys.stderr)
        sys.exit(INTERRUPTED_EXIT)
    except (*errors, WriteError) as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)


def yaml_mapping(text: str) -> dict[str, Any]:
    """An argparse ``type``: a YAML mapping of names to values such as ``'{num_objects: 6}'``."""
    try:
        value = load_yaml(text, repr(text))
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a YAML mapping such as '{{num_objects: 6}}', got {show(value)}")
    return value
