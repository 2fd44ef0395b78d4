"""What a benchmark run measured: the result dataclasses, their JSON and its schema.

The JSON document of a run (:func:`run_to_dict`) is the dataclasses as they are, made
JSON-safe by :func:`json_safe`; its schema (:func:`schema_of`) is derived from the same
dataclasses' type hints, so a field added to a result reaches both at once.
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections import abc as _abc
from collections.abc import Mapping
from typing import Any, Union

from ..engine.result import to_jsonable
from ..families.base import TaskHandler
from .machine import MachineFacts
from .scenario import Case, Scenario
from .stats import Latency, PairedRatios

__all__ = [
    "NON_FINITE",
    "BaselineResult",
    "BenchRun",
    "CaseResult",
    "Comparison",
    "ConcurrencyResult",
    "ListOf",
    "MapOf",
    "Measurement",
    "Nullable",
    "Preparation",
    "PreparedWeights",
    "Throughput",
    "json_safe",
    "run_schema",
    "run_to_dict",
    "schema_of",
]

SCHEMA_VERSION = 2
NON_FINITE: Mapping[str, Any] = {"non_finite": True}
"""Field metadata: the field's numbers may be NaN or infinite (null in the JSON)."""


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
    value: float = dataclasses.field(metadata=NON_FINITE)
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
    rates: dict[str, float] = dataclasses.field(metadata=NON_FINITE)
    figures: dict[str, float] = dataclasses.field(metadata=NON_FINITE)
    peak_rss_mb: float
    cuda_max_allocated_mb: float | None
    cold_first_call_s: float | None
    warmup_runs: int
    min_runs: int
    min_seconds: float
    cut: tuple[str, ...] = ()
    efficiency: dict[str, float] = dataclasses.field(default_factory=dict, metadata=NON_FINITE)
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
        input_set: the bench profile's input set that was measured (``InputSet.name``;
            ``case`` for a case's own inputs).
        input_description: that set in words.
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
    input_set: str = ""
    input_description: str = ""
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
        paired: the two timed back to back in alternating rounds (where a target reads
            this comparison, ``Scenario.paired_rounds``), else None.
    """

    case_id: str
    batch_size: int
    baseline_id: str
    baseline_name: str
    role: str
    unit: str
    ours: float = dataclasses.field(metadata=NON_FINITE)
    theirs: float = dataclasses.field(metadata=NON_FINITE)
    ratio: float = dataclasses.field(metadata=NON_FINITE)
    agreement: dict[str, Any] | None = None
    paired: PairedRatios | None = None


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
            median over ``rounds`` passes, one in each round).
        plain_one_by_one_items_per_s: … with the plain transformers baseline.
        ratio_vs_plain: the median of the rounds' ratios, batched ÷ plain one by one
            (``paired.median``).
        paired: each round's batched rate against the plain one-by-one rate timed in the
            same round (the order alternating between rounds).
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
    paired: PairedRatios | None = None


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
    """What ran before the first measurement (inside the time budget), and how long it took.

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
        preparation: what ran before the first measurement (None: nothing did).
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


# -- JSON ------------------------------------------------------------------------------


def json_safe(value: Any) -> Any:
    """``value`` as JSON can hold it: :func:`~ipfs_accelerate.engine.result.to_jsonable`, then
    non-finite numbers as null and anything else JSON has no type for (paths, objects) as text."""
    value = to_jsonable(value)
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_safe(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def run_to_dict(run: BenchRun) -> dict[str, Any]:
    """The run as a JSON-ready dictionary (see :func:`run_schema`)."""
    return json_safe({
        "schema_version": SCHEMA_VERSION,
        "started_at": run.started_at,
        "duration_s": run.duration_s,
        "import_s": run.import_s,
        "preparation": run.preparation,
        "scenario": run.scenario.to_dict(),
        "machine": run.machine.to_dict(),
        "cases": [_case_dict(c) for c in run.cases],
        "baselines": run.baselines,
        "comparisons": run.comparisons,
        "concurrency": run.concurrency,
        "cuts": list(run.cuts),
        "notes": list(run.notes),
    })


def _case_dict(result: CaseResult) -> dict[str, Any]:
    out = {f.name: getattr(result, f.name) for f in dataclasses.fields(result) if f.name != "case"}
    out["case_id"] = result.case_id
    out["case"] = result.case.to_dict()
    return out


# -- the schema, derived from the dataclasses ----------------------------------------------


@dataclasses.dataclass(frozen=True)
class Nullable:
    """The value may be null."""

    spec: Any


@dataclasses.dataclass(frozen=True)
class ListOf:
    """A list whose items all match ``spec``."""

    spec: Any


@dataclasses.dataclass(frozen=True)
class MapOf:
    """An object with any keys whose values all match ``spec``."""

    spec: Any


NUM = (int, float)
# Names the dataclasses' hints use that their modules import only for type checking.
_HINT_NAMES: dict[str, Any] = {"TaskHandler": TaskHandler}


def schema_of(tp: Any, *, non_finite: bool = False) -> Any:
    """The JSON schema of a value of type ``tp``, as :func:`json_safe` writes it.

    A dataclass is an object of its fields (those whose metadata has ``"json": False`` left
    out); ``X | None`` is :class:`Nullable`; tuples, lists and sequences are :class:`ListOf`;
    dictionaries and mappings :class:`MapOf`; ``Any`` (or a callable) is any value.
    A float is a number; under a field with :data:`NON_FINITE` metadata it may be null.
    """
    if dataclasses.is_dataclass(tp) and isinstance(tp, type):
        hints = typing.get_type_hints(tp, localns=_HINT_NAMES)
        return {f.name: schema_of(hints[f.name], non_finite=non_finite or bool(f.metadata.get("non_finite")))
                for f in dataclasses.fields(tp) if f.metadata.get("json", True)}
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        rest = [a for a in args if a is not type(None)]
        inner = schema_of(rest[0], non_finite=non_finite) if len(rest) == 1 else object
        return Nullable(inner) if len(rest) < len(args) else inner
    if origin in (tuple, list, typing.Sequence, _abc.Sequence):
        return ListOf(schema_of(args[0], non_finite=non_finite) if args else object)
    if origin in (dict, typing.Mapping, _abc.Mapping):
        return MapOf(schema_of(args[1], non_finite=non_finite) if args else object)
    if tp is float:
        return Nullable(NUM) if non_finite else NUM
    if tp in (int, str, bool):
        return tp
    return object


def run_schema() -> dict[str, Any]:
    """The schema of :func:`run_to_dict`'s document, from the result dataclasses."""
    bench_run = schema_of(BenchRun)
    case_result = schema_of(CaseResult)
    case = {**schema_of(Case), "case_id": str}
    case_result.update(case_id=str, case=case)
    scenario = {**schema_of(Scenario), "cases": ListOf(case)}
    return {"schema_version": int, **bench_run, "scenario": scenario, "cases": ListOf(case_result)}
