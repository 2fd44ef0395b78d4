"""CAR v1 files: the IPFS interchange format (``ipfs dag export``/``ipfs dag import``).

A CAR v1 is a varint-prefixed DAG-CBOR header ``{"roots": [CID, …], "version": 1}``
followed by sections, each a varint length then a binary CID and the block's bytes.
The header is written and read here directly (a map of two keys, a CID as CBOR tag 42
over ``0x00`` + the binary CID), which is all a CAR v1 header holds. Blocks are written
depth first from the root, as kubo's ``dag export`` does. On import every block is
verified before it is stored and a truncated file raises :class:`IntegrityError`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO, Protocol

from .._exceptions import IntegrityError, StoreError
from .._logs import one_line
from .blockstore import Blockstore
from .cid import CID, encode_varint

__all__ = [
    "ByteReader",
    "car_header",
    "export_car",
    "import_car",
    "iter_car",
    "iter_car_bytes",
    "write_car",
]


class ByteReader(Protocol):
    """Anything with ``read(size) -> bytes`` (a file, an HTTP body adapter)."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; fewer only at the end."""
        ...


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise ValueError("CBOR value too large")


def car_header(roots: Iterable[CID]) -> bytes:
    """The varint-prefixed DAG-CBOR header of a CAR v1 with these roots."""
    roots = list(roots)
    body = bytearray(_cbor_head(5, 2))  # map of 2; keys in DAG-CBOR order (length first)
    body += _cbor_head(3, 5) + b"roots" + _cbor_head(4, len(roots))
    for root in roots:
        link = b"\x00" + root.binary
        body += _cbor_head(6, 42) + _cbor_head(2, len(link)) + link
    body += _cbor_head(3, 7) + b"version" + _cbor_head(0, 1)
    return encode_varint(len(body)) + bytes(body)


def write_car(out: BinaryIO, roots: Iterable[CID], blocks: Iterable[tuple[CID, bytes]]) -> int:
    """Write a CAR v1 to ``out``; returns the number of blocks."""
    out.write(car_header(roots))
    count = 0
    for cid, data in blocks:
        raw = cid.binary
        out.write(encode_varint(len(raw) + len(data)))
        out.write(raw)
        out.write(data)
        count += 1
    return count


def iter_car_bytes(store: Blockstore, root: CID) -> Iterator[bytes]:
    """A CAR v1 of ``root``'s DAG as byte pieces (for streaming HTTP responses)."""
    yield car_header([root])
    for cid in store.walk(root):
        data = store.get(cid)
        raw = cid.binary
        yield encode_varint(len(raw) + len(data)) + raw + data


def export_car(store: Blockstore, root: CID, path: str | os.PathLike[str]) -> int:
    """Write ``root``'s whole DAG (verified as it is read) to a CAR file; returns the blocks.

    The file appears only when complete (written beside it, then renamed).

    Raises:
        StoreError: a block is missing, or the file cannot be written there (a folder, a
            folder that does not exist, no permission).
        IntegrityError: a stored block fails its hash.
    """
    target = Path(path)
    if target.is_dir():
        raise StoreError(f"{target} is a folder: name the CAR file to write, e.g. {target / f'{root}.car'}")
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            count = write_car(fh, [root], ((cid, store.get(cid)) for cid in store.walk(root)))
        tmp.replace(target)
    except OSError as exc:
        raise StoreError(f"cannot write the CAR file {target}: {one_line(exc)}") from exc
    finally:
        tmp.unlink(missing_ok=True)
    return count


class _Reader:
    def __init__(self, stream: ByteReader, name: str) -> None:
        self.stream = stream
        self.name = name

    def exact(self, size: int, what: str) -> bytes:
        data = self.stream.read(size)
        if len(data) != size:
            raise IntegrityError(f"{self.name} is truncated: {what} needs {size} bytes, {len(data)} remain")
        return data

    def varint(self) -> int | None:
        """The next varint, or ``None`` at a clean end of file."""
        value = shift = 0
        for index in range(9):
            byte = self.stream.read(1)
            if not byte:
                if index == 0:
                    return None
                raise IntegrityError(f"{self.name} is truncated inside a section length")
            value |= (byte[0] & 0x7F) << shift
            if not byte[0] & 0x80:
                return value
            shift += 7
        raise StoreError(f"{self.name}: overlong varint")


def _parse_header(body: bytes, name: str) -> list[CID]:
    """The roots of a CAR v1 header (a tiny DAG-CBOR reader for that one shape)."""
    pos = 0

    def head() -> tuple[int, int]:
        nonlocal pos
        if pos >= len(body):
            raise StoreError(f"{name}: the CAR header ends early")
        first = body[pos]
        pos += 1
        major, info = first >> 5, first & 31
        if info < 24:
            return major, info
        size = {24: 1, 25: 2, 26: 4, 27: 8}.get(info)
        if size is None:
            raise StoreError(f"{name}: unsupported CBOR item in the CAR header")
        value = int.from_bytes(body[pos:pos + size], "big")
        pos += size
        return major, value

    def take(length: int) -> bytes:
        nonlocal pos
        chunk = body[pos:pos + length]
        pos += length
        return chunk

    major, entries = head()
    if major != 5:
        raise StoreError(f"{name}: the CAR header is not a map")
    roots: list[CID] = []
    version = None
    for _ in range(entries):
        major, length = head()
        key = take(length).decode() if major == 3 else ""
        if key == "roots":
            major, count = head()
            for _ in range(count):
                tag_major, tag = head()
                major, length = head()
                if tag_major != 6 or tag != 42 or major != 2:
                    raise StoreError(f"{name}: a root is not a CID link")
                link = take(length)
                roots.append(CID.from_bytes(link[1:]))
        elif key == "version":
            major, version = head()
        else:
            raise StoreError(f"{name}: unexpected CAR header key {key!r}")
    if version != 1:
        raise StoreError(f"{name}: CAR version {version} (only CAR v1 is read)")
    return roots


def iter_car(stream: ByteReader, *, name: str = "CAR") -> tuple[list[CID], Iterator[tuple[CID, bytes]]]:
    """``(roots, blocks)`` of a CAR v1; each block is verified as it is read.

    Raises:
        StoreError: the file is not a CAR v1.
        IntegrityError: a block fails its hash, or the file is truncated.
    """
    reader = _Reader(stream, name)
    length = reader.varint()
    if length is None:
        raise IntegrityError(f"{name} is empty")
    roots = _parse_header(reader.exact(length, "the header"), name)

    def blocks() -> Iterator[tuple[CID, bytes]]:
        while (size := reader.varint()) is not None:
            section = reader.exact(size, "a block section")
            cid, offset = CID.read(section, 0)
            data = section[offset:]
            if not cid.matches(data):
                raise IntegrityError(f"{name}: block {cid} fails its hash", cid=str(cid))
            yield cid, data

    return roots, blocks()


def import_car(store: Blockstore, path: str | os.PathLike[str]) -> tuple[list[CID], int]:
    """Store every block of a CAR file; returns ``(roots, blocks read)``.

    Every block is verified before it is stored; at the end each root's DAG must be
    complete in the store.

    Raises:
        IntegrityError: a block fails its hash, or the file is truncated (blocks read
            before the damage are kept: they are verified and a later import resumes).
        StoreError: not a CAR v1, or a root's DAG is incomplete after the import.
    """
    name = str(path)
    count = 0
    try:
        fh = open(path, "rb")  # closed by the with below; only the open is guarded
    except OSError as exc:
        raise StoreError(f"cannot read the CAR file {name}: {one_line(exc)}") from exc
    with fh:
        roots, blocks = iter_car(fh, name=name)
        for cid, data in blocks:
            store.put(cid, data, verify=False)  # iter_car verified it
            count += 1
    for root in roots:
        missing = [str(cid) for cid in _missing(store, root)]
        if missing:
            raise IntegrityError(f"{name} is incomplete: {len(missing)} blocks of {root} are missing "
                                 f"(first: {missing[0]})", cid=str(root))
    return roots, count


def _missing(store: Blockstore, root: CID) -> Iterator[CID]:
    from .unixfs import links_of

    stack = [root]
    seen: set[str] = set()
    while stack:
        cid = stack.pop()
        if cid.key in seen:
            continue
        seen.add(cid.key)
        if not store.has(cid):
            yield cid
            continue
        stack.extend(link.cid for link in links_of(cid, store.get(cid)))
