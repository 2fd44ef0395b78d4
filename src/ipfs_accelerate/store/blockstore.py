"""A local blockstore keyed by CID, with atomic writes, verification on read, and pins.

Layout under its root (``<cache>/ipfs`` by default)::

    blocks/ab/abcdef…      one file per block, named by the hex sha2-256 digest
    pins.json              pinned root CIDs and what they are
    manifests/<cid>.json   the manifest of each added or fetched model (see manifest.py)

A block is written to a temporary file beside its final name and renamed into place, so a
crash mid-add leaves at most a ``.tmp`` file (removed by :meth:`Blockstore.gc`), never a
block that fails its hash. Every read hashes the bytes again and raises
:class:`IntegrityError` when they do not match.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .._exceptions import IntegrityError, StoreError
from .cid import CID
from .unixfs import links_of

__all__ = ["Blockstore", "IntegrityError"]


class Blockstore:
    """Blocks on disk, named by their digest.

    Args:
        root: the store's directory (created on first write).
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.blocks_dir = self.root / "blocks"

    def __repr__(self) -> str:
        return f"Blockstore({str(self.root)!r})"

    # ------------------------------------------------------------ blocks

    def path_of(self, cid: CID) -> Path:
        """Where the block of ``cid`` lives (whether or not it is there)."""
        key = cid.key
        return self.blocks_dir / key[:2] / key

    def has(self, cid: CID) -> bool:
        """Whether the block is stored (not verified; :meth:`get` verifies)."""
        return self.path_of(cid).is_file()

    def put(self, cid: CID, data: bytes, *, verify: bool = True) -> bool:
        """Store a block atomically; ``False`` when it was already there.

        Args:
            cid: the block's CID.
            data: its bytes.
            verify: hash ``data`` first (off only for bytes this process just hashed).

        Raises:
            IntegrityError: ``data`` does not hash to ``cid``.
        """
        if verify and not cid.matches(data):
            raise IntegrityError(f"block {cid} does not match its bytes ({len(data)} bytes)", cid=str(cid))
        target = self.path_of(cid)
        if target.is_file():
            return False
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name[:8]}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return True

    def get(self, cid: CID, *, path: str | None = None) -> bytes:
        """The verified bytes of a block.

        Args:
            cid: the block's CID.
            path: the model file the block belongs to, named in errors.

        Raises:
            StoreError: the block is not stored.
            IntegrityError: the stored bytes do not hash to ``cid`` (tampered or truncated).
        """
        try:
            data = self.path_of(cid).read_bytes()
        except FileNotFoundError:
            raise StoreError(f"block {cid} is not in the local store" + (f" (file {path})" if path else "")) from None
        if not cid.matches(data):
            where = f" of {path}" if path else ""
            raise IntegrityError(
                f"block {cid}{where} fails its hash in {self.path_of(cid)} ({len(data)} bytes): "
                "the stored copy is corrupt", cid=str(cid), path=path,
            )
        return data

    def delete(self, cid: CID) -> bool:
        """Remove a block; ``False`` when it was not there."""
        try:
            self.path_of(cid).unlink()
        except FileNotFoundError:
            return False
        return True

    def digests(self) -> Iterator[str]:
        """The hex digests of every stored block."""
        if not self.blocks_dir.is_dir():
            return
        for shard in self.blocks_dir.iterdir():
            if shard.is_dir():
                for block in shard.iterdir():
                    if not block.name.startswith("."):
                        yield block.name

    def walk(self, root: CID, *, missing_ok: bool = False, path: str | None = None) -> Iterator[CID]:
        """Every CID of the DAG under ``root``, depth first, each once (root first).

        Args:
            root: the DAG's root.
            missing_ok: skip blocks that are not stored instead of raising.
            path: the model file the DAG is, named in errors.

        Raises:
            StoreError, IntegrityError: a block is missing or corrupt.
        """
        seen: set[str] = set()
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.key in seen:
                continue
            seen.add(cid.key)
            if missing_ok and not self.has(cid):
                continue
            yield cid
            stack.extend(link.cid for link in reversed(links_of(cid, self.get(cid, path=path))))

    # ------------------------------------------------------------ pins and manifests

    @property
    def pins_file(self) -> Path:
        """The JSON file of pins."""
        return self.root / "pins.json"

    def pins(self) -> dict[str, dict[str, Any]]:
        """Pinned root CIDs -> what was recorded with them (name, time)."""
        try:
            data = json.loads(self.pins_file.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise StoreError(f"{self.pins_file} is not valid JSON: {exc}") from exc
        return dict(data)

    def pin(self, cid: CID, *, name: str = "") -> None:
        """Keep ``cid``'s DAG through :meth:`gc`."""
        pins = self.pins()
        pins[str(cid)] = {"name": name, "pinned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        self._write_json(self.pins_file, pins)

    def unpin(self, cid: CID) -> bool:
        """Let :meth:`gc` collect ``cid``'s DAG; ``False`` when it was not pinned."""
        pins = self.pins()
        found = pins.pop(str(cid), None) is not None
        if not found:  # the same block may have been pinned under its other CID version
            for key in [k for k in pins if CID.parse(k).key == cid.key]:
                found = pins.pop(key, None) is not None or found
        if found:
            self._write_json(self.pins_file, pins)
        return found

    def manifest_path(self, cid: CID) -> Path:
        """Where the manifest of the model rooted at ``cid`` is kept."""
        return self.root / "manifests" / f"{cid.key}.json"

    def gc(self, *, keep: Iterable[CID] = ()) -> tuple[int, int]:
        """Remove every block not reachable from a pin (or ``keep``); ``(blocks, bytes)`` freed.

        Leftover ``.tmp`` files from an interrupted write are removed too. A pinned DAG
        whose blocks are missing keeps what it has.
        """
        roots = [CID.parse(text) for text in self.pins()] + list(keep)
        live: set[str] = set()
        for root in roots:
            live.update(cid.key for cid in self.walk(root, missing_ok=True))
        freed = freed_bytes = 0
        if not self.blocks_dir.is_dir():
            return 0, 0
        for shard in self.blocks_dir.iterdir():
            if not shard.is_dir():
                continue
            for block in shard.iterdir():
                if block.name in live:
                    continue
                stale_tmp = block.name.startswith(".") and time.time() - block.stat().st_mtime > 60
                if block.name.startswith(".") and not stale_tmp:
                    continue  # a write in progress in another process
                freed_bytes += block.stat().st_size
                block.unlink(missing_ok=True)
                freed += 1
            try:
                shard.rmdir()  # only succeeds when the shard is empty now
            except OSError:
                pass
        for manifest in (self.root / "manifests").glob("*.json"):
            if manifest.stem not in live:
                manifest.unlink(missing_ok=True)
        return freed, freed_bytes

    @staticmethod
    def _write_json(path: Path, data: Any) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2, sort_keys=True)
        os.replace(tmp, path)
