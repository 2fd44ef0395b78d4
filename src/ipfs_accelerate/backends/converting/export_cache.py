"""The on-disk cache of exported models, shared by the ONNX Runtime and OpenVINO backends.

An export (ONNX files, OpenVINO IR, a quantized copy …) is slow to build and cheap to
reuse, so each one is kept under ``cache_dir / "exports" / <backend> / <key>`` where the
key hashes everything that changes the exported bytes: the model files' content hash,
the model kind and class, the entry point, the backend, the precision and the versions
of the libraries that export (see :func:`export_key`).

An entry is built in a temporary directory beside its final place and renamed into place
only when complete, so a crash never leaves a half-written entry under the real key. A
``manifest.json`` records every file's size and SHA-256; every reuse re-checks it, and an
entry that fails the check (a truncated or corrupt file, a missing file, an unreadable
manifest) is deleted with a warning and rebuilt. A file lock (``fcntl.flock``) on
``<key>.lock`` keeps two processes from building the same key at once: the second waits,
then finds the first one's entry.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from ..._exceptions import BackendUnavailable
from ...store.disk import disk_shortfall, mark_used

if TYPE_CHECKING:
    from ..base import ModelSpec

try:  # fcntl is POSIX-only; without it two processes may export the same key twice (still safe).
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "MANIFEST",
    "CacheEntry",
    "export_key",
    "get_or_build",
    "library_versions",
    "remove_entry",
    "verify_entry",
]

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# Bump when the layout of an entry or the meaning of a key changes.
_FORMAT = 1

Status = Literal["hit", "miss", "rebuilt"]


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """A verified export directory and how it was obtained.

    Attributes:
        path: the directory holding the exported files (and ``manifest.json``).
        status: ``"hit"`` (reused), ``"miss"`` (built now) or ``"rebuilt"`` (the cached
            copy failed verification and was built again).
        build_s: seconds spent building (0 on a hit).
        verify_s: seconds spent checking the manifest (0 on a miss).
        meta: what the builder recorded (e.g. the int8 accuracy-gate cosine).
    """

    path: Path
    status: Status
    build_s: float
    verify_s: float
    meta: Mapping[str, Any]


def library_versions(distributions: tuple[str, ...]) -> dict[str, str]:
    """The installed version of each distribution, ``"absent"`` where it is not installed."""
    versions: dict[str, str] = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "absent"
    return versions


def export_key(
    spec: ModelSpec,
    *,
    backend: str,
    precision: str,
    versions: Mapping[str, str],
    extra: Mapping[str, Any] | None = None,
    cache_dir: Path | None = None,
) -> str:
    """The cache key of one export: a SHA-256 over everything that changes its bytes.

    Args:
        spec: the model being exported (its files' content hash, kind, class, entry,
            output names and forward rewrite all enter the key).
        backend: the backend's name.
        precision: the precision of the exported files.
        versions: the exporting libraries' versions (see :func:`library_versions`).
        extra: anything else the backend's export depends on (the int8 kernel flavour …).
        cache_dir: the cache root; the source's content hash is kept under ``hashes/``
            there, so that a large model is hashed once per machine, not once per load.
    """
    recipe = {
        "format": _FORMAT,
        "content_hash": spec.weights.content_hash(memo_dir=None if cache_dir is None else Path(cache_dir) / "hashes"),
        "kind": spec.kind,
        "torch_class": spec.torch_class,
        "entry": spec.entry,
        # Direct conversions name their graph outputs after these.
        "output_names": list(spec.output_names),
        "backend": backend,
        "precision": precision,
        "versions": dict(sorted(versions.items())),
        "extra": dict(sorted((extra or {}).items())),
    }
    if spec.forward_rewrite is not None:
        # Only when present, so that the keys of every other export stay what they were.
        recipe["forward_rewrite"] = spec.forward_rewrite.name
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


def get_or_build(
    cache_dir: Path,
    backend: str,
    key: str,
    build: Callable[[Path], Mapping[str, Any] | None],
    *,
    describe: Mapping[str, Any] | None = None,
    disk_bytes: int = 0,
) -> CacheEntry:
    """Return the verified entry for ``key``, building it with ``build`` when needed.

    Args:
        cache_dir: the library's cache directory; entries live under ``exports/<backend>``.
        backend: the backend's name.
        key: the entry's key (see :func:`export_key`).
        build: writes the export into the (empty, existing) directory it is given and
            returns metadata to keep in the manifest, or None.
        describe: human-readable facts recorded in the manifest (model id, kind …).
        disk_bytes: the most the build may write, estimated; checked against the free space
            before a build starts (0: not checked).

    Returns:
        The entry, with how it was obtained.

    Raises:
        BackendUnavailable: the build would not fit on the disk (nothing was written).
        Whatever ``build`` raises; the half-built directory is removed first.
    """
    root = Path(cache_dir) / "exports" / backend
    root.mkdir(parents=True, exist_ok=True)
    final = root / key
    with _locked(root / f"{key}.lock"):
        status: Status = "miss"
        if final.exists():
            started = time.perf_counter()
            problem = verify_entry(final)
            verify_s = time.perf_counter() - started
            if problem is None:
                mark_used(final)
                manifest = _read_manifest(final)
                return CacheEntry(final, "hit", 0.0, verify_s, manifest.get("meta", {}))
            log.warning("export cache entry %s is damaged (%s); deleting and rebuilding it", final, problem)
            shutil.rmtree(final, ignore_errors=True)
            status = "rebuilt"
        _remove_leftovers(root, key)
        if disk_bytes:
            facts = describe or {}
            what = f"the {backend} {facts.get('precision', '')} export of {facts.get('model_id', key[:12])}"
            shortfall = disk_shortfall(root, disk_bytes, what=" ".join(what.split()))
            if shortfall:
                raise BackendUnavailable(shortfall)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key}-", dir=root))
        try:
            started = time.perf_counter()
            meta = dict(build(tmp) or {})
            build_s = time.perf_counter() - started
            _write_manifest(tmp, meta=meta, describe=describe or {}, build_s=build_s)
            if final.exists():  # only possible without fcntl: another process won the race
                shutil.rmtree(tmp, ignore_errors=True)
                return CacheEntry(final, "hit", 0.0, 0.0, _read_manifest(final).get("meta", {}))
            os.rename(tmp, final)  # atomic on one filesystem: readers see all or nothing
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return CacheEntry(final, status, build_s, 0.0, meta)


def verify_entry(path: Path) -> str | None:
    """Check an entry against its manifest; the problem in words, or None when intact."""
    try:
        manifest = _read_manifest(path)
        files: Mapping[str, Mapping[str, Any]] = manifest["files"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"unreadable manifest: {exc}"
    present = {str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()} - {MANIFEST}
    missing = sorted(set(files) - present)
    if missing:
        return f"missing file(s): {', '.join(missing)}"
    extra = sorted(present - set(files))
    if extra:
        return f"unexpected file(s): {', '.join(extra)}"
    for rel, facts in files.items():
        file = path / rel
        size = file.stat().st_size
        if size != facts.get("size"):
            return f"{rel} has {size} bytes, the manifest says {facts.get('size')}"
        if _sha256(file) != facts.get("sha256"):
            return f"{rel} does not match its SHA-256"
    return None


def remove_entry(path: Path) -> bool:
    """Delete one entry unless a process holds its lock (building it, or checking it for reuse).

    Returns:
        True when the entry is gone, False when it was busy and kept.
    """
    # The empty lock file stays: a process may have it open already, and one made anew would
    # be a second, separate lock on the same key.
    with _locked(path.parent / f"{path.name}.lock", wait=False) as held:
        if held:
            shutil.rmtree(path, ignore_errors=True)
        return held


@contextlib.contextmanager
def _locked(lock_path: Path, *, wait: bool = True) -> Iterator[bool]:
    """Hold an exclusive advisory lock on ``lock_path``; yields whether it is held.

    With ``wait`` it blocks until the lock is free (and always yields True); without, it
    yields False at once when another process holds it.
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield True
        return
    with open(lock_path, "a+b") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def _remove_leftovers(root: Path, key: str) -> None:
    """Delete temporary build directories of ``key`` left by crashed processes.

    Called under the key's lock, so no live process is building into them.
    """
    for leftover in root.glob(f".tmp-{key}-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_manifest(path: Path, *, meta: Mapping[str, Any], describe: Mapping[str, Any], build_s: float) -> None:
    files = {
        str(p.relative_to(path)): {"size": p.stat().st_size, "sha256": _sha256(p)}
        for p in sorted(path.rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }
    manifest = {
        "format": _FORMAT,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "build_s": round(build_s, 3),
        "describe": dict(describe),
        "meta": dict(meta),
        "files": files,
    }
    (path / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True, default=str))


def _read_manifest(path: Path) -> dict[str, Any]:
    manifest = json.loads((path / MANIFEST).read_text())
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise ValueError("unknown manifest format")
    return manifest
