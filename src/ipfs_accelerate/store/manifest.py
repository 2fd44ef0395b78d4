"""The manifest of a stored model, and reading UnixFS files and directories back.

A manifest records what a root CID holds: the model's family, default task and config
(when it is a model folder), whether its weights are synthetic, the CID options it was
built with, and every file with its CID and size. It lives beside the blocks, not inside
the DAG, so that the root CID stays what ``ipfs add -r`` prints for the folder; a node
that fetches the DAG by CID rebuilds the manifest from the DAG itself.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from .._exceptions import IntegrityError, StoreError
from .cid import CID, RAW
from .unixfs import T_DIRECTORY, T_FILE, T_RAW, AddedEntry, Link, decode_dag_pb, decode_unixfs

__all__ = [
    "FileEntry",
    "Manifest",
    "read_file",
    "walk_unixfs",
]

SYNTHETIC_MARKER = "ipfs_accelerate_synthetic.json"  # the same name as store.weights.SYNTHETIC_MARKER

BlockGetter = Callable[[CID, str], bytes]
"""``get(cid, path)``: the verified bytes of a block (``path`` names the file in errors)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class FileEntry:
    """One file or directory under a root.

    Attributes:
        path: relative path (``/``-separated); ``""`` for a root that is a single file.
        cid: its CID.
        size: its bytes (0 for a directory).
        is_dir: whether it is a directory.
    """

    path: str
    cid: str
    size: int
    is_dir: bool = False


@dataclasses.dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a root CID holds.

    Attributes:
        root: the root CID.
        name: what was added (a folder name, a model id) or fetched.
        is_dir: whether the root is a directory.
        size: the bytes of all files.
        cid_version: 0 or 1.
        raw_leaves: whether leaves are raw blocks.
        files: every file and directory, depth first.
        family: the family that claims the model, when it is a model folder.
        task: that family's default task.
        config: the model's config.json, when there is one.
        weights: ``"synthetic"`` when the folder carries the synthetic marker, else
            ``"pretrained"`` for a model and ``None`` for other content.
    """

    root: str
    name: str
    is_dir: bool
    size: int
    cid_version: int
    raw_leaves: bool
    files: tuple[FileEntry, ...]
    family: str | None = None
    task: str | None = None
    config: dict[str, Any] | None = None
    weights: str | None = None

    @classmethod
    def from_added(cls, added: AddedEntry, *, name: str, raw_leaves: bool, folder: Path | None,
                   family: str | None = None, task: str | None = None) -> Manifest:
        """The manifest of something just added (``folder``: the directory added, if any)."""
        files = tuple(FileEntry(path=e.path, cid=str(e.cid), size=0 if e.is_dir else e.size, is_dir=e.is_dir)
                      for e in added.entries)
        if not added.is_dir:
            files = (FileEntry(path="", cid=str(added.cid), size=added.size),)
        config = weights = None
        if folder is not None and (folder / "config.json").is_file():
            try:
                config = json.loads((folder / "config.json").read_text())
            except ValueError:
                config = None
            weights = "synthetic" if (folder / SYNTHETIC_MARKER).is_file() else "pretrained"
        return cls(root=str(added.cid), name=name, is_dir=added.is_dir, size=added.size,
                   cid_version=added.cid.version, raw_leaves=raw_leaves, files=files, family=family, task=task,
                   config=config, weights=weights)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Read back :meth:`to_dict`.

        Raises:
            StoreError: the dictionary is not a manifest.
        """
        try:
            files = tuple(FileEntry(**f) for f in data["files"])
            return cls(**{**data, "files": files})
        except (KeyError, TypeError) as exc:
            raise StoreError(f"not a store manifest: {exc}") from exc

    def save(self, path: Path) -> None:
        """Write the manifest atomically."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True, default=str))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        """Read a saved manifest.

        Raises:
            StoreError: it is missing or unreadable.
        """
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            raise StoreError(f"cannot read the manifest {path}: {exc}") from exc


def walk_unixfs(root: CID, get: BlockGetter) -> Iterator[FileEntry]:
    """Every file and directory under a UnixFS root, depth first (the root itself not listed
    when it is a directory; a file root is listed with path ``""``).

    Raises:
        StoreError: a node is not UnixFS, or a block cannot be had.
        IntegrityError: a block fails its hash.
    """
    if root.codec == RAW:
        yield FileEntry(path="", cid=str(root), size=len(get(root, "")))
        return
    node = decode_dag_pb(get(root, ""))
    meta = decode_unixfs(node.data)
    if meta.type != T_DIRECTORY:
        yield FileEntry(path="", cid=str(root), size=_file_size(meta.filesize, meta.data))
        return
    yield from _walk_dir(root, "", node.links, get)


def _file_size(filesize: int | None, data: bytes | None) -> int:
    return filesize if filesize is not None else len(data or b"")


def _walk_dir(cid: CID, prefix: str, links: tuple[Link, ...], get: BlockGetter) -> Iterator[FileEntry]:
    for link in links:
        if not link.name or "/" in link.name or link.name in (".", ".."):
            raise StoreError(f"directory {cid} has an unsafe entry name {link.name!r}")
        path = f"{prefix}/{link.name}" if prefix else link.name
        if link.cid.codec == RAW:
            yield FileEntry(path=path, cid=str(link.cid), size=len(get(link.cid, path)))
            continue
        node = decode_dag_pb(get(link.cid, path))
        meta = decode_unixfs(node.data)
        if meta.type == T_DIRECTORY:
            yield FileEntry(path=path, cid=str(link.cid), size=0, is_dir=True)
            yield from _walk_dir(link.cid, path, node.links, get)
        elif meta.type in (T_FILE, T_RAW):
            yield FileEntry(path=path, cid=str(link.cid), size=_file_size(meta.filesize, meta.data))
        else:
            raise StoreError(f"{path} ({link.cid}) is a UnixFS type {meta.type} entry, which the store does not read")


def read_file(cid: CID, get: BlockGetter, out: BinaryIO, *, path: str = "") -> int:
    """Write a UnixFS file's bytes to ``out``, leaf by leaf; returns the bytes written.

    Raises:
        IntegrityError: a block fails its hash, or the sizes recorded in the DAG disagree
            with the data (a truncated file).
        StoreError: a block cannot be had or is not a UnixFS file.
    """
    written = 0
    stack = [cid]
    while stack:
        current = stack.pop()
        block = get(current, path)
        if current.codec == RAW:
            out.write(block)
            written += len(block)
            continue
        node = decode_dag_pb(block)
        meta = decode_unixfs(node.data)
        if meta.type not in (T_FILE, T_RAW):
            raise StoreError(f"{current} is not a UnixFS file (type {meta.type})")
        if meta.data:
            out.write(meta.data)
            written += len(meta.data)
        stack.extend(link.cid for link in reversed(node.links))
    expected = _declared_size(cid, get, path)
    if expected is not None and expected != written:
        raise IntegrityError(f"{path or cid}: the DAG declares {expected} bytes but holds {written}",
                             cid=str(cid), path=path or None)
    return written


def _declared_size(cid: CID, get: BlockGetter, path: str) -> int | None:
    if cid.codec == RAW:
        return None
    return decode_unixfs(decode_dag_pb(get(cid, path)).data).filesize
