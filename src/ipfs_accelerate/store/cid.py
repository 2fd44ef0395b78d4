"""Content identifiers (CIDv0 and CIDv1) with sha2-256 multihashes, written out in full.

The parts a CID needs are small (unsigned varints, a multihash prefix, base58btc for
CIDv0 and lower-case base32 for CIDv1), so they live here rather than in a dependency;
see docs/store.md for why. Only sha2-256 is accepted: it is what kubo uses by default,
and a hash function this module cannot compute cannot be verified.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib

from .._exceptions import StoreError

__all__ = [
    "CID",
    "DAG_PB",
    "RAW",
    "SHA2_256",
    "decode_varint",
    "encode_varint",
]

DAG_PB = 0x70
RAW = 0x55
SHA2_256 = 0x12
_CODEC_NAMES = {DAG_PB: "dag-pb", RAW: "raw"}
_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {ch: i for i, ch in enumerate(_B58_ALPHABET)}


def encode_varint(value: int) -> bytes:
    """The unsigned LEB128 varint of ``value`` (multiformats and protobuf use the same)."""
    if value < 0:
        raise ValueError("varints are unsigned")
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decode_varint(data: bytes | memoryview, offset: int = 0) -> tuple[int, int]:
    """``(value, next offset)`` of the varint at ``offset``.

    Raises:
        StoreError: the varint runs past the end or is longer than 9 bytes.
    """
    value = shift = 0
    for index in range(offset, min(len(data), offset + 9)):
        byte = data[index]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, index + 1
        shift += 7
    raise StoreError("truncated or overlong varint")


def _b58encode(data: bytes) -> str:
    number = int.from_bytes(data, "big")
    out = []
    while number:
        number, rest = divmod(number, 58)
        out.append(_B58_ALPHABET[rest])
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + "".join(reversed(out))


def _b58decode(text: str) -> bytes:
    number = 0
    for ch in text:
        if ch not in _B58_INDEX:
            raise StoreError(f"not base58btc: {text!r}")
        number = number * 58 + _B58_INDEX[ch]
    zeros = len(text) - len(text.lstrip("1"))
    body = number.to_bytes((number.bit_length() + 7) // 8, "big") if number else b""
    return b"\0" * zeros + body


@dataclasses.dataclass(frozen=True, kw_only=True)
class CID:
    """A content identifier: version, codec and the sha2-256 digest of the block.

    Attributes:
        version: 0 (base58btc ``Qm…``, always dag-pb) or 1 (base32 ``b…``).
        codec: :data:`DAG_PB` (0x70) or :data:`RAW` (0x55).
        digest: the 32-byte sha2-256 digest of the block's bytes.
    """

    version: int
    codec: int
    digest: bytes

    def __post_init__(self) -> None:
        if self.version not in (0, 1):
            raise StoreError(f"unsupported CID version {self.version}")
        if self.version == 0 and self.codec != DAG_PB:
            raise StoreError("a CIDv0 is always dag-pb")
        if self.codec not in _CODEC_NAMES:
            raise StoreError(f"unsupported codec 0x{self.codec:x} (dag-pb and raw are supported)")
        if len(self.digest) != 32:
            raise StoreError("a sha2-256 digest has 32 bytes")

    @classmethod
    def for_block(cls, data: bytes | memoryview, *, codec: int, version: int) -> CID:
        """The CID of ``data`` hashed with sha2-256."""
        return cls(version=version, codec=codec, digest=hashlib.sha256(data).digest())

    @classmethod
    def parse(cls, text: str) -> CID:
        """Read a CID string (``Qm…`` or a base32 ``b…`` CIDv1).

        Raises:
            StoreError: the string is not a CID this module supports.
        """
        text = text.strip()
        if len(text) == 46 and text.startswith("Qm"):
            return cls._from_multihash(_b58decode(text), version=0, codec=DAG_PB, text=text)
        if text[:1] in ("b", "B") and len(text) > 1:
            body = text[1:].upper()
            try:
                raw = base64.b32decode(body + "=" * (-len(body) % 8))
            except ValueError as exc:
                raise StoreError(f"not a base32 CID: {text!r}") from exc
            return cls.from_bytes(raw, text=text)
        raise StoreError(f"not a CID this store reads (CIDv0 Qm… or base32 CIDv1 b…): {text!r}")

    @classmethod
    def from_bytes(cls, raw: bytes, *, text: str | None = None) -> CID:
        """Read a binary CID (as in CAR files and dag-pb links).

        Raises:
            StoreError: the bytes are not a supported CID.
        """
        return cls.read(raw, 0, text=text, whole=True)[0]

    @classmethod
    def read(cls, raw: bytes | memoryview, offset: int, *, text: str | None = None,
             whole: bool = False) -> tuple[CID, int]:
        """``(CID, next offset)`` of the binary CID starting at ``offset``.

        Raises:
            StoreError: the bytes are not a supported CID (or, with ``whole``, have a tail).
        """
        name = text or "binary CID"
        if raw[offset:offset + 2] == b"\x12\x20":
            cid, end = cls._from_multihash(bytes(raw[offset:offset + 34]), version=0, codec=DAG_PB, text=name), 34
            end += offset
        else:
            version, pos = decode_varint(raw, offset)
            if version != 1:
                raise StoreError(f"unsupported CID version {version} in {name}")
            codec, pos = decode_varint(raw, pos)
            hash_code, pos = decode_varint(raw, pos)
            length, pos = decode_varint(raw, pos)
            if hash_code != SHA2_256 or length != 32:
                raise StoreError(f"{name}: only sha2-256 multihashes are supported")
            digest = bytes(raw[pos:pos + 32])
            if len(digest) != 32:
                raise StoreError(f"{name}: truncated multihash")
            if codec not in _CODEC_NAMES:
                raise StoreError(f"{name}: unsupported codec 0x{codec:x}")
            cid, end = cls(version=1, codec=codec, digest=digest), pos + 32
        if whole and end != len(raw):
            raise StoreError(f"{name}: trailing bytes after the CID")
        return cid, end

    @classmethod
    def _from_multihash(cls, multihash: bytes, *, version: int, codec: int, text: str) -> CID:
        if len(multihash) != 34 or multihash[:2] != b"\x12\x20":
            raise StoreError(f"{text!r} is not a sha2-256 CIDv0")
        return cls(version=version, codec=codec, digest=multihash[2:])

    @property
    def multihash(self) -> bytes:
        """The multihash: ``0x12 0x20`` and the digest."""
        return b"\x12\x20" + self.digest

    @property
    def binary(self) -> bytes:
        """The binary form (a bare multihash for CIDv0)."""
        if self.version == 0:
            return self.multihash
        return b"\x01" + encode_varint(self.codec) + self.multihash

    @property
    def codec_name(self) -> str:
        """``"dag-pb"`` or ``"raw"``."""
        return _CODEC_NAMES[self.codec]

    @property
    def key(self) -> str:
        """The digest in hex: how the blockstore files a block, whatever the CID version."""
        return self.digest.hex()

    def to_v1(self) -> CID:
        """The same block as a CIDv1."""
        return dataclasses.replace(self, version=1)

    def matches(self, data: bytes | memoryview) -> bool:
        """Whether ``data`` hashes to this CID's digest."""
        return hashlib.sha256(data).digest() == self.digest

    def __str__(self) -> str:
        if self.version == 0:
            return _b58encode(self.multihash)
        return "b" + base64.b32encode(self.binary).decode().lower().rstrip("=")

    def __repr__(self) -> str:
        return f"CID({str(self)!r})"
