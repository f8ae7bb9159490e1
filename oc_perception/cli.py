"""What our command-line entry points share: one line instead of a traceback for the user's errors, and YAML
arguments read by the one YAML loader."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from oc_perception.config import ConfigError, load_yaml, show


def run_or_exit(fn: Callable[..., Any], *args: Any, errors: tuple[type[BaseException], ...]) -> Any:
    """``fn(*args)``, but an error of the given types (bad config, data, checkpoint: the user's to fix) ends the
    program with one line ``error: ...`` on stderr and exit code 2 instead of a traceback."""
    try:
        return fn(*args)
    except errors as e:
        print(f"error: {e}", file=sys.stderr)
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
