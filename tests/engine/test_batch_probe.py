"""probe_max_batch: grows to the memory budget or an out-of-memory error, and caches."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.engine.batch_probe import CACHE_FILE, cache_key, probe_max_batch
from ipfs_accelerate.engine.memory import PeakRSS

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_grows_to_the_limit_and_caches(load_tiny, tmp_path):
    ep = load_tiny(MINILM)
    assert probe_max_batch(ep, budget_bytes=2**40, max_batch=8, cache_dir=tmp_path) == 8
    data = json.loads((tmp_path / CACHE_FILE).read_text())
    key = cache_key(ep)
    rt = ep.runtime
    assert key.endswith(f"|embed|{rt.backend}|{rt.precision}|{rt.device}")
    assert key.split("|")[0] == ep.handler.weights.content_hash()
    assert data[key]["max_batch"] == 8 and set(data[key]["growth_bytes"]) == {"1", "2", "4", "8"}
    # Probed once: the cached answer comes back whatever the budget …
    assert probe_max_batch(ep, budget_bytes=1, cache_dir=tmp_path) == 8
    # … until a refresh, which honours the new budget (never below 1).
    # A batch that reused pages an earlier batch freed would read as no growth (seen: batches
    # 1, 2 and 4 at 0 bytes, so the one-byte budget let the probe reach 8); the probe hands
    # freed heap back before each batch, and the budget must stop it well below 8.
    refreshed = probe_max_batch(ep, budget_bytes=1, cache_dir=tmp_path, refresh=True)
    assert refreshed <= 4
    assert json.loads((tmp_path / CACHE_FILE).read_text())[key]["max_batch"] == refreshed


def test_stops_at_out_of_memory_and_run_time_splitting_remains(load_tiny, tmp_path):
    ep0 = load_tiny(MINILM)
    real = ep0.runtime.model

    def model(**inputs: Any) -> Any:
        # A device that cannot hold more than four sequences at once.
        if inputs["input_ids"].shape[0] > 4:
            raise MemoryError("simulated out of memory")
        return real(**inputs)

    runtime = dataclasses.replace(ep0.runtime, model=model)
    ep = ia.Endpoint(family=ep0.family, handler=ep0.handler, runtime=runtime, fallbacks=(), max_batch_size=32)
    assert probe_max_batch(ep, budget_bytes=2**40, max_batch=64, cache_dir=tmp_path) == 4
    entry = json.loads((tmp_path / CACHE_FILE).read_text())[cache_key(ep)]
    assert "out of memory at batch 8" in entry["stopped"]
    # At run time, Endpoint.run_items halves the batch on out-of-memory and says so.
    # Texts of one length, so that all eight would run in one pass.
    result = ep.run_items([f"sentence number {i} of eight." for i in range(8)], ep.parse_params({}))
    assert len(result.outputs) == 8
    assert any("out of memory" in note for note in result.provenance.notes)


def test_bad_arguments(load_tiny, tmp_path):
    ep = load_tiny(MINILM)
    with pytest.raises(ia.InvalidInput):
        probe_max_batch(ep, budget_bytes=0, cache_dir=tmp_path)
    with pytest.raises(ia.InvalidInput):
        probe_max_batch(ep, max_batch=0, cache_dir=tmp_path)


def test_peak_rss_sees_an_allocation():
    import mmap

    size = 64 * 2**20
    # A fresh anonymous mapping, every page written: new resident pages whatever the
    # allocator kept from earlier tests (a numpy block could reuse pages already counted).
    with mmap.mmap(-1, size) as block, PeakRSS(interval_s=0.001) as meter:
        for offset in range(0, size, mmap.PAGESIZE):
            block[offset] = 1
    assert meter.growth > 32 * 2**20


def _kernel_mark_available() -> bool:
    from ipfs_accelerate.engine import memory

    return memory._reset_high_water_mark()


@pytest.mark.skipif(not _kernel_mark_available(), reason="needs Linux's /proc/self/clear_refs")
def test_peak_rss_sees_a_transient_allocation_without_a_sampler():
    import mmap

    size = 64 * 2**20
    with PeakRSS(interval_s=10.0) as meter:  # a sampler this slow would see nothing
        with mmap.mmap(-1, size) as block:
            for offset in range(0, size, mmap.PAGESIZE):
                block[offset] = 1
        # the block is unmapped again: only the kernel's mark remembers it
        with PeakRSS() as inner:
            pass
    assert meter.method == "kernel high-water mark" and meter._thread is None
    assert meter.growth > 32 * 2**20
    assert inner.method.startswith("sampled")  # the mark was held by the outer meter
    with PeakRSS() as again:
        pass
    assert again.method == "kernel high-water mark"  # released on exit
