"""A loaded model bound to one task: call it, stream from it, and read what ran."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import re
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from .._exceptions import InvalidInput, OutOfMemory, is_out_of_memory
from .._logs import library_records_demoted
from ..backends.base import Runtime
from ..families.base import Prepared, TaskHandler
from .batcher import DynamicBatcher
from .result import Fallback, Provenance, Result

__all__ = ["PASS_LENGTH_RATIO", "PASS_LENGTH_SLACK", "Endpoint", "LoadReport", "is_out_of_memory", "length_groups",
           "torch_threads"]

# A pass takes items up to this many times the length of its shortest one (at most about a
# quarter of the computed tokens are padding), or up to PASS_LENGTH_SLACK longer: a pass has
# a fixed cost too, and a few tokens of padding cost less than another pass.
PASS_LENGTH_RATIO = 1.25
PASS_LENGTH_SLACK = 32  # characters of text, about 8 tokens
_INPUT_REF = re.compile(r"input #(\d+)")


@contextlib.contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """Limit torch to ``count`` intra-op threads in the calling thread for the block.

    With OpenMP the limit belongs to the calling thread (torch's global default changes for
    the duration too, which a thread starting its first parallel op inside the block would
    inherit). ``None``, or a limit at or above the current count, changes nothing.
    """
    if count is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before <= count:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def length_groups(lengths: Sequence[int], max_size: int) -> list[list[int]]:
    """Item indices in passes of similar length: sorted, a new pass where padding would grow.

    Args:
        lengths: each item's length (``TaskHandler.item_length``; characters of a text).
        max_size: the most items in one pass.

    Returns:
        Lists of indices into ``lengths``, shortest items first; together every index once.
    """
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: list[list[int]] = []
    for index in order:
        current = groups[-1] if groups else None
        if current is None or len(current) >= max_size or lengths[index] > _pass_limit(lengths[current[0]]):
            groups.append([index])
        else:
            current.append(index)
    return groups


def _pass_limit(shortest: int) -> float:
    """The longest item a pass that starts at ``shortest`` takes."""
    return max(PASS_LENGTH_RATIO * shortest, shortest + PASS_LENGTH_SLACK)


def _renumber(notes: Sequence[str], indices: Sequence[int]) -> list[str]:
    """Notes name items by their place in a pass ("input #0"); give the caller's place."""
    return [_INPUT_REF.sub(lambda m: f"input #{indices[int(m.group(1))]}", note) for note in notes]

# Additive task figures and the rate each one gives over a stage's seconds.
_RATES = {
    "new_tokens": ("tokens_per_s", "inference_s"),
    "items": ("items_per_s", "total_s"),
    "audio_seconds": ("realtime_factor", "total_s"),
}
# Additive task figures and the cost per unit each one gives: milliseconds of a stage
# per unit of the figure (the inverse of a rate; per frame reads better for video).
_COSTS = {
    "frames": ("ms_per_frame", "total_s"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadReport:
    """How the load went: seconds per step, and the cold first call (warm-up)."""

    resolve_s: float
    backend_load_s: float
    warmup_s: float
    total_s: float


class Endpoint:
    """A model ready to run one task. Create it with :func:`ipfs_accelerate.load`.

    Attributes:
        task: the task this endpoint runs.
        family: the family that runs it.
        runtime: the loaded backend runtime.
        load_report: seconds spent loading and warming up.
    """

    def __init__(
        self,
        *,
        family: str,
        handler: TaskHandler,
        runtime: Runtime,
        fallbacks: Sequence[Fallback],
        max_batch_size: int,
        load_report: LoadReport | None = None,
        cpu_fallback: Callable[[], Runtime] | None = None,
    ) -> None:
        self.family = family
        self.cpu_fallback = cpu_fallback
        self.task = handler.name
        self.handler = handler
        self.runtime = runtime
        self.fallbacks = tuple(fallbacks)
        self.max_batch_size = max_batch_size
        self.load_report = load_report

    def __repr__(self) -> str:
        w = self.handler.weights
        return (
            f"Endpoint({w.model_id!r}, task={self.task!r}, backend={self.runtime.backend!r}, "
            f"device={self.runtime.device!r}, precision={self.runtime.precision!r}, weights={w.weights!r})"
        )

    def provenance(self, *, batch_size: int, notes: Sequence[str] = ()) -> Provenance:
        """The provenance of a call made with ``batch_size`` items per forward pass."""
        w = self.handler.weights
        details = dict(self.runtime.details)
        return Provenance(
            model_id=w.model_id,
            family=self.family,
            task=self.task,
            backend=self.runtime.backend,
            device=self.runtime.device,
            precision=self.runtime.precision,
            batch_size=batch_size,
            weights=w.weights,
            source=w.source,
            fallbacks=self.fallbacks,
            notes=tuple(dict.fromkeys(notes)),
            runtime=details,
        )

    def parse_params(self, params: dict[str, Any]) -> Any:
        """Validate task parameters (raises InvalidInput)."""
        return self.handler.parse_params(params)

    def __call__(self, inputs: Any, **params: Any) -> Result:
        """Run the task on one input or a list of inputs.

        Args:
            inputs: one input or a list of them (strings, audio, images … per task).
            **params: the task's parameters (see ``ipfs_accelerate.families()``).

        Returns:
            A :class:`Result` with one output per input, in order.

        Raises:
            InvalidInput: an input or parameter is invalid; nothing was run.
            OutOfMemory: the device ran out of memory even for a batch of one.
        """
        parsed = self.handler.parse_params(params)
        items = self.handler.as_items(inputs)
        if not items:
            raise InvalidInput("empty batch: pass at least one input")
        return self.run_items(items, parsed)

    async def acall(self, inputs: Any, **params: Any) -> Result:
        """``await ep.acall(...)``: the same as ``ep(...)``, run in a worker thread.

        Each call runs on its own; for concurrent callers to share batches, use
        :meth:`batched` and ``await batcher.acall(...)``.
        """
        import asyncio

        return await asyncio.to_thread(self.__call__, inputs, **params)

    def batched(
        self,
        *,
        max_batch_size: int | str | None = None,
        max_wait_s: float = 0.005,
        max_queue: int = 1024,
        max_latency_s: float | None = None,
    ) -> DynamicBatcher:
        """A dynamic batcher in front of this endpoint, for many concurrent callers.

        ``ep(...)`` is unchanged; the batcher is opt-in and owned by the caller (close it,
        or use it as a context manager). See :class:`~ipfs_accelerate.engine.batcher.DynamicBatcher`
        for the arguments; ``max_batch_size="auto"`` probes the memory at hand.
        """

        return DynamicBatcher(self, max_batch_size=max_batch_size, max_wait_s=max_wait_s,
                              max_queue=max_queue, max_latency_s=max_latency_s)

    def run_items(self, items: Sequence[Any], params: Any) -> Result:
        """Run already-validated items with parsed params, splitting into batches.

        Tasks whose model pads a batch to its longest item (``handler.pads_to_longest``)
        run a call's items as passes of similar length (:func:`length_groups`): a batch of
        sentences from 8 to 51 tokens would otherwise compute 6.6 tokens for each real one.
        Outputs come back in the caller's order either way.
        """
        totals: dict[str, float] = {"preprocess_s": 0.0, "inference_s": 0.0, "postprocess_s": 0.0}
        figures: dict[str, float] = {}
        outputs: list[Any] = [None] * len(items)
        notes: list[str] = []
        batch = self.max_batch_size
        groups = (length_groups([self.handler.item_length(x) for x in items], batch)
                  if self.handler.pads_to_longest else [list(range(len(items)))])
        largest = 0
        passes: list[int] = []
        started = time.perf_counter()
        for group in groups:
            start = 0
            while start < len(group):
                indices = group[start : start + batch]
                chunk = [items[i] for i in indices]
                try:
                    out, prepared, chunk_times, chunk_figures = self.run_pass(chunk, params)
                except Exception as exc:
                    if not is_out_of_memory(exc):
                        raise
                    if batch == 1:
                        self._move_to_cpu(exc, notes)
                        continue
                    batch = max(1, batch // 2)
                    notes.append(f"out of memory at batch {len(chunk)}; retried at batch {batch}")
                    continue
                for index, output in zip(indices, out, strict=True):
                    outputs[index] = output
                notes.extend(_renumber(prepared.notes, indices))
                largest = max(largest, len(chunk))
                passes.append(len(chunk))
                for key, value in chunk_times.items():
                    totals[key] += value
                for key, value in chunk_figures.items():
                    if key == "time_to_first_token_s":
                        figures.setdefault(key, value)
                    else:
                        figures[key] = figures.get(key, 0.0) + value
                start += len(chunk)
        totals["total_s"] = time.perf_counter() - started
        figures["items"] = float(len(items))
        figures["passes"] = float(len(passes))
        if len(groups) > 1:
            notes.append(f"{len(items)} inputs run as {len(passes)} passes of similar length "
                         f"(sizes {', '.join(map(str, passes))}) to cut padding")
        for key, (rate, over) in _RATES.items():
            if key in figures and totals.get(over, 0.0) > 0:
                figures[rate] = figures[key] / totals[over]
        for key, (cost, over) in _COSTS.items():
            if figures.get(key, 0.0) > 0:
                figures[cost] = 1000.0 * totals[over] / figures[key]
        return Result(
            outputs=outputs,
            provenance=self.provenance(batch_size=largest, notes=notes),
            timings={**totals, **figures},
        )

    def _move_to_cpu(self, exc: BaseException, notes: list[str]) -> None:
        """Out of memory at batch 1 on a GPU: reload on the CPU (recorded), else raise."""
        old = self.runtime
        if not old.device.startswith("cuda") or self.cpu_fallback is None:
            raise OutOfMemory(f"out of memory even at batch size 1 on {old.device}: {exc}") from exc
        self.runtime = self.cpu_fallback()
        self.cpu_fallback = None
        tried = f"{old.backend}/{old.device}/{old.precision}"
        nxt = f"{self.runtime.backend}/{self.runtime.device}/{self.runtime.precision}"
        self.fallbacks = (*self.fallbacks, Fallback(
            stage="device", tried=tried, reason=f"out of memory at batch size 1: {str(exc).splitlines()[0][:200]}",
            next=nxt))
        notes.append(f"{old.device} ran out of memory at batch 1; this endpoint now runs on {nxt}")
        logging.getLogger("ipfs_accelerate").warning("%s ran out of memory; moved to %s", tried, nxt)

    def run_pass(
        self, chunk: Sequence[Any], params: Any
    ) -> tuple[list[Any], Prepared, dict[str, float], dict[str, float]]:
        """Run ``chunk`` as exactly one forward pass: no grouping, splitting or out-of-memory retry.

        :meth:`run_items` is built on it; the batch probe calls it to measure one batch size.

        Returns:
            The outputs (one per item), the prepared inputs, the seconds per stage
            (``preprocess_s``, ``inference_s``, ``postprocess_s``) and the task figures.
        """
        with library_records_demoted():  # quiet by default: library warnings become log records
            t0 = time.perf_counter()
            prepared = self.handler.preprocess(chunk, params)
            t1 = time.perf_counter()
            with self.runtime.lock, torch_threads(self.runtime.host_threads):
                raw = self.handler.forward(self.runtime, prepared, params)
            t2 = time.perf_counter()
            out = self.handler.postprocess(raw, prepared, params)
            t3 = time.perf_counter()
        figures = dict(prepared.figures)
        figures.update(self.handler.figures(raw, prepared, params, t2 - t1))
        times = {"preprocess_s": t1 - t0, "inference_s": t2 - t1, "postprocess_s": t3 - t2}
        return out, prepared, times, figures

    def stream(self, inputs: Any, **params: Any) -> Iterator[str]:
        """Yield the generated text piece by piece (generation tasks, one prompt).

        Raises:
            InvalidInput: the task does not stream, or more than one prompt was given.
        """
        parsed = self.handler.parse_params(params)
        items = self.handler.as_items(inputs)
        if len(items) != 1:
            raise InvalidInput(f"stream takes exactly one input; got {len(items)}")
        with library_records_demoted():
            prepared = self.handler.preprocess(items, parsed)
            return self.handler.stream(self.runtime, prepared, parsed)

    def warmup(self) -> float:
        """Run the task's first example input once (the cold first call); returns its seconds.

        One item is enough to build every kernel and cache; the whole example batch cost a
        vision-language model two minutes here (three 384-px images through the prompt).
        """
        started = time.perf_counter()
        self.run_items(self.handler.example_inputs()[:1], self.handler.warmup_params())
        return time.perf_counter() - started
