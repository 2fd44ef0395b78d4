"""How fast the store adds and fetches: MB/s beside plain ``hashlib.sha256`` of the same bytes.

``ipfs-accelerate models bench PATH…`` prints, for each folder (or file):

- ``sha256``: one ``hashlib.sha256`` over every file's bytes, read in 1 MiB pieces: the
  bound, since adding must hash every byte at least once;
- ``add --only-hash``: the UnixFS builder alone (chunking, dag-pb, every block hashed);
- ``add``: the same, with every block written to a fresh store;
- ``fetch``: node B fetching the whole DAG from node A (``models serve`` in a separate
  process on 127.0.0.1), blocks verified and stored.

The files are read once before timing so that every figure reads from the page cache.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .cid import CID
from .fetch import Fetcher
from .models import ModelStore
from .unixfs import add_path

__all__ = ["StoreBenchmark", "measure"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoreBenchmark:
    """MB/s (10⁶ bytes per second) of each step for one folder."""

    path: str
    size: int
    sha256_mb_s: float
    only_hash_mb_s: float
    add_mb_s: float
    fetch_mb_s: float | None

    @property
    def add_vs_sha256(self) -> float:
        """``add --only-hash`` speed as a fraction of the sha256 bound."""
        return self.only_hash_mb_s / self.sha256_mb_s


def _files(path: Path) -> list[Path]:
    if path.is_file():
        return [path]
    return sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in
                                                                          p.relative_to(path).parts))


def _sha256_all(files: list[Path]) -> None:
    for file in files:
        digest = hashlib.sha256()
        with open(file, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)


def _best(fn: object, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        fn()  # type: ignore[operator]
        best = min(best, time.perf_counter() - started)
    return best


def measure(path: str | os.PathLike[str], *, repeat: int = 3, fetch: bool = True, workers: int = 8) -> StoreBenchmark:
    """Measure one folder (best of ``repeat`` runs for the hashing figures)."""
    path = Path(path)
    files = _files(path)
    size = sum(f.stat().st_size for f in files)
    _sha256_all(files)  # warm the page cache
    # Interleaved, best of each: on a shared machine the load changes from one second to the next.
    sha = only = float("inf")
    for _ in range(repeat):
        sha = min(sha, _best(lambda: _sha256_all(files), 1))
        only = min(only, _best(lambda: add_path(path), 1))
    with tempfile.TemporaryDirectory(prefix="ia-store-bench-") as tmp:
        store_a = ModelStore(Path(tmp) / "a" / "ipfs")
        started = time.perf_counter()
        root = CID.parse(store_a.add(path).root)
        add = time.perf_counter() - started
        fetch_mb_s = _fetch(store_a, root, Path(tmp) / "b" / "ipfs", workers) if fetch else None
    return StoreBenchmark(path=str(path), size=size, sha256_mb_s=size / 1e6 / sha, only_hash_mb_s=size / 1e6 / only,
                          add_mb_s=size / 1e6 / add, fetch_mb_s=fetch_mb_s)


def _fetch(store_a: ModelStore, root: CID, dest: Path, workers: int) -> float:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "IPFS_ACCELERATE_CACHE": str(store_a.root.parent), "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "ipfs_accelerate.cli", "models", "serve", "--port", str(port)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_for(url, root, proc)
        with Fetcher(peers=[url], workers=workers) as fetcher:
            report = fetcher.fetch_dag(root, ModelStore(dest).blocks)
        return report.mb_per_s
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def _wait_for(url: str, root: CID, proc: subprocess.Popen[bytes]) -> None:
    import httpx

    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"{url}/ipfs/{root}?format=raw", timeout=5)
            return
        except httpx.TransportError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.2)
