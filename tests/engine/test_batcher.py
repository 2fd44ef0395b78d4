"""DynamicBatcher: same outputs as one-by-one calls, in order; failure isolation; backpressure."""

from __future__ import annotations

import asyncio
import re
import threading
import time

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.engine.batcher import DynamicBatcher, LatencyModel

MINILM = "sentence-transformers/all-MiniLM-L6-v2"

# Mixed lengths on purpose: the batcher sorts a window by length and must restore the order.
TEXTS = [
    "A short one.",
    "A somewhat longer sentence about the weather in the mountains this week.",
    "Hi.",
    "The committee postponed its decision on the budget until the next quarterly meeting, citing costs.",
    "Cats sleep a lot.",
    "Solar panels convert sunlight into electricity using semiconductor cells in every weather.",
    "Where is the station?",
    "One more text of middling length for the batch.",
    "Tiny.",
    "The spacecraft entered orbit around the planet after a seven-month journey through deep space.",
]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def embed(load_tiny) -> ia.Endpoint:
    return load_tiny(MINILM)


@pytest.fixture(scope="module")
def singles(embed) -> list[np.ndarray]:
    return [embed(text).outputs[0] for text in TEXTS]


def _same(a, b) -> bool:
    return bool(np.allclose(np.asarray(a), np.asarray(b), atol=1e-5))


def _slow_request() -> list[str]:
    # A real slow input: many long texts (the endpoint splits them into several passes).
    return ["word " * 400] * 256


def _wait_until(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for the batcher")
        time.sleep(0.001)


def test_threads_get_their_own_outputs_in_order(embed, singles):
    results: list[ia.Result | None] = [None] * len(TEXTS)
    gate = threading.Barrier(len(TEXTS))
    with DynamicBatcher(embed, max_batch_size=8, max_wait_s=0.05) as batcher:

        def caller(i: int) -> None:
            gate.wait()
            results[i] = batcher(TEXTS[i])

        threads = [threading.Thread(target=caller, args=(i,)) for i in range(len(TEXTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        stats = batcher.stats()
    for result, single in zip(results, singles, strict=True):
        assert result is not None and len(result.outputs) == 1
        assert _same(result.outputs[0], single)
    # Real batching happened: fewer forward batches than callers, and some rode together.
    assert stats.batches < len(TEXTS)
    assert max(r.timings["batch_items"] for r in results if r) > 1
    assert stats.completed == len(TEXTS) and stats.failed == 0


def test_multi_item_requests_are_split_back_in_order(embed, singles):
    groups = [(0, 3), (3, 4), (4, 9), (9, 10)]
    with DynamicBatcher(embed, max_batch_size=32, max_wait_s=0.05) as batcher:
        futures = [batcher.submit(TEXTS[a:b]) for a, b in groups]
        results = [f.result(timeout=60) for f in futures]
    for (a, b), result in zip(groups, results, strict=True):
        assert len(result.outputs) == b - a
        for out, single in zip(result.outputs, singles[a:b], strict=True):
            assert _same(out, single)
        assert result.timings["items"] == b - a
        assert result.timings["queue_s"] >= 0 and result.timings["compute_s"] > 0
        assert result.timings["latency_s"] >= result.timings["compute_s"]


def test_asyncio_callers(embed, singles):
    async def main(batcher: DynamicBatcher) -> list[ia.Result]:
        return await asyncio.gather(*(batcher.acall(text) for text in TEXTS))

    with DynamicBatcher(embed, max_batch_size=16, max_wait_s=0.05) as batcher:
        results = asyncio.run(main(batcher))
        assert batcher.stats().batches < len(TEXTS)
    for result, single in zip(results, singles, strict=True):
        assert _same(result.outputs[0], single)


def test_requests_with_different_params_are_not_mixed(embed):
    expected_cls = embed(TEXTS[0], pooling="cls").outputs[0]
    expected_mean = embed(TEXTS[0], pooling="mean").outputs[0]
    with DynamicBatcher(embed, max_batch_size=16, max_wait_s=0.05) as batcher:
        f_cls = batcher.submit(TEXTS[0], pooling="cls")
        f_mean = batcher.submit(TEXTS[0], pooling="mean")
        assert _same(f_cls.result(timeout=60).outputs[0], expected_cls)
        assert _same(f_mean.result(timeout=60).outputs[0], expected_mean)
    assert not _same(expected_cls, expected_mean)


def test_one_bad_input_fails_alone(embed, singles):
    with DynamicBatcher(embed, max_batch_size=32, max_wait_s=0.2) as batcher:
        good = [batcher.submit(t) for t in TEXTS[:3]]
        bad = batcher.submit(12345)  # not a text: preprocess rejects it inside the batch
        good += [batcher.submit(t) for t in TEXTS[3:6]]
        with pytest.raises(ia.InvalidInput, match="must be a string"):
            bad.result(timeout=60)
        for future, single in zip(good, singles[:6], strict=True):
            assert _same(future.result(timeout=60).outputs[0], single)
        stats = batcher.stats()
    assert stats.failed == 1 and stats.completed == 6


def test_bad_params_and_empty_input_fail_at_submit(embed):
    with DynamicBatcher(embed) as batcher:
        with pytest.raises(ia.InvalidInput, match="pooling"):
            batcher.submit("text", pooling="max")
        with pytest.raises(ia.InvalidInput, match="empty batch"):
            batcher.submit([])
        assert batcher.stats().submitted == 0


def test_overloaded_when_the_queue_is_full(embed):
    batcher = DynamicBatcher(embed, max_batch_size=4096, max_wait_s=0.0, max_queue=2)
    try:
        slow = batcher.submit(_slow_request())
        _wait_until(lambda: batcher.stats().queued == 0)  # the worker took it and is busy
        waiting = [batcher.submit(TEXTS[0]), batcher.submit(TEXTS[1])]
        with pytest.raises(ia.Overloaded, match="queue is full"):
            batcher.submit(TEXTS[2])
        assert not slow.done(), "the slow request finished too early for this test to mean anything"
        assert len(slow.result(timeout=120).outputs) == 256
        for future in waiting:
            assert len(future.result(timeout=60).outputs) == 1
        assert batcher.stats().rejected == 1
    finally:
        batcher.close()


def test_close_drains_the_queue(embed, singles):
    batcher = DynamicBatcher(embed, max_batch_size=4, max_wait_s=0.01)
    futures = [batcher.submit(text) for text in TEXTS]
    batcher.close()
    assert all(f.done() for f in futures)
    for future, single in zip(futures, singles, strict=True):
        assert _same(future.result().outputs[0], single)
    with pytest.raises(ia.Overloaded, match="closed"):
        batcher.submit(TEXTS[0])


def test_close_without_drain_fails_the_queued(embed):
    batcher = DynamicBatcher(embed, max_batch_size=4096, max_wait_s=0.0)
    slow = batcher.submit(_slow_request())
    _wait_until(lambda: batcher.stats().queued == 0)
    queued = batcher.submit(TEXTS[0])
    batcher.close(drain=False)
    assert len(slow.result(timeout=120).outputs) == 256
    with pytest.raises(ia.Overloaded, match="closed before"):
        queued.result(timeout=1)


def test_endpoint_batched_and_acall(embed, singles):
    with embed.batched(max_batch_size=4, max_wait_s=0.01) as batcher:
        assert isinstance(batcher, DynamicBatcher)
        assert _same(batcher(TEXTS[0]).outputs[0], singles[0])
    result = asyncio.run(embed.acall(TEXTS[1]))
    assert _same(result.outputs[0], singles[1])
    # ep(...) itself is unchanged: no queue fields in its timings.
    assert "queue_s" not in embed(TEXTS[2]).timings


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"max_batch_size": 0}, "max_batch_size must be a positive integer or 'auto'; got 0"),
    ({"max_queue": 0}, "max_queue must be a positive integer; got 0"),
    ({"max_wait_s": -1}, "max_wait_s must be a finite number ≥ 0; got -1"),
    ({"max_wait_s": float("nan")}, "max_wait_s must be a finite number ≥ 0; got nan"),
    ({"max_wait_s": float("inf")}, "max_wait_s must be a finite number ≥ 0; got inf"),
    ({"max_latency_s": float("nan")}, "max_latency_s must be a finite positive number or None; got nan"),
    ({"max_latency_s": 0}, "max_latency_s must be a finite positive number or None; got 0"),
])
def test_bad_batcher_arguments(embed, kwargs, message):
    with pytest.raises(ia.InvalidInput, match=f"^{re.escape(message)}$"):
        DynamicBatcher(embed, start=False, **kwargs)


def test_latency_model_fits_a_line():
    model = LatencyModel(decay=1.0)
    assert model.predict(4) is None
    model.observe(2, 0.012)
    assert model.predict(4) is None  # one batch size says nothing about the slope
    for items, seconds in ((1, 0.011), (4, 0.014), (8, 0.018)):
        model.observe(items, seconds)
    a, b = model.coefficients() or (0.0, 0.0)
    assert a == pytest.approx(0.001, rel=1e-6) and b == pytest.approx(0.010, rel=1e-6)
    assert model.predict(16) == pytest.approx(0.026, rel=1e-6)
