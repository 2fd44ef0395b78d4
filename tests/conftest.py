"""Shared test set-up: offline hubs, one cache per session, tiny models built once."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    name
    for name in ("tests.fixtures.models", "tests.fixtures.audio", "tests.fixtures.vision")
    if importlib.util.find_spec(name) is not None
]


# What one run of the suite writes under pytest's base temporary folder at its peak (tiny models,
# their ONNX and OpenVINO exports, the real Whisper tiny.en converted and exported; measured on
# 2026-12-06), and the free space asked for before it starts. Short of it, the exports fail one by one
# with "No space left on device" deep inside a library, and a disk that fills up can stall the whole
# machine until CI gives up on it.
SUITE_WRITES_GIB = 2.2
SUITE_DISK_GIB = 4.0


def _temp_root(config: pytest.Config) -> Path:
    """The folder pytest's temporary paths go under (``--basetemp`` or the system's temp folder)."""
    given = config.option.basetemp
    return Path(given).resolve().parent if given else Path(tempfile.gettempdir())


def _free_gib(path: Path) -> float:
    from ipfs_accelerate.store.disk import existing_folder  # --basetemp may name folders not made yet

    return shutil.disk_usage(existing_folder(path)).free / 2**30


_FREE_AT_START = pytest.StashKey[float]()


def pytest_sessionstart(session: pytest.Session) -> None:
    root = _temp_root(session.config)
    free = _free_gib(root)
    if free < SUITE_DISK_GIB:
        pytest.exit(f"only {free:.1f} GiB free under {root}; the suite writes about {SUITE_WRITES_GIB} GiB of "
                    f"models and exports there and needs {SUITE_DISK_GIB:.0f} GiB free: free some space or "
                    "point --basetemp at a disk that has it", returncode=1)
    session.config.stash[_FREE_AT_START] = free


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    # In the summary, not the header: `-q` (what `make test` runs) hides the header.
    if _FREE_AT_START in config.stash:
        root = _temp_root(config)
        terminalreporter.write_line(f"disk: {config.stash[_FREE_AT_START]:.1f} GiB free under {root} at the start, "
                                    f"{_free_gib(root):.1f} GiB at the end")
