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
   bench profile's ``references``), the word error rate of the outputs against it, for ours and for
   every baseline on the same inputs.

Then the baselines of the case's model (once per model and batch size, on the same inputs
and parameters), and once, after the first tier of cases, the concurrency test.

Where a target compares the case with a baseline (the plain one: ``TargetNeeds.versus_plain``;
the reference ones: ``TargetNeeds.versus_reference``), the two are then timed back to back in
``Scenario.paired_rounds`` rounds, the order alternating (:func:`.measure.measure_paired`):
the case's own figure and the baseline's may be minutes apart, and on a shared machine
minutes apart is not the same machine.
"""

from __future__ import annotations

import dataclasses
import json
import struct
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .._exceptions import AccelerateError
from .._logs import one_line
from ..engine.choice import resolve_device
from ..engine.loader import load
from ..engine.options import default_cache_dir
from ..families import all_families, find_family, get_family
from ..families.base import Baseline, BaselineRun, Family, TaskHandler
from ..families.bench_profile import InputSet, bench_profile
from ..store.weights import SYNTHETIC_MARKER, parameter_counts, resolve_weights
from .baselines import all_baselines, library_version
from .budget import BudgetClock, predicted_seconds
from .concurrency import concurrency_case, run_concurrency
from .machine import MachineFacts, machine_facts
from .measure import INPUT_FIGURES, efficiency, measure_calls, measure_paired, release_freed_memory, rss_bytes
from .progress import Progress
from .quality import agreement, output_wer
from .results import (
    BaselineResult,
    BenchRun,
    CaseResult,
    Comparison,
    ConcurrencyResult,
    Measurement,
    Preparation,
    PreparedWeights,
    json_safe,
)
from .scenario import Case, Scenario
from .stats import PairedRatios
from .target_needs import TARGET_NEEDS

__all__ = ["BenchRunner", "run_scenario"]


def _weights_key(case: Case) -> str:
    """Cases with the same key load the same weights."""
    overrides = json.dumps(dict(case.config_overrides or {}), sort_keys=True, default=str)
    return f"{case.model_id}|{case.weights}|{case.family or ''}|{overrides}"


CASE_INPUTS = InputSet(name="case", description="the case's own inputs, built to the batch size")


def case_input_set(case: Case, handler: TaskHandler) -> InputSet:
    """The input set a case measures: its own builder's, else the bench profile's set it names."""
    return CASE_INPUTS if case.inputs is not None else bench_profile(handler).input_set(case.input_set)


def case_batches(case: Case, handler: TaskHandler, batch_size: int) -> list[list[Any]]:
    """The calls of one timed run at ``batch_size``: one batch, or a pass over a sized set in batches."""
    if case.inputs is not None:
        return [list(case.inputs(handler, batch_size))]
    chosen = case_input_set(case, handler)
    profile = bench_profile(handler)
    if chosen.size is None:
        return [profile.inputs(batch_size, chosen.name)]
    items = profile.inputs(chosen.size, chosen.name)
    return [items[i:i + batch_size] for i in range(0, len(items), batch_size)]


def _summed(figures: Sequence[dict[str, float]]) -> dict[str, float]:
    """The task figures of one pass: the sum of its calls' (items, tokens, seconds)."""
    out: dict[str, float] = {}
    for f in figures:
        for k, v in f.items():
            out[k] = out.get(k, 0.0) + float(v)
    return out


TaskFigures = Callable[[], dict[str, float]]


def ours_call(endpoint: Any, batches: list[list[Any]], params: Any, out: list[Sequence[Any]],
              notes: list[str] | None = None) -> TaskFigures:
    """One timed run of ours: every batch through the endpoint; the outputs go to ``out[0]``
    and the first batch's provenance notes to ``notes``."""
    def call() -> dict[str, float]:
        done: list[Any] = []
        figures = []
        for index, batch in enumerate(batches):
            result = endpoint.run_items(batch, params)
            if index == 0 and notes is not None:  # the batches of a pass differ only in the details
                notes.extend(result.provenance.notes)
            done += list(result.outputs)
            figures.append({"items": float(len(batch)), **dict(result.timings)})
        out[:] = [done]
        return _summed(figures)

    return call


def baseline_call(run: Callable[[Sequence[Any], Any], BaselineRun], batches: list[list[Any]], params: Any,
                  out: list[Sequence[Any]]) -> TaskFigures:
    """One timed run of a baseline on the same batches; the outputs go to ``out[0]``."""
    def call() -> dict[str, float]:
        done: list[Any] = []
        figures = []
        for batch in batches:
            result = run(batch, params)
            done += list(result.outputs)
            figures.append({"items": float(len(batch)), **{k: float(v) for k, v in result.figures.items()}})
        out[:] = [done]
        return _summed(figures)

    return call


def _calls_per_turn(turn: float, call_s: float) -> int:
    """How many calls of ``call_s`` seconds fill a turn of about ``turn`` seconds (at least one)."""
    return max(1, round(turn / call_s)) if call_s > 0 else 1


def compared_unit(ours: Measurement, theirs: Measurement) -> str:
    """The rate ours and a baseline are compared in: ours' unit where the baseline has it."""
    return ours.throughput.rate_unit if ours.throughput.rate_unit in theirs.rates else "items/s"


def _references(case: Case, handler: TaskHandler, n: int) -> list[str] | None:
    """The expected text of the case's ``n`` inputs: the case's own, else its bench profile's
    (only for the handler's own default bench inputs, which its references describe)."""
    if case.references is not None:
        return list(case.references(handler, n))
    if case.inputs is not None or case_input_set(case, handler).size is not None:
        return None
    refs = bench_profile(handler).references(n)
    return list(refs) if refs is not None else None


def _warm_imports() -> float:
    started = time.perf_counter()
    import torch  # noqa: F401
    import transformers.generation.utils
    import transformers.models.auto.modeling_auto
    import transformers.models.auto.tokenization_auto  # noqa: F401

    all_families()
    return time.perf_counter() - started


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
        self.clock = BudgetClock(scenario.budget_s)
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
        # (case id, batch size, baseline id): ours and that baseline timed in alternating rounds
        self.paired: dict[tuple[str, int, str], PairedRatios] = {}
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
                    and concurrency_case(self.results) is not None:
                self._concurrency_step()
            result = self._run_case(case, cases[index + 1:])
            self.results.append(result)
            release_freed_memory()
            if self.scenario.concurrency and self.concurrency is None and concurrency_case(self.results) is result \
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
        """Imports, the machine's peaks and every model's weights, before the first measurement."""
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
        overrides = dict(case.config_overrides or {})
        common: dict[str, Any] = {"model_id": case.model_id, "family": case.family, "weights": case.weights,
                                  "config_overrides": overrides}
        cache_dir = self.cache_dir or default_cache_dir()
        # Synthetic models live two levels under the cache, each with a marker written last:
        # one not there before this call was built by it.
        cached = set(cache_dir.glob(f"*/*/{SYNTHETIC_MARKER}"))
        started = time.perf_counter()
        try:
            model_family = _family_of(case)
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
        label = f"{case.model_id} {case.task or ''} {case.backend}/{case.precision}".replace("  ", " ")
        if self.clock.remaining() <= 0:
            self.cuts.append(f"{case.case_id}: not run, the time budget was spent")
            self.progress.step(f"skipped {label} (budget spent)", advance=len(case.batch_sizes))
            return _not_loaded(case, "skipped", "time budget spent")
        predicted = self._predicted_case_s(case)
        if predicted is not None and self.clock.too_costly(predicted):
            self.cuts.append(f"{case.case_id}: not run: {self.clock.cost_words(predicted)} (from a smaller batch of "
                             "the same model)")
            self.progress.step(f"skipped {label} (predicted {predicted:.0f} s)", advance=len(case.batch_sizes))
            return _not_loaded(case, "skipped", f"predicted {predicted:.0f} s, over the time budget")
        rss_before = rss_bytes()
        try:
            endpoint = load(
                case.model_id, case.task, backend=case.backend, precision=case.precision, device=case.device,
                weights=case.weights, family=case.family, strict=case.strict,
                config_overrides=case.config_overrides, cache_dir=self.cache_dir,
                max_batch_size=max(32, *case.batch_sizes), warmup=False,
            )
            params = endpoint.parse_params({**bench_profile(endpoint.handler).params(), **case.params})
        except Exception as exc:  # noqa: BLE001 - any failure to load is reported, not raised
            self.progress.step(f"failed {label}: {one_line(exc)}", advance=len(case.batch_sizes))
            return _not_loaded(case, "failed", one_line(exc))
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
        input_set = case_input_set(case, handler)
        device = str(endpoint.runtime.device)
        for b_index, batch_size in enumerate(case.batch_sizes):
            left = len(case.batch_sizes) - b_index
            if self.clock.remaining() <= 0:
                self.cuts.append(f"{case.case_id}: batch {batch_size} not measured, the time budget was spent")
                self.progress.step(f"skipped {label} batch {batch_size} (budget spent)")
                continue
            if measurements and self.scenario.budget_s is not None:
                previous = measurements[-1]
                predicted = predicted_seconds(previous.latency.p50, measured_batch=previous.batch_size,
                                              batch_size=batch_size, calls=case.warmup_runs + 1)
                if self.clock.too_costly(predicted):
                    self.cuts.append(f"{case.case_id}: batch {batch_size} not measured: "
                                     f"{self.clock.cost_words(predicted)} (from batch {previous.batch_size})")
                    self.progress.step(f"skipped {label} batch {batch_size} (predicted over budget)")
                    continue
            batches = case_batches(case, handler, batch_size)
            items = [x for batch in batches for x in batch]
            references = _references(case, handler, batch_size)
            input_type = input_type or (type(items[0]).__name__ if items else "")
            outputs: list[Sequence[Any]] = []
            call = ours_call(endpoint, batches, params, outputs, notes)
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
                k: m.figures[k] for k in INPUT_FIGURES if k in m.figures}
            self.progress.step(f"{label} batch {batch_size}: {m.throughput.value:.4g} {m.throughput.unit}, "
                               f"p50 {m.latency.p50 * 1000:.1f} ms")
        paired_sizes = self._paired_sizes(handler, prov.weights, prov.precision, input_set, input_type,
                                          [m.batch_size for m in measurements])
        if paired_sizes:  # both sides loaded at once: only for the targets' (small) models
            self._run_baselines(case, handler, params, resolve_device(case.device), later,
                                measured=[m.batch_size for m in measurements], keep_plain=True)
            self._pair_with_baselines(case, endpoint, handler, params, resolve_device(case.device),
                                      [m for m in measurements if m.batch_size in paired_sizes])
        del endpoint
        release_freed_memory()
        if self.scenario.baselines and measurements and not paired_sizes:
            self._run_baselines(case, handler, params, resolve_device(case.device), later,
                                measured=[m.batch_size for m in measurements])
        return CaseResult(
            case=case, status=status, reason=reason, family=prov.family, task=prov.task, kind=handler.kind,
            backend=prov.backend, precision=prov.precision, device=prov.device, weights=prov.weights,
            source=prov.source, fallbacks=fallbacks, notes=tuple(dict.fromkeys(notes)), load=load_info,
            model_params=n_params or None, input_type=input_type, input_set=input_set.name,
            input_description=input_set.description, measurements=tuple(measurements),
            runtime=json_safe(dict(prov.runtime)),
        )

    def _paired_sizes(self, handler: TaskHandler, weights: str, precision: str, input_set: InputSet,
                      input_type: str, measured: Sequence[int]) -> list[int]:
        """The measured batch sizes at which a target compares this case with the plain baseline."""
        needs = TARGET_NEEDS.get(handler.kind)
        if (needs is None or not self.scenario.paired_rounds or not self.scenario.baselines
                or not needs.applies(weights=weights, input_type=input_type or None)
                or (needs.input_set is not None and input_set.name != needs.input_set)
                or precision not in needs.precisions):
            return []
        return [b for b in measured if needs.paired_roles(b)]

    def _pair_with_baselines(self, case: Case, endpoint: Any, handler: TaskHandler, params: Any, device: str,
                             measured: Sequence[Measurement]) -> None:
        """Time ours and each baseline a target compares it with back to back in alternating
        rounds, per batch size."""
        needs = TARGET_NEEDS[handler.kind]
        for key, record in list(self.baselines.items()):
            if not key.startswith(case.model_key + "#"):
                continue
            sizes = [m for m in measured if record.role in needs.paired_roles(m.batch_size)]
            if sizes:
                self._pair_with(case, endpoint, handler, params, device, sizes, record)

    def _pair_with(self, case: Case, endpoint: Any, handler: TaskHandler, params: Any, device: str,
                   measured: Sequence[Measurement], record: _BaselineRecord) -> None:
        """Time ours and one baseline back to back in alternating rounds, per batch size."""
        baseline_id = f"{case.model_key}#{record.baseline.name}"
        rounds = self.scenario.paired_rounds
        try:
            for m in measured:
                batch_size = m.batch_size
                theirs = next((b for b in record.measurements if b.batch_size == batch_size), None)
                if record.status != "ok" or theirs is None:
                    continue
                ours = m.latency.p50
                turn = max(ours, theirs.latency.p50)  # both turns about this long
                warm = record.run is not None
                predicted = rounds * 2 * turn + (0.0 if warm else (record.load_s or 0.0) + theirs.latency.p50)
                if self.scenario.budget_s is not None and self.clock.too_costly(predicted):
                    self.cuts.append(f"{case.case_id}: batch {batch_size} not paired with {record.baseline.name}: "
                                     f"{self.clock.cost_words(predicted)} (the target reads the two measurements)")
                    continue
                if record.run is None:
                    record.run = record.baseline.load(device)
                batches = case_batches(case, handler, batch_size)
                scratch: list[Sequence[Any]] = []
                mine = ours_call(endpoint, batches, params, scratch)
                base = baseline_call(record.run, batches, params, scratch)
                if not warm:  # loaded again: one untimed call, as its own measurement had
                    base()
                unit = compared_unit(m, theirs)
                repeats = (_calls_per_turn(turn, ours), _calls_per_turn(turn, theirs.latency.p50))
                paired = measure_paired(mine, base, unit=unit, rounds=rounds, device=device, batch_size=batch_size,
                                        repeats=repeats,
                                        extra_figures=self.input_figures.get((case.model_key, batch_size), {}))
                self.paired[(case.case_id, batch_size, baseline_id)] = paired
                self.progress.log(f"{case.case_id} batch {batch_size} vs {record.baseline.name}, {rounds} alternating "
                                  f"rounds: median {paired.median:.3g}x ({paired.min:.3g}-{paired.max:.3g})")
        except Exception as exc:  # noqa: BLE001 - the two measurements stand; the report says why no rounds
            self.cuts.append(f"{case.case_id}: rounds against {record.baseline.name} failed: {one_line(exc)}")
        finally:
            record.run = None
            release_freed_memory()

    def _predicted_case_s(self, case: Case) -> float | None:
        """Seconds a case needs at least, from a smaller batch of the same model already measured."""
        known = [(b, p50) for (key, b), p50 in self._ours_p50.items() if key == case.model_key]
        first = case.batch_sizes[0]
        smaller = [(b, p50) for b, p50 in known if b < first]
        if not smaller:
            return None
        b, p50 = max(smaller)
        # the cold call, the warm-up, one timed run
        return predicted_seconds(p50, measured_batch=b, batch_size=first, calls=case.warmup_runs + 2)

    def _measure(self, call: Callable[[], dict[str, float]], case: Case, batch_size: int, *, device: str,
                 cold: bool, units_left: int, extra_figures: dict[str, float] | None = None) -> Measurement:
        """Cold call, warm-up, then timed calls until min_runs and min_seconds (or a cap)."""
        min_seconds, cap, cut = self.clock.limits(min_seconds=case.min_seconds, max_seconds=case.max_seconds,
                                                  units_left=units_left)
        return measure_calls(call, batch_size=batch_size, device=device, cold=cold, min_runs=case.min_runs,
                             min_seconds=min_seconds, cap=cap, warmup_runs=case.warmup_runs,
                             budgeted=self.scenario.budget_s is not None, cut=cut, extra_figures=extra_figures)

    def _efficiency(self, m: Measurement, handler: TaskHandler, items: list[Any], params: Any, n_params: int,
                    n_matmul: int, precision: str, device: str) -> dict[str, float]:
        """The share of the measured fp32 peak and memory bandwidth the figure reaches."""
        assert self.machine is not None
        peak_gflops, bandwidth_gbs = self.machine.peaks(device)
        return efficiency(m, n_params=n_params, n_matmul=n_matmul, precision=precision, peak_gflops=peak_gflops,
                          bandwidth_gbs=bandwidth_gbs,
                          encoder_inputs=lambda: handler.preprocess(items, params).inputs)

    # -- baselines ---------------------------------------------------------------------

    def _run_baselines(self, case: Case, handler: TaskHandler, params: Any, device: str,
                       later: Sequence[Case], *, measured: Sequence[int], keep_plain: bool = False) -> None:
        # Only the batch sizes ours measured: a baseline with nothing to compare against
        # would spend the budget for no figure (a large batch of videos costs minutes).
        # keep_plain: the plain baseline stays loaded for the paired rounds that follow.
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
                    predicted = predicted_seconds(ours, measured_batch=batch_size, batch_size=batch_size,
                                                  calls=case.warmup_runs + 2)  # cold call, warm-up, one timed run
                    if self.clock.too_costly(predicted):
                        self.cuts.append(f"baseline {baseline.name} of {case.model_id} batch {batch_size}: not run, "
                                         f"{self.clock.cost_words(predicted)}")
                        continue
                batches = case_batches(case, handler, batch_size)
                outputs: list[Sequence[Any]] = []
                assert record.run is not None
                call = baseline_call(record.run, batches, params, outputs)
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
            if not (keep_plain and role == "plain"):
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
                    unit = compared_unit(m, theirs)
                    ours_rate, their_rate = m.rates.get(unit, 0.0), theirs.rates.get(unit, 0.0)
                    out.append(Comparison(
                        case_id=result.case_id, batch_size=m.batch_size, baseline_id=baseline_id,
                        baseline_name=record.baseline.name, role=record.role, unit=unit, ours=ours_rate,
                        theirs=their_rate, ratio=ours_rate / their_rate if their_rate > 0 else float("nan"),
                        agreement=agreement(self.ours_outputs.get((result.case_id, m.batch_size), []),
                                            self.base_outputs.get((baseline_id, m.batch_size), [])),
                        paired=self.paired.get((result.case_id, m.batch_size, baseline_id)),
                    ))
        return tuple(out)

    # -- concurrency -------------------------------------------------------------------

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
        callers = self.scenario.concurrency
        chosen = concurrency_case(self.results)
        if chosen is None:
            return ConcurrencyResult(status="skipped", reason="no text embedding (feature-extraction) case ran",
                                     callers=callers)
        if self.clock.remaining() <= 0:
            self.cuts.append("concurrency test: not run, the time budget was spent")
            return ConcurrencyResult(status="skipped", reason="time budget spent", callers=callers)
        return run_concurrency(chosen, callers=callers, rounds=self.scenario.concurrency_rounds,
                               cache_dir=self.cache_dir)


def _family_of(case: Case) -> Family:
    """The family a case names, else the one that knows its model (raises as :func:`find_family`)."""
    return get_family(case.family) if case.family else find_family(case.model_id)


def _not_loaded(case: Case, status: str, reason: str) -> CaseResult:
    """The result of a case that did not load (cut, or failed), with its family and task as the
    registry names them without loading anything, so the report does not show an unknown model."""
    family, task = case.family, case.task
    try:
        model_family = _family_of(case)
        family, task = model_family.name, task or model_family.default_task
    except (AccelerateError, OSError):
        pass  # a model no family knows: the reason already says so
    return CaseResult(case=case, status=status, reason=reason, family=family, task=task)


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
