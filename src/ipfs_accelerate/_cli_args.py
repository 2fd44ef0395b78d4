"""Argument types shared by the command-line interfaces (``ipfs-accelerate`` and its ``bench``).

Apart from :mod:`ipfs_accelerate.cli` so that ``bench.cli``, which the main CLI registers
as a sub-command, needs nothing from the module that imports it.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

__all__ = ["parse_key_value"]


def parse_key_value(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` from the command line; the value is parsed as JSON when it is JSON."""
    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE; got {text!r}")
    key, raw = text.split("=", 1)
    try:
        value: Any = json.loads(raw)
    except ValueError:
        value = raw
    return key, value
