"""Dynamic batching: many concurrent callers of one endpoint share forward passes.

A :class:`DynamicBatcher` sits in front of an :class:`~ipfs_accelerate.engine.endpoint.Endpoint`.
Callers ``submit`` (threads), call it (blocking) or ``await acall`` (asyncio); one worker
thread groups the queued requests into batches and returns to each caller its own outputs,
in its own order::

    ep = ia.load("sentence-transformers/all-MiniLM-L6-v2")
    with ep.batched(max_batch_size=32, max_wait_s=0.005) as batcher:
        res = batcher("one sentence")            # from many threads at once
        res = await batcher.acall("another one")  # or from asyncio tasks

How a batch is formed (ideas from the peers):

* The oldest queued request opens a window. Requests with the *same* parameters join it
  (a batch runs with one set of parameters) until ``max_batch_size`` items are gathered or
  the oldest request has waited ``max_wait_s``.
* Like BentoML, the batcher fits ``latency ≈ a·items + b`` online (least squares with
  forgetting) and keeps waiting only while the oldest request's wait plus the predicted
  compute time of a larger batch stays under ``max_latency_s``; when the fit says a batch
  costs no fixed overhead (``b ≤ 0``) waiting cannot pay and it dispatches at once.
* Like infinity, the items of a window are sorted by length (``TaskHandler.item_length``)
  when ``Endpoint.run_items`` splits them into forward passes (for tasks that pad to the
  longest item), so similar lengths pad together; the outputs come back in each caller's
  order.
* Like Triton, each caller's ``Result.timings`` separates ``queue_s`` (waiting) from the
  batch's compute seconds.

Failure isolation: when a batch raises, its requests are retried one by one, so only the
request with the bad input fails (with its own exception); out-of-memory splitting stays in
``Endpoint.run_items``. Backpressure: the queue holds at most ``max_queue`` requests; past
that ``submit`` raises :class:`~ipfs_accelerate.Overloaded` at once (the server answers 429)
instead of letting memory grow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidInput, Overloaded
from .batch_probe import probe_max_batch
from .result import Result

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["BatcherStats", "DynamicBatcher", "LatencyModel"]


class LatencyModel:
    """``latency ≈ a·items + b``, fitted online by weighted least squares.

    Older observations fade (``decay`` per observation) so that the fit follows a model
    whose speed changes (warm caches, other load on the machine).
    """

    def __init__(self, *, decay: float = 0.95) -> None:
        self.decay = decay
        self._w = self._x = self._y = self._xx = self._xy = 0.0
        self.observations = 0

    def observe(self, items: int, seconds: float) -> None:
        """Record that a batch of ``items`` took ``seconds`` of compute."""
        d = self.decay
        x, y = float(items), float(seconds)
        self._w = self._w * d + 1.0
        self._x = self._x * d + x
        self._y = self._y * d + y
        self._xx = self._xx * d + x * x
        self._xy = self._xy * d + x * y
        self.observations += 1

    def coefficients(self) -> tuple[float, float] | None:
        """``(a, b)``, or None until two different batch sizes have been seen."""
        denom = self._w * self._xx - self._x * self._x
        if self._w <= 0 or denom <= 1e-9 * max(1.0, self._w * self._xx):
            return None
        a = (self._w * self._xy - self._x * self._y) / denom
        b = (self._y - a * self._x) / self._w
        return a, b

    def predict(self, items: int) -> float | None:
        """Predicted seconds for a batch of ``items``, or None while unfitted."""
        coef = self.coefficients()
        if coef is None:
            return None
        a, b = coef
        return max(0.0, a * items + b)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BatcherStats:
    """Counters of a batcher since it started.

    Attributes:
        submitted: requests accepted into the queue.
        rejected: requests refused with Overloaded (queue full or closed).
        completed: requests answered with a result.
        failed: requests answered with an exception.
        batches: forward batches run (retries of single requests included).
        batched_items: items run in those batches.
        queued: requests waiting now.
        max_batch_size: the largest number of items gathered into one window.
        latency_a: the fitted seconds per item, when fitted.
        latency_b: the fitted fixed seconds per batch, when fitted.
    """

    submitted: int
    rejected: int
    completed: int
    failed: int
    batches: int
    batched_items: int
    queued: int
    max_batch_size: int
    latency_a: float | None
    latency_b: float | None

    @property
    def mean_batch_items(self) -> float:
        """Average items per batch."""
        return self.batched_items / self.batches if self.batches else 0.0


@dataclasses.dataclass(eq=False)
class _Request:
    items: list[Any]
    params: Any
    future: Future[Result]
    enqueued: float


class DynamicBatcher:
    """Groups concurrent calls to one endpoint into batches (see the module docstring).

    Args:
        endpoint: the endpoint to run; only this batcher's worker calls it.
        max_batch_size: the most items gathered into one window; None takes the
            endpoint's ``max_batch_size``; ``"auto"`` probes the largest batch the memory
            at hand allows (:func:`~ipfs_accelerate.engine.batch_probe.probe_max_batch`,
            cached per model, backend, precision and device). A window larger than the
            endpoint's own ``max_batch_size`` runs as several passes of similar length.
        max_wait_s: the longest the oldest request waits for company before its batch runs.
        max_queue: the most requests waiting; more raise Overloaded.
        max_latency_s: stop waiting once the oldest request's wait plus the predicted
            compute time of a larger batch would exceed this; None: only ``max_wait_s``.
        start: start the worker now (else on the first submit).

    Raises:
        InvalidInput: an argument is out of range.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        max_batch_size: int | str | None = None,
        max_wait_s: float = 0.005,
        max_queue: int = 1024,
        max_latency_s: float | None = None,
        start: bool = True,
    ) -> None:
        if max_batch_size == "auto":
            max_batch_size = probe_max_batch(endpoint)
        if max_batch_size is None:
            max_batch_size = endpoint.max_batch_size
        if isinstance(max_batch_size, bool) or not isinstance(max_batch_size, int) or max_batch_size < 1:
            raise InvalidInput(f"max_batch_size must be a positive integer or 'auto'; got {max_batch_size!r}")
        if isinstance(max_queue, bool) or not isinstance(max_queue, int) or max_queue < 1:
            raise InvalidInput(f"max_queue must be a positive integer; got {max_queue!r}")
        # NaN fails every comparison, so each test is written as "not (valid)".
        if isinstance(max_wait_s, bool) or not isinstance(max_wait_s, (int, float)) \
                or not (0 <= max_wait_s < math.inf):
            raise InvalidInput(f"max_wait_s must be a finite number ≥ 0; got {max_wait_s!r}")
        if max_latency_s is not None and (isinstance(max_latency_s, bool) or not isinstance(max_latency_s, (int, float))
                                          or not (0 < max_latency_s < math.inf)):
            raise InvalidInput(f"max_latency_s must be a finite positive number or None; got {max_latency_s!r}")
        self.endpoint = endpoint
        self.max_batch_size = max_batch_size
        self.max_wait_s = float(max_wait_s)
        self.max_queue = max_queue
        self.max_latency_s = None if max_latency_s is None else float(max_latency_s)
        self.latency = LatencyModel()
        self._queue: deque[_Request] = deque()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None
        self._counts = {"submitted": 0, "rejected": 0, "completed": 0, "failed": 0, "batches": 0,
                        "batched_items": 0, "max_window": 0}
        if start:
            self._ensure_worker()

    def __repr__(self) -> str:
        return (f"DynamicBatcher({self.endpoint!r}, max_batch_size={self.max_batch_size}, "
                f"max_wait_s={self.max_wait_s}, max_queue={self.max_queue})")

    # -- callers -----------------------------------------------------------------------

    def submit(self, inputs: Any, **params: Any) -> Future[Result]:
        """Queue one call; its future resolves to the caller's own :class:`Result`.

        Inputs and parameters are validated here, in the caller's thread, so a malformed
        call fails at once and never takes a queue slot.

        Raises:
            InvalidInput: bad parameters or an empty batch.
            Overloaded: the queue is full, or the batcher is closed.
        """
        parsed = self.endpoint.parse_params(params)
        items = self.endpoint.handler.as_items(inputs)
        if not items:
            raise InvalidInput("empty batch: pass at least one input")
        future: Future[Result] = Future()
        request = _Request(items=items, params=parsed, future=future, enqueued=time.perf_counter())
        with self._cond:
            if self._closed:
                self._counts["rejected"] += 1
                raise Overloaded("the batcher is closed; it takes no new requests")
            if len(self._queue) >= self.max_queue:
                self._counts["rejected"] += 1
                raise Overloaded(
                    f"the request queue is full ({self.max_queue} waiting); retry later"
                )
            self._queue.append(request)
            self._counts["submitted"] += 1
            self._cond.notify_all()
        self._ensure_worker()
        return future

    def __call__(self, inputs: Any, **params: Any) -> Result:
        """Submit and wait: the blocking form of :meth:`submit`."""
        return self.submit(inputs, **params).result()

    async def acall(self, inputs: Any, **params: Any) -> Result:
        """Submit and await, for asyncio callers (Overloaded is raised before awaiting)."""
        return await asyncio.wrap_future(self.submit(inputs, **params))

    # -- life cycle ----------------------------------------------------------------------

    def close(self, *, drain: bool = True, timeout: float | None = None) -> None:
        """Stop taking requests and stop the worker.

        Args:
            drain: run every queued request first (default); False fails them with
                Overloaded instead.
            timeout: the longest to wait for the worker, in seconds.
        """
        with self._cond:
            self._closed = True
            dropped: list[_Request] = []
            if not drain:
                dropped = list(self._queue)
                self._queue.clear()
            self._cond.notify_all()
        for request in dropped:
            if request.future.set_running_or_notify_cancel():
                request.future.set_exception(Overloaded("the batcher was closed before this request ran"))
                self._count("failed")
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def closed(self) -> bool:
        return self._closed

    def __enter__(self) -> DynamicBatcher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> BatcherStats:
        """A snapshot of the counters."""
        coef = self.latency.coefficients()
        with self._cond:
            c = dict(self._counts)
            queued = len(self._queue)
        return BatcherStats(
            submitted=c["submitted"], rejected=c["rejected"], completed=c["completed"], failed=c["failed"],
            batches=c["batches"], batched_items=c["batched_items"], queued=queued,
            max_batch_size=c["max_window"],
            latency_a=coef[0] if coef else None, latency_b=coef[1] if coef else None,
        )

    # -- the worker ----------------------------------------------------------------------

    def _ensure_worker(self) -> None:
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._work, name="ipfs-accelerate-batcher", daemon=True)
                self._thread.start()

    def _count(self, key: str, n: int = 1) -> None:
        with self._cond:
            self._counts[key] += n

    def _work(self) -> None:
        while True:
            batch = self._next_batch()
            if batch is None:
                return
            self._execute(batch)

    def _next_batch(self) -> list[_Request] | None:
        """Wait for a window to close and take its requests off the queue."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            while True:
                if not self._queue:  # close(drain=False) emptied it while we waited
                    return []
                head = self._queue[0]
                chosen = self._gather(head)
                n = sum(len(r.items) for r in chosen)
                waited = time.perf_counter() - head.enqueued
                remaining = self._wait_more(n, waited)
                if remaining <= 0 or self._closed:
                    break
                self._cond.wait(remaining)
            for request in chosen:
                self._queue.remove(request)
            self._counts["max_window"] = max(self._counts["max_window"], n)
        # A caller may have cancelled its future while it waited: skip it.
        return [r for r in chosen if r.future.set_running_or_notify_cancel()]

    def _gather(self, head: _Request) -> list[_Request]:
        """The oldest request and the queued ones with equal params, up to the batch size."""
        chosen = [head]
        n = len(head.items)
        for request in list(self._queue)[1:]:
            if n >= self.max_batch_size:
                break
            if request.params == head.params and n + len(request.items) <= self.max_batch_size:
                chosen.append(request)
                n += len(request.items)
        return chosen

    def _wait_more(self, n: int, waited: float) -> float:
        """Seconds worth waiting for more requests; ≤ 0 dispatches now."""
        if n >= self.max_batch_size:
            return 0.0
        remaining = self.max_wait_s - waited
        if remaining <= 0:
            return 0.0
        coef = self.latency.coefficients()
        if coef is not None and self.latency.observations >= 4 and coef[1] <= 0:
            return 0.0  # no fixed cost per batch: waiting for company cannot pay
        if self.max_latency_s is not None:
            predicted = self.latency.predict(n + 1)
            if predicted is not None:
                remaining = min(remaining, self.max_latency_s - predicted - waited)
        return remaining

    def _execute(self, batch: Sequence[_Request]) -> None:
        if not batch:
            return
        params = batch[0].params
        flat = [(r_index, item) for r_index, request in enumerate(batch) for item in request.items]
        started = time.perf_counter()
        try:
            # run_items groups the items by length itself and returns outputs in this order.
            result = self.endpoint.run_items([item for _, item in flat], params)
        except Exception as exc:  # noqa: BLE001 - isolated below: each request is retried alone
            self._count("batches")
            self._count("batched_items", len(flat))
            if len(batch) == 1:
                self._fail(batch[0], exc)
            else:
                self._retry_alone(batch)
            return
        compute_s = time.perf_counter() - started
        self.latency.observe(len(flat), compute_s)
        self._count("batches")
        self._count("batched_items", len(flat))
        per_request: list[list[Any]] = [[] for _ in batch]
        for (r_index, _), output in zip(flat, result.outputs, strict=True):
            per_request[r_index].append(output)
        for r_index, request in enumerate(batch):
            self._succeed(request, result, per_request[r_index], started, compute_s,
                          batch_items=len(flat), batch_requests=len(batch))

    def _retry_alone(self, batch: Sequence[_Request]) -> None:
        for request in batch:
            started = time.perf_counter()
            try:
                result = self.endpoint.run_items(request.items, request.params)
            except Exception as exc:  # noqa: BLE001 - goes to its own caller
                self._fail(request, exc)
                continue
            compute_s = time.perf_counter() - started
            self.latency.observe(len(request.items), compute_s)
            self._count("batches")
            self._count("batched_items", len(request.items))
            self._succeed(request, result, list(result.outputs), started, compute_s,
                          batch_items=len(request.items), batch_requests=1)

    def _succeed(
        self, request: _Request, result: Result, outputs: list[Any], started: float, compute_s: float,
        *, batch_items: int, batch_requests: int,
    ) -> None:
        queue_s = max(0.0, started - request.enqueued)
        timings = dict(result.timings)
        # Stage seconds and rates are the shared batch's; these say what this caller saw.
        timings.update(
            items=float(len(request.items)),
            queue_s=queue_s,
            compute_s=compute_s,
            latency_s=queue_s + compute_s,
            batch_items=float(batch_items),
            batch_requests=float(batch_requests),
        )
        request.future.set_result(dataclasses.replace(result, outputs=outputs, timings=timings))
        self._count("completed")

    def _fail(self, request: _Request, exc: BaseException) -> None:
        request.future.set_exception(exc)
        self._count("failed")

