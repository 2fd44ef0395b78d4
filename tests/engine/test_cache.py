"""The cache's listing and pruning: entries in words, "last used" renewed by every reuse."""

from __future__ import annotations

import fcntl
import json
import os
import time
from pathlib import Path

import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.cli import main
from ipfs_accelerate.engine.cache import cache_items, prune_cache

BERT = "prajjwal1/bert-tiny"
DAY = 86_400


def _du(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def _load(cache: Path, backend: str = "torch") -> ia.Endpoint:
    return ia.load(BERT, "embed", weights="synthetic", backend=backend, precision="fp32", cache_dir=cache)


def _age(path: Path, days: float) -> None:
    old = time.time() - days * DAY
    os.utime(path, (old, old))


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache with bert-tiny's synthetic weights and its ONNX Runtime export, and a store folder."""
    _load(tmp_path, "onnxruntime")
    (tmp_path / "ipfs" / "blocks").mkdir(parents=True)
    (tmp_path / "ipfs" / "blocks" / "b1").write_bytes(b"x" * 100)
    return tmp_path


def _by_kind(items: list) -> dict[str, list]:
    kinds: dict[str, list] = {}
    for item in items:
        kinds.setdefault(item.kind, []).append(item)
    return kinds


def test_the_listing_names_each_entry_with_its_size(cache: Path) -> None:
    kinds = _by_kind(cache_items(cache))
    # hashes/: the memo of the weights' content hash, which the export's key reads.
    assert set(kinds) == {"synthetic", "exports/onnxruntime", "ipfs", "hashes"}
    assert not kinds["hashes"][0].prunable
    (weights,) = kinds["synthetic"]
    assert weights.what == f"synthetic weights of {BERT}" and weights.prunable
    assert weights.size_bytes == _du(weights.path) > 0
    (export,) = kinds["exports/onnxruntime"]
    assert export.what == f"fp32 export of {BERT}" and export.size_bytes == _du(export.path) > 0
    (store,) = kinds["ipfs"]
    assert not store.prunable and store.size_bytes == 100
    assert cache_items(cache / "nothing-here") == []


def test_every_reuse_marks_the_entry_used(cache: Path) -> None:
    for item in cache_items(cache):
        _age(item.path, 30)
    _load(cache, "onnxruntime")  # reuses both the weights and the export
    fresh = {item.kind for item in cache_items(cache) if time.time() - item.last_used < 600}
    assert fresh == {"synthetic", "exports/onnxruntime"}


def test_prune_removes_only_what_went_unused_and_it_is_rebuilt(cache: Path) -> None:
    export = _by_kind(cache_items(cache))["exports/onnxruntime"][0]
    _age(export.path, 10)
    assert [i.path for i in prune_cache(cache, unused_days=7, dry_run=True)] == [export.path]
    assert export.path.is_dir()  # a dry run removes nothing
    assert [i.path for i in prune_cache(cache, unused_days=7)] == [export.path]
    assert not export.path.exists()
    assert set(_by_kind(cache_items(cache))) == {"synthetic", "ipfs", "hashes"}
    runtime = _load(cache, "onnxruntime").runtime
    assert runtime.details["export_cache"] == "miss"  # made again when needed


def test_prune_keeps_the_store_and_an_export_in_use(cache: Path) -> None:
    export = _by_kind(cache_items(cache))["exports/onnxruntime"][0]
    with open(export.path.parent / f"{export.path.name}.lock", "a+b") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)  # as a process building or checking it does
        removed = prune_cache(cache, unused_days=0, now=time.time() + 60)
    assert {i.kind for i in removed} == {"synthetic"}
    assert export.path.is_dir() and (cache / "ipfs" / "blocks" / "b1").is_file()
    with pytest.raises(ia.InvalidInput, match="unused_days must be 0 or more"):
        prune_cache(cache, unused_days=-1)


def test_the_command_lists_and_prunes(cache: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE", str(cache))
    assert main(["cache", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed["cache_dir"] == str(cache) and len(listed["items"]) == 4
    assert listed["total_bytes"] == sum(i["size_bytes"] for i in listed["items"])
    assert main(["cache", "--prune", "7"]) == 0
    assert capsys.readouterr().out.strip().endswith("removed 0 entries, 0.00 GB")
    assert main(["cache", "--prune", "-2"]) == 2
    assert "unused_days must be 0 or more" in capsys.readouterr().err
    assert main(["cache", "--dry-run"]) == 2
    assert "--dry-run goes with --prune" in capsys.readouterr().err


def test_a_listing_cut_short_by_its_reader_ends_quietly(tmp_path: Path) -> None:
    import subprocess
    import sys

    for n in range(3000):  # about 300 kB of listing, more than a pipe holds
        (tmp_path / "synthetic" / f"model-{n:04d}").mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-m", "ipfs_accelerate.cli", "cache"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "IPFS_ACCELERATE_CACHE": str(tmp_path)})
    assert proc.stdout is not None and proc.stderr is not None
    assert proc.stdout.readline().strip().endswith(b"model-0000")  # `| head -1`
    proc.stdout.close()
    assert proc.wait(timeout=60) == 1
    assert proc.stderr.read() == b""  # no traceback
