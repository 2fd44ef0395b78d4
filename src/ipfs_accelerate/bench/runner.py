"""Run a scenario: load each case, measure it at each batch size, measure the baselines.

First, a preparation phase: import torch and transformers, measure the machine's peaks,
and resolve the weights of every model the cases use (building synthetic weights that are
not cached yet, which takes minutes for a multi-billion-parameter model). Its seconds are
reported apart from the measurements'. The time budget covers the whole run, preparation
included, so that a first run on a fresh machine ends in about the same time as a later
one: it measures less, and the report lists what the budget cut.

Then per case and batch size, in one process:

1. load (``load(..., warmup=False)``: the load time and the RSS it adds are measured);
2. the cold first call (first batch size only), then ``warmup_runs`` untimed calls;
3. timed calls until both ``min_runs`` and ``min_seconds`` hold (or a cap from the time
   budget or ``max_seconds`` stops them; the report lists every cut). Each call is timed
   end to end (preprocess, forward, postprocess), synchronised on CUDA;
4. throughput in the unit that fits the task, from ``Result.timings``: ``x realtime`` when
   the task reports ``audio_seconds``, ``ms/frame`` for ``frames``, ``tokens/s`` (with the
   time to first token) for ``new_tokens``, else ``items/s``;
5. peak memory: process RSS growth sampled in a thread (CUDA: ``max_memory_allocated``);
6. the share of the machine's measured fp32 peak and memory bandwidth the figure reaches;
7. where the inputs have a known expected text (``Case.references``, else the handler's
   ``bench_references``), the word error rate of the outputs against it, for ours and for
   every baseline on the same inputs.

Then the baselines of the case's model (once per model and batch size, on the same inputs
and parameters), and once, after the first tier of cases, the concurrency test.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import struct
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from .._logs import one_line
from ..engine.batch_probe import CudaPeak, PeakRSS, release_freed_memory, rss_bytes
from ..engine.batcher import DynamicBatcher
from ..engine.choice import resolve_device
from ..engine.options import default_cache_dir
from ..engine.result import to_jsonable
from ..families.base import Baseline, BaselineRun, TaskHandler
from ..store.weights import parameter_counts
from .baselines import all_baselines, library_version, score_agreement
from .machine import MachineFacts, machine_facts
from .progress import Progress
from .scenario import Case, Scenario
from .stats import Latency

__all__ = [
    "BaselineResult",
    "BenchRun",
    "CaseResult",
    "Comparison",
    "ConcurrencyResult",
    "Measurement",
    "Preparation",
    "PreparedWeights",
    "Throughput",
    "run_scenario",
]

_BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0}
# Rates (higher is better) a measurement can have, by the task figure they come from.
_PER_CALL = ("items", "new_tokens", "prompt_tokens", "audio_seconds", "frames")
_INPUT_FIGURES = ("audio_seconds", "frames")
# Kept back from the budget for the report, and so that a last long call ends near the budget.
_RESERVE_FRACTION = 0.03
_RESERVE_MIN_S = 5.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Throughput:
    """The task's throughput figure.

    Attributes:
        unit: ``"items/s"``, ``"tokens/s"``, ``"x realtime"`` or ``"ms/frame"``.
        value: the figure in that unit.
        higher_is_better: False for ``ms/frame``.
        rate_unit: the higher-is-better unit ratios are taken in (``frames/s`` for ``ms/frame``).
    """

    unit: str
    value: float
    higher_is_better: bool = True
    rate_unit: str = ""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Measurement:
    """One batch size of one case (or baseline).

    Attributes:
        batch_size: inputs per call.
        runs: timed calls.
        seconds: wall seconds of the timed calls.
        latency: seconds per call.
        throughput: the task's figure.
        rates: every rate measured (``items/s``, ``tokens/s``, ``x realtime``, ``frames/s``).
        figures: per-call means of the task figures (``new_tokens``, ``audio_seconds`` …) and
            the median ``time_to_first_token_s`` for generation.
        peak_rss_mb: peak process RSS during the calls above the RSS before them, MiB.
        cuda_max_allocated_mb: the same on CUDA (``max_memory_allocated``), else None.
        cold_first_call_s: the first call after loading, when this measurement made it.
        warmup_runs: untimed calls before the timed ones.
        min_runs: the runs asked for.
        min_seconds: the seconds asked for, after the time budget scaled them.
        cut: what was cut, in words (empty when nothing was).
        efficiency: ``weight_bytes``, ``gflops``, ``fraction_of_fp32_peak``,
            ``fraction_of_bandwidth`` (or, when generating, ``bandwidth_bound_tokens_per_s``
            and ``fraction_of_bandwidth_bound``), where they can be computed.
        wer: the word error rate of the last timed call's outputs against the expected
            text of the inputs (all word edits over all reference words, normalised text);
            None when the inputs have no expected text or the outputs are not texts.
    """

    batch_size: int
    runs: int
    seconds: float
    latency: Latency
    throughput: Throughput
    rates: dict[str, float]
    figures: dict[str, float]
    peak_rss_mb: float
    cuda_max_allocated_mb: float | None
    cold_first_call_s: float | None
    warmup_runs: int
    min_runs: int
    min_seconds: float
    cut: tuple[str, ...] = ()
    efficiency: dict[str, float] = dataclasses.field(default_factory=dict)
    wer: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class CaseResult:
    """A case's outcome: what really ran, its load, and one measurement per batch size.

    Attributes:
        case: the case as asked for.
        status: ``"ok"``, ``"fallback"`` (ran, but not as asked: see ``fallbacks``),
            ``"failed"`` (``reason``) or ``"skipped"`` (``reason``: the time budget).
        reason: why it failed or was skipped.
        family: the family that ran it.
        task: the task that ran.
        kind: the task's kind.
        backend: the backend that really ran.
        precision: the precision that really ran.
        device: the device that really ran.
        weights: ``"pretrained"`` or ``"synthetic"``.
        source: where the weights came from.
        fallbacks: what was tried first and given up, with the reasons.
        notes: the provenance notes and anything else worth knowing.
        load: load seconds (``total_s``, ``resolve_s``, ``backend_load_s``) and ``rss_mb``.
        model_params: parameters in the model's safetensors files.
        input_type: the Python type of the benchmark inputs (``str``, ``ndarray``, ``Image`` …).
        measurements: one per batch size that ran.
        runtime: the backend's facts about what ran (``Provenance.runtime``: execution
            providers or devices, export and quantization recipe, int8 gate cosine, fusion …).
    """

    case: Case
    status: str
    reason: str = ""
    family: str | None = None
    task: str | None = None
    kind: str | None = None
    backend: str | None = None
    precision: str | None = None
    device: str | None = None
    weights: str | None = None
    source: str | None = None
    fallbacks: tuple[dict[str, str], ...] = ()
    notes: tuple[str, ...] = ()
    load: dict[str, float] | None = None
    model_params: int | None = None
    input_type: str = ""
    measurements: tuple[Measurement, ...] = ()
    runtime: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def case_id(self) -> str:
        return self.case.case_id


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineResult:
    """A baseline of one model and task, measured at the batch sizes its cases used.

    Attributes:
        baseline_id: ``model_key#name``.
        model_id: the model.
        task: the task.
        role: ``"plain"`` (transformers fp32, chosen by kind) or ``"reference"`` (declared
            by the family).
        name: e.g. ``"transformers generate"``.
        library: the distribution it measures, and ``version`` its installed version.
        precision: the precision it runs in.
        device: where it ran.
        note: how it is built.
        status: ``"ok"`` or ``"failed"`` (``reason``).
        load_s: its load seconds.
        measurements: one per batch size.
    """

    baseline_id: str
    model_id: str
    task: str | None
    role: str
    name: str
    library: str
    version: str | None
    precision: str
    device: str
    note: str
    status: str
    reason: str = ""
    load_s: float | None = None
    measurements: tuple[Measurement, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Comparison:
    """Our figure against one baseline's, same model, inputs and batch size.

    Attributes:
        case_id: our case.
        batch_size: the batch size.
        baseline_id: the baseline.
        baseline_name: its name; ``role`` plain or reference.
        unit: the rate compared (higher is better).
        ours: our rate.
        theirs: the baseline's rate.
        ratio: ``ours / theirs`` (> 1: we are faster).
        agreement: how close the outputs are: ``{"metric": "cosine", "min": …, "mean": …}``
            for vectors, ``{"metric": "exact_match", "value": …}`` for texts, else None.
    """

    case_id: str
    batch_size: int
    baseline_id: str
    baseline_name: str
    role: str
    unit: str
    ours: float
    theirs: float
    ratio: float
    agreement: dict[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class ConcurrencyResult:
    """Many callers at once on one endpoint, through the dynamic batcher.

    Attributes:
        status: ``"ok"``, ``"failed"`` or ``"skipped"`` (``reason``).
        model_id: the model; task, backend, precision, weights: what ran.
        callers: concurrent callers, one input each.
        rounds: timed rounds.
        round_seconds: wall seconds per round (all callers answered).
        items_per_s: callers ÷ the median round.
        request_latency: each request's seconds from submit to result.
        mean_queue_s: the mean seconds a request waited in the queue.
        mean_batch_items: items per batch the batcher formed.
        ours_one_by_one_items_per_s: the same inputs one call at a time on our endpoint (the
            median over ``rounds`` passes, alternating with the plain baseline's).
        plain_one_by_one_items_per_s: … with the plain transformers baseline.
        ratio_vs_plain: ``items_per_s ÷ plain_one_by_one_items_per_s``.
    """

    status: str
    reason: str = ""
    model_id: str | None = None
    task: str | None = None
    backend: str | None = None
    precision: str | None = None
    weights: str | None = None
    callers: int = 0
    rounds: int = 0
    round_seconds: Latency | None = None
    items_per_s: float | None = None
    request_latency: Latency | None = None
    mean_queue_s: float | None = None
    mean_batch_items: float | None = None
    ours_one_by_one_items_per_s: float | None = None
    plain_one_by_one_items_per_s: float | None = None
    ratio_vs_plain: float | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class PreparedWeights:
    """The weights of one model, resolved (and built when synthetic) before the budget starts.

    Attributes:
        model_id: the model as the cases name it; ``weights`` (as asked) and
            ``config_overrides`` as the cases give them.
        family: the family that resolved it (as the cases give it when that failed).
        status: ``"ok"`` or ``"failed"`` (``reason``; the cases of the model then fail
            to load with the same error, reported with them).
        resolved: ``"pretrained"`` or ``"synthetic"``, as found.
        source: where the weights came from (``package:…``, ``synthetic:…`` …).
        built: synthetic weights were built now rather than found in the cache.
        seconds: wall seconds the resolution (and any build) took.
    """

    model_id: str
    family: str | None
    weights: str
    config_overrides: dict[str, Any]
    status: str
    reason: str = ""
    resolved: str | None = None
    source: str | None = None
    built: bool = False
    seconds: float = 0.0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Preparation:
    """What ran before the time budget's clock started, and how long it took.

    Attributes:
        seconds: wall seconds of the whole preparation.
        import_s: importing torch and transformers.
        machine_s: measuring the machine (fp32 peak, memory bandwidth, backends).
        weights_s: resolving and building weights, all models together.
        weights: one entry per distinct model of the scenario.
    """

    seconds: float
    import_s: float
    machine_s: float
    weights_s: float
    weights: tuple[PreparedWeights, ...] = ()


@dataclasses.dataclass(frozen=True, kw_only=True)
class BenchRun:
    """Everything one benchmark run measured, with its provenance.

    Attributes:
        scenario: what was asked for.
        machine: where it ran, with the measured peaks.
        started_at: ISO time of the start.
        duration_s: wall seconds of the whole run (the time budget's clock), the
            preparation included.
        import_s: seconds importing torch and transformers (kept out of load times).
        cases: one result per case, in run order.
        baselines: every baseline measured.
        comparisons: our figures against the baselines'.
        concurrency: the concurrency test, when asked for.
        cuts: what the time budget (or a cap) cut, in words.
        notes: run-wide notes.
        preparation: what ran before the budget's clock started (None: nothing did).
    """

    scenario: Scenario
    machine: MachineFacts
    started_at: str
    duration_s: float
    import_s: float
    cases: tuple[CaseResult, ...]
    baselines: tuple[BaselineResult, ...]
    comparisons: tuple[Comparison, ...]
    concurrency: ConcurrencyResult | None
    cuts: tuple[str, ...]
    notes: tuple[str, ...]
    preparation: Preparation | None = None


# -- helpers ---------------------------------------------------------------------------


def agreement(ours: Sequence[Any], theirs: Sequence[Any]) -> dict[str, Any] | None:
    """Cosine similarity for vectors; for texts the exact-match rate and the mean word error
    rate of ours against theirs; for scored candidates (labels, tokens) ``score_agreement``;
    None otherwise. Outputs with a ``text`` (transcripts) count as texts."""
    if not ours or len(ours) != len(theirs):
        return None
    scored = score_agreement(ours, theirs)  # classifier labels, fill-mask tokens
    if scored is not None:
        return scored
    ours = [_as_text(o) for o in ours]
    theirs = [_as_text(t) for t in theirs]
    if all(isinstance(o, str) for o in ours) and all(isinstance(t, str) for t in theirs):
        from .quality import word_error_rate

        same = sum(o.strip() == t.strip() for o, t in zip(ours, theirs, strict=True))
        wers = [word_error_rate(t, o) for o, t in zip(ours, theirs, strict=True) if t.strip()]
        out: dict[str, Any] = {"metric": "exact_match", "value": same / len(ours)}
        if wers:
            out["wer_vs_baseline"] = float(np.mean(wers))
        return out
    try:
        a = [np.asarray(o, dtype=np.float64).ravel() for o in ours]
        b = [np.asarray(t, dtype=np.float64).ravel() for t in theirs]
    except (TypeError, ValueError):
        return None
    if any(x.shape != y.shape or x.size == 0 for x, y in zip(a, b, strict=True)):
        return None
    cos = [float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y) + 1e-12)) for x, y in zip(a, b, strict=True)]
    return {"metric": "cosine", "min": min(cos), "mean": float(np.mean(cos))}


def _as_text(output: Any) -> Any:
    text = getattr(output, "text", None)
    return text if isinstance(text, str) else output


def encoder_tokens(inputs: Mapping[str, Any]) -> int:
    """The tokens an encoder call really computes: the attention mask's ones, else every id.

    Padding is left out: the endpoint sorts a batch by length and runs it in sub-batches
    that pad little, so counting the whole batch padded to its longest input overstated
    the work (real MiniLM, 32 benchmark sentences: 544 tokens, 1,728 padded, which read as
    217 % of the fp32 peak). 0 when the inputs hold no token ids.
    """
    mask, ids = inputs.get("attention_mask"), inputs.get("input_ids")
    if mask is not None and hasattr(mask, "sum"):
        return int(mask.sum())
    return int(ids.numel()) if ids is not None and hasattr(ids, "numel") else 0


def output_wer(outputs: Sequence[Any], references: Sequence[str] | None) -> float | None:
    """The word error rate of ``outputs`` (texts, or objects with a ``text``) against
    ``references``, pooled over all items; None when there is nothing to compare."""
    if not references or len(outputs) != len(references):
        return None
    texts = [_as_text(o) for o in outputs]
    if not all(isinstance(t, str) for t in texts):
        return None
    from .quality import corpus_word_error_rate

    return corpus_word_error_rate(list(references), texts)


def _weights_key(case: Case) -> str:
    """Cases with the same key load the same weights."""
    overrides = json.dumps(dict(case.config_overrides or {}), sort_keys=True, default=str)
    return f"{case.model_id}|{case.weights}|{case.family or ''}|{overrides}"


def _references(case: Case, handler: TaskHandler, n: int) -> list[str] | None:
    """The expected text of the case's ``n`` inputs: the case's own, else the handler's
    (only for the handler's own bench inputs, which its references describe)."""
    if case.references is not None:
        return list(case.references(handler, n))
    if case.inputs is not None:
        return None
    refs = handler.bench_references(n)
    return list(refs) if refs is not None else None


def _warm_imports() -> float:
    started = time.perf_counter()
    import torch  # noqa: F401
    import transformers.generation.utils
    import transformers.models.auto.modeling_auto
    import transformers.models.auto.tokenization_auto  # noqa: F401

    from ..families import all_families

    all_families()
    return time.perf_counter() - started


def _throughput(rates: dict[str, float], figures: dict[str, float]) -> Throughput:
    if "x realtime" in rates:
        return Throughput(unit="x realtime", value=rates["x realtime"], rate_unit="x realtime")
    if "frames/s" in rates:
        ms = 1000.0 / rates["frames/s"] if rates["frames/s"] > 0 else float("inf")
        return Throughput(unit="ms/frame", value=ms, higher_is_better=False, rate_unit="frames/s")
    if "tokens/s" in rates:
        return Throughput(unit="tokens/s", value=rates["tokens/s"], rate_unit="tokens/s")
    return Throughput(unit="items/s", value=rates["items/s"], rate_unit="items/s")


class _Clock:
    """The run's time budget."""

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        if self.budget_s is None:
            return float("inf")
        reserve = max(_RESERVE_MIN_S, _RESERVE_FRACTION * self.budget_s)
        return self.budget_s - reserve - self.elapsed

    def allowance(self, units_left: int) -> float:
        """Seconds one remaining measurement may take (loads and warm-ups included)."""
        return self.remaining() / max(units_left, 1)


@dataclasses.dataclass
class _BaselineRecord:
    baseline: Baseline
    role: str
    model_id: str
    task: str | None
    device: str
    status: str = "ok"
    reason: str = ""
    load_s: float | None = None
    measurements: list[Measurement] = dataclasses.field(default_factory=list)
    run: Callable[[Sequence[Any], Any], BaselineRun] | None = None


# -- the runner ------------------------------------------------------------------------


class BenchRunner:
    """Runs one scenario; see :func:`run_scenario`."""

    def __init__(self, scenario: Scenario, *, cache_dir: Path | None = None, progress: Progress | None = None,
                 machine: MachineFacts | None = None) -> None:
        self.scenario = scenario
        self.cache_dir = cache_dir
        self.progress = progress or Progress(enabled=False)
        self.machine = machine
        self.clock = _Clock(scenario.budget_s)
        self.cuts: list[str] = []
        self.notes: list[str] = []
        self.results: list[CaseResult] = []
        self.baselines: dict[str, _BaselineRecord] = {}
        self.ours_outputs: dict[tuple[str, int], Sequence[Any]] = {}
        self.base_outputs: dict[tuple[str, int], Sequence[Any]] = {}
        self.input_figures: dict[tuple[str, int], dict[str, float]] = {}
        # The expected text of each model's inputs per batch size, for the baselines' WER.
        self.references: dict[tuple[str, int], list[str] | None] = {}
        self.baselined: set[tuple[str, int]] = set()
        self._ours_p50: dict[tuple[str, int], float] = {}
        self.concurrency: ConcurrencyResult | None = None

    # units of work left, for the budget's per-measurement allowance
    def _units_left(self, remaining: Sequence[Case], current_left: int = 0) -> int:
        units = current_left
        keys: set[tuple[str, int]] = set()
        for case in remaining:
            units += len(case.batch_sizes)
            if self.scenario.baselines:
                keys |= {(case.model_key, b) for b in case.batch_sizes}
        units += len(keys - self.baselined)
        if self.scenario.concurrency and self.concurrency is None:
            units += 3
        return units

    def run(self) -> BenchRun:
        started_at = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        preparation = self._prepare()
        import_s = preparation.import_s
        machine = self.machine
        assert machine is not None
        # The budget's clock started with the run: the preparation is part of it, so that
        # `make report` ends in about its budget on a fresh machine too (a first run builds
        # synthetic weights and exports, and measures less; the report lists the cuts).
        cases = self.scenario.ordered()
        steps = sum(len(c.batch_sizes) for c in cases) + (1 if self.scenario.concurrency else 0)
        self.progress.add(steps)
        first_tier = cases[0].priority if cases else 0
        for index, case in enumerate(cases):
            if self.scenario.concurrency and self.concurrency is None and case.priority > first_tier \
                    and self._concurrency_case() is not None:
                self._concurrency_step()
            result = self._run_case(case, cases[index + 1:])
            self.results.append(result)
            release_freed_memory()
            if self.scenario.concurrency and self.concurrency is None and self._concurrency_case() is result \
                    and result.weights == "pretrained":
                # Right after the first real-weights text embedding case: a target, so run it early.
                self._concurrency_step()
        if self.scenario.concurrency and self.concurrency is None:
            self._concurrency_step()
        if self.scenario.budget_s is not None:
            self.notes.append(
                f"time budget {self.scenario.budget_s:.0f} s for the whole run, which took "
                f"{self.clock.elapsed:.0f} s: {preparation.seconds:.0f} s of preparation (weights, the machine's "
                "peaks), then the measurements"
            )
        self.notes.append(
            "Peak memory is the process RSS growth during a measurement (CUDA: max_memory_allocated): "
            "memory an earlier case freed and a later one reused is not counted again."
        )
        if machine.load_average and machine.load_average[0] > machine.cpu_count * 0.5:
            self.notes.append(
                f"The machine was busy when the run started (load average {machine.load_average[0]:.1f} "
                f"on {machine.cpu_count} CPUs): absolute figures are low and noisy; compare ratios taken in this run."
            )
        return BenchRun(
            scenario=self.scenario, machine=machine, started_at=started_at, duration_s=self.clock.elapsed,
            import_s=import_s, cases=tuple(self.results), baselines=self._baseline_results(),
            comparisons=self._comparisons(), concurrency=self.concurrency, cuts=tuple(self.cuts),
            notes=tuple(self.notes), preparation=preparation,
        )

    # -- preparation ---------------------------------------------------------------------

    def _prepare(self) -> Preparation:
        """Imports, the machine's peaks and every model's weights, before the budget starts."""
        started = time.perf_counter()
        import_s = _warm_imports()
        t0 = time.perf_counter()
        if self.machine is None:
            self.machine = machine_facts()
        machine_s = time.perf_counter() - t0
        models: dict[str, Case] = {}
        for case in self.scenario.ordered():
            models.setdefault(_weights_key(case), case)
        self.progress.add(len(models))
        t0 = time.perf_counter()
        prepared = [self._prepare_weights(case) for case in models.values()]
        weights_s = time.perf_counter() - t0
        return Preparation(seconds=time.perf_counter() - started, import_s=import_s, machine_s=machine_s,
                           weights_s=weights_s, weights=tuple(prepared))

    def _prepare_weights(self, case: Case) -> PreparedWeights:
        """Resolve (and, for synthetic weights not cached yet, build) one model's weights."""
        from ..families import find_family, get_family
        from ..store.weights import SYNTHETIC_MARKER, resolve_weights

        overrides = dict(case.config_overrides or {})
        common: dict[str, Any] = {"model_id": case.model_id, "family": case.family, "weights": case.weights,
                                  "config_overrides": overrides}
        cache_dir = self.cache_dir or default_cache_dir()
        # Synthetic models live two levels under the cache, each with a marker written last:
        # one not there before this call was built by it.
        cached = set(cache_dir.glob(f"*/*/{SYNTHETIC_MARKER}"))
        started = time.perf_counter()
        try:
            model_family = get_family(case.family) if case.family else find_family(case.model_id)
            resolved = resolve_weights(model_family, case.model_id, weights=case.weights, cache_dir=cache_dir,
                                       config_overrides=overrides)
        except Exception as exc:  # noqa: BLE001 - the case reports the same failure when it loads
            seconds = time.perf_counter() - started
            self.progress.step(f"weights of {case.model_id}: {one_line(exc)}")
            return PreparedWeights(**common, status="failed", reason=one_line(exc), seconds=seconds)
        finally:
            release_freed_memory()  # a build holds the whole model in memory
        seconds = time.perf_counter() - started
        built = resolved.weights == "synthetic" and (resolved.path / SYNTHETIC_MARKER) not in cached
        what = "built synthetic weights" if built else f"{resolved.weights} weights ({resolved.source})"
        self.progress.step(f"weights of {case.model_id}: {what} in {seconds:.1f} s")
        return PreparedWeights(**{**common, "family": model_family.name}, status="ok", resolved=resolved.weights,
                               source=resolved.source, built=built, seconds=seconds)

    # -- cases ---------------------------------------------------------------------------

    def _run_case(self, case: Case, later: Sequence[Case]) -> CaseResult:
        from .. import load

        label = f"{case.model_id} {case.task or ''} {case.backend}/{case.precision}".replace("  ", " ")
        if self.clock.remaining() <= 0:
            self.cuts.append(f"{case.case_id}: not run, the time budget was spent")
            self.progress.step(f"skipped {label} (budget spent)", advance=len(case.batch_sizes))
            return CaseResult(case=case, status="skipped", reason="time budget spent", family=case.family,
                              task=case.task)
        predicted = self._predicted_case_s(case)
        if predicted is not None and self._too_costly(predicted):
            self.cuts.append(f"{case.case_id}: not run: predicted {predicted:.0f} s from a smaller batch of the same "
                             f"model, more than a quarter of the {self.clock.remaining():.0f} s left")
            self.progress.step(f"skipped {label} (predicted {predicted:.0f} s)", advance=len(case.batch_sizes))
            return CaseResult(case=case, status="skipped", reason=f"predicted {predicted:.0f} s, over the time budget",
                              family=case.family, task=case.task)
        rss_before = rss_bytes()
        try:
            endpoint = load(
                case.model_id, case.task, backend=case.backend, precision=case.precision, device=case.device,
                weights=case.weights, family=case.family, strict=case.strict,
                config_overrides=case.config_overrides, cache_dir=self.cache_dir,
                max_batch_size=max(32, *case.batch_sizes), warmup=False,
            )
            params = endpoint.parse_params({**endpoint.handler.bench_params(), **case.params})
        except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not raised
            self.progress.step(f"failed {label}: {one_line(exc)}", advance=len(case.batch_sizes))
            return CaseResult(case=case, status="failed", reason=one_line(exc), family=case.family, task=case.task)
        load_rss = max(0, rss_bytes() - rss_before) / 2**20
        handler = endpoint.handler
        prov = endpoint.provenance(batch_size=0)
        report = endpoint.load_report
        load_info = {"rss_mb": load_rss}
        if report is not None:
            load_info.update(total_s=report.total_s, resolve_s=report.resolve_s, backend_load_s=report.backend_load_s)
        fallbacks = tuple({k: str(v) for k, v in dataclasses.asdict(f).items()} for f in endpoint.fallbacks)
        try:
            n_params, n_matmul = parameter_counts(handler.model_dir)
        except (OSError, ValueError, struct.error):
            n_params, n_matmul = 0, 0
        notes: list[str] = []
        measurements: list[Measurement] = []
        status, reason = ("fallback" if fallbacks else "ok"), ""
        input_type = ""
        device = str(endpoint.runtime.device)
        for b_index, batch_size in enumerate(case.batch_sizes):
            left = len(case.batch_sizes) - b_index
            if self.clock.remaining() <= 0:
                self.cuts.append(f"{case.case_id}: batch {batch_size} not measured, the time budget was spent")
                self.progress.step(f"skipped {label} batch {batch_size} (budget spent)")
                continue
            if measurements and self.scenario.budget_s is not None:
                predicted = self._predicted_s(measurements[-1], batch_size, case.warmup_runs)
                if self._too_costly(predicted):
                    self.cuts.append(f"{case.case_id}: batch {batch_size} not measured: predicted {predicted:.0f} s "
                                     f"from batch {measurements[-1].batch_size}, more than a quarter of the "
                                     f"{self.clock.remaining():.0f} s left")
                    self.progress.step(f"skipped {label} batch {batch_size} (predicted over budget)")
                    continue
            items = case.inputs(handler, batch_size) if case.inputs else handler.bench_inputs(batch_size)
            references = _references(case, handler, batch_size)
            input_type = input_type or (type(items[0]).__name__ if items else "")
            outputs: list[Sequence[Any]] = []

            def call(items: list[Any] = items, out: list[Sequence[Any]] = outputs,
                     ep: Any = endpoint) -> dict[str, float]:
                result = ep.run_items(items, params)
                notes.extend(result.provenance.notes)
                out[:] = [result.outputs]
                return dict(result.timings)

            try:
                m = self._measure(call, case, batch_size, device=device, cold=b_index == 0,
                                  units_left=self._units_left(later, left))
            except Exception as exc:  # noqa: BLE001 - a failing run is reported with its reason
                status, reason = "failed", f"batch {batch_size}: {one_line(exc)}"
                self.progress.step(f"failed {label} batch {batch_size}: {one_line(exc)}")
                break
            m = dataclasses.replace(m, efficiency=self._efficiency(
                m, handler, items, params, n_params, n_matmul, prov.precision, device),
                wer=output_wer(outputs[0] if outputs else [], references))
            self.references.setdefault((case.model_key, batch_size), references)
            measurements.append(m)
            self.ours_outputs[(case.case_id, batch_size)] = outputs[0] if outputs else []
            self._ours_p50[(case.model_key, batch_size)] = m.latency.p50
            self.input_figures[(case.model_key, batch_size)] = {
                k: m.figures[k] for k in _INPUT_FIGURES if k in m.figures}
            self.progress.step(f"{label} batch {batch_size}: {m.throughput.value:.4g} {m.throughput.unit}, "
                               f"p50 {m.latency.p50 * 1000:.1f} ms")
        del endpoint
        release_freed_memory()
        if self.scenario.baselines and measurements:
            self._run_baselines(case, handler, params, resolve_device(case.device), later,
                                measured=[m.batch_size for m in measurements])
        return CaseResult(
            case=case, status=status, reason=reason, family=prov.family, task=prov.task, kind=handler.kind,
            backend=prov.backend, precision=prov.precision, device=prov.device, weights=prov.weights,
            source=prov.source, fallbacks=fallbacks, notes=tuple(dict.fromkeys(notes)), load=load_info,
            model_params=n_params or None, input_type=input_type, measurements=tuple(measurements),
            runtime=_json_safe(dict(prov.runtime)),
        )

    def _too_costly(self, predicted_s: float) -> bool:
        """Whether one measurement would eat too much of the budget left (breadth comes first)."""
        return self.scenario.budget_s is not None and predicted_s > 0.25 * self.clock.remaining()

    def _predicted_case_s(self, case: Case) -> float | None:
        """Seconds a case needs at least, from a smaller batch of the same model already measured."""
        known = [(b, p50) for (key, b), p50 in self._ours_p50.items() if key == case.model_key]
        first = case.batch_sizes[0]
        smaller = [(b, p50) for b, p50 in known if b < first]
        if not smaller:
            return None
        b, p50 = max(smaller)
        per_call = p50 * first / b
        return per_call * (case.warmup_runs + 2)  # the cold call, the warm-up, one timed run

    @staticmethod
    def _predicted_s(previous: Measurement, batch_size: int, warmup_runs: int) -> float:
        """Seconds a measurement at ``batch_size`` needs at least: warm-up plus one timed run.

        Assumes time grows linearly with the batch (an upper bound: batching amortises).
        """
        per_call = previous.latency.p50 * batch_size / max(previous.batch_size, 1)
        return per_call * (warmup_runs + 1)

    def _measure(self, call: Callable[[], dict[str, float]], case: Case, batch_size: int, *, device: str,
                 cold: bool, units_left: int, extra_figures: dict[str, float] | None = None) -> Measurement:
        """Cold call, warm-up, then timed calls until min_runs and min_seconds (or a cap)."""
        cut: list[str] = []
        min_seconds = float(case.min_seconds)
        cap = float(case.max_seconds) if case.max_seconds is not None else float("inf")
        if self.scenario.budget_s is not None:
            allowance = self.clock.allowance(units_left)
            if allowance * 0.5 < min_seconds:
                min_seconds = max(0.0, allowance * 0.5)
                cut.append(f"min_seconds {case.min_seconds:g} → {min_seconds:.2f} (time budget)")
            cap = min(cap, max(allowance, min_seconds))
        on_cuda = device.lower().startswith("cuda")
        sync: Callable[[], None] | None = None
        if on_cuda:
            import torch

            def sync() -> None:
                torch.cuda.synchronize()
        # Pages an earlier figure freed would be reused without growing the RSS: hand them back
        # first, so this figure's growth is its own.
        release_freed_memory()
        rss_meter = PeakRSS()
        cuda_meter = CudaPeak(device) if on_cuda else None
        cold_s: float | None = None
        samples: list[float] = []
        figures: list[dict[str, float]] = []
        with rss_meter:
            if cuda_meter is not None:
                cuda_meter.__enter__()
            warmup_runs = case.warmup_runs
            if cold:
                t0 = time.perf_counter()
                call()
                if sync:
                    sync()
                cold_s = time.perf_counter() - t0
                if warmup_runs and self.scenario.budget_s is not None and cold_s * (warmup_runs + 1) > cap:
                    # The cold call warmed the model up; a further warm-up would not fit the budget.
                    cut.append(f"warm-up skipped: the cold call took {cold_s:.1f} s (time cap {cap:.1f} s)")
                    warmup_runs = 0
            for _ in range(warmup_runs):
                call()
            started = time.perf_counter()
            while True:
                if sync:
                    sync()
                t0 = time.perf_counter()
                timings = call()
                if sync:
                    sync()
                samples.append(time.perf_counter() - t0)
                figures.append({**(extra_figures or {}), **timings})
                elapsed = time.perf_counter() - started
                if len(samples) >= case.min_runs and elapsed >= min_seconds:
                    break
                if elapsed >= cap:
                    break
            if cuda_meter is not None:
                cuda_meter.__exit__(None, None, None)
        seconds = time.perf_counter() - started
        if len(samples) < case.min_runs:
            cut.append(f"{len(samples)} of {case.min_runs} runs (time cap {cap:.1f} s)")
        total = sum(samples)
        sums = {k: sum(f.get(k, 0.0) for f in figures) for k in _PER_CALL if any(k in f for f in figures)}
        sums.setdefault("items", float(batch_size * len(samples)))
        rates = {"items/s": sums["items"] / total if total > 0 else 0.0}
        if sums.get("new_tokens", 0.0) > 0:  # a synthetic model may emit only end or padding tokens
            rates["tokens/s"] = sums["new_tokens"] / total if total > 0 else 0.0
        if "audio_seconds" in sums:
            rates["x realtime"] = sums["audio_seconds"] / total if total > 0 else 0.0
        if "frames" in sums and sums["frames"] > 0:
            rates["frames/s"] = sums["frames"] / total if total > 0 else 0.0
        per_call = {k: v / len(samples) for k, v in sums.items()}
        ttft = [f["time_to_first_token_s"] for f in figures if "time_to_first_token_s" in f]
        if ttft:
            per_call["time_to_first_token_s"] = statistics.median(ttft)
        if "frames/s" in rates:
            per_call["ms_per_frame"] = 1000.0 / rates["frames/s"] if rates["frames/s"] else float("inf")
        return Measurement(
            batch_size=batch_size, runs=len(samples), seconds=seconds, latency=Latency.from_samples(samples),
            throughput=_throughput(rates, per_call), rates=rates, figures=per_call,
            peak_rss_mb=rss_meter.growth / 2**20,
            cuda_max_allocated_mb=cuda_meter.growth / 2**20 if cuda_meter is not None else None,
            cold_first_call_s=cold_s, warmup_runs=warmup_runs, min_runs=case.min_runs,
            min_seconds=min_seconds, cut=tuple(cut),
        )

    def _efficiency(self, m: Measurement, handler: TaskHandler, items: list[Any], params: Any, n_params: int,
                    n_matmul: int, precision: str, device: str) -> dict[str, float]:
        """The share of the measured fp32 peak and memory bandwidth the figure reaches."""
        assert self.machine is not None
        if not n_params:
            return {}
        peak_gflops, bandwidth_gbs = self.machine.peaks(device)
        weight_bytes = n_params * _BYTES_PER_PARAM.get(precision, 4.0)
        out: dict[str, float] = {"weight_bytes": weight_bytes}
        p50 = m.latency.p50
        if "tokens/s" in m.rates:
            # Each decoding step reads every weight once for the whole batch.
            bound = m.batch_size * bandwidth_gbs * 1e9 / weight_bytes
            out["bandwidth_bound_tokens_per_s"] = bound
            out["fraction_of_bandwidth_bound"] = m.rates["tokens/s"] / bound if bound else 0.0
            gflops = 2.0 * n_params * m.rates["tokens/s"] / 1e9
        else:
            out["fraction_of_bandwidth"] = (weight_bytes / (bandwidth_gbs * 1e9)) / p50 if p50 > 0 else 0.0
            gflops = 0.0
            try:
                tokens = encoder_tokens(handler.preprocess(items, params).inputs)
            except Exception:  # noqa: BLE001 - efficiency is best effort
                tokens = 0
            if tokens and p50 > 0:
                gflops = 2.0 * n_matmul * tokens / p50 / 1e9
        if gflops > 0:
            out["gflops"] = gflops
            out["fraction_of_fp32_peak"] = gflops / peak_gflops if peak_gflops else 0.0
        return out

    # -- baselines ---------------------------------------------------------------------

    def _run_baselines(self, case: Case, handler: TaskHandler, params: Any, device: str,
                       later: Sequence[Case], *, measured: Sequence[int]) -> None:
        # Only the batch sizes ours measured: a baseline with nothing to compare against
        # would spend the budget for no figure (a cut batch of 32 videos cost 7 minutes).
        sizes = [b for b in measured if (case.model_key, b) not in self.baselined]
        if not sizes:
            return
        for role, baseline in all_baselines(handler):
            baseline_id = f"{case.model_key}#{baseline.name}"
            record = self.baselines.get(baseline_id)
            if record is None:
                record = _BaselineRecord(baseline=baseline, role=role, model_id=case.model_id, task=handler.name,
                                         device=device)
                self.baselines[baseline_id] = record
            if record.status == "failed":
                continue
            if self.clock.remaining() <= 0:
                self.cuts.append(f"baseline {baseline.name} of {case.model_id}: not run, the time budget was spent")
                continue
            try:
                started = time.perf_counter()
                record.run = baseline.load(device)
                record.load_s = time.perf_counter() - started
            except Exception as exc:  # noqa: BLE001 - a missing reference library is reported
                record.status, record.reason = "failed", one_line(exc)
                self.progress.log(f"baseline {baseline.name} of {case.model_id} failed: {record.reason}")
                continue
            for b_index, batch_size in enumerate(sizes):
                if self.clock.remaining() <= 0:
                    self.cuts.append(f"baseline {baseline.name} of {case.model_id} batch {batch_size}: "
                                     "not run, the time budget was spent")
                    continue
                ours = self._ours_p50.get((case.model_key, batch_size))
                if ours is not None and self.scenario.budget_s is not None:
                    predicted = ours * (case.warmup_runs + 2)  # cold call, warm-up, one timed run
                    if self._too_costly(predicted):
                        self.cuts.append(f"baseline {baseline.name} of {case.model_id} batch {batch_size}: not run, "
                                         f"predicted {predicted:.0f} s, more than a quarter of the "
                                         f"{self.clock.remaining():.0f} s left")
                        continue
                items = case.inputs(handler, batch_size) if case.inputs else handler.bench_inputs(batch_size)
                outputs: list[Sequence[Any]] = []
                run = record.run

                def call(items: list[Any] = items, out: list[Sequence[Any]] = outputs,
                         run: Any = run) -> dict[str, float]:
                    result = run(items, params)
                    out[:] = [list(result.outputs)]
                    return {"items": float(len(items)), **{k: float(v) for k, v in result.figures.items()}}

                extra = self.input_figures.get((case.model_key, batch_size), {})
                try:
                    m = self._measure(call, case, batch_size, device=device, cold=b_index == 0,
                                      units_left=self._units_left(later, len(sizes) - b_index),
                                      extra_figures=extra)
                except Exception as exc:  # noqa: BLE001
                    record.status, record.reason = "failed", f"batch {batch_size}: {one_line(exc)}"
                    self.progress.log(f"baseline {baseline.name} of {case.model_id} failed: {record.reason}")
                    break
                base_outputs = outputs[0] if outputs else []
                m = dataclasses.replace(
                    m, wer=output_wer(base_outputs, self.references.get((case.model_key, batch_size))))
                record.measurements.append(m)
                self.base_outputs[(baseline_id, batch_size)] = base_outputs
                self.progress.log(f"baseline {baseline.name} batch {batch_size}: "
                                  f"{m.throughput.value:.4g} {m.throughput.unit}")
            record.run = None
            release_freed_memory()
        self.baselined |= {(case.model_key, b) for b in sizes}

    def _baseline_results(self) -> tuple[BaselineResult, ...]:
        out = []
        for baseline_id, r in self.baselines.items():
            out.append(BaselineResult(
                baseline_id=baseline_id, model_id=r.model_id, task=r.task, role=r.role, name=r.baseline.name,
                library=r.baseline.library, version=library_version(r.baseline.library),
                precision=r.baseline.precision, device=r.device, note=r.baseline.note, status=r.status,
                reason=r.reason, load_s=r.load_s, measurements=tuple(r.measurements),
            ))
        return tuple(out)

    def _comparisons(self) -> tuple[Comparison, ...]:
        out: list[Comparison] = []
        for result in self.results:
            for m in result.measurements:
                for baseline_id, record in self.baselines.items():
                    if not baseline_id.startswith(result.case.model_key + "#"):
                        continue
                    theirs = next((b for b in record.measurements if b.batch_size == m.batch_size), None)
                    if theirs is None:
                        continue
                    unit = m.throughput.rate_unit if m.throughput.rate_unit in theirs.rates else "items/s"
                    ours_rate, their_rate = m.rates.get(unit, 0.0), theirs.rates.get(unit, 0.0)
                    out.append(Comparison(
                        case_id=result.case_id, batch_size=m.batch_size, baseline_id=baseline_id,
                        baseline_name=record.baseline.name, role=record.role, unit=unit, ours=ours_rate,
                        theirs=their_rate, ratio=ours_rate / their_rate if their_rate > 0 else float("nan"),
                        agreement=agreement(self.ours_outputs.get((result.case_id, m.batch_size), []),
                                            self.base_outputs.get((baseline_id, m.batch_size), [])),
                    ))
        return tuple(out)

    # -- concurrency -------------------------------------------------------------------

    def _concurrency_case(self) -> CaseResult | None:
        """The case the concurrency test runs on: text embeddings, real weights first."""
        ran = [r for r in self.results if r.kind == "feature-extraction" and r.measurements
               and r.input_type == "str"]
        return next((r for r in ran if r.weights == "pretrained"), ran[0] if ran else None)

    def _concurrency_step(self) -> None:
        try:
            self.concurrency = self._run_concurrency()
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on
            self.concurrency = ConcurrencyResult(status="failed", reason=one_line(exc),
                                                 callers=self.scenario.concurrency)
        c = self.concurrency
        if c.status == "ok":
            self.progress.step(f"concurrency {c.callers} callers: {c.items_per_s:.4g} items/s, "
                               f"{c.ratio_vs_plain:.2f}x one-by-one plain")
        else:
            self.progress.step(f"concurrency: {c.status} ({c.reason})")
        release_freed_memory()

    def _run_concurrency(self) -> ConcurrencyResult:
        from .. import load
        from .baselines import plain_baseline

        callers = self.scenario.concurrency
        # A text embedding case that ran: single sentences are its natural traffic.
        chosen = self._concurrency_case()
        if chosen is None:
            return ConcurrencyResult(status="skipped", reason="no text embedding (feature-extraction) case ran",
                                     callers=callers)
        if self.clock.remaining() <= 0:
            self.cuts.append("concurrency test: not run, the time budget was spent")
            return ConcurrencyResult(status="skipped", reason="time budget spent", callers=callers)
        case = chosen.case
        endpoint = load(case.model_id, case.task, backend=chosen.backend or case.backend,
                        precision=chosen.precision or case.precision, device=case.device, weights=case.weights,
                        family=case.family, config_overrides=case.config_overrides, cache_dir=self.cache_dir)
        handler = endpoint.handler
        call_params = {**handler.bench_params(), **case.params}
        params = endpoint.parse_params(call_params)
        texts = handler.bench_inputs(callers)
        rounds = max(1, self.scenario.concurrency_rounds)
        plain_run = plain_baseline(handler).load(resolve_device(case.device))
        plain_run(texts[:1], params)

        def one_by_one(run: Callable[[list[Any], Any], Any]) -> float:
            started = time.perf_counter()
            for text in texts:
                run([text], params)
            return callers / (time.perf_counter() - started)

        # As many rounds as the batched side, alternating, and the median of each: one pass
        # of 64 calls is about a second, and the plain side's single pass read 37–50 items/s
        # across reports of the same code.
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


def run_scenario(scenario: Scenario, *, cache_dir: str | Path | None = None, progress: Progress | None = None,
                 machine: MachineFacts | None = None, notes: Sequence[str] = ()) -> BenchRun:
    """Measure every case of ``scenario`` (see the module docstring).

    Args:
        scenario: what to measure.
        cache_dir: where synthetic models and exports are kept (None: the default cache).
        progress: progress reporting (None: silent).
        machine: machine facts already measured (None: measured now, cached per process).
        notes: run-wide notes for the report (how threads were chosen …).

    Returns:
        A :class:`BenchRun`; write it with :func:`ipfs_accelerate.bench.report.write_report`.
    """
    runner = BenchRunner(scenario, cache_dir=Path(cache_dir) if cache_dir is not None else None,
                         progress=progress, machine=machine)
    runner.notes.extend(notes)
    return runner.run()


def run_to_dict(run: BenchRun) -> dict[str, Any]:
    """The run as a JSON-ready dictionary (the report's JSON schema)."""
    return to_jsonable({
        "schema_version": 2,
        "started_at": run.started_at,
        "duration_s": run.duration_s,
        "import_s": run.import_s,
        "preparation": dataclasses.asdict(run.preparation) if run.preparation is not None else None,
        "scenario": run.scenario.to_dict(),
        "machine": run.machine.to_dict(),
        "cases": [_case_dict(c) for c in run.cases],
        "baselines": [dataclasses.asdict(b) for b in run.baselines],
        "comparisons": [dataclasses.asdict(c) for c in run.comparisons],
        "concurrency": dataclasses.asdict(run.concurrency) if run.concurrency is not None else None,
        "cuts": list(run.cuts),
        "notes": list(run.notes),
    })


def _json_safe(value: Any) -> Any:
    """``value`` with anything JSON cannot hold as text (paths, objects) and non-finite numbers as null."""
    value = to_jsonable(value)
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def _case_dict(result: CaseResult) -> dict[str, Any]:
    out = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "case"}
    out["case_id"] = result.case_id
    out["case"] = result.case.to_dict()
    out["measurements"] = [dataclasses.asdict(m) for m in result.measurements]
    return out
