"""The meters: memory (process RSS, CUDA allocations) and timed calls.

:class:`PeakRSS` and :class:`CudaPeak` measure what a block of code adds to memory;
:func:`measure_calls` times a call (cold call, warm-up, timed runs until both a count and
seconds hold, or a cap) and turns the task figures of its calls into rates;
:func:`efficiency` sets a figure against the machine's measured peaks. The batch probe
(:mod:`ipfs_accelerate.engine.batch_probe`) uses the memory meters too.
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

from .results import Measurement, Throughput
from .stats import Latency

__all__ = [
    "BYTES_PER_PARAM",
    "INPUT_FIGURES",
    "CudaPeak",
    "PeakRSS",
    "efficiency",
    "encoder_tokens",
    "measure_calls",
    "release_freed_memory",
    "rss_bytes",
]

BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0}
# Rates (higher is better) a measurement can have, by the task figure they come from.
_PER_CALL = ("items", "new_tokens", "prompt_tokens", "audio_seconds", "frames")
INPUT_FIGURES = ("audio_seconds", "frames")
"""Task figures that describe the inputs (a baseline's calls report none: ours are lent to it)."""


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


def measure_calls(call: Callable[[], Mapping[str, float]], *, batch_size: int, device: str, cold: bool,
                  min_runs: int, min_seconds: float, cap: float, warmup_runs: int, budgeted: bool,
                  cut: tuple[str, ...] = (), extra_figures: Mapping[str, float] | None = None) -> Measurement:
    """Cold call, warm-up, then timed calls until ``min_runs`` and ``min_seconds`` hold (or ``cap``).

    Args:
        call: runs one batch and returns its task figures (``Result.timings``: ``items``,
            ``new_tokens``, ``audio_seconds`` …).
        batch_size: inputs per call.
        device: where it runs (``cuda…``: each call is synchronised, memory is CUDA's).
        cold: make the cold first call (timed apart) before the warm-up.
        min_runs: timed calls at least …
        min_seconds: … and at least this many seconds of them.
        cap: stop the timed calls after this many seconds whatever holds.
        warmup_runs: untimed calls before the timed ones.
        budgeted: a time budget runs: skip the warm-up when the cold call shows it would not fit ``cap``.
        cut: what the caller already cut (the budget's shrunken ``min_seconds``), in words.
        extra_figures: figures to add to every call's (a baseline's input figures).

    Returns:
        The :class:`~ipfs_accelerate.bench.results.Measurement` (without efficiency or WER).
    """
    cuts = list(cut)
    on_cuda = device.lower().startswith("cuda")
    sync: Callable[[], None] | None = None
    if on_cuda:
        import torch

        def sync() -> None:
            torch.cuda.synchronize()
    # Pages an earlier figure freed would be reused without growing the RSS: hand them back
    # first, so this figure's growth is its own.
    release_freed_memory()
    rss_meter = PeakRSS()
    cuda_meter = CudaPeak(device) if on_cuda else None
    cold_s: float | None = None
    samples: list[float] = []
    figures: list[dict[str, float]] = []
    with rss_meter:
        if cuda_meter is not None:
            cuda_meter.__enter__()
        if cold:
            t0 = time.perf_counter()
            call()
            if sync:
                sync()
            cold_s = time.perf_counter() - t0
            if warmup_runs and budgeted and cold_s * (warmup_runs + 1) > cap:
                # The cold call warmed the model up; a further warm-up would not fit the budget.
                cuts.append(f"warm-up skipped: the cold call took {cold_s:.1f} s (time cap {cap:.1f} s)")
                warmup_runs = 0
        for _ in range(warmup_runs):
            call()
        started = time.perf_counter()
        while True:
            if sync:
                sync()
            t0 = time.perf_counter()
            timings = call()
            if sync:
                sync()
            samples.append(time.perf_counter() - t0)
            figures.append({**(extra_figures or {}), **timings})
            elapsed = time.perf_counter() - started
            if len(samples) >= min_runs and elapsed >= min_seconds:
                break
            if elapsed >= cap:
                break
        if cuda_meter is not None:
            cuda_meter.__exit__(None, None, None)
    seconds = time.perf_counter() - started
    if len(samples) < min_runs:
        cuts.append(f"{len(samples)} of {min_runs} runs (time cap {cap:.1f} s)")
    total = sum(samples)
    sums = {k: sum(f.get(k, 0.0) for f in figures) for k in _PER_CALL if any(k in f for f in figures)}
    sums.setdefault("items", float(batch_size * len(samples)))
    rates = {"items/s": sums["items"] / total if total > 0 else 0.0}
    if sums.get("new_tokens", 0.0) > 0:  # a synthetic model may emit only end or padding tokens
        rates["tokens/s"] = sums["new_tokens"] / total if total > 0 else 0.0
    if "audio_seconds" in sums:
        rates["x realtime"] = sums["audio_seconds"] / total if total > 0 else 0.0
    if "frames" in sums and sums["frames"] > 0:
        rates["frames/s"] = sums["frames"] / total if total > 0 else 0.0
    per_call = {k: v / len(samples) for k, v in sums.items()}
    ttft = [f["time_to_first_token_s"] for f in figures if "time_to_first_token_s" in f]
    if ttft:
        per_call["time_to_first_token_s"] = statistics.median(ttft)
    if "frames/s" in rates:
        per_call["ms_per_frame"] = 1000.0 / rates["frames/s"] if rates["frames/s"] else float("inf")
    return Measurement(
        batch_size=batch_size, runs=len(samples), seconds=seconds, latency=Latency.from_samples(samples),
        throughput=_throughput(rates, per_call), rates=rates, figures=per_call,
        peak_rss_mb=rss_meter.growth / 2**20,
        cuda_max_allocated_mb=cuda_meter.growth / 2**20 if cuda_meter is not None else None,
        cold_first_call_s=cold_s, warmup_runs=warmup_runs, min_runs=min_runs,
        min_seconds=min_seconds, cut=tuple(cuts),
    )


def efficiency(m: Measurement, *, n_params: int, n_matmul: int, precision: str, peak_gflops: float,
               bandwidth_gbs: float, encoder_inputs: Callable[[], Mapping[str, Any]]) -> dict[str, float]:
    """The share of the measured fp32 peak and memory bandwidth the figure reaches.

    Args:
        m: the measurement.
        n_params: the model's parameters (0: nothing can be computed).
        n_matmul: the parameters in matrix multiplications (two FLOPs per token each).
        precision: the precision that ran (the bytes per weight).
        peak_gflops: the device's measured fp32 peak; ``bandwidth_gbs`` its memory bandwidth.
        encoder_inputs: the model inputs of the measured batch, built only for an encoder's
            token count (see :func:`encoder_tokens`).
    """
    if not n_params:
        return {}
    weight_bytes = n_params * BYTES_PER_PARAM.get(precision, 4.0)
    out: dict[str, float] = {"weight_bytes": weight_bytes}
    p50 = m.latency.p50
    if "tokens/s" in m.rates:
        # Each decoding step reads every weight once for the whole batch.
        bound = m.batch_size * bandwidth_gbs * 1e9 / weight_bytes
        out["bandwidth_bound_tokens_per_s"] = bound
        out["fraction_of_bandwidth_bound"] = m.rates["tokens/s"] / bound if bound else 0.0
        gflops = 2.0 * n_params * m.rates["tokens/s"] / 1e9
    else:
        out["fraction_of_bandwidth"] = (weight_bytes / (bandwidth_gbs * 1e9)) / p50 if p50 > 0 else 0.0
        gflops = 0.0
        try:
            tokens = encoder_tokens(encoder_inputs())
        except Exception:  # noqa: BLE001 - efficiency is best effort
            tokens = 0
        if tokens and p50 > 0:
            gflops = 2.0 * n_matmul * tokens / p50 / 1e9
    if gflops > 0:
        out["gflops"] = gflops
        out["fraction_of_fp32_peak"] = gflops / peak_gflops if peak_gflops else 0.0
    return out


def encoder_tokens(inputs: Mapping[str, Any]) -> int:
    """The tokens an encoder call really computes: the attention mask's ones, else every id.

    Padding is left out: the endpoint sorts a batch by length and runs it in sub-batches
    that pad little, so counting the whole batch padded to its longest input overstated
    the work, past the machine's fp32 peak (docs/benchmark.md). 0 when the inputs hold no
    token ids.
    """
    mask, ids = inputs.get("attention_mask"), inputs.get("input_ids")
    if mask is not None and hasattr(mask, "sum"):
        return int(mask.sum())
    return int(ids.numel()) if ids is not None and hasattr(ids, "numel") else 0


def _throughput(rates: dict[str, float], figures: dict[str, float]) -> Throughput:
    if "x realtime" in rates:
        return Throughput(unit="x realtime", value=rates["x realtime"], rate_unit="x realtime")
    if "frames/s" in rates:
        ms = 1000.0 / rates["frames/s"] if rates["frames/s"] > 0 else float("inf")
        return Throughput(unit="ms/frame", value=ms, higher_is_better=False, rate_unit="frames/s")
    if "tokens/s" in rates:
        return Throughput(unit="tokens/s", value=rates["tokens/s"], rate_unit="tokens/s")
    return Throughput(unit="items/s", value=rates["items/s"], rate_unit="items/s")
