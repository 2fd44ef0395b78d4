"""Whether a build of known size fits, on a disk or in memory, asked before it starts; and
the "last used" mark of a cached folder.

Synthetic weights of a multi-billion-parameter model and its exports run to tens of GB. A
build that runs the disk full fails deep inside a library ("No space left on device") after
minutes of work, and until its half-written files are removed every other program on the
machine finds the disk full too (on a thin-provisioned virtual disk the whole machine may
stall); one that runs out of memory is killed without a word (a benchmark with it). So the
builders ask first and raise their own clear error.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

__all__ = ["KEEP_FREE_BYTES", "disk_shortfall", "existing_folder", "mark_used", "memory_shortfall"]

# What a build leaves free for everything else on the machine, beyond its own estimate.
KEEP_FREE_BYTES = 1 << 30


def existing_folder(path: Path) -> Path:
    """``path``, or the nearest folder above it that exists: where a folder not made yet will
    take its space from."""
    folder = Path(path)
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return folder


def disk_shortfall(path: Path, need_bytes: int, *, what: str) -> str | None:
    """Why ``need_bytes`` more under ``path`` would not fit, in words; None when it fits.

    Args:
        path: where the bytes would go (the nearest existing folder above it is measured).
        need_bytes: an estimate of the most the write will add, in bytes.
        what: the write in words, the subject of the message ("the ONNX export of gpt2").

    Returns:
        A sentence naming the estimate, the free space and the folder, or None when at least
        ``need_bytes`` plus :data:`KEEP_FREE_BYTES` is free there.
    """
    folder = existing_folder(path)
    free = shutil.disk_usage(folder).free
    if need_bytes + KEEP_FREE_BYTES <= free:
        return None
    return (f"{what} needs about {need_bytes / 1e9:.1f} GB of disk under {folder} and {free / 1e9:.1f} GB is free "
            f"(a build keeps {KEEP_FREE_BYTES / 1e9:.1f} GB free for the rest of the machine); free some space or "
            "use a cache directory on a disk that has it (cache_dir=, or IPFS_ACCELERATE_CACHE for the command line)")


def memory_shortfall(need_bytes: float, *, what: str, breakdown: str, advice: str) -> str | None:
    """Why a build needing ``need_bytes`` of memory would not fit in what is available now, in
    words; None when it fits.

    Args:
        need_bytes: an estimate of the build's peak memory.
        what: the build in words, the subject of the message ("the OpenVINO export").
        breakdown: where the estimate comes from ("3× the 11.9 GB of fp32 weights").
        advice: what to do instead ("run it with the torch backend …").
    """
    import psutil

    available = psutil.virtual_memory().available
    if need_bytes <= available:
        return None
    return (f"{what} needs about {need_bytes / 1e9:.1f} GB of memory ({breakdown}) and {available / 1e9:.1f} GB is "
            f"available; {advice}")


def mark_used(folder: Path) -> None:
    """Set a cached folder's modification time to now, the cache's "last used" mark.

    Every reuse of a cached build (synthetic weights, an export, a conversion) calls it, so
    that ``ipfs-accelerate cache --prune DAYS`` removes only what nothing has used lately.
    """
    with contextlib.suppress(OSError):  # a read-only cache is still a usable cache
        os.utime(folder)
