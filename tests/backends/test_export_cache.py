"""The export cache: keys, hits, verification of every reuse, atomic builds and the lock."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import multiprocessing
import time
from pathlib import Path
from typing import Any

import pytest

from ipfs_accelerate._exceptions import BackendUnavailable
from ipfs_accelerate.backends.converting import export_cache as cache
from ipfs_accelerate.backends.onnxruntime import OnnxRuntimeBackend
from tests.backends._tiny import min_cosine, outputs_of

VERSIONS = {"optimum": "1", "torch": "2"}


def _entry_of(runtime: Any) -> Path:
    return Path(runtime.details["export_dir"])


def test_key_covers_what_changes_the_export(tiny_spec: Any) -> None:
    spec = tiny_spec("bert")
    key = cache.export_key(spec, backend="onnxruntime", precision="fp32", versions=VERSIONS)
    assert key == cache.export_key(spec, backend="onnxruntime", precision="fp32", versions=dict(VERSIONS))
    assert len(key) == 64
    changed = [
        cache.export_key(spec, backend="openvino", precision="fp32", versions=VERSIONS),
        cache.export_key(spec, backend="onnxruntime", precision="int8", versions=VERSIONS),
        cache.export_key(spec, backend="onnxruntime", precision="fp32", versions=VERSIONS | {"torch": "3"}),
        cache.export_key(dataclasses.replace(spec, kind="fill-mask"), backend="onnxruntime", precision="fp32",
                         versions=VERSIONS),
        cache.export_key(dataclasses.replace(spec, torch_class="BertModel"), backend="onnxruntime",
                         precision="fp32", versions=VERSIONS),
        cache.export_key(dataclasses.replace(spec, entry="get_text_features"), backend="onnxruntime",
                         precision="fp32", versions=VERSIONS),
        cache.export_key(spec, backend="onnxruntime", precision="fp32", versions=VERSIONS, extra={"q": "avx2"}),
    ]
    assert len({key, *changed}) == len(changed) + 1


def test_key_follows_the_weights_content(tmp_path: Path, tiny_spec: Any) -> None:
    import shutil

    from ipfs_accelerate.store.weights import ResolvedWeights

    spec = tiny_spec("bert")
    copy = tmp_path / "copy"
    shutil.copytree(spec.model_dir, copy)
    other = dataclasses.replace(spec, weights=ResolvedWeights(path=copy, model_id="x", weights="synthetic",
                                                              source="test"))
    same = cache.export_key(other, backend="b", precision="fp32", versions=VERSIONS)
    assert same == cache.export_key(spec, backend="b", precision="fp32", versions=VERSIONS)
    (copy / "config.json").write_text((copy / "config.json").read_text().replace("32", "33", 1))
    assert cache.export_key(other, backend="b", precision="fp32", versions=VERSIONS) != same


def test_second_load_is_a_hit_and_faster(tiny_spec: Any, torch_runtime: Any, tmp_path: Path) -> None:
    backend, spec = OnnxRuntimeBackend(), tiny_spec("bert")
    first = backend.load(spec, device="cpu", precision="fp32", cache_dir=tmp_path)
    second = backend.load(spec, device="cpu", precision="fp32", cache_dir=tmp_path)
    assert first.details["export_cache"] == "miss" and first.details["export_s"] > 0
    assert second.details["export_cache"] == "hit" and second.details["export_s"] == 0
    assert second.load_s < first.load_s
    assert _entry_of(first) == _entry_of(second)
    assert _entry_of(first).parent == tmp_path / "exports" / "onnxruntime"
    mask = spec.example_inputs()["attention_mask"]
    assert min_cosine(outputs_of(torch_runtime(spec), spec), outputs_of(second, spec), mask) >= 0.999


def test_openvino_second_load_is_a_hit(tiny_spec: Any, export_cache: Path) -> None:
    pytest.importorskip("optimum.intel")
    from ipfs_accelerate.backends.openvino import OpenVINOBackend

    backend, spec = OpenVINOBackend(), tiny_spec("bert")
    first = backend.load(spec, device="cpu", precision="fp32", cache_dir=export_cache)
    second = backend.load(spec, device="cpu", precision="fp32", cache_dir=export_cache)
    assert first.details["export_cache"] in ("hit", "miss")
    assert second.details["export_cache"] == "hit" and second.details["export_s"] == 0
    assert second.load_s <= first.load_s or first.details["export_cache"] == "hit"


def test_manifest_records_every_file(tiny_spec: Any, tmp_path: Path) -> None:
    runtime = OnnxRuntimeBackend().load(tiny_spec("bert"), device="cpu", precision="fp32", cache_dir=tmp_path)
    entry = _entry_of(runtime)
    manifest = json.loads((entry / cache.MANIFEST).read_text())
    files = {str(p.relative_to(entry)) for p in entry.rglob("*") if p.is_file()} - {cache.MANIFEST}
    assert set(manifest["files"]) == files and "model.onnx" in files
    for rel, facts in manifest["files"].items():
        data = (entry / rel).read_bytes()
        assert facts == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    assert manifest["describe"]["precision"] == "fp32"


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [
    _truncate,
    _flip_a_byte,  # same size: only the SHA-256 can tell
    lambda path: path.unlink(),
    lambda path: (path.parent / cache.MANIFEST).write_text("{not json"),
    lambda path: (path.parent / "stray.bin").write_bytes(b"x"),
], ids=["truncated", "flipped-byte", "missing-file", "corrupt-manifest", "stray-file"])
def test_damaged_entry_is_detected_and_rebuilt(damage: Any, tiny_spec: Any, torch_runtime: Any, tmp_path: Path,
                                               caplog: pytest.LogCaptureFixture) -> None:
    backend, spec = OnnxRuntimeBackend(), tiny_spec("bert")
    first = backend.load(spec, device="cpu", precision="fp32", cache_dir=tmp_path)
    damage(_entry_of(first) / "model.onnx")
    with caplog.at_level(logging.WARNING, logger=cache.__name__):
        again = backend.load(spec, device="cpu", precision="fp32", cache_dir=tmp_path)
    assert again.details["export_cache"] == "rebuilt"
    assert any("damaged" in r.getMessage() and "rebuilding" in r.getMessage() for r in caplog.records)
    assert cache.verify_entry(_entry_of(again)) is None
    mask = spec.example_inputs()["attention_mask"]
    assert min_cosine(outputs_of(torch_runtime(spec), spec), outputs_of(again, spec), mask) >= 0.999
    assert backend.load(spec, device="cpu", precision="fp32", cache_dir=tmp_path).details["export_cache"] == "hit"


def test_failed_build_leaves_nothing_behind(tmp_path: Path) -> None:
    def build(target: Path) -> None:
        (target / "half.onnx").write_bytes(b"partial")
        raise RuntimeError("exporter crashed")

    with pytest.raises(RuntimeError, match="exporter crashed"):
        cache.get_or_build(tmp_path, "b", "k" * 64, build)
    root = tmp_path / "exports" / "b"
    assert sorted(p.name for p in root.iterdir()) == [f"{'k' * 64}.lock"]


def test_leftovers_of_a_crashed_build_are_removed(tmp_path: Path) -> None:
    key = "c" * 64
    leftover = tmp_path / "exports" / "b" / f".tmp-{key}-dead"
    leftover.mkdir(parents=True)
    (leftover / "x").write_bytes(b"1")
    entry = cache.get_or_build(tmp_path, "b", key, lambda target: (target / "m.bin").write_bytes(b"ok") and None)
    assert entry.status == "miss" and (entry.path / "m.bin").read_bytes() == b"ok"
    assert not leftover.exists()


def test_builder_metadata_is_kept_for_hits(tmp_path: Path) -> None:
    def build(target: Path) -> dict[str, Any]:
        (target / "m.bin").write_bytes(b"ok")
        return {"int8_gate_cosine": 0.995}

    assert cache.get_or_build(tmp_path, "b", "m" * 64, build).meta == {"int8_gate_cosine": 0.995}
    hit = cache.get_or_build(tmp_path, "b", "m" * 64, build)
    assert hit.status == "hit" and hit.meta == {"int8_gate_cosine": 0.995}


def _build_slowly(target: Path, log: str) -> None:
    with open(log, "a") as fh:
        fh.write("build\n")
    time.sleep(1.0)
    (target / "m.bin").write_bytes(b"ok")


def _worker(cache_dir: str, log: str, out: Any) -> None:
    entry = cache.get_or_build(Path(cache_dir), "b", "l" * 64, lambda target: _build_slowly(target, log))
    out.put((entry.status, str(entry.path)))


def test_two_processes_export_a_key_once(tmp_path: Path) -> None:
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    log = tmp_path / "builds.log"
    workers = [context.Process(target=_worker, args=(str(tmp_path), str(log), out)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    results = sorted(out.get(timeout=5) for _ in workers)
    assert log.read_text() == "build\n"  # the lock made the second process wait, then reuse
    assert [status for status, _ in results] == ["hit", "miss"]
    assert results[0][1] == results[1][1]


def test_an_export_that_would_not_fit_in_memory_is_refused_before_it_starts(tiny_spec: Any) -> None:
    import psutil

    from ipfs_accelerate.backends.converting import direct

    spec = tiny_spec("bert")
    weights = direct.fp32_weight_bytes(spec.model_dir)
    stored = sum(f.stat().st_size for f in spec.model_dir.glob("*.safetensors"))
    # Four bytes per parameter counted in the headers: the fp32 files less their headers.
    assert 0 < weights < stored and weights % 4 == 0 and stored - weights < 16_384
    direct.require_export_memory(spec, factor=3.0, what="the test export")  # a tiny model fits
    factor = 2 * psutil.virtual_memory().total / weights
    with pytest.raises(BackendUnavailable, match=r"the test export needs about [\d.]+ GB of memory .* GB is available"):
        direct.require_export_memory(spec, factor=factor, what="the test export")


def test_an_export_that_would_not_fit_on_the_disk_is_refused_before_it_writes(tmp_path: Path) -> None:
    import shutil

    built: list[Path] = []

    def build(target: Path) -> None:
        built.append(target)
        (target / "m.bin").write_bytes(b"ok")

    free = shutil.disk_usage(tmp_path).free
    describe = {"model_id": "gpt2", "precision": "int8"}
    with pytest.raises(BackendUnavailable, match=r"^the b int8 export of gpt2 needs about [\d.]+ GB of disk under "):
        cache.get_or_build(tmp_path, "b", "d" * 64, build, describe=describe, disk_bytes=free)
    assert built == []
    assert sorted(p.name for p in (tmp_path / "exports" / "b").iterdir()) == [f"{'d' * 64}.lock"]
    # What fits is built; a hit is not checked again (it writes nothing).
    assert cache.get_or_build(tmp_path, "b", "d" * 64, build, describe=describe, disk_bytes=1).status == "miss"
    assert cache.get_or_build(tmp_path, "b", "d" * 64, build, disk_bytes=2 * free).status == "hit"
    assert len(built) == 1


def test_a_backend_refuses_an_export_the_disk_cannot_hold(
    tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from ipfs_accelerate.store import disk

    spec = tiny_spec("bert")
    # As if the disk were full: every build must leave more free than the disk has.
    monkeypatch.setattr(disk, "KEEP_FREE_BYTES", 1 << 62)
    with pytest.raises(BackendUnavailable, match=r"the onnxruntime fp32 export of .* GB of disk under .*exports"):
        OnnxRuntimeBackend().load(spec, device="cpu", precision="fp32", cache_dir=tmp_path)
    assert not [p for p in (tmp_path / "exports" / "onnxruntime").iterdir() if not p.name.endswith(".lock")]
