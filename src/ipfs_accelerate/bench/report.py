"""The benchmark report: Markdown in the seed reports' shape, a JSON file, PNG plots.

:func:`write_report` writes, into one directory:

* ``benchmark.md``: the preparation at the start of the time budget (imports, the machine's peaks,
  weights resolved or built, with their seconds), a model status summary (backend,
  precision, pretrained or synthetic weights, status), tables for text generation,
  multimodal, audio, and embeddings and text encoders (our figure, the baselines', the
  ratio; the word error rate against the spoken text where the inputs have one), the
  baselines, the concurrency test,
  the performance targets (met or not, with figures), the share of the machine's measured
  peaks, notes on everything that fell back or failed (with the reason), and what the time
  budget cut;
* ``benchmark.json``: every raw figure with its provenance, in the shape of :data:`SCHEMA`
  (checked by :func:`validate` before writing);
* ``benchmark_throughput.png`` and ``benchmark_latency.png`` (matplotlib, Agg).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .._exceptions import InvalidInput
from .results import (
    BenchRun,
    CaseResult,
    Comparison,
    ListOf,
    MapOf,
    Measurement,
    Nullable,
    json_safe,
    run_schema,
    run_to_dict,
    schema_of,
)
from .targets import NOISY_SPREAD, Target, evaluate_targets, with_history

__all__ = [
    "SCHEMA", "SECTIONS", "LatencyBox", "ReportFiles", "ThroughputBar", "latency_panels", "load_reports",
    "render_markdown", "report_dict", "throughput_panels", "validate", "write_report",
]

MARKDOWN_NAME = "benchmark.md"
JSON_NAME = "benchmark.json"
THROUGHPUT_PNG = "benchmark_throughput.png"
LATENCY_PNG = "benchmark_latency.png"

# Every Markdown report has these second-level sections, in this order.
SECTIONS = (
    "Machine",
    "Preparation",
    "Model status summary",
    "Text generation",
    "Multimodal",
    "Audio",
    "Embeddings and text encoders",
    "Baselines",
    "Concurrency",
    "Performance targets",
    "Share of the machine's measured peaks",
    "Notes: fallbacks, failures, synthetic weights",
    "What was cut",
    "Plots",
)


# -- the JSON schema ---------------------------------------------------------------------


SCHEMA: dict[str, Any] = {
    **run_schema(),
    "targets": ListOf(schema_of(Target)),
    "files": {"markdown": str, "json": str, "plots": ListOf(str)},
}
"""The JSON report's schema: the run's (derived from the result dataclasses), its targets and files."""


def _check(value: Any, spec: Any, path: str, errors: list[str]) -> None:
    if isinstance(spec, Nullable):
        if value is not None:
            _check(value, spec.spec, path, errors)
        return
    if isinstance(spec, ListOf):
        if not isinstance(value, list):
            errors.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            _check(item, spec.spec, f"{path}[{i}]", errors)
        return
    if isinstance(spec, MapOf):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for key, item in value.items():
            _check(item, spec.spec, f"{path}.{key}", errors)
        return
    if isinstance(spec, dict):
        if not isinstance(value, dict):
            errors.append(f"{path}: expected an object, got {type(value).__name__}")
            return
        for key, sub in spec.items():
            if key not in value:
                errors.append(f"{path}.{key}: missing")
            else:
                _check(value[key], sub, f"{path}.{key}", errors)
        return
    if spec is object:
        return
    types = spec if isinstance(spec, tuple) else (spec,)
    if isinstance(value, bool) and bool not in types:
        errors.append(f"{path}: expected {'/'.join(t.__name__ for t in types)}, got bool")
    elif not isinstance(value, types):
        errors.append(f"{path}: expected {'/'.join(t.__name__ for t in types)}, got {type(value).__name__}")


def validate(doc: Mapping[str, Any]) -> list[str]:
    """Every way ``doc`` departs from :data:`SCHEMA` (an empty list when it conforms)."""
    errors: list[str] = []
    _check(doc, SCHEMA, "$", errors)
    return errors


def report_dict(run: BenchRun, targets: Sequence[Target], files: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document of a run (see :data:`SCHEMA`)."""
    doc = run_to_dict(run)
    doc["targets"] = [dataclasses.asdict(t) for t in targets]
    doc["files"] = dict(files)
    return json_safe(doc)


# -- Markdown --------------------------------------------------------------------------


def _section_of(kind: str | None) -> str:
    k = (kind or "").lower()
    if "audio" in k or "speech" in k:
        return "Audio"
    if any(word in k for word in ("image", "video", "visual", "vision")):
        return "Multimodal"
    if "generation" in k:
        return "Text generation"
    return "Embeddings and text encoders"


def _buffer_size(mib: int) -> str:
    """``64 MiB``, ``1 GiB``."""
    return f"{mib // 1024} GiB" if mib >= 1024 and mib % 1024 == 0 else f"{mib} MiB"


CELL_CHARS = 160
"""The most characters of a status or reason in a table cell; the JSON holds them whole."""


def _clip(text: str, limit: int = CELL_CHARS) -> str:
    """``text`` cut to ``limit`` characters in the middle: a reason starts with what failed and
    ends with why and what to do (the memory it needs, the extra to install), so both ends stay."""
    if len(text) <= limit:
        return text
    head = text[: limit * 2 // 5].rstrip()
    tail = text[len(text) - (limit - len(head) - 3):].lstrip()
    return f"{head} … {tail}"


def _n(x: float | None, digits: int = 3) -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}"


def _against(value: float | None, required: float | None) -> str:
    """``value`` to three significant digits, or more where three would cross ``required``
    (3.998 against 4 reads "3.998", not "4" beside "not met")."""
    text = _n(value)
    if value is None or required is None or text == "–":
        return text
    digits = 3
    while digits < 8 and (float(text) >= required) != (value >= required):
        digits += 1
        text = _n(value, digits)
    return text


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:.1f}"


def _pct(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{100 * x:.1f} %"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    if not rows:
        return ["_Nothing in this run._", ""]
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in row) + " |" for row in rows]
    return [*out, ""]


def _weights(result: CaseResult) -> str:
    if result.weights == "synthetic":
        return "synthetic (random)"
    return result.weights or result.case.weights


def _model(result: CaseResult) -> str:
    return f"{result.family or '?'}: `{result.case.model_id}`"


def _comparisons_for(run: BenchRun, case_id: str, batch: int) -> list[Comparison]:
    return [c for c in run.comparisons if c.case_id == case_id and c.batch_size == batch]


def _vs(comps: Sequence[Comparison], role: str) -> tuple[str, str]:
    chosen = [c for c in comps if c.role == role]
    if not chosen:
        return "–", "–"
    figures = "; ".join(f"{_n(c.theirs)} {c.unit}" + (f" ({c.baseline_name})" if role == "reference" else "")
                        for c in chosen)
    ratios = "; ".join(f"{_n(c.ratio)}×" for c in chosen)
    return figures, ratios


def _agreement(comps: Sequence[Comparison]) -> str:
    parts = []
    for c in comps:
        a = c.agreement
        if not a:
            continue
        if a.get("metric") == "cosine":
            parts.append(f"cos {a['min']:.4f} vs {c.baseline_name}")
        elif a.get("metric") == "exact_match":
            wer = f", WER {a['wer_vs_baseline']:.3f}" if "wer_vs_baseline" in a else ""
            parts.append(f"{100 * a['value']:.0f} % same text{wer} vs {c.baseline_name}")
    return "; ".join(parts) or "–"


def _wer(x: float | None) -> str:
    return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"


def _baseline_wers(run: BenchRun, comps: Sequence[Comparison], batch: int) -> str:
    """Each compared baseline's WER on the same inputs at the same batch size."""
    by_id = {b.baseline_id: b for b in run.baselines}
    parts = []
    for c in comps:
        base = by_id.get(c.baseline_id)
        m = next((x for x in base.measurements if x.batch_size == batch), None) if base else None
        if m is not None and m.wer is not None:
            parts.append(f"{_wer(m.wer)} ({c.baseline_name})")
    return "; ".join(parts) or "–"


def _has_wer(run: BenchRun, section: str) -> bool:
    """Audio tables always show WER; other sections when a measurement of theirs has one."""
    if section == "Audio":
        return True
    keys = {r.case.model_key for r in run.cases if _section_of(r.kind) == section}
    ours = any(m.wer is not None for r in run.cases if _section_of(r.kind) == section for m in r.measurements)
    theirs = any(m.wer is not None for b in run.baselines if b.baseline_id.split("#", 1)[0] in keys
                 for m in b.measurements)
    return ours or theirs


def _perf_rows(run: BenchRun, section: str, *, with_wer: bool = False) -> list[list[str]]:
    rows = []
    for result in run.cases:
        if _section_of(result.kind) != section:
            continue
        for m in result.measurements:
            comps = _comparisons_for(run, result.case_id, m.batch_size)
            plain, plain_ratio = _vs(comps, "plain")
            ref, ref_ratio = _vs(comps, "reference")
            row = [_model(result), result.task or "", result.backend or "", result.precision or "", _weights(result),
                   str(m.batch_size), f"{_n(m.throughput.value)} {m.throughput.unit}"]
            if section == "Text generation":
                row.append(_ms(m.figures.get("time_to_first_token_s")))
            memory = _n(m.peak_rss_mb)
            if m.cuda_max_allocated_mb is not None:
                memory = f"{_n(m.cuda_max_allocated_mb)} GPU, {memory} RSS"
            row += [_ms(m.latency.p50), _ms(m.latency.p90), _ms(m.latency.p99), memory,
                    plain, plain_ratio, ref, ref_ratio, _agreement(comps)]
            if with_wer:
                row += [_wer(m.wer), _baseline_wers(run, comps, m.batch_size)]
            if section == "Text generation":
                row.append(_pct(m.efficiency.get("fraction_of_bandwidth_bound")))
            elif section == "Embeddings and text encoders":
                row.append(_pct(m.efficiency.get("fraction_of_fp32_peak")))
            row.append(f"{m.runs}" + (" (cut)" if m.cut else ""))
            rows.append(row)
    return rows


def _perf_headers(section: str, *, with_wer: bool = False) -> list[str]:
    headers = ["Model", "Task", "Backend", "Precision", "Weights", "Batch", "Throughput"]
    if section == "Text generation":
        headers.append("TTFT ms")
    headers += ["p50 ms", "p90 ms", "p99 ms", "Peak memory MiB", "Plain transformers", "× plain", "Reference",
                "× reference", "Agreement"]
    if with_wer:
        headers += ["WER vs spoken text" if section == "Audio" else "WER vs expected text", "Baselines' WER"]
    if section == "Text generation":
        headers.append("% of bandwidth bound")
    elif section == "Embeddings and text encoders":
        headers.append("% fp32 peak")
    headers.append("Runs")
    return headers


def _across(t: Target) -> str:
    """The target's values over the earlier reports and this one (``bench --history``)."""
    values = t.values_across_reports()
    spread = t.spread_across_reports()
    if spread is None:
        return "–"
    return f"{min(values):.3g}–{max(values):.3g} over {len(values)} reports ({spread:.2f})"


def render_markdown(run: BenchRun, targets: Sequence[Target], *, plots: Sequence[str] = ()) -> str:
    """The Markdown report (every section of :data:`SECTIONS`, in order)."""
    m = run.machine
    s = run.scenario
    lines = [f"# ipfs_accelerate benchmark: {s.name}", ""]
    if s.description:
        lines += [s.description, ""]
    budget = f", time budget {s.budget_s:.0f} s" if s.budget_s is not None else ""
    prep = run.preparation
    before = (f" ({prep.seconds:.0f} s of preparation first, see *Preparation*)" if prep is not None else "")
    lines += [f"Run started {run.started_at}; the run took {run.duration_s:.0f} s{before}{budget}; "
              f"{len(run.cases)} cases, {sum(len(c.measurements) for c in run.cases)} measurements, "
              f"{len(run.baselines)} baselines. Every figure is taken after a warm-up, over at least the runs "
              "and seconds shown in the JSON (unless the time budget cut them: see *What was cut*).", ""]

    lines += ["## Machine", ""]
    lines += [f"- CPU: {m.cpu}, {m.cpu_count} logical CPUs, flags {' '.join(m.cpu_flags) or 'none'}; "
              f"torch uses {m.torch_threads} threads; {m.memory_gib} GiB memory",
              f"- Measured fp32 peak: **{m.fp32_gflops:.1f} GFLOP/s** (timed large fp32 matmul); measured memory "
              f"bandwidth: **{m.memory_bandwidth_gbs:.1f} GB/s** (timed large copy, read + write)"]
    if m.read_gbs_by_mib:
        lines.append("- Read rate by buffer size (a step marks the end of the cache this machine could use at the "
                     "start; on a shared host it moves with other tenants' work): "
                     + ", ".join(f"{_buffer_size(mib)} {gbs:.1f} GB/s" for mib, gbs in m.read_gbs_by_mib.items()))
    if m.cuda:
        lines.append(f"- CUDA: {m.cuda.get('device')}: {_n(m.cuda.get('fp32_gflops'))} GFLOP/s fp32, "
                     f"{_n(m.cuda.get('memory_bandwidth_gbs'))} GB/s")
    if m.load_average:
        lines.append(f"- Load average at start: {', '.join(f'{x:.2f}' for x in m.load_average)}")
    lines.append(f"- {m.python} on {m.platform}; libraries: "
                 + ", ".join(f"{k} {v}" for k, v in m.libraries.items()))
    lines.append("- Backends: " + ", ".join(
        f"{name} {'available' if b.get('available') else 'unavailable'}"
        + (f" {b.get('version')}" if b.get("version") else "") + (f" ({b.get('reason')})" if b.get("reason") else "")
        for name, b in m.backends.items()))
    lines.append(f"- Importing torch and transformers took {run.import_s:.1f} s (kept out of the load times)")
    lines.append("")

    lines += ["## Preparation", ""]
    if prep is None:
        lines += ["_None: the run went straight to the measurements._", ""]
    else:
        built = [w for w in prep.weights if w.built]
        lines += [f"The run's first **{prep.seconds:.1f} s**, inside its time budget: importing torch and "
                  f"transformers {prep.import_s:.1f} s, measuring the machine {prep.machine_s:.1f} s, resolving the "
                  f"weights of {len(prep.weights)} models {prep.weights_s:.1f} s ({len(built)} synthetic "
                  "builds; a build is cached, so a later run finds it and keeps the time for measuring). Exports "
                  "for a backend happen when a case loads and count in its load time.", ""]
        rows = [[f"`{w.model_id}`", w.family or "–", w.weights, w.resolved or "–", w.source or "–",
                 "built now" if w.built else ("cached" if w.resolved == "synthetic" else "–"), _n(w.seconds),
                 w.status + (f": {w.reason}" if w.reason else "")] for w in prep.weights]
        lines += _table(["Model", "Family", "Weights asked", "Found", "Source", "Synthetic build", "Seconds",
                         "Status"], [[_clip(c) for c in row] for row in rows])

    lines += ["## Model status summary", ""]
    rows = []
    for r in run.cases:
        first = r.measurements[0] if r.measurements else None
        load_s = r.load.get("total_s") if r.load else None
        status = r.status + (f": {r.reason}" if r.reason else "")
        if r.status == "fallback":
            status = f"fallback (asked {r.case.backend}/{r.case.precision})"
        rows.append([_model(r), r.task or r.case.task or "", f"{r.backend or r.case.backend}",
                     f"{r.precision or r.case.precision}", r.device or "–", _weights(r), _clip(status),
                     _n(load_s), _n(first.cold_first_call_s if first else None)])
    lines += _table(["Model", "Task", "Backend", "Precision", "Device", "Weights", "Status", "Load s",
                     "Cold first call s"], rows)

    for section in ("Text generation", "Multimodal", "Audio", "Embeddings and text encoders"):
        lines += [f"## {section}", ""]
        with_wer = _has_wer(run, section)
        if section == "Audio":
            lines += ["*WER vs spoken text*: the word error rate of the outputs against the text the inputs "
                      "speak (all word edits over all reference words, after lowercasing, spelling out numbers "
                      "and dropping punctuation); *Baselines' WER*: the same for each baseline on the same "
                      "inputs. \"–\" where the inputs carry no text (no espeak-ng, or a task that does not "
                      "transcribe).", ""]
        lines += _table(_perf_headers(section, with_wer=with_wer), _perf_rows(run, section, with_wer=with_wer))

    lines += ["## Baselines", ""]
    lines += ["The same inputs and parameters as our cases, measured the same way. *Plain* is transformers "
              "alone in fp32 PyTorch, chosen by the task's kind; *reference* baselines are declared by the "
              "families.", ""]
    rows = []
    for b in run.baselines:
        version = f" {b.version}" if b.version else ""
        if not b.measurements:
            rows.append([b.name, b.role, f"{b.library}{version}", f"`{b.model_id}`", b.task or "", "–", "–", "–",
                         "–", _n(b.load_s), _clip(f"{b.status}: {b.reason}")])
        for bm in b.measurements:
            rows.append([b.name, b.role, f"{b.library}{version}", f"`{b.model_id}`", b.task or "",
                         str(bm.batch_size), f"{_n(bm.throughput.value)} {bm.throughput.unit}", _ms(bm.latency.p50),
                         _wer(bm.wer), _n(b.load_s), b.status + (f": {b.reason}" if b.reason else "")])
    lines += _table(["Baseline", "Role", "Library", "Model", "Task", "Batch", "Throughput", "p50 ms", "WER", "Load s",
                     "Status"], rows)

    lines += ["## Concurrency", ""]
    c = run.concurrency
    if c is None:
        lines += ["_Not asked for in this scenario._", ""]
    elif c.status != "ok":
        lines += [f"{c.status}: {c.reason}", ""]
    else:
        lines += [
            f"{c.callers} callers each send one input at once to one `{c.model_id}` endpoint "
            f"({c.backend}/{c.precision}, {c.weights} weights) through the dynamic batcher; {c.rounds} timed rounds.",
            "",
            *_table(["Figure", "Value"], [
                ["Batched throughput", f"{_n(c.items_per_s)} items/s"],
                ["Round wall time p50 / max", f"{_ms(c.round_seconds.p50 if c.round_seconds else None)} / "
                                              f"{_ms(c.round_seconds.max if c.round_seconds else None)} ms"],
                ["Request latency p50 / p99", f"{_ms(c.request_latency.p50 if c.request_latency else None)} / "
                                              f"{_ms(c.request_latency.p99 if c.request_latency else None)} ms"],
                ["Mean queue time", f"{_ms(c.mean_queue_s)} ms"],
                ["Mean batch", f"{_n(c.mean_batch_items)} items"],
                ["Our endpoint one by one", f"{_n(c.ours_one_by_one_items_per_s)} items/s"],
                ["Plain transformers one by one", f"{_n(c.plain_one_by_one_items_per_s)} items/s"],
                ["Batched ÷ plain one by one", f"{_n(c.ratio_vs_plain)}×" + (
                    f" (median of {len(c.paired.ratios)} rounds, each timing both back to back: "
                    f"{_n(c.paired.min)}–{_n(c.paired.max)}×)" if c.paired else "")],
            ]),
        ]

    lines += ["## Performance targets", ""]
    rows = [[t.name, t.subject, "–" if t.required is None else _n(t.required), _against(t.value, t.required),
             {True: "met", False: "**not met**", None: "–"}[t.met] + (" (noisy)" if t.noisy and t.met is not None else ""),
             "–" if t.spread is None else f"{t.spread:.2f}", _across(t), t.input_set or "–", t.figure]
            for t in targets]
    lines += _table(["Target", "Applies to", "Required", "Best measured", "Met", "Spread (max÷min)",
                     "Across reports (min–max, max÷min)", "Inputs", "Figures"], rows)
    lines += ["*Best measured* against plain transformers: where the two were also timed back to back in "
              "alternating rounds, the median of the rounds' ratios, and *Spread* the largest ÷ the smallest "
              "round ratio (a figure measured minutes apart from its baseline compares two states of a shared "
              "machine); otherwise the ratio of the two measurements, and *Spread* our slowest ÷ fastest timed "
              f"run. *(noisy)*: a spread above {NOISY_SPREAD:g}, the machine moved during those runs, and the "
              "verdict may not repeat.", ""]

    lines += ["## Share of the machine's measured peaks", ""]
    lines += [f"Against the measured fp32 peak ({m.fp32_gflops:.1f} GFLOP/s) and memory bandwidth "
              f"({m.memory_bandwidth_gbs:.1f} GB/s). Encoders: ≈ 2 × matmul weights × tokens (padding not "
              "counted) floating-point operations per call; the bandwidth share is the time to read the "
              "weights once over the p50 latency. Generation: tokens/s against batch × bandwidth ÷ weight "
              "bytes (each decoding step reads every weight). Weight bytes are parameters × bytes per "
              "parameter of the precision (approximate for int8).",
              ""]
    rows = []
    for r in run.cases:
        for me in r.measurements:
            e = me.efficiency
            if not e:
                continue
            rows.append([_model(r), r.task or "", f"{r.backend}/{r.precision}", str(me.batch_size),
                         _n(e.get("weight_bytes", 0) / 2**20), _n(e.get("gflops")), _pct(e.get("fraction_of_fp32_peak")),
                         _pct(e.get("fraction_of_bandwidth")), _n(e.get("bandwidth_bound_tokens_per_s")),
                         _pct(e.get("fraction_of_bandwidth_bound"))])
    lines += _table(["Model", "Task", "Backend/precision", "Batch", "Weights MiB", "GFLOP/s", "% fp32 peak",
                     "% bandwidth (weights once)", "Bound tokens/s", "% of bound"], rows)

    lines += ["## Notes: fallbacks, failures, synthetic weights", ""]
    notes: list[str] = []
    synthetic = [r for r in run.cases if r.weights == "synthetic"]
    if synthetic:
        names = sorted({f"`{r.case.model_id}`" for r in synthetic})
        notes.append("**Synthetic weights** (random weights built from the published config; speed figures are "
                     "real, outputs are meaningless): " + ", ".join(names) + ".")
    for r in run.cases:
        for f in r.fallbacks:
            notes.append(f"**Fallback** in {r.case_id}: {f['tried']} failed ({f['reason']}); ran {f['next']} "
                         f"(stage {f['stage']}). What ran: {r.backend}/{r.precision} on {r.device}.")
        if r.status == "failed":
            notes.append(f"**Failed** {r.case_id}: {r.reason}")
        for note in r.notes[:5]:
            notes.append(f"{r.case_id}: {note}")
    for b in run.baselines:
        if b.status == "failed":
            notes.append(f"**Baseline failed** {b.name} of `{b.model_id}`: {b.reason}")
    notes += list(run.notes)
    lines += [f"- {n}" for n in notes] or ["_Nothing fell back or failed._"]
    lines.append("")

    lines += ["## What was cut", ""]
    cut = list(run.cuts)
    for r in run.cases:
        for me in r.measurements:
            cut += [f"{r.case_id} batch {me.batch_size}: {x}" for x in me.cut]
    for b in run.baselines:
        for me in b.measurements:
            cut += [f"baseline {b.name} of `{b.model_id}` batch {me.batch_size}: {x}" for x in me.cut]
    lines += [f"- {x}" for x in cut] or ["_Nothing: every measurement got its runs and seconds._"]
    lines.append("")

    lines += ["## Plots", ""]
    lines += [f"![{Path(p).stem}]({Path(p).name})" for p in plots] or ["_No plots (nothing was measured)._"]
    lines.append("")
    return "\n".join(lines)


# -- plots -----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ThroughputBar:
    """One bar of the throughput plot: ours (a backend and precision) or a baseline, at one batch size."""

    label: str
    backend: str
    value: float
    is_baseline: bool
    vs_plain: float | None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LatencyBox:
    """One box of the latency plot: ours (a backend and precision) or a baseline, at one batch size.

    Attributes:
        samples_ms: the timed calls' latencies in milliseconds (the median alone where the
            measurement kept no samples).
    """

    label: str
    backend: str
    samples_ms: tuple[float, ...]
    p50_ms: float
    is_baseline: bool


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Entry:
    """A measurement placed in its plot panel."""

    panel: str
    model_key: str
    label: str
    backend: str
    is_baseline: bool
    measurement: Measurement


def _panel_entries(run: BenchRun) -> list[_Entry]:
    """Every measurement, ours and the baselines', with its panel: one per model, task and input set."""
    titles: dict[str, str] = {}
    # A case cut or failed before it loaded has no weights or input set: the title comes from
    # a case that measured something, so a later cut case cannot blank it.
    for r in sorted(run.cases, key=lambda r: (not r.measurements, not r.weights)):
        if r.case.model_key not in titles:
            on = f", {r.input_set} inputs" if r.input_set else ""
            titles[r.case.model_key] = f"{r.case.model_id.split('/')[-1]} {r.task} ({r.weights or '?'} weights{on})"
    out = [_Entry(panel=titles.get(r.case.model_key, r.case.model_key), model_key=r.case.model_key,
                  label=f"b{m.batch_size} {r.backend}/{r.precision}", backend=r.backend or "?", is_baseline=False,
                  measurement=m)
           for r in run.cases for m in r.measurements]
    for b in run.baselines:
        key = b.baseline_id.split("#", 1)[0]
        out += [_Entry(panel=titles.get(key, key), model_key=key, label=f"b{m.batch_size} {b.name}",
                       backend="baseline", is_baseline=True, measurement=m)
                for m in b.measurements]
    return out


def throughput_panels(run: BenchRun) -> dict[str, list[ThroughputBar]]:
    """The throughput plot's panels: one per model, task and input set, each bar ours or a baseline.

    Within a panel the bars are grouped by batch size (smallest first) and sorted by
    throughput, fastest first; each carries its ratio to the plain transformers baseline of
    the same model and batch size (None where no plain baseline ran).
    """
    keys = {r.case.model_key for r in run.cases}
    plain: dict[tuple[str, int], float] = {}
    for b in run.baselines:
        key = b.baseline_id.split("#", 1)[0]
        if b.role == "plain" and key in keys:
            for m in b.measurements:
                plain[(key, m.batch_size)] = m.rates.get(m.throughput.rate_unit or m.throughput.unit, 0.0)
    rows: dict[str, list[tuple[int, ThroughputBar]]] = {}
    for e in _panel_entries(run):
        m = e.measurement
        unit = m.throughput.rate_unit or m.throughput.unit
        value = m.rates.get(unit, 0.0)
        base = plain.get((e.model_key, m.batch_size))
        rows.setdefault(f"{e.panel} — {unit}", []).append((m.batch_size, ThroughputBar(
            label=e.label, backend=e.backend, value=value, is_baseline=e.is_baseline,
            vs_plain=value / base if base else None)))
    return {title: [bar for _, bar in sorted(bars, key=lambda x: (x[0], -x[1].value))]
            for title, bars in rows.items()}


def latency_panels(run: BenchRun) -> dict[str, list[LatencyBox]]:
    """The latency plot's panels, the same as the throughput plot's: one per model, task and
    input set; within a panel the boxes are grouped by batch size (smallest first) and sorted
    by median latency, fastest first."""
    rows: dict[str, list[tuple[int, LatencyBox]]] = {}
    for e in _panel_entries(run):
        m = e.measurement
        samples = tuple(x * 1000 for x in m.latency.samples) or (m.latency.p50 * 1000,)
        rows.setdefault(e.panel, []).append((m.batch_size, LatencyBox(
            label=e.label, backend=e.backend, samples_ms=samples, p50_ms=m.latency.p50 * 1000,
            is_baseline=e.is_baseline)))
    return {title: [box for _, box in sorted(boxes, key=lambda x: (x[0], x[1].p50_ms))]
            for title, boxes in rows.items()}


_BASELINE_COLOR = (0.62, 0.62, 0.62, 1.0)


def _panel_grid(panels: Mapping[str, Sequence[Any]], title: str, draw: Callable[[Any, str, Sequence[Any]], None],
                path: Path) -> None:
    """Draw ``panels`` two to a row (``draw(axes, title, items)`` fills one), with a legend of
    the backends' colours, and save the figure to ``path``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = panels or {"nothing measured": []}
    columns = 2 if len(panels) > 1 else 1
    grid = [list(panels.items())[i:i + columns] for i in range(0, len(panels), columns)]
    heights = [max(1.6, 0.3 * max(len(items) for _, items in row) + 0.9) for row in grid]
    fig, axes = plt.subplots(len(grid), columns, figsize=(7.5 * columns, sum(heights) + 0.6), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for r_index, row in enumerate(grid):
        for c_index in range(columns):
            ax = axes[r_index, c_index]
            if c_index >= len(row):
                ax.axis("off")
                continue
            draw(ax, *row[c_index])
            ax.tick_params(axis="x", labelsize=7)
            ax.grid(axis="x", alpha=0.3)
    colors = _backend_colors(panels)
    backends = [b for b in colors if b != "baseline"]
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[b]) for b in [*backends, "baseline"]]
    # The title, then the legend on a line of its own under it (side by side they overlap
    # when there is one column), then the panels.
    inches = sum(heights) + 0.6
    fig.suptitle(title, fontsize=10, x=0.02, y=1 - 0.08 / inches, ha="left", va="top")
    fig.legend(handles, [*backends, "baseline (outlined)"], fontsize=7, loc="upper left",
               bbox_to_anchor=(0.015, 1 - 0.3 / inches), ncol=len(handles), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.55 / inches))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _backend_colors(panels: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """A colour per backend in ``panels`` (sorted by name, matplotlib's tab10), grey for the baselines."""
    import matplotlib

    tab10 = matplotlib.colormaps["tab10"]
    backends = sorted({item.backend for items in panels.values() for item in items if not item.is_baseline})
    colors: dict[str, Any] = {b: tab10(i % 10) for i, b in enumerate(backends)}
    colors["baseline"] = _BASELINE_COLOR
    return colors


def _plot_throughput(run: BenchRun, path: Path) -> None:
    panels = throughput_panels(run)
    colors = _backend_colors(panels)

    def draw(ax: Any, title: str, bars: Sequence[ThroughputBar]) -> None:
        ax.barh(range(len(bars)), [b.value for b in bars], color=[colors.get(b.backend, "C0") for b in bars],
                edgecolor=["black" if b.is_baseline else "none" for b in bars])
        ax.set_yticks(range(len(bars)), [b.label for b in bars], fontsize=7)
        ax.invert_yaxis()
        top = max((b.value for b in bars), default=1.0) or 1.0
        ax.set_xlim(0, top * 1.22)
        for y, bar in enumerate(bars):
            figure = f"{bar.value:,.0f}" if bar.value >= 1000 else f"{bar.value:.3g}"
            text = figure + (f"  {bar.vs_plain:.2f}× plain" if bar.vs_plain is not None else "")
            ax.text(bar.value + top * 0.01, y, text, va="center", fontsize=6.5)
        ax.set_title(title.split(" — ")[0], fontsize=8.5)
        ax.set_xlabel(title.split(" — ")[-1], fontsize=7.5)

    _panel_grid(panels, f"Throughput per model, ours and baselines: {run.scenario.name}", draw, path)


def _duration_ms(ms: float) -> str:
    """A latency for a label: milliseconds below a second, else seconds (``"12.3 ms"``, ``"1.33 s"``)."""
    return f"{ms:.3g} ms" if ms < 1000 else f"{ms / 1000:.3g} s"


def _plot_latency(run: BenchRun, path: Path) -> None:
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    panels = latency_panels(run)
    colors = _backend_colors(panels)

    def draw(ax: Any, title: str, boxes: Sequence[LatencyBox]) -> None:
        if boxes:
            parts = ax.boxplot([list(b.samples_ms) for b in boxes], vert=False, whis=(1, 99), showfliers=True,
                               patch_artist=True, widths=0.6, positions=range(len(boxes)),
                               medianprops={"color": "black"})
            for patch, box in zip(parts["boxes"], boxes, strict=True):
                patch.set_facecolor(colors.get(box.backend, "C0"))
                patch.set_edgecolor("black" if box.is_baseline else "0.3")
            ax.set_yticks(range(len(boxes)), [b.label for b in boxes], fontsize=7)
            ax.set_xscale("log")
            # Ticks at 1, 2 and 5 of each decade, written as plain numbers: matplotlib's own
            # labels for a span under a decade are minor ticks in powers of ten that overlap.
            ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
            ax.xaxis.set_minor_formatter(NullFormatter())
            for y, box in enumerate(boxes):
                ax.text(max(box.samples_ms) * 1.08, y, f"p50 {_duration_ms(box.p50_ms)}", va="center",
                        fontsize=6.5)
            low, high = min(min(b.samples_ms) for b in boxes), max(max(b.samples_ms) for b in boxes)
            ax.set_xlim(low / 1.5, high * 3.5)
        ax.invert_yaxis()
        ax.set_title(title, fontsize=8.5)
        ax.set_xlabel("latency per call, ms (log scale; whiskers p1–p99)", fontsize=7.5)

    _panel_grid(panels, f"Latency per call per model, ours and baselines: {run.scenario.name}", draw, path)


# -- writing ---------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReportFiles:
    """The files a report wrote."""

    markdown: Path
    json: Path
    plots: tuple[Path, ...]
    targets: tuple[Target, ...]


def load_reports(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    """Earlier JSON reports for ``write_report(history=...)``, oldest first (by modification time).

    Raises:
        InvalidInput: a file is missing, or is not a benchmark JSON report.
    """
    docs = []
    for path in sorted((Path(p) for p in paths), key=lambda p: p.stat().st_mtime if p.is_file() else 0.0):
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"history {path}: not a readable JSON report ({exc})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("targets"), list):
            raise InvalidInput(f"history {path}: not a benchmark JSON report (no targets list)")
        docs.append(doc)
    return docs


def write_report(run: BenchRun, out_dir: str | Path, *, history: Sequence[Mapping[str, Any]] = ()) -> ReportFiles:
    """Write the Markdown, JSON and PNG files of ``run`` into ``out_dir``.

    Args:
        run: the results.
        out_dir: where the files go.
        history: earlier JSON reports, oldest first: each target states its values in them
            beside this run's, and their spread (:func:`~ipfs_accelerate.bench.targets.with_history`).

    Raises:
        InvalidInput: the JSON document does not match :data:`SCHEMA` (a bug, reported loudly).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    targets = with_history(evaluate_targets(run), history)
    plots = (out / THROUGHPUT_PNG, out / LATENCY_PNG)
    _plot_throughput(run, plots[0])
    _plot_latency(run, plots[1])
    files = {"markdown": MARKDOWN_NAME, "json": JSON_NAME, "plots": [p.name for p in plots]}
    doc = report_dict(run, targets, files)
    errors = validate(doc)
    if errors:
        raise InvalidInput("benchmark JSON does not match its schema: " + "; ".join(errors[:10]))
    (out / JSON_NAME).write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    (out / MARKDOWN_NAME).write_text(render_markdown(run, targets, plots=[p.name for p in plots]))
    return ReportFiles(markdown=out / MARKDOWN_NAME, json=out / JSON_NAME, plots=plots, targets=tuple(targets))
