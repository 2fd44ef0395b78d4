"""Memory meters: what a block of code adds to the process's RSS or to CUDA allocations.

The engine's batch probe (:mod:`.batch_probe`) reads them to find the largest batch that
fits; the benchmark (:mod:`ipfs_accelerate.bench.measure`) reads them for peak memory.
They live in the engine because the engine needs them and the benchmark builds on the
engine, not the other way round.
"""

from __future__ import annotations

import threading

__all__ = ["CudaPeak", "PeakRSS", "release_freed_memory", "rss_bytes"]


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
    or concurrent meters), a thread samples the RSS every ``interval_s``. Sampling costs
    CPU time that the measured code would otherwise have (see docs/benchmark.md).

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
