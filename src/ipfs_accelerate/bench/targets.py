"""The performance targets, checked against a run's figures (never asserted in tests).

Targets are stated per task *kind*, so that no family is named here; a row is produced for
every model of that kind the run measured:

==============================  ==========================================================
kind                            target
==============================  ==========================================================
feature-extraction (of texts,   batch 32 on 512 sentences of 12–20 words (the ``uniform``
real weights)                   input set): ≥ 1.5× plain transformers, with cosine ≥ 0.99
                                to the reference baseline (the plain one when there is none);
                                other input sets (mixed lengths) get a labelled, reported row
text-generation                 batch 1 ≥ 2× plain transformers tokens/s (fp32 or 16-bit
                                weights, fp16 or bf16; the row names the precision that met
                                it, and the best fp32 figure is stated beside it); int8
                                ≥ 4×; batch 8 ≥ 4× batch 1; the share of the weight-bytes
                                ÷ bandwidth bound is reported
automatic-speech-recognition    batch 1 (one 30 s clip): realtime factor ≥ each reference
                                baseline's, at a word error rate against the spoken text
                                no worse than the fp32 reference baseline's + 0.02 (the
                                plain baseline's when no reference runs in fp32); real weights
(concurrency test)              N callers through the batcher ≥ 3× one-by-one plain
==============================  ==========================================================

:data:`TARGET_NEEDS` says, per kind, which batch sizes and precisions these targets read;
the seed suite (:func:`ipfs_accelerate.bench.scenario.seed_suite`) runs exactly those
first, so that a time budget never cuts what a target needs before what it does not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from .results import BaselineResult, BenchRun, CaseResult, Comparison, Measurement
from .stats import PairedRatios
from .target_needs import (
    EMBEDDING_BATCH,
    EMBEDDING_INPUT_SET,
    GENERATION_BATCH,
    GENERATION_SCALED_BATCH,
    SPEECH_BATCH,
    TARGET_NEEDS,
    WER_MARGIN,
    TargetNeeds,
)

__all__ = ["NOISY_SPREAD", "TARGET_NEEDS", "WER_MARGIN", "Target", "TargetNeeds", "evaluate_targets", "with_history"]

NOISY_SPREAD = 1.3
"""A spread above this says the machine moved during the runs behind a value: the report
marks the row, whose met or not met may not repeat (docs/benchmark.md, "Spread")."""

@dataclasses.dataclass(frozen=True, kw_only=True)
class Target:
    """One target and whether this run met it.

    Attributes:
        name: the target in words.
        subject: the model and task it applies to.
        required: the threshold (None for a figure that is only reported).
        value: the best measured value (None: not measured in this run).
        met: True or False; None when not measured or only reported.
        figure: how the value was obtained (which case, which batch, the raw figures).
        input_set: the input set the figures were measured on, and what it holds.
        spread: where ours and the baseline were timed back to back in alternating rounds
            (``Comparison.paired``), the largest ÷ the smallest round ratio; else the
            slowest ÷ the fastest timed run of the measurement behind ``value`` (1.0: every
            run alike; None when not measured).
        history: this target's value in earlier reports (``bench --history``), oldest
            first; this run's ``value`` is not among them.
    """

    name: str
    subject: str
    required: float | None
    value: float | None
    met: bool | None
    figure: str
    input_set: str = ""
    spread: float | None = None
    history: tuple[float, ...] = ()

    @property
    def noisy(self) -> bool:
        """Whether the runs behind the value spread more than :data:`NOISY_SPREAD`."""
        return self.spread is not None and self.spread > NOISY_SPREAD

    @property
    def key(self) -> tuple[str, str, str]:
        """What identifies the same target across reports: its name, subject and input set."""
        return (self.name, self.subject, self.input_set)

    def values_across_reports(self) -> tuple[float, ...]:
        """The earlier reports' values, then this run's (when measured)."""
        return self.history + ((self.value,) if self.value is not None else ())

    def spread_across_reports(self) -> float | None:
        """The largest ÷ the smallest value over the reports (None with fewer than two)."""
        values = self.values_across_reports()
        if len(values) < 2 or min(values) <= 0:
            return None
        return max(values) / min(values)


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def _group(run: BenchRun) -> dict[str, list[CaseResult]]:
    groups: dict[str, list[CaseResult]] = {}
    for result in run.cases:
        if result.measurements:
            groups.setdefault(result.case.model_key, []).append(result)
    return groups


def _comparisons(run: BenchRun, results: Iterable[CaseResult]) -> list[tuple[CaseResult, Comparison]]:
    by_id = {r.case_id: r for r in results}
    return [(by_id[c.case_id], c) for c in run.comparisons if c.case_id in by_id and math.isfinite(c.ratio)]


def _label(result: CaseResult) -> str:
    return f"{result.backend}/{result.precision}"


class _Row(NamedTuple):
    """One candidate figure for a target: its value, its words and, where known, its spread
    (the rounds' max ÷ min ratio, or the measurement's slowest ÷ fastest run)."""

    value: float
    figure: str
    spread: float | None = None


def _best(rows: list[_Row], name: str, subject: str, required: float | None, needs: str = "") -> Target:
    """The target from its best row (the highest value); "not measured" without rows."""
    if not rows:
        figure = f"not measured{f' (needs {needs})' if needs else ''}"
        return Target(name=name, subject=subject, required=required, value=None, met=None, figure=figure)
    best = max(rows, key=lambda row: row.value)
    met = None if required is None else best.value >= required
    return Target(name=name, subject=subject, required=required, value=best.value, met=met, figure=best.figure,
                  spread=best.spread)


def run_spread(m: Measurement | None) -> float | None:
    """The slowest ÷ the fastest timed run of one measurement (None with no runs)."""
    if m is None or m.latency.min <= 0:
        return None
    return m.latency.max / m.latency.min


def versus_baseline(result: CaseResult, c: Comparison, figure: str) -> _Row:
    """A target's value, figure and spread from one comparison with a baseline.

    Where the two were timed back to back in alternating rounds, the median round ratio
    (the two measurements' own figures stay in the text); else the ratio of the two
    measurements, whose spread is ours' slowest ÷ fastest run.
    """
    p = c.paired
    if p is None:
        return _Row(c.ratio, figure, run_spread(_measurement(result, c.batch_size)))
    return _Row(p.median, f"{figure}; {_rounds_text(p, apart=c.ratio)}", p.spread)


def _rounds_text(p: PairedRatios, *, apart: float | None = None) -> str:
    """How a figure from rounds timed back to back reads in a target row."""
    measured_apart = f"; measured apart {apart:.3g}×" if apart is not None else ""
    return (f"back to back, median of {len(p.ratios)} alternating rounds {p.median:.3g}× "
            f"(rounds {p.min:.3g}–{p.max:.3g}×{measured_apart})")


def _input_label(result: CaseResult) -> str:
    if not result.input_set:
        return ""
    return f"{result.input_set}: {result.input_description}" if result.input_description else result.input_set


def _subject(result: CaseResult) -> str:
    return f"{result.case.model_id} {result.task} ({result.weights} weights)"


def _measurement(result: CaseResult, batch_size: int) -> Measurement | None:
    return next((m for m in result.measurements if m.batch_size == batch_size), None)


def evaluate_targets(run: BenchRun) -> list[Target]:
    """Every target that applies to what the run measured."""
    out: list[Target] = []
    for results in _group(run).values():
        kind, subject = results[0].kind, _subject(results[0])
        pairs = _comparisons(run, results)
        needs = TARGET_NEEDS.get(kind or "")
        if needs is None or not needs.applies(weights=results[0].weights, input_type=results[0].input_type):
            continue
        found: list[Target] = []
        if kind == "feature-extraction":
            named = needs.input_set is None or results[0].input_set == needs.input_set
            found.append(_embedding_target(pairs, subject, named=named))
        elif kind == "text-generation":
            found += _generation_targets(pairs, results, subject)
        elif kind == "automatic-speech-recognition":
            found += _speech_targets(run, pairs, results, subject)
        out += [dataclasses.replace(t, input_set=_input_label(results[0])) for t in found]
    c = run.concurrency
    if c is not None:
        name = f"{c.callers} concurrent callers ≥ 3× one-by-one plain transformers"
        if c.status == "ok" and c.ratio_vs_plain is not None:
            out.append(Target(
                name=name, subject=f"{c.model_id} {c.task} ({c.weights} weights)", required=3.0,
                value=c.ratio_vs_plain, met=c.ratio_vs_plain >= 3.0,
                figure=(f"{_fmt(c.items_per_s or 0)} items/s batched ({c.backend}/{c.precision}) vs "
                        f"{_fmt(c.plain_one_by_one_items_per_s or 0)} items/s one by one"
                        + (f"; {_rounds_text(c.paired)}" if c.paired else "")),
                input_set=f"{c.callers} single inputs of the task's default input set, at once",
                spread=(c.paired.spread if c.paired is not None
                        else c.round_seconds.max / c.round_seconds.min if c.round_seconds is not None
                        and c.round_seconds.min > 0 else None),
            ))
        else:
            out.append(Target(name=name, subject=c.model_id or "-", required=3.0, value=None, met=None,
                              figure=f"{c.status}: {c.reason}"))
    return out


def _embedding_target(pairs: list[tuple[CaseResult, Comparison]], subject: str, *, named: bool = True) -> Target:
    """The target on its own input set (``named``); on another set, the same figure reported only."""
    name = f"batch {EMBEDDING_BATCH} ≥ 1.5× plain transformers at cosine ≥ 0.99"
    required: float | None = 1.5
    if not named:
        name = f"batch {EMBEDDING_BATCH} × plain transformers at cosine ≥ 0.99 (reported: not the target's " \
               f"{EMBEDDING_INPUT_SET} input set)"
        required = None
    pairs = [(r, c) for r, c in pairs if c.batch_size == EMBEDDING_BATCH]
    rows: list[_Row] = []
    cosines: dict[tuple[str, int], dict[str, Any]] = {}
    for _, c in pairs:
        if c.agreement and c.agreement.get("metric") == "cosine":
            # The reference baseline's cosine wins over the plain one's when both exist.
            key = (c.case_id, c.batch_size)
            if c.role == "reference" or key not in cosines:
                cosines[key] = {**c.agreement, "against": c.baseline_name}
    for result, c in pairs:
        if c.role != "plain":
            continue
        cos = cosines.get((c.case_id, c.batch_size))
        if cos is None or cos["min"] < 0.99:
            continue
        rows.append(versus_baseline(result, c, (
            f"{_label(result)} batch {c.batch_size}: {_fmt(c.ours)} vs {_fmt(c.theirs)} "
            f"{c.unit}; cosine min {cos['min']:.4f} vs {cos['against']}")))
    if not rows and pairs:
        return Target(name=name, subject=subject, required=required, value=None,
                      met=False if named else None,
                      figure="no case reached cosine ≥ 0.99 with a plain baseline measured")
    return _best(rows, name, subject, required, needs=f"batch {EMBEDDING_BATCH}")


def _generation_targets(pairs: list[tuple[CaseResult, Comparison]], results: list[CaseResult],
                        subject: str) -> list[Target]:
    one_b, many_b = GENERATION_BATCH, GENERATION_SCALED_BATCH

    def plain_rows(precisions: tuple[str, ...]) -> list[_Row]:
        return [versus_baseline(r, c, f"{_label(r)}: {_fmt(c.ours)} vs {_fmt(c.theirs)} tokens/s")
                for r, c in pairs
                if c.role == "plain" and c.batch_size == one_b and c.unit == "tokens/s" and r.precision in precisions]

    unquantized = _best(plain_rows(("fp32", "fp16", "bf16")), f"batch {one_b} ≥ 2× plain transformers tokens/s",
                        subject, 2.0, needs=f"batch {one_b} and its plain baseline")
    fp32 = plain_rows(("fp32",))
    if fp32 and unquantized.value is not None:
        best = max(fp32, key=lambda row: row.value)
        if best.value < unquantized.value:
            unquantized = dataclasses.replace(unquantized, figure=f"{unquantized.figure}; fp32 weights: "
                                                                 f"{best.figure} ({best.value:.2f}×)")
    out = [
        unquantized,
        _best(plain_rows(("int8",)), f"int8 batch {one_b} ≥ 4× plain transformers tokens/s", subject, 4.0,
              needs=f"int8 at batch {one_b} and the plain baseline"),
    ]
    scaling: list[_Row] = []
    bound: list[_Row] = []
    # Batch sizes of one backend and precision may come from separate cases.
    runs: dict[str, dict[int, Any]] = {}
    for r in results:
        for m in r.measurements:
            runs.setdefault(_label(r), {})[m.batch_size] = m
    for label, by_batch in runs.items():
        one, many = by_batch.get(one_b), by_batch.get(many_b)
        if one and many and one.rates.get("tokens/s"):
            ratio = many.rates.get("tokens/s", 0.0) / one.rates["tokens/s"]
            scaling.append(_Row(ratio, f"{label}: {_fmt(many.rates.get('tokens/s', 0.0))} vs "
                                       f"{_fmt(one.rates['tokens/s'])} tokens/s"))
        if one and "fraction_of_bandwidth_bound" in one.efficiency:
            bound.append(_Row(one.efficiency["fraction_of_bandwidth_bound"],
                              f"{label}: {_fmt(one.rates.get('tokens/s', 0.0))} of "
                              f"{_fmt(one.efficiency['bandwidth_bound_tokens_per_s'])} tokens/s "
                              "(weight bytes ÷ measured bandwidth)"))
    out.append(_best(scaling, f"batch {many_b} ≥ 4× batch {one_b} tokens/s", subject, 4.0,
                     needs=f"batches {one_b} and {many_b} of one backend and precision"))
    out.append(_best(bound, f"batch {one_b} share of the weight-bytes ÷ bandwidth bound (reported)", subject, None,
                     needs=f"batch {one_b}"))
    return out


def _wer_bar(run: BenchRun, pairs: list[tuple[CaseResult, Comparison]]) -> BaselineResult | None:
    """The baseline whose word error rate (+ the margin) ours must not exceed: the fp32
    reference baseline, or the plain (fp32) one when no reference runs in fp32."""
    ids = {c.baseline_id for _, c in pairs}
    mine = [b for b in run.baselines if b.baseline_id in ids]
    return next((b for b in mine if b.role == "reference" and b.precision == "fp32"),
                next((b for b in mine if b.role == "plain"), None))


def _speech_targets(run: BenchRun, pairs: list[tuple[CaseResult, Comparison]], results: list[CaseResult],
                    subject: str) -> list[Target]:
    bar = _wer_bar(run, pairs)
    bar_name = bar.name if bar is not None else "the fp32 baseline"
    names = list(dict.fromkeys(c.baseline_name for _, c in pairs if c.role == "reference"))
    out: list[Target] = []
    for name in names:
        target = f"batch {SPEECH_BATCH} realtime factor ≥ {name} at WER ≤ {bar_name}'s + {WER_MARGIN:g}"
        kept: list[_Row] = []
        too_wrong: list[str] = []
        unscored: list[_Row] = []
        for r, c in pairs:
            if c.role != "reference" or c.baseline_name != name or c.batch_size != SPEECH_BATCH:
                continue
            ours = _measurement(r, c.batch_size)
            theirs = _measurement_of(bar, c.batch_size)
            speed = versus_baseline(
                r, c, f"{_label(r)} batch {c.batch_size}: {_fmt(c.ours)} vs {_fmt(c.theirs)} {c.unit}")
            if ours is None or ours.wer is None or theirs is None or theirs.wer is None:
                unscored.append(speed._replace(figure=f"{speed.figure}; WER not measured (ours {_wer(ours)}, "
                                                      f"{bar_name} {_wer(theirs)}: no reference text)"))
                continue
            words = f"WER {ours.wer:.3f} (ours) vs {theirs.wer:.3f} ({bar_name}) + {WER_MARGIN:g}"
            if ours.wer <= theirs.wer + WER_MARGIN:
                kept.append(speed._replace(figure=f"{speed.figure}; {words}"))
            else:
                too_wrong.append(f"{speed.figure}; {words}: too many errors")
        if kept:
            out.append(_best(kept, target, subject, 1.0))
        elif too_wrong:
            out.append(Target(name=target, subject=subject, required=1.0, value=None, met=False,
                              figure="no case within the WER bound: " + "; ".join(too_wrong)))
        elif unscored:
            # The speed half may hold, but a target with an unchecked half is not met.
            best = max(unscored, key=lambda row: row.value)
            out.append(Target(name=target, subject=subject, required=1.0, value=best.value, met=None,
                              figure=best.figure))
        else:
            out.append(_best([], target, subject, 1.0, needs=f"batch {SPEECH_BATCH}"))
    return out


def _measurement_of(baseline: BaselineResult | None, batch_size: int) -> Measurement | None:
    if baseline is None:
        return None
    return next((m for m in baseline.measurements if m.batch_size == batch_size), None)


def _wer(m: Measurement | None) -> str:
    return "–" if m is None or m.wer is None else f"{m.wer:.3f}"


def with_history(targets: Iterable[Target], earlier: Iterable[Mapping[str, Any]]) -> list[Target]:
    """``targets`` with the values the same targets had in earlier JSON reports.

    A target is the same when its name, subject and input set are (:attr:`Target.key`);
    targets of an earlier report that this run did not evaluate are left out, and so are
    earlier rows that were not measured.

    Args:
        targets: this run's targets (:func:`evaluate_targets`).
        earlier: earlier reports' JSON documents, oldest first (``report.json``).
    """
    seen: dict[tuple[str, str, str], list[float]] = {}
    for doc in earlier:
        for row in doc.get("targets", []):
            value = row.get("value")
            if isinstance(value, (int, float)) and math.isfinite(value):
                key = (str(row.get("name", "")), str(row.get("subject", "")), str(row.get("input_set", "")))
                seen.setdefault(key, []).append(float(value))
    return [dataclasses.replace(t, history=tuple(seen.get(t.key, ()))) for t in targets]
