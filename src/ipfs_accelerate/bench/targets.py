"""The performance targets, checked against a run's figures (never asserted in tests).

Targets are stated per task *kind*, so that no family is named here; a row is produced for
every model of that kind the run measured:

==============================  ==========================================================
kind                            target
==============================  ==========================================================
feature-extraction (of texts)   ≥ 1.5× plain transformers, with cosine ≥ 0.99 to the
                                reference baseline (the plain one when there is none)
text-generation                 batch 1 ≥ 2× plain transformers tokens/s; int8 ≥ 4×;
                                batch 8 ≥ 4× batch 1; the share of the weight-bytes ÷
                                bandwidth bound is reported
automatic-speech-recognition    realtime factor ≥ each reference baseline's
(concurrency test)              N callers through the batcher ≥ 3× one-by-one plain
==============================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from .runner import BenchRun, CaseResult, Comparison

__all__ = ["Target", "evaluate_targets"]


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
    """

    name: str
    subject: str
    required: float | None
    value: float | None
    met: bool | None
    figure: str


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


def _best(rows: list[tuple[float, str]], name: str, subject: str, required: float | None) -> Target:
    if not rows:
        return Target(name=name, subject=subject, required=required, value=None, met=None, figure="not measured")
    value, figure = max(rows, key=lambda r: r[0])
    met = None if required is None else value >= required
    return Target(name=name, subject=subject, required=required, value=value, met=met, figure=figure)


def _subject(result: CaseResult) -> str:
    return f"{result.case.model_id} {result.task} ({result.weights} weights)"


def evaluate_targets(run: BenchRun) -> list[Target]:
    """Every target that applies to what the run measured."""
    out: list[Target] = []
    for results in _group(run).values():
        kind, subject = results[0].kind, _subject(results[0])
        pairs = _comparisons(run, results)
        if kind == "feature-extraction" and results[0].input_type == "str":
            out.append(_embedding_target(run, pairs, subject))
        elif kind == "text-generation":
            out += _generation_targets(pairs, results, subject)
        elif kind == "automatic-speech-recognition":
            out += _speech_targets(pairs, subject)
    c = run.concurrency
    if c is not None:
        name = f"{c.callers} concurrent callers ≥ 3× one-by-one plain transformers"
        if c.status == "ok" and c.ratio_vs_plain is not None:
            out.append(Target(
                name=name, subject=f"{c.model_id} {c.task} ({c.weights} weights)", required=3.0,
                value=c.ratio_vs_plain, met=c.ratio_vs_plain >= 3.0,
                figure=(f"{_fmt(c.items_per_s or 0)} items/s batched ({c.backend}/{c.precision}) vs "
                        f"{_fmt(c.plain_one_by_one_items_per_s or 0)} items/s one by one"),
            ))
        else:
            out.append(Target(name=name, subject=c.model_id or "-", required=3.0, value=None, met=None,
                              figure=f"{c.status}: {c.reason}"))
    return out


def _embedding_target(run: BenchRun, pairs: list[tuple[CaseResult, Comparison]], subject: str) -> Target:
    name = "≥ 1.5× plain transformers at cosine ≥ 0.99"
    rows: list[tuple[float, str]] = []
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
        rows.append((c.ratio, f"{_label(result)} batch {c.batch_size}: {_fmt(c.ours)} vs {_fmt(c.theirs)} "
                              f"{c.unit}; cosine min {cos['min']:.4f} vs {cos['against']}"))
    if not rows and pairs:
        return Target(name=name, subject=subject, required=1.5, value=None, met=False,
                      figure="no case reached cosine ≥ 0.99 with a plain baseline measured")
    return _best(rows, name, subject, 1.5)


def _generation_targets(pairs: list[tuple[CaseResult, Comparison]], results: list[CaseResult],
                        subject: str) -> list[Target]:
    def plain_rows(int8: bool) -> list[tuple[float, str]]:
        return [
            (c.ratio, f"{_label(r)}: {_fmt(c.ours)} vs {_fmt(c.theirs)} tokens/s")
            for r, c in pairs
            if c.role == "plain" and c.batch_size == 1 and c.unit == "tokens/s" and (r.precision == "int8") == int8
        ]

    out = [
        _best(plain_rows(False), "batch 1 ≥ 2× plain transformers tokens/s", subject, 2.0),
        _best(plain_rows(True), "int8 batch 1 ≥ 4× plain transformers tokens/s", subject, 4.0),
    ]
    scaling: list[tuple[float, str]] = []
    bound: list[tuple[float, str]] = []
    # Batch sizes of one backend and precision may come from separate cases.
    runs: dict[str, dict[int, Any]] = {}
    for r in results:
        for m in r.measurements:
            runs.setdefault(_label(r), {})[m.batch_size] = m
    for label, by_batch in runs.items():
        one, eight = by_batch.get(1), by_batch.get(8)
        if one and eight and one.rates.get("tokens/s"):
            ratio = eight.rates.get("tokens/s", 0.0) / one.rates["tokens/s"]
            scaling.append((ratio, f"{label}: {_fmt(eight.rates.get('tokens/s', 0.0))} vs "
                                   f"{_fmt(one.rates['tokens/s'])} tokens/s"))
        if one and "fraction_of_bandwidth_bound" in one.efficiency:
            bound.append((one.efficiency["fraction_of_bandwidth_bound"],
                          f"{label}: {_fmt(one.rates.get('tokens/s', 0.0))} of "
                          f"{_fmt(one.efficiency['bandwidth_bound_tokens_per_s'])} tokens/s "
                          "(weight bytes ÷ measured bandwidth)"))
    out.append(_best(scaling, "batch 8 ≥ 4× batch 1 tokens/s", subject, 4.0))
    out.append(_best(bound, "batch 1 share of the weight-bytes ÷ bandwidth bound (reported)", subject, None))
    return out


def _speech_targets(pairs: list[tuple[CaseResult, Comparison]], subject: str) -> list[Target]:
    refs: dict[str, list[tuple[float, str]]] = {}
    for r, c in pairs:
        if c.role == "reference":
            refs.setdefault(c.baseline_name, []).append(
                (c.ratio, f"{_label(r)} batch {c.batch_size}: {_fmt(c.ours)} vs {_fmt(c.theirs)} {c.unit}"))
    return [_best(rows, f"realtime factor ≥ {name}", subject, 1.0) for name, rows in refs.items()]
