"""The concurrency test: many callers at once on one endpoint, through the dynamic batcher.

It runs on a text embedding case that ran (single sentences are its natural traffic; real
weights first): ``callers`` threads each submit one sentence at once, for ``rounds`` timed
rounds after one that warms the threads and the batcher. The same sentences one call at a
time, on our endpoint and on the plain transformers baseline, give the figures it is set
against: each round times all three back to back, the order alternating between rounds, and
the ratio is the median of the rounds' own ratios (batched ÷ plain one by one).
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
from .stats import Latency, PairedRatios

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

    walls: list[float] = []
    latencies: list[float] = []
    queues: list[float] = []
    ours_rates: list[float] = []
    plain_rates: list[float] = []
    with DynamicBatcher(endpoint, max_batch_size=callers, max_wait_s=0.01, max_queue=max(4 * callers, 64)) as b, \
            ThreadPoolExecutor(max_workers=callers, thread_name_prefix="bench-caller") as pool:
        gate = threading.Barrier(callers + 1)

        def caller(text: str) -> Any:
            gate.wait()
            return b(text, **call_params)

        def batched() -> tuple[float, list[Any]]:
            """All callers at once: the wall seconds until the last answer, and the results."""
            futures = [pool.submit(caller, t) for t in texts]
            gate.wait()
            t0 = time.perf_counter()
            results = [f.result() for f in futures]
            return time.perf_counter() - t0, results

        batched()  # warms the threads and the batcher
        # Each round times the batched callers and both one-by-one passes back to back, the
        # order alternating, so that its ratio compares them at one state of a shared machine
        # (docs/benchmark.md, "Spread"); the target reads the median of the rounds' ratios.
        for round_index in range(rounds):
            order = ("batched", "ours", "plain") if round_index % 2 == 0 else ("plain", "ours", "batched")
            for side in order:
                if side == "batched":
                    wall, results = batched()
                    walls.append(wall)
                    latencies.extend(r.timings["latency_s"] for r in results)
                    queues.extend(r.timings["queue_s"] for r in results)
                elif side == "ours":
                    ours_rates.append(one_by_one(endpoint.run_items))
                else:
                    plain_rates.append(one_by_one(plain_run))
        stats = b.stats()
    del plain_run
    paired = PairedRatios.from_rates([callers / wall for wall in walls], plain_rates)
    items_per_s = callers / statistics.median(walls)
    return ConcurrencyResult(
        status="ok", model_id=case.model_id, task=chosen.task, backend=endpoint.runtime.backend,
        precision=endpoint.runtime.precision, weights=chosen.weights, callers=callers, rounds=rounds,
        round_seconds=Latency.from_samples(walls), items_per_s=items_per_s,
        request_latency=Latency.from_samples(latencies), mean_queue_s=float(np.mean(queues)),
        mean_batch_items=stats.mean_batch_items, ours_one_by_one_items_per_s=statistics.median(ours_rates),
        plain_one_by_one_items_per_s=statistics.median(plain_rates), ratio_vs_plain=paired.median, paired=paired,
    )
