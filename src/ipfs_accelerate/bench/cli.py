"""``ipfs-accelerate bench``: measure models, write the report.

Register it in the main parser with ``add_bench_parser(subparsers)``; it also runs alone as
``python -m ipfs_accelerate.bench.cli``. Examples::

    ipfs-accelerate bench --suite seed --out reports/ --history-dir reports/history  # the main job
    ipfs-accelerate bench --model gpt2 --weights synthetic --backend torch \\
        --precision fp32 --precision int8 --batch-size 1 --batch-size 8 --param max_new_tokens=32
    ipfs-accelerate bench --scenario my.yaml --budget-s 300 --out /tmp/report

Environment variables are read here, at the edge: ``IPFS_ACCELERATE_CACHE`` sets the cache.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._cli_args import parse_key_value, require_writable_folder
from .._exceptions import AccelerateError, InvalidInput
from ..engine.options import BACKENDS, PRECISIONS, WEIGHTS

__all__ = ["HISTORY_KEPT", "add_bench_parser", "cmd_bench", "keep_report", "kept_reports", "main"]

HISTORY_KEPT = 20
"""How many kept reports ``--history-dir`` reads (the newest): a column of 20 runs says what
holds on this machine, and the files (about 0.7 MB each) are never deleted by us."""


def add_bench_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``bench`` sub-command to an ``argparse`` sub-parsers object."""
    p = subparsers.add_parser(
        "bench", help="benchmark models against plain transformers and write a report",
        description="Measure latency, throughput, memory, load time and the cold first call of models on each "
                    "backend and precision, beside plain transformers and reference baselines, and write a "
                    "Markdown report, a JSON file and PNG plots.",
    )
    what = p.add_argument_group("what to measure (one of)")
    what.add_argument("--suite", choices=["seed"], help="a built-in suite; seed: every family on every backend")
    what.add_argument("--scenario", type=Path, help="a YAML, TOML or JSON scenario file")
    what.add_argument("--model", action="append", help="a model id or directory (repeatable)")
    p.add_argument("--task")
    p.add_argument("--backend", action="append", choices=BACKENDS, help="repeatable (default auto)")
    p.add_argument("--precision", action="append", choices=PRECISIONS, help="repeatable (default fp32)")
    p.add_argument("--batch-size", action="append", type=int, help="repeatable (default 1; suite: 1 and 8)")
    p.add_argument("--weights", default="auto", choices=WEIGHTS)
    p.add_argument("--device", default="auto")
    p.add_argument("--config-override", action="append", type=parse_key_value, metavar="NAME=VALUE",
                   help="change the published config (synthetic weights only; values parsed as JSON)")
    p.add_argument("--param", action="append", type=parse_key_value, metavar="NAME=VALUE",
                   help="a task parameter for every call, e.g. max_new_tokens=32")
    p.add_argument("--input-set", help="the bench profile's input set by name (default: the task's default set; "
                                       "sentence embeddings: mixed or uniform)")
    p.add_argument("--min-runs", type=int, help="timed runs at least, per figure (default 3; suite 5)")
    p.add_argument("--min-seconds", type=float, help="timed seconds at least, per figure (default 1; suite 3)")
    p.add_argument("--budget-s", type=float,
                   help="the measurements' time budget (imports, the machine's peaks and building synthetic "
                        "weights come before it and are reported apart): shrinks min-seconds to fit and skips "
                        "the lowest-priority cases when spent, and the report lists every cut (suite default 840)")
    p.add_argument("--no-baselines", action="store_true", help="skip the baselines")
    p.add_argument("--concurrency", type=int, help="callers in the concurrency test; 0 skips it (suite 64)")
    p.add_argument("--paired-rounds", type=int,
                   help="where a target compares ours with a baseline (plain transformers; faster-whisper for "
                        "speech), rounds timing the two back to back (order alternating) whose median ratio the "
                        "target reads; 0 skips them (default 4)")
    p.add_argument("--out", type=Path, default=Path("reports"), help="where the report goes (default reports/)")
    p.add_argument("--threads", default="auto",
                   help="torch intra-op threads: a number, 'default' (torch's choice), or 'auto' (default): "
                        "torch's choice unless a timed small step runs faster on one thread, as happens when "
                        "other processes keep the CPUs busy")
    p.add_argument("--history", nargs="+", type=Path, default=[], metavar="REPORT_JSON",
                   help="earlier JSON reports (e.g. old/*/benchmark.json): each target states its values "
                        "over them and this run, and their max÷min spread")
    p.add_argument("--history-dir", type=Path, metavar="DIR",
                   help=f"keep this run's JSON report in DIR and read the newest {HISTORY_KEPT} kept there as "
                        "--history (make report uses reports/history): each target then states its values "
                        "across the reports taken on this machine")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                   help="log fallbacks and library warnings")
    p.set_defaults(func=cmd_bench)
    return p


def _scenario(args: argparse.Namespace) -> Any:
    from .scenario import from_flags, load_scenario, seed_suite

    chosen = [x for x in (args.suite, args.scenario, args.model) if x]
    if len(chosen) != 1:
        raise InvalidInput("pass exactly one of --suite, --scenario or --model")
    if args.suite:
        kwargs: dict[str, Any] = {"device": args.device}
        if args.batch_size:
            kwargs["batch_sizes"] = tuple(args.batch_size)
        if args.budget_s is not None:
            kwargs["budget_s"] = args.budget_s
        if args.min_runs is not None:
            kwargs["min_runs"] = args.min_runs
        if args.min_seconds is not None:
            kwargs["min_seconds"] = args.min_seconds
        if args.concurrency is not None:
            kwargs["concurrency"] = args.concurrency
        scenario = seed_suite(**kwargs)
    elif args.scenario:
        scenario = load_scenario(args.scenario)
        changes: dict[str, Any] = {}
        if args.budget_s is not None:
            changes["budget_s"] = args.budget_s
        if args.concurrency is not None:
            changes["concurrency"] = args.concurrency
        if changes:
            scenario = dataclasses.replace(scenario, **changes)
    else:
        scenario = from_flags(
            models=args.model, task=args.task, backends=tuple(args.backend or ["auto"]),
            precisions=tuple(args.precision or ["fp32"]), batch_sizes=tuple(args.batch_size or [1]),
            weights=args.weights, device=args.device, config_overrides=dict(args.config_override or []) or None,
            params=dict(args.param or []), min_runs=args.min_runs if args.min_runs is not None else 3,
            min_seconds=args.min_seconds if args.min_seconds is not None else 1.0, budget_s=args.budget_s,
            concurrency=args.concurrency if args.concurrency is not None else 0, input_set=args.input_set,
        )
    if args.no_baselines:
        scenario = dataclasses.replace(scenario, baselines=False)
    if args.paired_rounds is not None:
        scenario = dataclasses.replace(scenario, paired_rounds=args.paired_rounds)
    return scenario


def _set_threads(value: str) -> str:
    """Apply ``--threads``; returns a note for the report (empty when torch's choice stands)."""
    import torch

    if value == "default":
        return ""
    if value == "auto":
        from .machine import choose_torch_threads

        threads, reason = choose_torch_threads()
        return reason
    try:
        threads = int(value)
    except ValueError:
        raise InvalidInput(f"--threads takes a number, 'auto' or 'default'; got {value!r}") from None
    if threads < 1:
        raise InvalidInput(f"--threads must be ≥ 1; got {threads}")
    torch.set_num_threads(threads)
    return f"torch threads set to {threads} (--threads)"


def cmd_bench(args: argparse.Namespace) -> int:
    """Run the benchmark the arguments describe and write its report; 0 on success."""
    from .progress import Progress
    from .report import load_reports, write_report
    from .runner import run_scenario

    scenario = _scenario(args)
    if not getattr(args, "verbose", False):
        # Model loaders warn a lot (deprecations, generation defaults); the report holds what matters.
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    # Read (and made) before the run: a bad --history file or an unwritable --history-dir
    # should stop it now, not after its budget.
    history = load_reports(args.history)
    if args.history_dir is not None:
        history += kept_reports(args.history_dir)
        require_writable_folder(args.history_dir, "--history-dir", "keep reports there")
    require_writable_folder(Path(args.out), "--out", "write the report there")
    notes = [_set_threads(str(args.threads))]
    cache = os.environ.get("IPFS_ACCELERATE_CACHE")
    with Progress(enabled=not args.quiet) as progress:
        run = run_scenario(scenario, cache_dir=Path(cache) if cache else None, progress=progress,
                           notes=[n for n in notes if n])
    files = write_report(run, args.out, history=history)
    if args.history_dir is not None:
        kept = keep_report(files.json, args.history_dir, run.started_at)
        print(f"kept:   {kept} (history for the next run; this one read {len(history)} earlier reports)")
    print(f"report: {files.markdown}")
    print(f"json:   {files.json}")
    print(f"plots:  {', '.join(str(p) for p in files.plots)}")
    failed = [c for c in run.cases if c.status == "failed"]
    met = sum(t.met is True for t in files.targets)
    judged = sum(t.met is not None for t in files.targets)
    prep = f" ({run.preparation.seconds:.0f} s of it preparation)" if run.preparation is not None else ""
    print(f"{len(run.cases)} cases ({len(failed)} failed) in {run.duration_s:.0f} s{prep}; "
          f"targets met: {met}/{judged}")
    return 0


def kept_reports(directory: Path) -> list[dict[str, Any]]:
    """The newest :data:`HISTORY_KEPT` JSON reports kept in ``directory``, oldest first (none
    when it does not exist); a file that is not a report is left out with a warning."""
    from .report import load_reports

    if not directory.is_dir():
        return []
    found = sorted(directory.glob("benchmark-*.json"), key=lambda p: p.stat().st_mtime)[-HISTORY_KEPT:]
    docs = []
    for path in found:
        try:
            docs += load_reports([path])
        except InvalidInput as exc:
            print(f"warning: {exc}; left out of the history", file=sys.stderr)
    return docs


def keep_report(report_json: Path, directory: Path, started_at: str) -> Path:
    """Copy ``report_json`` into ``directory`` as ``benchmark-<start time>.json``; returns the copy.

    Raises:
        InvalidInput: ``directory`` cannot be created or written.
    """
    stamp = re.sub(r"[^0-9A-Za-z]+", "-", started_at).strip("-") or "run"
    target = directory / f"benchmark-{stamp}.json"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        shutil.copy2(report_json, target)
    except OSError as exc:
        raise InvalidInput(f"--history-dir {directory}: cannot keep the report there ({exc})") from None
    return target


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``bench`` alone (``python -m ipfs_accelerate.bench.cli``)."""
    parser = argparse.ArgumentParser(prog="ipfs-accelerate")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    add_bench_parser(sub)
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return int(args.func(args))
    except AccelerateError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
