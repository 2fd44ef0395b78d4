"""What the cache holds, and removing what nothing has used for a while.

The cache (``cache_dir``, by default ``~/.cache/ipfs_accelerate``) keeps what is slow to
make and cheap to keep: synthetic weights (``synthetic/<model>-<key>``), conversions
(``converted/<name>``) and exports (``exports/<backend>/<key>``). Their keys hash what they
were made from, so a new library version or a changed recipe makes a new entry and the old
one is never read again: left alone, the cache only grows (a day of benchmarks here left
38 GB). Every reuse marks its entry as used (:func:`ipfs_accelerate.store.disk.mark_used`,
the folder's modification time), so :func:`prune_cache` can remove what has not been used
for some days; whatever it removes is made again on the next load that needs it.

Other folders (the IPFS model store ``ipfs/``, the content-hash memos ``hashes/``) are
listed whole and never pruned here: the store has its own ``ipfs-accelerate models gc``.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

from .._exceptions import InvalidInput
from ..backends.converting.export_cache import MANIFEST, remove_entry
from ..store.weights import SYNTHETIC_MARKER

__all__ = ["PRUNABLE", "CachedItem", "cache_items", "prune_cache"]

# Folders holding one rebuildable entry per subfolder, and the depth of their entries.
PRUNABLE = {"synthetic": 1, "converted": 1, "exports": 2}
_DAY_S = 86_400.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class CachedItem:
    """One entry of the cache (or one whole folder that is not pruned entry by entry).

    Attributes:
        path: the entry's folder.
        kind: where it lives: ``synthetic``, ``converted``, ``exports/<backend>``, or the
            name of a folder kept whole (``ipfs``, ``hashes``).
        what: the entry in words ("synthetic weights of gpt2", "int8 export of gpt2").
        size_bytes: the bytes of its files.
        last_used: when it was last built or reused (seconds since the epoch).
        prunable: whether :func:`prune_cache` may remove it.
    """

    path: Path
    kind: str
    what: str
    size_bytes: int
    last_used: float
    prunable: bool


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _describe(entry: Path) -> str:
    """The entry in words, from the file its builder wrote last (the folder's name otherwise)."""
    try:
        if (entry / SYNTHETIC_MARKER).is_file():
            marker = json.loads((entry / SYNTHETIC_MARKER).read_text())
            return f"synthetic weights of {marker.get('model_id', entry.name)}"
        if (entry / MANIFEST).is_file():
            facts = json.loads((entry / MANIFEST).read_text()).get("describe", {})
            return f"{facts.get('precision', '?')} export of {facts.get('model_id', '?')}"
    except (OSError, ValueError, AttributeError):
        pass
    return entry.name


def _entries(folder: Path, depth: int) -> list[Path]:
    """Subfolders ``depth`` levels down, less builds in progress (``.tmp-…``, ``.build-…``)."""
    found = [folder]
    for _ in range(depth):
        found = [p for parent in found for p in sorted(parent.iterdir()) if p.is_dir() and not p.name.startswith(".")]
    return found


def cache_items(cache_dir: Path) -> list[CachedItem]:
    """Every entry under ``cache_dir``, largest first; an empty list when there is no cache.

    Args:
        cache_dir: the cache's root folder.
    """
    root = Path(cache_dir)
    if not root.is_dir():
        return []
    items = []
    for top in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        depth = PRUNABLE.get(top.name)
        if depth is None or not top.is_dir():
            items.append(CachedItem(path=top, kind=top.name, what=f"{top.name} (kept whole)", size_bytes=_size(top),
                                    last_used=top.stat().st_mtime, prunable=False))
            continue
        for entry in _entries(top, depth):
            items.append(CachedItem(path=entry, kind=str(entry.parent.relative_to(root)), what=_describe(entry),
                                    size_bytes=_size(entry), last_used=entry.stat().st_mtime, prunable=True))
    return sorted(items, key=lambda item: -item.size_bytes)


def prune_cache(cache_dir: Path, *, unused_days: float, dry_run: bool = False,
                now: float | None = None) -> list[CachedItem]:
    """Remove the entries nothing has built or reused for ``unused_days`` days.

    An export that a process is building or checking for reuse right now (its lock is held)
    is kept.

    Args:
        cache_dir: the cache's root folder.
        unused_days: how long an entry must have gone unused (0: every entry).
        dry_run: list what would go, remove nothing.
        now: the present, in seconds since the epoch (default: the clock).

    Returns:
        The entries removed (with ``dry_run``, those that would be).

    Raises:
        InvalidInput: ``unused_days`` is negative.
    """
    if unused_days < 0:
        raise InvalidInput(f"unused_days must be 0 or more, not {unused_days}")
    cutoff = (time.time() if now is None else now) - unused_days * _DAY_S
    removed = []
    for item in cache_items(cache_dir):
        if not item.prunable or item.last_used > cutoff:
            continue
        if not dry_run:
            if item.kind.startswith("exports/"):
                if not remove_entry(item.path):
                    continue
            else:
                shutil.rmtree(item.path, ignore_errors=True)
        removed.append(item)
    return removed
