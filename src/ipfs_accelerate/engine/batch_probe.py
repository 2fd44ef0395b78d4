"""The largest batch the memory at hand allows, probed once and cached.

:func:`probe_max_batch` runs the task's benchmark inputs (its bench profile's ``inputs``)
at batch 1, 2, 4 … and stops at the memory budget, at an out-of-memory error, at a time cap
or at ``max_batch``. Memory is what the runs add above the loaded model: the process's
peak RSS on the CPU (the kernel's high-water mark on Linux, else sampled in a thread),
``torch.cuda.max_memory_allocated`` on CUDA.
The answer is cached in ``<cache_dir>/batch_probe.json`` under the model's content hash,
task, backend, precision and device, so each combination is probed once per machine.

The memory meters it reads (:class:`~.memory.PeakRSS`, :class:`~.memory.CudaPeak`) are the
benchmark's too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidInput, OutOfMemory, is_out_of_memory
from ..families.bench_profile import bench_profile
from .memory import CudaPeak, PeakRSS, release_freed_memory, rss_bytes
from .options import default_cache_dir

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["cache_key", "probe_max_batch"]

CACHE_FILE = "batch_probe.json"


def cache_key(endpoint: Endpoint) -> str:
    """``content-hash|task|backend|precision|device`` of the endpoint's model."""
    w = endpoint.handler.weights
    rt = endpoint.runtime
    return f"{w.content_hash()}|{endpoint.task}|{rt.backend}|{rt.precision}|{rt.device}"


def _default_budget(device: str) -> int:
    if device.startswith("cuda"):
        import torch

        free, _total = torch.cuda.mem_get_info(device)
        return int(free * 0.8)
    import psutil

    # Half of what is free: the rest is for other requests, the OS and other processes.
    return int(psutil.virtual_memory().available * 0.5)


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_cache(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".batch_probe-", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True)
    os.replace(tmp, path)


@contextlib.contextmanager
def _meter(device: str, baseline: int | None) -> Iterator[Any]:
    if device.startswith("cuda"):
        with CudaPeak(device) as meter:
            yield meter
    else:
        with PeakRSS(baseline=baseline) as meter:
            yield meter


def probe_max_batch(
    endpoint: Endpoint,
    budget_bytes: int | None = None,
    *,
    max_batch: int = 256,
    max_call_s: float = 10.0,
    cache_dir: str | Path | None = None,
    refresh: bool = False,
) -> int:
    """The largest batch (a power of two, ≥ 1) whose run stays within the memory budget.

    Args:
        endpoint: the loaded model; its handler's bench profile's ``inputs(n)`` are run.
        budget_bytes: the most memory a batch may add above the loaded model; None takes
            half the free RAM on the CPU, 80 % of free device memory on CUDA.
        max_batch: stop growing here.
        max_call_s: stop growing once one batch takes this long (a bigger one only waits longer).
        cache_dir: where ``batch_probe.json`` lives; None takes the default cache.
        refresh: probe again even when a cached answer exists.

    Returns:
        The batch size; an endpoint uses it as ``endpoint.max_batch_size = n``.

    Raises:
        InvalidInput: a bad argument.
    """
    if budget_bytes is not None and budget_bytes <= 0:
        raise InvalidInput(f"budget_bytes must be positive; got {budget_bytes!r}")
    if max_batch < 1:
        raise InvalidInput(f"max_batch must be ≥ 1; got {max_batch!r}")
    path = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = path / CACHE_FILE
    key = cache_key(endpoint)
    if not refresh:
        entry = _read_cache(path).get(key)
        if isinstance(entry, dict) and isinstance(entry.get("max_batch"), int):
            return int(entry["max_batch"])

    device = endpoint.runtime.device
    device = device if str(device).startswith("cuda") else "cpu"
    budget = budget_bytes if budget_bytes is not None else _default_budget(device)
    handler = endpoint.handler
    profile = bench_profile(handler)
    params = handler.parse_params({})
    on_cpu = not device.startswith("cuda")
    if on_cpu:
        release_freed_memory()
    baseline = rss_bytes() if on_cpu else None
    best, n, stopped = 1, 1, f"reached max_batch {max_batch}"
    growth: dict[str, int] = {}
    while n <= max_batch:
        items = profile.inputs(n)
        if on_cpu:
            release_freed_memory()  # each batch's growth counts new pages, not pages an earlier one left
        started = time.perf_counter()
        try:
            with _meter(device, baseline) as meter:
                # One forward pass of exactly n items: run_items would split or halve on OOM.
                endpoint.run_pass(items, params)
        except (OutOfMemory, MemoryError) as exc:
            stopped = f"out of memory at batch {n}: {exc}"
            break
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            stopped = f"out of memory at batch {n}"
            break
        seconds = time.perf_counter() - started
        growth[str(n)] = meter.growth
        if meter.growth > budget:
            stopped = f"batch {n} used {meter.growth} bytes, over the budget of {budget}"
            break
        best = n
        if meter.growth * 2 > budget:
            # Memory grows about linearly with the batch: doubling would cross the budget.
            stopped = f"batch {2 * n} would exceed the budget of {budget} bytes"
            break
        if seconds > max_call_s:
            stopped = f"batch {n} took {seconds:.1f} s (cap {max_call_s} s)"
            break
        n *= 2
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
    data = _read_cache(path)
    data[key] = {
        "max_batch": best, "budget_bytes": int(budget), "growth_bytes": growth, "stopped": stopped,
        "model_id": handler.weights.model_id, "probed_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_cache(path, data)
    return best
