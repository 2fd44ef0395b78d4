"""Fetch a DAG's missing blocks from peers: trustless gateways over HTTP, then a kubo RPC API.

Each block is asked for with ``GET <peer>/ipfs/<cid>?format=raw`` and ``Accept:
application/vnd.ipld.raw`` (any IPFS trustless gateway answers it: another node of ours,
a kubo gateway), then with ``POST <kubo>/api/v0/block/get?arg=<cid>`` when a kubo RPC API
is configured. Every block is verified before it is stored; a peer that sends bytes that
do not hash to the CID is skipped for the rest of the fetch and named in the error if no
other source had the block. Blocks are fetched in parallel as the DAG unfolds and stored
as they arrive, so an interrupted fetch resumes where it stopped: blocks already in the
store are read (and verified) instead of fetched again.

Before a fresh fetch writes anything, the root block is fetched alone: its links record the
cumulative size of the DAG below them (``Tsize``), so the whole fetch's size is known from
one small block and a store whose disk cannot hold it is refused at once.

Only the configured addresses are dialled; nothing here discovers peers.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import logging
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any

from .._exceptions import IntegrityError, InvalidInput, StoreError
from .blockstore import Blockstore
from .cid import CID
from .disk import disk_shortfall
from .unixfs import links_of

__all__ = ["FetchReport", "Fetcher", "dag_bytes", "source_url"]

log = logging.getLogger("ipfs_accelerate.store")


def source_url(url: Any, *, what: str) -> str:
    """``url`` without a trailing slash, when it is an http(s) URL with a host; else InvalidInput.

    Args:
        url: a peer's or a kubo RPC API's base URL.
        what: how the URL was given, for the message ("peer", "kubo_api").
    """
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        valid = parts is not None and parts.scheme in ("http", "https") and bool(parts.hostname)
        if valid and parts is not None:
            _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        valid = False
    if not valid:
        raise InvalidInput(f"{what} {url!r} is not an http:// or https:// URL with a host "
                           "(e.g. http://127.0.0.1:8080)")
    return str(url).rstrip("/")


def dag_bytes(cid: CID, block: bytes) -> int:
    """The bytes of the whole DAG under ``block`` (``cid``'s), from its links' ``Tsize``.

    Each dag-pb link records the cumulative size of the DAG it points to, so the root block
    alone gives the size of a fetch. Blocks shared between files are counted once per link:
    an upper bound, exact for a DAG without repeats. A raw block has no links: its own size.
    """
    return len(block) + sum(link.tsize for link in links_of(cid, block))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FetchReport:
    """What a fetch did.

    Attributes:
        root: the DAG's root CID.
        fetched: blocks fetched from peers.
        local: blocks already in the store (a resumed fetch).
        fetched_bytes: bytes fetched.
        seconds: wall time.
        sources: blocks per source URL.
        bad_peers: peers that sent wrong bytes (skipped after the first).
    """

    root: str
    fetched: int
    local: int
    fetched_bytes: int
    seconds: float
    sources: dict[str, int]
    bad_peers: tuple[str, ...] = ()

    @property
    def mb_per_s(self) -> float:
        """Fetched megabytes (10⁶ bytes) per second."""
        return self.fetched_bytes / 1e6 / self.seconds if self.seconds > 0 else 0.0


class _ByteStream:
    """A ``read(n)`` view of an iterator of byte pieces (an HTTP body as it arrives)."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self.pieces = pieces
        self.buffer = bytearray()

    def read(self, size: int = -1) -> bytes:
        while size < 0 or len(self.buffer) < size:
            piece = next(self.pieces, None)
            if piece is None:
                break
            self.buffer += piece
        if size < 0:
            size = len(self.buffer)
        out = bytes(self.buffer[:size])
        del self.buffer[:size]
        return out


class Fetcher:
    """Fetches verified blocks from configured peers.

    Args:
        peers: trustless-gateway base URLs, tried in order.
        kubo_api: a kubo RPC API base URL, tried after the peers.
        timeout_s: the timeout of each request.
        workers: parallel requests.
    """

    def __init__(self, *, peers: Sequence[str] = (), kubo_api: str | None = None, timeout_s: float = 30.0,
                 workers: int = 8) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise StoreError("fetching from IPFS peers needs httpx: pip install 'ipfs-accelerate[ipfs]'") from exc

        self.peers = tuple(source_url(p, what="peer") for p in peers)
        self.kubo_api = source_url(kubo_api, what="kubo_api") if kubo_api else None
        self.workers = max(1, workers)
        self.client = httpx.Client(timeout=timeout_s, trust_env=False,
                                   limits=httpx.Limits(max_connections=self.workers * 2))
        self._bad: dict[str, str] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> Fetcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()

    @property
    def bad_peers(self) -> dict[str, str]:
        """Peers that sent wrong bytes, and what they sent."""
        with self._lock:
            return dict(self._bad)

    def fetch_block(self, cid: CID) -> tuple[bytes, str]:
        """``(verified bytes, source URL)`` of one block.

        Raises:
            IntegrityError: the only sources that answered sent wrong bytes (named).
            StoreError: no source has the block (the sources are named).
        """
        tried: list[str] = []
        wrong: list[str] = []
        for peer in self.peers:
            with self._lock:
                if peer in self._bad:
                    continue
            data = self._get(peer, cid, tried)
            if data is None:
                continue
            if cid.matches(data):
                return data, peer
            wrong.append(peer)
            with self._lock:
                self._bad[peer] = f"{len(data)} bytes that do not hash to {cid}"
            log.warning("peer %s sent wrong bytes for %s; skipping it", peer, cid)
        if self.kubo_api:
            data = self._kubo(cid, tried)
            if data is not None:
                if cid.matches(data):
                    return data, self.kubo_api
                wrong.append(self.kubo_api)
                tried.append(f"{self.kubo_api}: wrong bytes")
        with self._lock:
            skipped = [f"{peer} (skipped: {why})" for peer, why in self._bad.items() if peer not in wrong]
            liars = wrong + [peer for peer in self._bad if peer not in wrong]
        if liars:
            raise IntegrityError(f"block {cid}: wrong bytes from {', '.join(liars)}; "
                                 f"no other source had it ({'; '.join(tried + skipped) or 'none left'})",
                                 cid=str(cid))
        raise StoreError(f"block {cid} is not available from any peer: {'; '.join(tried + skipped) or 'no peers'}")

    def _get(self, peer: str, cid: CID, tried: list[str]) -> bytes | None:
        import httpx

        try:
            response = self.client.get(f"{peer}/ipfs/{cid}", params={"format": "raw"},
                                       headers={"Accept": "application/vnd.ipld.raw"})
        except httpx.HTTPError as exc:
            tried.append(f"{peer}: {type(exc).__name__}")
            return None
        if response.status_code != 200:
            tried.append(f"{peer}: HTTP {response.status_code}")
            return None
        return response.content

    def _fetch_car(self, peer: str, root: CID, store: Blockstore, links: dict[str, list[CID]]) -> tuple[int, int]:
        """Store the verified blocks of ``root``'s DAG from one CAR stream; ``(blocks, bytes)``.

        Only blocks the DAG reaches are kept (a CAR in depth-first order names each block's
        children before sending them). A peer whose CAR is malformed or holds a block that
        fails its hash is marked bad; a stream cut by the network is not (the blocks before
        the cut are kept and the rest is fetched block by block).
        """
        import httpx

        from .car import iter_car

        with self._lock:
            if peer in self._bad:
                return 0, 0
        expected = {root.key}
        count = size = 0
        try:
            with self.client.stream("GET", f"{peer}/ipfs/{root}", params={"format": "car"},
                                    headers={"Accept": "application/vnd.ipld.car"}) as response:
                if response.status_code != 200:
                    return 0, 0
                _roots, blocks = iter_car(_ByteStream(response.iter_bytes()), name=f"the CAR from {peer}")
                for cid, data in blocks:  # each verified against its CID by iter_car
                    if cid.key not in expected or cid.key in links:
                        continue
                    store.put(cid, data, verify=False)
                    children = [link.cid for link in links_of(cid, data)]
                    links[cid.key] = children
                    expected.update(child.key for child in children)
                    count += 1
                    size += len(data)
        except httpx.HTTPError as exc:
            log.info("the CAR stream from %s stopped (%s); fetching the rest block by block", peer, exc)
        except StoreError as exc:
            with self._lock:
                self._bad[peer] = str(exc)
            log.warning("peer %s sent a bad CAR (%s); skipping it", peer, exc)
        return count, size

    @staticmethod
    def _car_gaps(root: CID, links: dict[str, list[CID]]) -> bool:
        stack = [root]
        while stack:
            cid = stack.pop()
            if cid.key not in links:
                return True
            stack.extend(links[cid.key])
        return False

    def _kubo(self, cid: CID, tried: list[str]) -> bytes | None:
        import httpx

        try:
            response = self.client.post(f"{self.kubo_api}/api/v0/block/get", params={"arg": str(cid)})
        except httpx.HTTPError as exc:
            tried.append(f"{self.kubo_api} (kubo RPC): {type(exc).__name__}")
            return None
        if response.status_code != 200:
            tried.append(f"{self.kubo_api} (kubo RPC): HTTP {response.status_code}")
            return None
        return response.content

    def fetch_dag(self, root: CID, store: Blockstore, *, car_first: bool = True,
                  then_copied: bool = False) -> FetchReport:
        """Bring every block of ``root``'s DAG into ``store``, verified.

        When the root is not stored yet and peers are configured, the whole DAG is first
        asked for as one CAR stream (``?format=car``), peer by peer, storing each block
        that verifies and belongs to the DAG; whatever is still missing after that (or
        everything, when the root was already stored: a resumed fetch) is fetched block by
        block, in parallel. Blocks already stored are read and verified instead (a corrupt
        one is fetched again), so calling it again after an interruption resumes the fetch.

        Args:
            root: the DAG's root.
            store: where the blocks go.
            car_first: try the one-request CAR stream first.
            then_copied: the caller writes the files out of the blocks next, on the same disk
                (a model's folder): the disk check asks room for both.

        Raises:
            StoreError: a block is not available from any source (the blocks fetched before
                stay in the store), or the DAG would not fit on the store's disk (checked
                from the root block before anything is written; not on a resumed fetch).
            IntegrityError: the only sources of a block sent wrong bytes.
        """
        started = time.perf_counter()
        counts = {"fetched": 0, "local": 0, "bytes": 0}
        sources: dict[str, int] = {}
        seen: set[str] = {root.key}
        from_car: dict[str, list[CID]] = {}  # blocks the CAR brought: their links, not read again
        # A fresh fetch sizes itself from the root block first (kept for the walk below, not
        # stored: a stored root marks a resumed fetch and would skip the CAR stream).
        probed: dict[str, tuple[bytes, str]] = {}
        if not store.has(root):
            probed[root.key] = self.fetch_block(root)
            need = dag_bytes(root, probed[root.key][0]) * (2 if then_copied else 1)
            what = f"fetching the blocks of {root}" + (" and writing its files from them" if then_copied else "")
            shortfall = disk_shortfall(store.root, need, what=what)
            if shortfall:
                raise StoreError(shortfall)
        if car_first and self.peers and not store.has(root):
            for peer in self.peers:
                got, size = self._fetch_car(peer, root, store, from_car)
                if got:
                    counts["fetched"] += got
                    counts["bytes"] += size
                    sources[peer] = sources.get(peer, 0) + got
                if root.key in from_car and not self._car_gaps(root, from_car):
                    break

        def visit(cid: CID) -> list[CID]:
            if cid.key in from_car:
                return from_car[cid.key]
            data: bytes | None = None
            if store.has(cid):
                try:
                    data = store.get(cid)
                except IntegrityError as exc:
                    log.warning("%s; fetching it again", exc)
                    store.delete(cid)
            if data is not None:
                with self._lock:
                    counts["local"] += 1
            else:
                fetched, source = probed.pop(cid.key) if cid.key in probed else self.fetch_block(cid)
                store.put(cid, fetched, verify=False)  # fetch_block verified it
                with self._lock:
                    counts["fetched"] += 1
                    counts["bytes"] += len(fetched)
                    sources[source] = sources.get(source, 0) + 1
                data = fetched
            return [link.cid for link in links_of(cid, data)]

        first_error: BaseException | None = None
        with cf.ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="ipfs-fetch") as pool:
            pending: set[cf.Future[list[CID]]] = {pool.submit(visit, root)}
            while pending:
                done, pending = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    try:
                        children = future.result()
                    except (StoreError, OSError) as exc:
                        first_error = first_error or exc
                        continue
                    if first_error is not None:
                        continue  # let the running requests finish, start no new ones
                    for child in children:
                        if child.key not in seen:
                            seen.add(child.key)
                            pending.add(pool.submit(visit, child))
        if first_error is not None:
            raise first_error
        report = FetchReport(root=str(root), fetched=counts["fetched"], local=counts["local"],
                             fetched_bytes=counts["bytes"], seconds=time.perf_counter() - started,
                             sources=sources, bad_peers=tuple(self.bad_peers))
        log.info("fetched %s: %d blocks (%d already local), %.1f MB/s", root, report.fetched, report.local,
                 report.mb_per_s)
        return report
