"""Argument types and checks shared by the command-line interfaces (``ipfs-accelerate``, ``bench``, ``serve``).

Apart from :mod:`ipfs_accelerate.cli` so that ``bench.cli``, which the main CLI registers
as a sub-command, needs nothing from the module that imports it.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from ._exceptions import InvalidInput
from ._logs import one_line

__all__ = ["parse_key_value", "require_listenable", "require_writable_folder"]


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


def require_listenable(host: str, port: int) -> None:
    """Refuse at once an address this machine cannot listen on, naming it (uvicorn finds out only
    after the models have loaded, minutes later, and says neither which setting nor why).

    Raises:
        InvalidInput: the host does not resolve, or binding it (as uvicorn will) fails.
    """
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise InvalidInput(f"host {host}: not an address this machine has ({exc.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            probe.bind(address)
        except OSError as exc:
            raise InvalidInput(f"cannot listen on {host}:{port}: {exc.strerror} (another server on that port, "
                               "or an address of another machine?)") from None


def require_writable_folder(folder: Path, flag: str, purpose: str) -> None:
    """Make ``folder`` and check that a file can be written in it, before a run of minutes
    whose results would otherwise be lost at the end.

    Raises:
        InvalidInput: naming the flag, the folder and the operating system's reason.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError as exc:
        raise InvalidInput(f"{flag} {folder}: cannot {purpose} ({one_line(exc)})") from None
