"""``ipfs-accelerate demo``: every family once on this machine, as a table."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ._exceptions import AccelerateError
from ._types import WeightsKind
from .families import all_families

__all__ = ["run_demo"]




def run_demo(*, cache_dir: Path | None = None, families: list[str] | None = None) -> int:
    """Load each family's default checkpoint (real weights where a package ships them,
    synthetic otherwise, labelled) and run its default task on built-in inputs."""
    from . import load
    from ._info import families as family_infos

    packaged = {info.name: set(info.packaged) for info in family_infos()}
    rows: list[tuple[str, ...]] = []
    failures = 0
    for model_family in all_families():
        if families and model_family.name not in families:
            continue
        model_id = model_family.default_checkpoint
        # Real weights where a package ships them, else synthetic: labelled in the table.
        weights: WeightsKind = "pretrained" if model_id in packaged[model_family.name] else "synthetic"
        for task in model_family.tasks:
            started = time.perf_counter()
            try:
                ep = load(model_id, task=task, weights=weights, cache_dir=cache_dir)
                inputs = ep.handler.example_inputs()
                result = ep(inputs)
            except AccelerateError as exc:
                failures += 1
                rows.append((model_family.name, task, "-", "-", weights, "failed", f"{type(exc).__name__}: {exc}"[:80]))
                continue
            p = result.provenance
            load_s = time.perf_counter() - started - result.timings["total_s"]
            rows.append((
                model_family.name, task, p.backend, p.precision, p.weights,
                f"{result.timings['total_s'] * 1000:.0f} ms", f"load {load_s:.1f} s; " + _preview(result.outputs[0]),
            ))
            print(f"  done {model_family.name}/{task}", flush=True)
    headers = ("family", "task", "backend", "precision", "weights", "latency", "output")
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    print(" | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for row in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    return 1 if failures else 0


def _preview(output: Any) -> str:
    if hasattr(output, "shape"):
        return f"vector[{output.shape[-1]}]"
    text = str(output).replace("\n", " ")
    return text[:40] + ("…" if len(text) > 40 else "")
