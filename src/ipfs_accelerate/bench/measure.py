"""The meters: memory (process RSS, CUDA allocations) and timed calls.

:class:`PeakRSS` and :class:`CudaPeak` (from :mod:`ipfs_accelerate.engine.memory`, re-exported
here) measure what a block of code adds to memory; :func:`measure_calls` times a call (cold
call, warm-up, timed runs until both a count and seconds hold, or a cap) and turns the task
figures of its calls into rates;
:func:`efficiency` sets a figure against the machine's measured peaks.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .._exceptions import InvalidInput
from ..engine.memory import CudaPeak, PeakRSS, release_freed_memory, rss_bytes
from .results import Measurement, Throughput
from .stats import Latency, PairedRatios

__all__ = [
    "BYTES_PER_PARAM",
    "INPUT_FIGURES",
    "CudaPeak",
    "PeakRSS",
    "efficiency",
    "encoder_tokens",
    "measure_calls",
    "measure_paired",
    "rates_of",
    "release_freed_memory",
    "rss_bytes",
]

BYTES_PER_PARAM = {"fp32": 4.0, "fp16": 2.0, "bf16": 2.0, "int8": 1.0}
# Rates (higher is better) a measurement can have, by the task figure they come from.
_PER_CALL = ("items", "new_tokens", "prompt_tokens", "audio_seconds", "frames")
INPUT_FIGURES = ("audio_seconds", "frames")
"""Task figures that describe the inputs (a baseline's calls report none: ours are lent to it)."""


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
    sums = _per_call_sums(figures)
    sums.setdefault("items", float(batch_size * len(samples)))
    rates = rates_of(sums, total)
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


def _per_call_sums(figures: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The per-call task figures (:data:`_PER_CALL`) summed over calls, those reported only."""
    return {k: sum(f.get(k, 0.0) for f in figures) for k in _PER_CALL if any(k in f for f in figures)}


def rates_of(sums: Mapping[str, float], seconds: float) -> dict[str, float]:
    """The rates (higher is better) of task figures summed over ``seconds`` of calls.

    ``items/s`` always (``sums`` must hold ``items``); ``tokens/s``, ``x realtime`` and
    ``frames/s`` where their figure was reported (tokens and frames only when some came out:
    a synthetic model may emit only end or padding tokens).
    """
    def per_second(figure: str) -> float:
        return sums[figure] / seconds if seconds > 0 else 0.0

    rates = {"items/s": per_second("items")}
    if sums.get("new_tokens", 0.0) > 0:
        rates["tokens/s"] = per_second("new_tokens")
    if "audio_seconds" in sums:
        rates["x realtime"] = per_second("audio_seconds")
    if sums.get("frames", 0.0) > 0:
        rates["frames/s"] = per_second("frames")
    return rates


def measure_paired(ours: Callable[[], Mapping[str, float]], theirs: Callable[[], Mapping[str, float]], *,
                   unit: str, rounds: int, device: str, batch_size: int, repeats: tuple[int, int] = (1, 1),
                   extra_figures: Mapping[str, float] | None = None,
                   clock: Callable[[], float] = time.perf_counter) -> PairedRatios:
    """Time ``ours`` and ``theirs`` back to back, ``rounds`` times, and take each round's ratio.

    Both calls are expected warm (each side's own measurement ran just before). Round 1
    runs ours first, round 2 theirs first, and so on, so that a machine speeding up or
    slowing down during the rounds favours neither side. ``repeats`` makes the faster side
    run several calls in its turn, so that both turns span about the same wall time (a
    150 ms call beside a 1 s one would sample a much shorter stretch of the machine).

    Args:
        ours, theirs: run one batch each and return its task figures (as for
            :func:`measure_calls`).
        unit: the rate compared (``"tokens/s"``, ``"items/s"`` …; see :func:`rates_of`).
        rounds: how many rounds (≥ 1).
        device: where they run (``cuda…``: each call is synchronised).
        batch_size: inputs per call (the ``items`` figure when a call reports none).
        repeats: calls per turn, ours and theirs.
        extra_figures: figures added to the baseline's calls (the inputs' own, which only
            ours reports: audio seconds, frames).
        clock: seconds, monotonic (tests pass their own).

    Raises:
        InvalidInput: ``rounds`` < 1, or a call whose figures give no ``unit`` rate.
    """
    if isinstance(rounds, bool) or not isinstance(rounds, int) or rounds < 1:
        raise InvalidInput(f"rounds must be a positive integer; got {rounds!r}")
    if any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in repeats) or len(repeats) != 2:
        raise InvalidInput(f"repeats must be two positive integers; got {repeats!r}")
    sync: Callable[[], None] = lambda: None  # noqa: E731 - the CPU needs none
    if device.lower().startswith("cuda"):
        import torch

        sync = torch.cuda.synchronize

    def rate(call: Callable[[], Mapping[str, float]], calls: int, extra: Mapping[str, float]) -> float:
        figures: list[Mapping[str, float]] = []
        sync()
        started = clock()
        for _ in range(calls):
            figures.append({"items": float(batch_size), **extra, **call()})
        sync()
        rates = rates_of(_per_call_sums(figures), clock() - started)
        if unit not in rates:
            raise InvalidInput(f"a paired call reported no {unit} (figures: {', '.join(sorted(figures[-1])) or 'none'})")
        return rates[unit]

    mine: list[float] = []
    others: list[float] = []
    for index in range(rounds):
        if index % 2 == 0:
            mine.append(rate(ours, repeats[0], {}))
            others.append(rate(theirs, repeats[1], extra_figures or {}))
        else:
            others.append(rate(theirs, repeats[1], extra_figures or {}))
            mine.append(rate(ours, repeats[0], {}))
    return PairedRatios.from_rates(mine, others)


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
