"""The local model store: add folders, load them back by CID, fetch what is missing.

:class:`ModelStore` ties the blockstore, the manifests, CAR files and peers together; it
is what the ``models`` commands and ``ia.load("ipfs://<cid>")`` use. Nothing here reads
environment variables: peers and the kubo RPC address are passed in by the caller (the
CLI and the server read ``IPFS_ACCELERATE_PEERS`` and ``IPFS_ACCELERATE_KUBO_API``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import IntegrityError, StoreError
from .._logs import one_line
from .._types import WeightsKind
from .blockstore import Blockstore
from .cid import CID
from .disk import disk_shortfall
from .fetch import source_url
from .manifest import SYNTHETIC_MARKER, FileEntry, Manifest, read_file, walk_unixfs
from .unixfs import AddOptions, add_path
from .weights import ResolvedWeights

if TYPE_CHECKING:
    from .fetch import FetchReport

__all__ = [
    "IpfsWeights",
    "ModelStore",
    "StoreListing",
    "parse_ipfs_ref",
    "resolve_ipfs",
]

log = logging.getLogger("ipfs_accelerate.store")


def parse_ipfs_ref(ref: str) -> CID | None:
    """The CID of ``ipfs://<cid>`` or ``/ipfs/<cid>`` (``None`` for any other string).

    Raises:
        StoreError: the string has the prefix but no valid CID after it.
    """
    for prefix in ("ipfs://", "/ipfs/"):
        if ref.startswith(prefix):
            rest = ref[len(prefix):].strip("/")
            if "/" in rest:
                raise StoreError(f"{ref!r}: a path inside a CID is not supported; use the model folder's root CID")
            return CID.parse(rest)
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class IpfsWeights(ResolvedWeights):
    """Weights loaded by CID: a verified folder, and the family recorded when it was added.

    Attributes:
        root: the root CID.
        family: the family recorded in the manifest (``None`` when unknown, e.g. a DAG
            fetched from a kubo node: then the family is read from config.json).
    """

    root: str
    family: str | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class StoreListing:
    """One root in the store (``models ls``)."""

    root: str
    name: str
    size: int
    pinned: bool
    family: str | None
    weights: str | None


class ModelStore:
    """A node's store of models by CID.

    Args:
        root: the store's directory (``<cache>/ipfs``).
        peers: trustless-gateway base URLs tried in order for missing blocks.
        kubo_api: a kubo RPC API base URL (``http://127.0.0.1:5001``) tried after the peers.
        timeout_s: the HTTP timeout per request.
        workers: parallel block requests while fetching.
    """

    def __init__(self, root: str | os.PathLike[str], *, peers: Sequence[str] = (), kubo_api: str | None = None,
                 timeout_s: float = 30.0, workers: int = 8) -> None:
        self.blocks = Blockstore(root)
        self.root = self.blocks.root
        # Checked now, so that a mistyped address fails the load at once, not at the first fetch.
        self.peers = tuple(source_url(p, what="peer") for p in peers)
        self.kubo_api = source_url(kubo_api, what="kubo_api") if kubo_api else None
        self.timeout_s = timeout_s
        self.workers = workers
        self._complete: set[str] = set()  # roots this object saw complete (each block verified)

    @classmethod
    def in_cache(cls, cache_dir: str | os.PathLike[str], *, peers: Sequence[str] = (), kubo_api: str | None = None,
                 timeout_s: float = 30.0, workers: int = 8) -> ModelStore:
        """The store under a cache directory (``<cache>/ipfs``); arguments as for the constructor."""
        return cls(Path(cache_dir) / "ipfs", peers=peers, kubo_api=kubo_api, timeout_s=timeout_s, workers=workers)

    # ------------------------------------------------------------ add

    def add(self, path: str | os.PathLike[str], *, options: AddOptions | None = None, only_hash: bool = False,
            name: str | None = None, pin: bool = True, family: str | None = None,
            task: str | None = None) -> Manifest:
        """Add a file or a folder (as ``ipfs add [-r]``) and record its manifest.

        Args:
            path: the file or folder.
            options: CID version and leaf kind (kubo's defaults when ``None``).
            only_hash: compute the CIDs, store nothing (``--only-hash``).
            name: the name in ``models ls`` (the folder's name by default).
            pin: keep it through ``gc``.
            family: the model's family, recorded in the manifest so that a CID alone is enough
                to load (else the synthetic marker's; the store knows no family itself: the
                CLI asks ``engine.loader.describe_model_folder``).
            task: the model's default task, recorded beside the family.

        Raises:
            StoreError: the path cannot be added, or its blocks would not fit on the store's
                disk (checked before anything is written).
        """
        options = options or AddOptions()
        folder = Path(path)
        if not only_hash and folder.exists():
            files = folder.rglob("*") if folder.is_dir() else [folder]
            size = sum(f.stat().st_size for f in files if f.is_file())
            shortfall = disk_shortfall(self.root, size, what=f"adding {folder} to the store")
            if shortfall:
                raise StoreError(shortfall)
        def store_block(cid: CID, data: bytes) -> None:
            self.blocks.put(cid, data, verify=False)  # hashed just now by the builder

        added = add_path(folder, options, sink=None if only_hash else store_block)
        if folder.is_dir() and (folder / "config.json").is_file():
            family = family or _marker_family(folder)
        else:
            family = task = None
        manifest = Manifest.from_added(added, name=name or folder.name, raw_leaves=options.leaves_are_raw,
                                       folder=folder if folder.is_dir() else None, family=family, task=task)
        if not only_hash:
            manifest.save(self.blocks.manifest_path(added.cid))
            if pin:
                self.blocks.pin(added.cid, name=manifest.name)
        return manifest

    # ------------------------------------------------------------ read

    def has_all(self, root: CID) -> bool:
        """Whether every block of the DAG is stored locally (and verified, since walking reads them).

        Raises:
            IntegrityError: a stored block fails its hash.
        """
        saved = self.blocks.manifest_path(root)
        try:
            if not saved.is_file():
                return all(self.blocks.has(cid) for cid in self.blocks.walk(root))
            for entry in Manifest.load(saved).files:  # file by file, so that an error names the file
                cid = CID.parse(entry.cid)
                if entry.is_dir:
                    if not self.blocks.has(cid):
                        return False
                elif not all(self.blocks.has(c) for c in self.blocks.walk(cid, path=entry.path or None)):
                    return False
            return self.blocks.has(root)
        except IntegrityError:
            raise
        except StoreError:
            return False

    def ensure(self, root: CID, *, then_copied: bool = False) -> FetchReport | None:
        """Fetch the blocks of ``root``'s DAG that are not stored (``None`` when none were missing).

        ``then_copied``: the files are written out of the blocks next, under the store (a
        model's folder): a fresh fetch checks the disk for both before it starts.

        Raises:
            StoreError: blocks are missing and no peer has them (the message names the peers).
            IntegrityError: every peer that had a block sent wrong bytes.
        """
        if root.key in self._complete:
            return None
        try:
            if self.has_all(root):
                self._complete.add(root.key)
                return None
        except IntegrityError:
            if not self.peers and not self.kubo_api:
                raise
            # the fetch below replaces the corrupt block from a peer
        if not self.peers and not self.kubo_api:
            raise StoreError(f"{root} is not complete in the local store {self.root} and no peers are configured "
                             "(set IPFS_ACCELERATE_PEERS or IPFS_ACCELERATE_KUBO_API, or import a CAR file)")
        from .fetch import Fetcher

        with Fetcher(peers=self.peers, kubo_api=self.kubo_api, timeout_s=self.timeout_s,
                     workers=self.workers) as fetcher:
            report = fetcher.fetch_dag(root, self.blocks, then_copied=then_copied)
        self._complete.add(root.key)
        return report

    def manifest(self, root: CID) -> Manifest:
        """The manifest of ``root``: the saved one, else rebuilt from the (complete) DAG."""
        saved = self.blocks.manifest_path(root)
        if saved.is_file():
            manifest = Manifest.load(saved)
            if manifest.root == str(root) or CID.parse(manifest.root).key == root.key:
                return manifest
        self.ensure(root)
        return self._rebuild_manifest(root)

    def _rebuild_manifest(self, root: CID) -> Manifest:
        files = tuple(walk_unixfs(root, self._get))
        is_dir = not (len(files) == 1 and files[0].path == "")
        raw_leaves = any(CID.parse(f.cid).codec == 0x55 for f in files if not f.is_dir)
        raw_leaves = raw_leaves or self._has_raw_leaf(root)
        manifest = Manifest(root=str(root), name=str(root), is_dir=is_dir, size=sum(f.size for f in files),
                            cid_version=root.version, raw_leaves=raw_leaves, files=files)
        manifest.save(self.blocks.manifest_path(root))
        return manifest

    def _has_raw_leaf(self, root: CID) -> bool:
        return any(cid.codec == 0x55 for cid in self.blocks.walk(root))

    def _get(self, cid: CID, path: str) -> bytes:
        return self.blocks.get(cid, path=path or None)

    def materialize(self, root: CID) -> Path:
        """A verified folder holding the model at ``root`` (fetched first when incomplete).

        The folder is ``<store>/models/<cid>``. An existing one is hashed again and must
        give ``root``; otherwise it is rebuilt from the blocks, each verified as it is read.
        A folder is only ever renamed into place whole, so nothing half-written is used.

        Raises:
            StoreError: the CID is not a directory, blocks are missing everywhere, or the
                folder would not fit on the store's disk (checked before it is written; with
                the blocks still to fetch, room for both is checked before the fetch).
            IntegrityError: a block fails its hash (the message names the file and CID).
        """
        target = self.root / "models" / str(root)
        if not target.is_dir():
            self.ensure(root, then_copied=True)  # blocks and folder: one disk check before either
        manifest = self.manifest(root)
        if not manifest.is_dir:
            raise StoreError(f"{root} is a single file, not a model folder")
        if target.is_dir():
            if self._folder_matches(target, root, manifest):
                return target
            log.warning("the materialized copy %s no longer hashes to %s; rebuilding it from the blocks", target, root)
            shutil.rmtree(target, ignore_errors=True)
        self.ensure(root)
        shortfall = disk_shortfall(self.root, manifest.size, what=f"the model folder of {root}")
        if shortfall:
            raise StoreError(shortfall)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        try:
            self._write_tree(root, manifest.files, tmp)
            if target.exists():  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                tmp.rename(target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    def _folder_matches(self, folder: Path, root: CID, manifest: Manifest) -> bool:
        options = AddOptions(cid_version=root.version, raw_leaves=manifest.raw_leaves)
        try:
            return add_path(folder, options).cid.key == root.key
        except (OSError, StoreError):
            return False

    def _write_tree(self, root: CID, files: Sequence[FileEntry], dest: Path) -> None:
        for entry in files:
            target = dest / entry.path
            if entry.is_dir:
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                read_file(CID.parse(entry.cid), self._get, fh, path=entry.path)

    def get(self, root: CID, to: str | os.PathLike[str]) -> Path:
        """Write the file or folder at ``root`` to ``to`` (fetching missing blocks first).

        Raises:
            StoreError: as :meth:`materialize`; or ``to`` exists and is not empty, cannot be
                written (a file in its path), or its disk cannot hold the files (checked first).
            IntegrityError: as :meth:`materialize`.
        """
        dest = Path(to)
        if dest.exists() and any(dest.iterdir() if dest.is_dir() else [dest]):
            raise StoreError(f"{dest} already exists and is not empty")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot write {dest}: {one_line(exc)}") from exc
        manifest = self.manifest(root)
        self.ensure(root)
        shortfall = disk_shortfall(dest.parent, manifest.size, what=f"writing {root} to {dest}")
        if shortfall:
            raise StoreError(shortfall)
        # Beside the destination, so that the last step is a rename on the same disk.
        tmp = Path(tempfile.mkdtemp(prefix=".get-", dir=dest.parent))
        try:
            if manifest.is_dir:
                self._write_tree(root, manifest.files, tmp)
                if dest.exists():
                    dest.rmdir()
                shutil.move(str(tmp), dest)
            else:
                with open(tmp / "file", "wb") as fh:
                    read_file(root, self._get, fh, path=manifest.name)
                shutil.move(str(tmp / "file"), dest)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return dest

    # ------------------------------------------------------------ housekeeping

    def ls(self) -> list[StoreListing]:
        """Every root with a manifest in the store, pinned or not."""
        pins = {CID.parse(k).key for k in self.blocks.pins()}
        out = []
        for path in sorted((self.root / "manifests").glob("*.json")):
            try:
                manifest = Manifest.load(path)
            except StoreError:
                continue
            out.append(StoreListing(root=manifest.root, name=manifest.name, size=manifest.size,
                                    pinned=path.stem in pins, family=manifest.family, weights=manifest.weights))
        return out

    def pin(self, root: CID, *, name: str = "") -> None:
        """Pin ``root`` (its DAG must be complete locally, fetched if needed)."""
        self.ensure(root)
        self.blocks.pin(root, name=name)

    def unpin(self, root: CID) -> bool:
        """Unpin ``root``; ``False`` when it was not pinned."""
        return self.blocks.unpin(root)

    def gc(self) -> tuple[int, int]:
        """Remove unpinned blocks, manifests and materialized folders; ``(blocks, bytes)`` freed."""
        freed = self.blocks.gc()
        pins = {CID.parse(k).key for k in self.blocks.pins()}
        models = self.root / "models"
        if models.is_dir():
            for folder in models.iterdir():
                try:
                    keep = not folder.name.startswith(".") and CID.parse(folder.name).key in pins
                except StoreError:
                    keep = False
                if not keep:
                    shutil.rmtree(folder, ignore_errors=True)
        return freed


def resolve_ipfs(ref: str, *, cache_dir: Path, peers: Sequence[str] = (), kubo_api: str | None = None,
                 ) -> IpfsWeights:
    """The weights of ``ipfs://<cid>`` or ``/ipfs/<cid>``: a verified local folder.

    Blocks come from the local store, then ``peers``, then ``kubo_api``; every block is
    verified before it is used. The source reads ``ipfs:<cid>``; the weights stay
    ``"synthetic"`` when the folder carries the synthetic marker.

    Raises:
        StoreError: the CID is invalid, or missing locally and at every peer.
        IntegrityError: a block fails its hash.
    """
    root = parse_ipfs_ref(ref)
    if root is None:
        raise StoreError(f"{ref!r} is not an ipfs:// or /ipfs/ reference")
    store = ModelStore.in_cache(cache_dir, peers=peers, kubo_api=kubo_api)
    folder = store.materialize(root)
    if not (folder / "config.json").is_file():
        raise StoreError(f"{root} is a folder without config.json, not a model")
    kind: WeightsKind = "synthetic" if (folder / SYNTHETIC_MARKER).is_file() else "pretrained"
    family = store.manifest(root).family or _marker_family(folder)
    return IpfsWeights(path=folder, model_id=ref, weights=kind, source=f"ipfs:{root}", root=str(root), family=family)


def _marker_family(folder: Path) -> str | None:
    try:
        value = json.loads((folder / SYNTHETIC_MARKER).read_text()).get("family")
    except (OSError, ValueError, AttributeError):
        return None
    return value if isinstance(value, str) else None

