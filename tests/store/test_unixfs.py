"""UnixFS/CID builder: kubo's published vectors (sharness t0040) and kubo's own Go code (ipfs_cid)."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tracemalloc
from pathlib import Path

import pytest

from ipfs_accelerate import StoreError
from ipfs_accelerate.store.cid import CID, DAG_PB, RAW
from ipfs_accelerate.store.unixfs import (
    CHUNK_SIZE,
    MAX_LINKS,
    AddOptions,
    add_bytes,
    add_file,
    add_path,
    decode_dag_pb,
    decode_unixfs,
)

V0 = AddOptions()
RAW_LEAVES = AddOptions(raw_leaves=True)
V1 = AddOptions(cid_version=1)
V1_PB_LEAVES = AddOptions(cid_version=1, raw_leaves=False)


@pytest.mark.parametrize(
    ("data", "options", "expected"),
    [
        (b"", V0, "QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH"),
        (b"", RAW_LEAVES, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
        (b"", V1, "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku"),
        (b"hello world\n", V0, "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"),
        (b"Hello Worlds!\n", V0, "QmVr26fY1tKyspEJBniVhqxQeEjhF78XerGiqWAwraVLQH"),
        (b"Helloo Worlds!\n", V0, "Qmf35k66MZNW2GijohUmXQEWKZU4cCGTCwK6idfnt152wJ"),
        (b"IPFS\n", V0, "QmdFyxZXsFiP4csgfM5uPu99AvFiKH62CSPDw5TP92nr7w"),
        (b"Hello Venus!\n", V0, "QmU5kp3BH3B8tnWUU2Pikdb2maksBNkb92FHRr56hyghh4"),
        (b"Hello Jupiter!\n", V0, "QmUnvPcBctVTAcJpigv6KMqDvmDewksPWrNVoy1E1WP5fh"),
        (b"Hello Neptune!\nHello Pluton!", V0, "QmZDhWpi8NvKrekaYYhxKCdNVGWsFFe1CREnAjP1QbPaB3"),
        (b"Hello Mars!\n", RAW_LEAVES, "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4"),
        (b"Hello Mars!\n", V1_PB_LEAVES, "bafybeiawta2ntdmsy24aro35w3homzl4ak7svr3si7l7gesvq4erglyye4"),
        (bytes(1 << 20), V0, "QmVkbauSDEaMP4Tkq6Epm9uW75mWm136n81YH8fGtfwdHU"),
    ],
)
def test_kubo_file_vectors(data, options, expected):
    assert str(add_bytes(data, options).cid) == expected


def test_base32_output_of_a_cidv0_file():
    # `ipfs add --cid-base=base32` prints the CIDv0 upgraded to v1.
    cid = add_bytes(b"base32 test\n").cid
    assert str(cid.to_v1()) == "bafybeibyosqxljd2eptb4ebbtvk7pb4aoxzqa6ttdsflty6rsslz5y6i34"
    assert CID.parse(str(cid.to_v1())).digest == cid.digest


@pytest.fixture(scope="module")
def kubo_trees(tmp_path_factory):
    root = tmp_path_factory.mktemp("kubo")
    planets = root / "planets"
    planets.mkdir()
    (planets / "mars.txt").write_text("Hello Mars!\n")
    (planets / "venus.txt").write_text("Hello Venus!\n")
    moons = root / "moons"
    for sub in ("jupiter", "saturn"):
        (moons / sub).mkdir(parents=True)
    (moons / "jupiter" / "europa.txt").write_text("Hello Europa!\n")
    (moons / "saturn" / "titan.txt").write_text("Hello Titan!\n")
    (moons / "mercury.txt").write_text("hey youre no moon!\n")
    (moons / ".hidden").write_text("ipfs add -r skips hidden files\n")
    current = root / "test_current_dir"
    (current / "hello").mkdir(parents=True)
    (current / "hey").write_text("Hey\n")
    (current / "hello" / "world").write_text("World\n")
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize(
    ("options", "planets", "mars", "venus"),
    [
        (V0, "QmWSgS32xQEcXMeqd3YPJLrNBLSdsfYCep2U7CFkyrjXwY", "QmPrrHqJzto9m7SyiRzarwkqPcCSsKR2EB1AyqJfe8L8tN",
         "QmU5kp3BH3B8tnWUU2Pikdb2maksBNkb92FHRr56hyghh4"),
        (RAW_LEAVES, "QmfWfQfKCY5Ukv9peBbxM5vqWM9BzmqUSXvdCgjT2wsiBT",
         "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4",
         "bafkreihfsphazrk2ilejpekyltjeh5k4yvwgjuwg26ueafohqioeo3sdca"),
        (V1, "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi",
         "bafkreibmlvvgdyihetgocpof6xk64kjjzdeq2e4c7hqs3krdheosk4tgj4",
         "bafkreihfsphazrk2ilejpekyltjeh5k4yvwgjuwg26ueafohqioeo3sdca"),
        (V1_PB_LEAVES, "bafybeif5tuep5ap2d7zyhbktucey75aoacxufgt6i3v4gebmixyipnyp7y",
         "bafybeiawta2ntdmsy24aro35w3homzl4ak7svr3si7l7gesvq4erglyye4",
         "bafybeicvkvhs2fr75ynebtdjqpgm4g2fc63abqbmysupwpmcjl4gx7mzrm"),
    ],
)
def test_kubo_directory_vectors(kubo_trees, options, planets, mars, venus):
    added = add_path(kubo_trees / "planets", options)
    assert str(added.cid) == planets
    assert [(e.path, str(e.cid)) for e in added.entries] == [("mars.txt", mars), ("venus.txt", venus)]


def test_kubo_nested_directory_vectors(kubo_trees):
    added = add_path(kubo_trees / "moons")
    assert str(added.cid) == "QmVKvomp91nMih5j6hYBA8KjbiaYvEetU2Q7KvtZkLe9nQ"
    assert {e.path: str(e.cid) for e in added.entries} == {
        "jupiter": "QmS5mZddhFPLWFX3w6FzAy9QxyYkaxvUpsWCtZ3r7jub9J",
        "jupiter/europa.txt": "Qmbjg7zWdqdMaK2BucPncJQDxiALExph5k3NkQv5RHpccu",
        "mercury.txt": "QmUJjVtnN8YEeYcS8VmUeWffTWhnMQAkk5DzZdKnPhqUdK",
        "saturn": "QmaMagZT4rTE7Nonw8KGSK4oe1bh533yhZrCo1HihSG8FK",
        "saturn/titan.txt": "QmZzppb9WHn552rmRqpPfgU5FEiHH6gDwi3MrB9cTdPwdb",
    }
    assert str(add_path(kubo_trees / "test_current_dir").cid) == "QmZQWnfcqJ6hNkkPvrY9Q5X39GP3jUnUbAV4AbmbbR3Cb1"
    assert str(add_path(kubo_trees / "empty").cid) == "QmUNLLsPACCz1vLxQVkXqqLX5R1X345qqfHbsf67hvA3Nn"


def test_missing_path_is_a_store_error(tmp_path):
    with pytest.raises(StoreError, match="neither a file nor a directory"):
        add_path(tmp_path / "nope")


# ---- an independent implementation: Debian's ipfs-cid (kubo's CIDv0 of a file, in Go)

_SIZES = [1, CHUNK_SIZE - 1, CHUNK_SIZE, CHUNK_SIZE + 1, 3 * CHUNK_SIZE, MAX_LINKS * CHUNK_SIZE,
          MAX_LINKS * CHUNK_SIZE + 1, (MAX_LINKS + 2) * CHUNK_SIZE + 7]


@pytest.mark.skipif(shutil.which("ipfs_cid") is None, reason="Debian's ipfs-cid is not installed")
def test_matches_ipfs_cid_at_chunk_edges_and_past_174_leaves(tmp_path):
    path = tmp_path / "data.bin"
    for size in _SIZES:
        path.write_bytes(os.urandom(size))
        out = subprocess.run(["ipfs_cid", str(path)], capture_output=True, text=True, timeout=60, check=True).stdout
        expected = json.loads(out[: out.index("}") + 1])
        added = add_path(path)
        assert str(added.cid) == expected["CIDv0"], size
        assert str(added.cid.to_v1()) == expected["CIDv1"], size


# ---- structure: the balanced layout, streaming


def _dag(data: bytes, options: AddOptions) -> tuple[CID, dict[CID, bytes]]:
    blocks: dict[CID, bytes] = {}
    added = add_bytes(data, options, sink=lambda cid, block: blocks.__setitem__(cid, block))
    return added.cid, blocks


def _depth_and_bytes(cid: CID, blocks: dict[CID, bytes]) -> tuple[int, bytes]:
    block = blocks[cid]
    assert cid.matches(block)
    if cid.codec == RAW:
        return 0, block
    node = decode_dag_pb(block)
    meta = decode_unixfs(node.data)
    if not node.links:
        return 0, meta.data or b""
    assert len(node.links) <= MAX_LINKS
    parts = [_depth_and_bytes(link.cid, blocks) for link in node.links]
    assert {depth for depth, _ in parts} == {parts[0][0]}  # balanced: every leaf at one depth
    content = b"".join(part for _, part in parts)
    assert meta.filesize == len(content) and list(meta.blocksizes) == [len(p) for _, p in parts]
    return parts[0][0] + 1, content


@pytest.mark.parametrize("options", [V0, V1], ids=["v0", "v1-raw-leaves"])
@pytest.mark.parametrize(("chunks", "depth"), [(1, 0), (2, 1), (MAX_LINKS, 1), (MAX_LINKS + 1, 2)])
def test_balanced_layout(options, chunks, depth):
    small = AddOptions(cid_version=options.cid_version, chunk_size=64)  # same layout, tiny data
    data = os.urandom(64 * chunks)
    root, blocks = _dag(data, small)
    assert _depth_and_bytes(root, blocks) == (depth, data)
    leaf_codec = RAW if options.cid_version == 1 else DAG_PB
    codec = leaf_codec if chunks == 1 else DAG_PB
    assert (root.codec, root.version) == (codec, 1 if codec == RAW else options.cid_version)


class _Zeros(io.RawIOBase):
    """A stream of zero bytes that is never held in memory whole."""

    def __init__(self, size: int) -> None:
        self.left = size

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def]
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


def test_hashing_streams_in_bounded_memory():
    size = 64 << 20
    tracemalloc.start()
    try:
        added = add_file(io.BufferedReader(_Zeros(size), CHUNK_SIZE))
        _current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert added.size == size
    assert peak < 4 << 20, f"peak {peak} bytes while hashing {size} bytes"
    assert added.cid == add_bytes(bytes(size)).cid


def test_cid_strings_round_trip():
    for text in ("QmbFMke1KXqnYyBBWxB74N4c5SBnJMVAiMNRcGu6x1AwQH",
                 "bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku",
                 "bafybeih7e5dmkyk25up5vxug4q3hrg2fxbzf23dfrac2fns5h7z4aa7ioi"):
        cid = CID.parse(text)
        assert str(cid) == text and CID.from_bytes(cid.binary) == cid
    for bad in ("Qmnotacid", "zdj7W", "bafy!!"):
        with pytest.raises(StoreError):
            CID.parse(bad)


def test_add_path_reads_files_as_given(tmp_path: Path):
    (tmp_path / "a.txt").write_bytes(b"hello world\n")
    assert str(add_path(tmp_path / "a.txt").cid) == "QmT78zSuBmuS4z925WZfrqQ1qHaJ56DQaTfyMUF7F8ff5o"
