"""The largest batch the memory at hand allows, probed once and cached.

:func:`probe_max_batch` runs the task's benchmark inputs (``TaskHandler.bench_inputs``) at
batch 1, 2, 4 … and stops at the memory budget, at an out-of-memory error, at a time cap
or at ``max_batch``. Memory is what the runs add above the loaded model: the process's
peak RSS on the CPU (the kernel's high-water mark on Linux, else sampled in a thread),
``torch.cuda.max_memory_allocated`` on CUDA.
The answer is cached in ``<cache_dir>/batch_probe.json`` under the model's content hash,
task, backend, precision and device, so each combination is probed once per machine.

:class:`PeakRSS` and :class:`CudaPeak` are the memory meters; the benchmark uses them too.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .._exceptions import InvalidInput, OutOfMemory
from .options import default_cache_dir

if TYPE_CHECKING:
    from .endpoint import Endpoint

__all__ = ["CudaPeak", "PeakRSS", "cache_key", "probe_max_batch", "release_freed_memory", "rss_bytes"]

CACHE_FILE = "batch_probe.json"


def rss_bytes() -> int:
    """This process's resident set size, in bytes."""
    import psutil

    return int(psutil.Process().memory_info().rss)


def release_freed_memory() -> None:
    """Collect garbage and hand the C heap's free pages back to the system (glibc).

    Before an RSS measurement: memory freed earlier but kept by the allocator is reused
    without growing the RSS, so a block that needs it would read as needing nothing.
    """
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class PeakRSS:
    """The process's peak RSS over a block; ``growth`` is the peak above the start.

    On Linux the kernel keeps the peak itself (``VmHWM``), and writing 5 to
    ``/proc/self/clear_refs`` resets it to the current RSS: the block is measured exactly,
    transient allocations included, and nothing runs beside it. Elsewhere, where
    ``clear_refs`` is not writable, or while another meter holds the kernel's mark (nested
    or concurrent meters), a thread samples the RSS every ``interval_s``. Sampling costs:
    on 2 cores a 5 ms sampler took about 10 % of a GPT-2 int8 decode on ONNX Runtime.

    Args:
        interval_s: seconds between samples when sampling (short calls may slip between two
            samples; the sample at exit bounds that from below).
        baseline: the RSS to measure growth from; None takes the RSS at entry.
    """

    def __init__(self, *, interval_s: float = 0.005, baseline: int | None = None) -> None:
        self.interval_s = interval_s
        self.baseline = baseline
        self.peak = 0
        self.method = ""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._holds_mark = False

    def __enter__(self) -> PeakRSS:
        global _mark_held
        now = rss_bytes()
        if self.baseline is None:
            self.baseline = now
        self.peak = now
        with _mark_lock:
            self._holds_mark = not _mark_held and _reset_high_water_mark()
            _mark_held = _mark_held or self._holds_mark
        self.method = "kernel high-water mark" if self._holds_mark else f"sampled every {self.interval_s * 1e3:g} ms"
        if not self._holds_mark:
            self._stop.clear()
            self._thread = threading.Thread(target=self._sample, name="ipfs-accelerate-rss", daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak = max(self.peak, rss_bytes())

    def __exit__(self, *exc: object) -> None:
        global _mark_held
        if self._holds_mark:
            self.peak = max(self.peak, _high_water_mark() or 0)
            with _mark_lock:
                _mark_held = self._holds_mark = False
        else:
            self._stop.set()
            if self._thread is not None:
                self._thread.join()
        self.peak = max(self.peak, rss_bytes())

    @property
    def growth(self) -> int:
        """Peak RSS minus the baseline, in bytes (never negative)."""
        return max(0, self.peak - int(self.baseline or 0))


_mark_lock = threading.Lock()
_mark_held = False  # one meter at a time may reset the process-wide mark


def _reset_high_water_mark() -> bool:
    """Reset the kernel's peak RSS of this process to its current RSS (Linux); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return _high_water_mark() is not None


def _high_water_mark() -> int | None:
    """The kernel's peak RSS of this process in bytes (``VmHWM``), or None where it has none."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


class CudaPeak:
    """``torch.cuda.max_memory_allocated`` above what was allocated at entry (synchronised)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.start = 0
        self.peak = 0

    def __enter__(self) -> CudaPeak:
        import torch

        torch.cuda.synchronize(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        self.start = int(torch.cuda.memory_allocated(self.device))
        return self

    def __exit__(self, *exc: object) -> None:
        import torch

        torch.cuda.synchronize(self.device)
        self.peak = int(torch.cuda.max_memory_allocated(self.device))

    @property
    def growth(self) -> int:
        return max(0, self.peak - self.start)


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
        endpoint: the loaded model; its handler's ``bench_inputs(n)`` are run.
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

    from .endpoint import _is_oom

    device = endpoint.runtime.device
    device = device if str(device).startswith("cuda") else "cpu"
    budget = budget_bytes if budget_bytes is not None else _default_budget(device)
    handler = endpoint.handler
    params = handler.parse_params({})
    on_cpu = not device.startswith("cuda")
    if on_cpu:
        release_freed_memory()
    baseline = rss_bytes() if on_cpu else None
    best, n, stopped = 1, 1, f"reached max_batch {max_batch}"
    growth: dict[str, int] = {}
    while n <= max_batch:
        items = handler.bench_inputs(n)
        if on_cpu:
            release_freed_memory()  # each batch's growth counts new pages, not pages an earlier one left
        started = time.perf_counter()
        try:
            with _meter(device, baseline) as meter:
                # One forward pass of exactly n items: run_items would split or halve on OOM.
                endpoint._run_chunk(items, params)
        except (OutOfMemory, MemoryError) as exc:
            stopped = f"out of memory at batch {n}: {exc}"
            break
        except Exception as exc:
            if not _is_oom(exc):
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
