"""UnixFS files and directories built exactly as kubo's ``ipfs add`` builds them.

A file is cut into fixed 256 KiB chunks; each chunk becomes a leaf (a dag-pb node holding
a UnixFS ``File`` message for CIDv0, or the bare bytes as a ``raw`` block with
``--raw-leaves``, the default of ``--cid-version=1``). Leaves are gathered by a balanced
layout of at most 174 links per node, level by level, so a file of more than 174 chunks
has two levels and one of more than 174² three. A file of one chunk is its leaf. A
directory is a dag-pb node with a UnixFS ``Directory`` message and one link per entry,
sorted by name, as ``ipfs add -r`` makes it (hidden entries are skipped like kubo does
without ``--hidden``; symbolic links are followed).

Hashing streams: a file is read one chunk at a time and only the links of the nodes not
yet finished are kept, so memory stays bounded whatever the file's size. Every block is
handed to a ``sink`` (the blockstore) as soon as it is made, or dropped for ``--only-hash``.

The encodings follow the dag-pb and UnixFS specifications: a ``PBNode`` is its links
(field 2) then its data (field 1); a ``PBLink`` is hash (1), name (2), cumulative size (3);
UnixFS ``Data`` is type (1), data (2), filesize (3), blocksizes (4, unpacked).
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import BinaryIO

from .._exceptions import InvalidInput, StoreError
from .cid import CID, DAG_PB, RAW, decode_varint, encode_varint

__all__ = [
    "CHUNK_SIZE",
    "MAX_LINKS",
    "AddOptions",
    "AddedEntry",
    "BlockSink",
    "DagNode",
    "Link",
    "UnixFSData",
    "add_bytes",
    "add_file",
    "add_path",
    "decode_dag_pb",
    "decode_unixfs",
    "encode_dag_pb",
    "encode_unixfs",
    "links_of",
]

CHUNK_SIZE = 256 * 1024
MAX_LINKS = 174

# UnixFS Data.DataType
T_RAW, T_DIRECTORY, T_FILE, T_METADATA, T_SYMLINK, T_HAMT = range(6)

BlockSink = Callable[[CID, bytes], None]
"""Receives each block as it is made: ``sink(cid, data)``."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class AddOptions:
    """How ``ipfs add`` would build the DAG.

    Attributes:
        cid_version: 0 (kubo's default, ``Qm…``) or 1 (``bafy…``/``bafk…``).
        raw_leaves: leaves as raw blocks; ``None`` means kubo's default (on for CIDv1).
        chunk_size: bytes per leaf (kubo's ``size-262144``).
        max_links: links per node in the balanced layout (kubo's 174).
    """

    cid_version: int = 0
    raw_leaves: bool | None = None
    chunk_size: int = CHUNK_SIZE
    max_links: int = MAX_LINKS

    def __post_init__(self) -> None:
        if self.cid_version not in (0, 1):
            raise InvalidInput(f"cid_version must be 0 or 1; got {self.cid_version!r}")
        if self.chunk_size < 1 or self.chunk_size > 1 << 20:
            raise InvalidInput("chunk_size must be between 1 byte and 1 MiB")
        if self.max_links < 2:
            raise InvalidInput("max_links must be at least 2")

    @property
    def leaves_are_raw(self) -> bool:
        """Whether leaves are raw blocks (explicit flag, else on for CIDv1)."""
        return self.cid_version == 1 if self.raw_leaves is None else self.raw_leaves


@dataclasses.dataclass(frozen=True, kw_only=True)
class Link:
    """A dag-pb link: target CID, name and cumulative size (``Tsize``)."""

    cid: CID
    name: str = ""
    tsize: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class DagNode:
    """A decoded dag-pb node: its links and its data (``None`` when absent)."""

    links: tuple[Link, ...]
    data: bytes | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class UnixFSData:
    """A decoded UnixFS ``Data`` message."""

    type: int
    data: bytes | None = None
    filesize: int | None = None
    blocksizes: tuple[int, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class AddedEntry:
    """A file or directory once added.

    Attributes:
        path: the entry's path relative to what was added (``""`` for the top).
        cid: its root CID.
        size: the file's bytes (for a directory: all its files' bytes).
        tsize: the cumulative size of its blocks (what a parent's link records).
        is_dir: whether it is a directory.
        entries: for a directory, every file and directory below it, depth first.
    """

    path: str
    cid: CID
    size: int
    tsize: int
    is_dir: bool = False
    entries: tuple[AddedEntry, ...] = ()


# ---------------------------------------------------------------- protobuf writing


def _field_bytes(number: int, value: bytes) -> bytes:
    return encode_varint(number << 3 | 2) + encode_varint(len(value)) + value


def _field_varint(number: int, value: int) -> bytes:
    return encode_varint(number << 3) + encode_varint(value)


def encode_unixfs(type_: int, *, data: bytes | None = None, filesize: int | None = None,
                  blocksizes: tuple[int, ...] | list[int] = ()) -> bytes:
    """A UnixFS ``Data`` message in the field order go-unixfs writes."""
    out = [_field_varint(1, type_)]
    if data is not None:
        out.append(_field_bytes(2, data))
    if filesize is not None:
        out.append(_field_varint(3, filesize))
    out.extend(_field_varint(4, size) for size in blocksizes)
    return b"".join(out)


def encode_dag_pb(links: list[Link] | tuple[Link, ...], data: bytes | None) -> bytes:
    """A dag-pb ``PBNode``: links first (in the order given), then data."""
    out = []
    for link in links:
        body = _field_bytes(1, link.cid.binary) + _field_bytes(2, link.name.encode()) + _field_varint(3, link.tsize)
        out.append(_field_bytes(2, body))
    if data is not None:
        out.append(_field_bytes(1, data))
    return b"".join(out)


# ---------------------------------------------------------------- protobuf reading


def _fields(buf: bytes | memoryview, where: str) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field number, wire type, value)`` for each field; bytes come as memoryviews."""
    view = memoryview(buf)
    pos = 0
    while pos < len(view):
        key, pos = decode_varint(view, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = decode_varint(view, pos)
            yield number, wire, value
        elif wire == 2:
            length, pos = decode_varint(view, pos)
            if pos + length > len(view):
                raise StoreError(f"{where}: a field runs past the end of the block")
            yield number, wire, view[pos:pos + length]
            pos += length
        else:
            raise StoreError(f"{where}: unexpected protobuf wire type {wire}")


def decode_dag_pb(block: bytes | memoryview) -> DagNode:
    """Decode a dag-pb block.

    Raises:
        StoreError: the block is not valid dag-pb.
    """
    links: list[Link] = []
    data: bytes | None = None
    for number, wire, value in _fields(block, "dag-pb node"):
        if number == 2 and isinstance(value, memoryview):
            cid: CID | None = None
            name, tsize = "", 0
            for lnum, _lwire, lvalue in _fields(value, "dag-pb link"):
                if lnum == 1 and isinstance(lvalue, memoryview):
                    cid = CID.from_bytes(bytes(lvalue))
                elif lnum == 2 and isinstance(lvalue, memoryview):
                    name = bytes(lvalue).decode("utf-8", "replace")
                elif lnum == 3 and isinstance(lvalue, int):
                    tsize = lvalue
            if cid is None:
                raise StoreError("dag-pb link without a hash")
            links.append(Link(cid=cid, name=name, tsize=tsize))
        elif number == 1 and isinstance(value, memoryview):
            data = bytes(value)
        else:
            raise StoreError(f"dag-pb node: unexpected field {number} (wire type {wire})")
    return DagNode(links=tuple(links), data=data)


def decode_unixfs(data: bytes | None) -> UnixFSData:
    """Decode a UnixFS ``Data`` message (the data of a dag-pb node).

    Raises:
        StoreError: the message is missing or malformed.
    """
    if data is None:
        raise StoreError("dag-pb node carries no UnixFS data")
    type_: int | None = None
    payload: bytes | None = None
    filesize: int | None = None
    sizes: list[int] = []
    for number, _wire, value in _fields(data, "UnixFS data"):
        if number == 1 and isinstance(value, int):
            type_ = value
        elif number == 2 and isinstance(value, memoryview):
            payload = bytes(value)
        elif number == 3 and isinstance(value, int):
            filesize = value
        elif number == 4 and isinstance(value, int):
            sizes.append(value)
        elif number == 4 and isinstance(value, memoryview):  # packed, tolerated on read
            pos = 0
            while pos < len(value):
                size, pos = decode_varint(value, pos)
                sizes.append(size)
    if type_ is None:
        raise StoreError("UnixFS data without a type")
    return UnixFSData(type=type_, data=payload, filesize=filesize, blocksizes=tuple(sizes))


def links_of(cid: CID, block: bytes | memoryview) -> tuple[Link, ...]:
    """The links of a block (none for a raw block)."""
    return () if cid.codec == RAW else decode_dag_pb(block).links


# ---------------------------------------------------------------- building


class _FileBuilder:
    """Balanced layout built bottom-up while chunks stream in.

    ``levels[i]`` holds ``(link, filesize)`` of finished nodes at depth ``i`` (leaves at 0)
    that wait for their parent. A level is folded into a parent only when a 175th entry
    arrives or at the end, so a file of exactly 174 chunks gets one level, as in kubo.
    """

    def __init__(self, options: AddOptions, sink: BlockSink | None) -> None:
        self.options = options
        self.sink = sink
        self.levels: list[list[tuple[Link, int]]] = [[]]
        self.size = 0

    def _emit(self, data: bytes | memoryview, codec: int) -> CID:
        version = 1 if (codec == RAW or self.options.cid_version == 1) else 0
        cid = CID.for_block(data, codec=codec, version=version)
        if self.sink is not None:
            self.sink(cid, bytes(data))
        return cid

    def add_chunk(self, chunk: bytes | memoryview) -> None:
        self.size += len(chunk)
        if self.options.leaves_are_raw:
            cid = self._emit(chunk, RAW)
            tsize = len(chunk)
        elif not chunk:
            block = encode_dag_pb((), encode_unixfs(T_FILE, filesize=0))
            cid = self._emit(block, DAG_PB)
            tsize = len(block)
        else:
            cid, tsize = self._file_leaf(chunk)
        self._push(0, Link(cid=cid, tsize=tsize), len(chunk))

    def _file_leaf(self, chunk: bytes | memoryview) -> tuple[CID, int]:
        """A dag-pb leaf hashed piece by piece: the chunk is never copied unless a sink keeps it.

        The block is ``PBNode{Data: UnixFS{Type: File, Data: chunk, filesize: len}}``: a
        few header bytes, the chunk, and the filesize field.
        """
        size = len(chunk)
        inner_head = _field_varint(1, T_FILE) + encode_varint(2 << 3 | 2) + encode_varint(size)
        tail = _field_varint(3, size)
        inner_len = len(inner_head) + size + len(tail)
        head = encode_varint(1 << 3 | 2) + encode_varint(inner_len) + inner_head
        version = self.options.cid_version
        if self.sink is not None:
            block = b"".join((head, chunk, tail))
            cid = CID.for_block(block, codec=DAG_PB, version=version)
            self.sink(cid, block)
        else:
            digest = hashlib.sha256(head)
            digest.update(chunk)
            digest.update(tail)
            cid = CID(version=version, codec=DAG_PB, digest=digest.digest())
        return cid, len(head) + size + len(tail)

    def _push(self, depth: int, link: Link, filesize: int) -> None:
        if depth == len(self.levels):
            self.levels.append([])
        if len(self.levels[depth]) == self.options.max_links:
            self._fold(depth)
        self.levels[depth].append((link, filesize))

    def _fold(self, depth: int) -> None:
        children = self.levels[depth]
        self.levels[depth] = []
        sizes = [size for _link, size in children]
        total = sum(sizes)
        block = encode_dag_pb([link for link, _ in children], encode_unixfs(T_FILE, filesize=total, blocksizes=sizes))
        cid = self._emit(block, DAG_PB)
        self._push(depth + 1, Link(cid=cid, tsize=len(block) + sum(link.tsize for link, _ in children)), total)

    def finish(self) -> tuple[CID, int]:
        """``(root CID, cumulative size)``."""
        if self.size == 0 and not self.levels[0]:
            self.add_chunk(b"")
        depth = 0
        while True:
            top = all(not level for level in self.levels[depth + 1:])
            if top and len(self.levels[depth]) == 1:
                link, _size = self.levels[depth][0]
                return link.cid, link.tsize
            if self.levels[depth]:
                self._fold(depth)
            depth += 1


def add_file(stream: BinaryIO, options: AddOptions | None = None, *, sink: BlockSink | None = None,
             path: str = "") -> AddedEntry:
    """Add one file from a binary stream, reading it one chunk at a time.

    Args:
        stream: an open binary file (or any object with ``readinto``/``read``).
        options: the CID version and leaf kind; kubo's defaults when ``None``.
        sink: receives every block; ``None`` only hashes (``--only-hash``).
        path: the name recorded in the result.
    """
    options = options or AddOptions()
    builder = _FileBuilder(options, sink)
    size = options.chunk_size
    # One buffer for every chunk: no allocation (and no fresh pages to fault in) per chunk.
    buffer = memoryview(bytearray(size))
    while True:
        got = _read_full(stream, buffer)
        if got:
            builder.add_chunk(buffer[:got])
        if got < size:
            break
    cid, tsize = builder.finish()
    return AddedEntry(path=path, cid=cid, size=builder.size, tsize=tsize)


def _read_full(stream: BinaryIO, buffer: memoryview) -> int:
    """Fill ``buffer``; short only at the end of the stream (like Go's io.ReadFull)."""
    got = 0
    readinto = getattr(stream, "readinto", None)
    while got < len(buffer):
        if readinto is not None:
            n = readinto(buffer[got:])
        else:
            piece = stream.read(len(buffer) - got)
            n = len(piece)
            buffer[got:got + n] = piece
        if not n:
            break
        got += n
    return got


def add_bytes(data: bytes, options: AddOptions | None = None, *, sink: BlockSink | None = None) -> AddedEntry:
    """Add an in-memory byte string as a file."""
    import io

    return add_file(io.BytesIO(data), options, sink=sink)


def add_path(path: str | os.PathLike[str], options: AddOptions | None = None, *,
             sink: BlockSink | None = None) -> AddedEntry:
    """Add a file, or a directory recursively, as ``ipfs add [-r]`` would.

    Raises:
        StoreError: the path does not exist, or a directory is too big for one node
            (kubo would shard it into a HAMT, which this builder does not make).
    """
    options = options or AddOptions()
    root = Path(path)
    if root.is_dir():
        return _add_dir(root, "", options, sink)
    if root.is_file():
        with open(root, "rb") as fh:
            return add_file(fh, options, sink=sink, path="")
    raise StoreError(f"{root} is neither a file nor a directory")


def _add_dir(folder: Path, rel: str, options: AddOptions, sink: BlockSink | None) -> AddedEntry:
    links: list[Link] = []
    entries: list[AddedEntry] = []
    size = 0
    names = sorted((p.name for p in folder.iterdir() if not p.name.startswith(".")), key=lambda n: n.encode())
    for name in names:
        child = folder / name
        child_rel = f"{rel}/{name}" if rel else name
        if child.is_dir():
            entry = _add_dir(child, child_rel, options, sink)
            entries.append(entry)
            entries.extend(entry.entries)
        elif child.is_file():
            with open(child, "rb") as fh:
                entry = add_file(fh, options, sink=sink, path=child_rel)
            entries.append(entry)
        else:
            continue  # sockets, broken links: kubo would fail; a model folder has none
        size += entry.size
        links.append(Link(cid=entry.cid, name=name, tsize=entry.tsize))
    block = encode_dag_pb(links, encode_unixfs(T_DIRECTORY))
    if len(block) > 256 * 1024:
        raise StoreError(f"{folder} has too many entries for one directory node (kubo would shard it)")
    cid = CID.for_block(block, codec=DAG_PB, version=options.cid_version)
    if sink is not None:
        sink(cid, block)
    # Drop the nested lists from the flat list: each entry keeps its own below it.
    flat = tuple(dataclasses.replace(e, entries=()) for e in entries)
    return AddedEntry(path=rel, cid=cid, size=size, tsize=len(block) + sum(lk.tsize for lk in links),
                      is_dir=True, entries=flat)
