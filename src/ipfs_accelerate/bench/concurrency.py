"""The concurrency test: many callers at once on one endpoint, through the dynamic batcher.

It runs on a text embedding case that ran (single sentences are its natural traffic; real
weights first): ``callers`` threads each submit one sentence at once, for ``rounds`` timed
rounds after one that warms the threads and the batcher. The same sentences one call at a
time, on our endpoint and on the plain transformers baseline, alternating, give the figures
it is set against.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._types import backend_choice, precision_choice
from ..engine.batcher import DynamicBatcher
from ..engine.choice import resolve_device
from ..engine.loader import load
from ..families.bench_profile import bench_profile
from .baselines import plain_baseline
from .results import CaseResult, ConcurrencyResult
from .stats import Latency

__all__ = ["concurrency_case", "run_concurrency"]


def concurrency_case(results: Sequence[CaseResult]) -> CaseResult | None:
    """The case the concurrency test runs on: text embeddings, real weights first."""
    ran = [r for r in results if r.kind == "feature-extraction" and r.measurements and r.input_type == "str"]
    return next((r for r in ran if r.weights == "pretrained"), ran[0] if ran else None)


def run_concurrency(chosen: CaseResult, *, callers: int, rounds: int, cache_dir: Path | None) -> ConcurrencyResult:
    """Run the test on the model of ``chosen`` (see the module docstring).

    Args:
        chosen: the case whose model, task, backend and precision run (:func:`concurrency_case`).
        callers: concurrent callers, one sentence each.
        rounds: timed rounds (at least one).
        cache_dir: where synthetic models and exports are kept (None: the default cache).
    """
    case = chosen.case
    # The backend and precision the case really ran (recorded as plain strings), else what it asked.
    backend = backend_choice(chosen.backend or case.backend)
    precision = precision_choice(chosen.precision or case.precision)
    endpoint = load(case.model_id, case.task, backend=backend, precision=precision, device=case.device, weights=case.weights,
                    family=case.family, config_overrides=case.config_overrides, cache_dir=cache_dir)
    handler = endpoint.handler
    profile = bench_profile(handler)
    call_params = {**profile.params(), **case.params}
    params = endpoint.parse_params(call_params)
    texts = profile.inputs(callers)
    rounds = max(1, rounds)
    plain_run = plain_baseline(handler).load(resolve_device(case.device))
    plain_run(texts[:1], params)

    def one_by_one(run: Callable[[list[Any], Any], Any]) -> float:
        started = time.perf_counter()
        for text in texts:
            run([text], params)
        return callers / (time.perf_counter() - started)

    # As many rounds as the batched side, alternating, and the median of each: a single
    # pass is short and noisy (docs/benchmark.md gives the spread one pass showed).
    ours_rates, plain_rates = [], []
    for _ in range(rounds):
        ours_rates.append(one_by_one(endpoint.run_items))
        plain_rates.append(one_by_one(plain_run))
    ours_obo, plain_obo = statistics.median(ours_rates), statistics.median(plain_rates)
    del plain_run
    walls: list[float] = []
    latencies: list[float] = []
    queues: list[float] = []
    with DynamicBatcher(endpoint, max_batch_size=callers, max_wait_s=0.01, max_queue=max(4 * callers, 64)) as b, \
            ThreadPoolExecutor(max_workers=callers, thread_name_prefix="bench-caller") as pool:
        gate = threading.Barrier(callers + 1)

        def caller(text: str) -> Any:
            gate.wait()
            return b(text, **call_params)

        for round_index in range(rounds + 1):  # round 0 warms the threads and the batcher
            futures = [pool.submit(caller, t) for t in texts]
            gate.wait()
            t0 = time.perf_counter()
            results = [f.result() for f in futures]
            wall = time.perf_counter() - t0
            if round_index:
                walls.append(wall)
                latencies += [r.timings["latency_s"] for r in results]
                queues += [r.timings["queue_s"] for r in results]
        stats = b.stats()
    median_wall = statistics.median(walls)
    items_per_s = callers / median_wall
    return ConcurrencyResult(
        status="ok", model_id=case.model_id, task=chosen.task, backend=endpoint.runtime.backend,
        precision=endpoint.runtime.precision, weights=chosen.weights, callers=callers, rounds=rounds,
        round_seconds=Latency.from_samples(walls), items_per_s=items_per_s,
        request_latency=Latency.from_samples(latencies), mean_queue_s=float(np.mean(queues)),
        mean_batch_items=stats.mean_batch_items, ours_one_by_one_items_per_s=ours_obo,
        plain_one_by_one_items_per_s=plain_obo, ratio_vs_plain=items_per_s / plain_obo,
    )
