"""The ``ipfs-accelerate`` command: doctor, families, run, demo, cache (and more as they land).

Environment variables are read here, at the edge, and nowhere in the library:
``IPFS_ACCELERATE_CACHE`` sets the cache directory.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ._cli_args import parse_key_value
from ._exceptions import AccelerateError, InvalidInput
from .engine.options import BACKENDS, PRECISIONS, WEIGHTS

__all__ = ["main"]


def _cache_dir() -> Path | None:
    value = os.environ.get("IPFS_ACCELERATE_CACHE")
    return Path(value) if value else None


def _cmd_doctor(args: argparse.Namespace) -> int:
    from . import doctor

    report = doctor()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    print(f"python {report.python} on {report.platform}")
    print(f"cpu    {report.cpu} ({report.cpu_count} logical), flags: {' '.join(report.cpu_flags) or 'none'}")
    print(f"memory {report.memory_gib} GiB")
    print("backends:")
    for name, probe in report.backends.items():
        state = "ok" if probe.available else "unavailable"
        line = f"  {name:<12} {state:<12} {probe.version or '-':<14} devices: {', '.join(probe.devices) or '-'}"
        if probe.reason:
            line += f"  ({probe.reason})"
        print(line)
        for key, value in probe.details.items():
            print(f"      {key}: {value}")
    print("libraries: " + ", ".join(f"{k} {v}" for k, v in report.libraries.items()))
    return 0


def _cmd_families(args: argparse.Namespace) -> int:
    from ._info import families

    infos = families()
    if args.json:
        print(json.dumps([f.to_dict() for f in infos], indent=2))
        return 0
    for info in infos:
        print(f"{info.name}: {info.description}")
        print(f"  default checkpoint: {info.default_checkpoint}"
              + (f" (real weights installed: {', '.join(info.packaged)})" if info.packaged else ""))
        for task, params in info.tasks.items():
            mark = " (default)" if task == info.default_task else ""
            shown = ", ".join(f"{k}={v!r}" for k, v in params.items())
            print(f"  task {task}{mark}: {shown}")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from . import load
    from .store.cli import ipfs_load_kwargs

    endpoint = load(
        args.model, task=args.task, backend=args.backend, precision=args.precision, device=args.device,
        weights=args.weights, family=args.family, strict=args.strict, cache_dir=_cache_dir(),
        **ipfs_load_kwargs(),  # IPFS_ACCELERATE_PEERS / IPFS_ACCELERATE_KUBO_API for ipfs:// models
    )
    params = dict(args.param or [])
    inputs: Any = args.input if len(args.input) > 1 else args.input[0]
    if args.stream:
        for piece in endpoint.stream(inputs, **params):
            print(piece, end="", flush=True)
        print()
        return 0
    result = endpoint(inputs, **params)
    if args.json:
        print(result.to_json(indent=2))
        return 0
    for index, output in enumerate(result.outputs):
        print(f"[{index}] {_short(output)}")
    p = result.provenance
    print(f"-- {p.family}/{p.task} on {p.backend} {p.device} {p.precision}, weights {p.weights} ({p.source}), "
          f"batch {p.batch_size}, {result.timings['total_s'] * 1000:.1f} ms")
    for fb in p.fallbacks:
        print(f"-- fallback: {fb.tried} failed ({fb.reason}); tried {fb.next}")
    for note in p.notes:
        print(f"-- note: {note}")
    return 0


def _short(output: Any) -> str:
    if hasattr(output, "shape") and hasattr(output, "tolist"):
        head = ", ".join(f"{x:.4f}" for x in output.ravel()[:6].tolist())
        return f"vector[{output.shape[-1]}] [{head}, …]"
    return json.dumps(output, default=str)[:500] if not isinstance(output, str) else output


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    return run_demo(cache_dir=_cache_dir(), families=args.family or None)


def _ago(seconds: float) -> str:
    if seconds < 3600:
        return f"{seconds / 60:.0f} min ago"
    if seconds < 86_400:
        return f"{seconds / 3600:.0f} h ago"
    return f"{seconds / 86_400:.0f} d ago"


def _cmd_cache(args: argparse.Namespace) -> int:
    import time

    from .engine.cache import cache_items, prune_cache
    from .engine.options import default_cache_dir

    if args.dry_run and args.prune is None:
        raise InvalidInput("--dry-run goes with --prune DAYS: a listing removes nothing anyway")
    root = _cache_dir() or default_cache_dir()
    if args.prune is not None:
        items = prune_cache(root, unused_days=args.prune, dry_run=args.dry_run)
        verb = "would remove" if args.dry_run else "removed"
    else:
        items = cache_items(root)
        verb = "holds"
    now = time.time()
    if args.json:
        print(json.dumps({"cache_dir": str(root), "action": verb, "total_bytes": sum(i.size_bytes for i in items),
                          "items": [{**dataclasses.asdict(i), "path": str(i.path)} for i in items]}, indent=2))
        return 0
    for item in items:
        print(f"{item.size_bytes / 1e9:8.2f} GB  {_ago(now - item.last_used):>12}  {item.kind:<22} {item.what}")
    total = sum(i.size_bytes for i in items) / 1e9
    print(f"{root} {verb} {len(items)} entr{'y' if len(items) == 1 else 'ies'}, {total:.2f} GB")
    if args.prune is None and items:
        print("remove what has not been used for N days: ipfs-accelerate cache --prune N")
    return 0


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ipfs-accelerate", description="Run HuggingFace model families on the hardware at hand."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log fallbacks and loading steps")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("doctor", help="report the hardware and the backends that work here")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_doctor)

    p = sub.add_parser("families", help="list families, tasks, parameters and checkpoints")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_families)

    p = sub.add_parser("run", help="run one model on inputs and print outputs and provenance")
    p.add_argument("model", help="hub id, local directory, or a checkpoint a package ships")
    p.add_argument("--task")
    p.add_argument("--input", action="append", required=True, help="an input (repeat for a batch)")
    p.add_argument("--backend", default="auto", choices=BACKENDS)
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
    p.add_argument("--device", default="auto")
    p.add_argument("--weights", default="auto", choices=WEIGHTS)
    p.add_argument("--family")
    p.add_argument("--strict", action="store_true", help="fail instead of falling back")
    p.add_argument("--param", action="append", type=parse_key_value, metavar="NAME=VALUE",
                   help="a task parameter, e.g. max_new_tokens=16 (values parsed as JSON)")
    p.add_argument("--stream", action="store_true", help="print generated text as it comes")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("demo", help="run every family once and print a table")
    p.add_argument("--family", action="append", help="only these families (repeatable)")
    p.set_defaults(func=_cmd_demo)

    p = sub.add_parser("cache", help="list the cache (synthetic weights, conversions, exports) or prune it")
    p.add_argument("--prune", type=float, metavar="DAYS",
                   help="remove the entries nothing has used for DAYS days (0: all); they are rebuilt when needed")
    p.add_argument("--dry-run", action="store_true", help="with --prune: list what would go, remove nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_cache)

    from .bench.cli import add_bench_parser

    add_bench_parser(sub)
    from .store.cli import add_models_parser

    add_models_parser(sub)
    from .server.cli import add_serve_parser

    add_serve_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (errors, ours or the operating system's: one line on stderr, code 2)."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except AccelerateError as exc:
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`… | head`): nothing more to say, and Python's flush at exit
        # must not fail on the closed pipe again (the recipe in the signal module's docs).
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except OSError as exc:
        # A file, folder, disk or network the person can fix: one line. -v keeps the traceback,
        # for the case where it is ours to fix.
        if args.verbose:
            raise
        print(f"error: {type(exc).__name__}: {exc} (-v shows where)", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
