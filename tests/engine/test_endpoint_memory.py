"""Out of memory at run time: the batch is halved and retried, then a GPU endpoint moves to the CPU."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.backends.base import Runtime


class _MemoryBound:
    """A model wrapper that runs out of memory above ``limit`` rows (as a full GPU would)."""

    def __init__(self, model: Any, limit: int) -> None:
        self.model = model
        self.limit = limit
        self.batches: list[int] = []

    def __call__(self, **inputs: Any) -> Any:
        rows = int(inputs["input_ids"].shape[0])
        self.batches.append(rows)
        if rows > self.limit:
            raise MemoryError(f"cannot allocate for {rows} rows")
        return self.model(**inputs)


def test_batch_is_halved_until_it_fits(load_tiny):
    ep = load_tiny("prajjwal1/bert-tiny", "embed", max_batch_size=8, device="cpu")
    texts = [f"sentence number {i}" for i in range(8)]
    expected = ep(texts).outputs
    bound = _MemoryBound(ep.runtime.model, limit=2)
    original = ep.runtime
    ep.runtime = Runtime(backend=original.backend, device=original.device, precision=original.precision,
                         model=bound, details=original.details, prepare=original.prepare)
    try:
        res = ep(texts)
    finally:
        ep.runtime = original
    assert bound.batches[:3] == [8, 4, 2]
    assert res.provenance.batch_size == 2
    assert any("retried at batch 4" in n for n in res.provenance.notes)
    for a, b in zip(expected, res.outputs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_gpu_out_of_memory_at_batch_one_moves_to_cpu(load_tiny, cache_dir):
    base = load_tiny("prajjwal1/bert-tiny", "embed", device="cpu")
    ep = ia.Endpoint(
        family=base.family, handler=base.handler,
        runtime=Runtime(backend="torch", device="cuda:0", precision="fp16",
                        model=_MemoryBound(base.runtime.model, limit=0), prepare=base.runtime.prepare),
        fallbacks=(), max_batch_size=4, cpu_fallback=lambda: base.runtime,
    )
    res = ep(["a", "b"])
    assert res.provenance.device == "cpu"
    fb = res.provenance.fallbacks[-1]
    assert fb.stage == "device" and fb.tried == "torch/cuda:0/fp16" and "out of memory" in fb.reason
    np.testing.assert_allclose(res.outputs[0], base("a").outputs[0], atol=1e-5)


def test_cpu_out_of_memory_at_batch_one_raises(load_tiny):
    base = load_tiny("prajjwal1/bert-tiny", "embed", device="cpu")
    ep = ia.Endpoint(
        family=base.family, handler=base.handler,
        runtime=Runtime(backend="torch", device="cpu", precision="fp32", details={},
                        model=_MemoryBound(base.runtime.model, limit=0), prepare=base.runtime.prepare),
        fallbacks=(), max_batch_size=2,
    )
    with pytest.raises(ia.OutOfMemory, match="even at batch size 1"):
        ep(["a", "b"])
