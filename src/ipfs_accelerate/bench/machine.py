"""The machine a benchmark ran on: facts, library versions, and measured peaks.

Two peaks are measured rather than looked up, because the figures that matter are what
this process reaches here (threads, power limits, a shared host):

* fp32 compute: the best of several timed ``torch.mm`` of large square fp32 matrices
  (``2·n³`` floating-point operations each);
* memory bandwidth: the best of several timed copies of a large tensor (bytes read plus
  bytes written, over a buffer far larger than the caches).

Both are cached per process. On CUDA the same two are measured on the device as well.
Beside them, the CPU's read rate over buffers of a few sizes (:data:`READ_PROBE_MIB`): on a
virtual machine whose last-level cache is shared with other tenants, the buffers that still
fit in the share this machine gets read about twice as fast as memory, and that share moves
with the neighbours' work. A model whose low-precision weights fit under it runs faster
while it lasts (docs/benchmark.md, "The shared L3 cache"), so a report shows where it was.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import time
from typing import Any

from .._info import doctor
from ..engine.result import to_jsonable

__all__ = [
    "READ_PROBE_MIB",
    "MachineFacts",
    "choose_torch_threads",
    "machine_facts",
    "measure_fp32_gflops",
    "measure_memory_bandwidth_gbs",
    "measure_read_gbs",
]

# Buffer sizes (MiB) of the read probe: from inside a large cache to far outside any cache.
READ_PROBE_MIB = (32, 64, 128, 256, 1024)


def _best_time(fn: Any, *, min_seconds: float, min_reps: int, sync: Any = None) -> float:
    fn()  # warm-up: page in the buffers, pick the kernels
    if sync:
        sync()
    best = float("inf")
    reps = 0
    started = time.perf_counter()
    while reps < min_reps or time.perf_counter() - started < min_seconds:
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        best = min(best, time.perf_counter() - t0)
        reps += 1
    return best


@functools.lru_cache(maxsize=4)
def measure_fp32_gflops(device: str = "cpu", *, n: int = 1024, min_seconds: float = 0.3) -> float:
    """The best fp32 matrix-multiply rate here, in GFLOP/s (``2·n³`` per product)."""
    import torch

    a = torch.randn(n, n, dtype=torch.float32, device=device)
    b = torch.randn(n, n, dtype=torch.float32, device=device)
    out = torch.empty(n, n, dtype=torch.float32, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    seconds = _best_time(lambda: torch.mm(a, b, out=out), min_seconds=min_seconds, min_reps=5, sync=sync)
    return 2.0 * n**3 / seconds / 1e9


@functools.lru_cache(maxsize=4)
def measure_memory_bandwidth_gbs(device: str = "cpu", *, mib: int = 256, min_seconds: float = 0.5) -> float:
    """The best copy rate here, in GB/s (bytes read + bytes written, 10⁹ bytes per GB)."""
    import torch

    count = mib * 2**20 // 4
    src = torch.rand(count, dtype=torch.float32, device=device)
    dst = torch.empty_like(src)
    sync = torch.cuda.synchronize if device.startswith("cuda") else None
    seconds = _best_time(lambda: dst.copy_(src), min_seconds=min_seconds, min_reps=3, sync=sync)
    return 2.0 * count * 4 / seconds / 1e9


def measure_read_gbs(mib: int, *, min_seconds: float = 0.15) -> float:
    """The best rate of reading a CPU buffer of ``mib`` MiB once (a sum over it), in GB/s.

    Not cached: the rate of a buffer near the cache's edge changes with other tenants' work.
    """
    import torch

    buffer = torch.rand(mib * 2**20 // 4, dtype=torch.float32)
    seconds = _best_time(buffer.sum, min_seconds=min_seconds, min_reps=3)
    return buffer.numel() * 4 / seconds / 1e9


@dataclasses.dataclass(frozen=True, kw_only=True)
class MachineFacts:
    """Where the figures were taken.

    Attributes:
        cpu: the CPU model.
        cpu_count: logical CPUs.
        cpu_flags: the instruction-set extensions that decide speed.
        torch_threads: the intra-op threads torch uses.
        memory_gib: total memory.
        python: the Python version.
        platform: OS, release and architecture.
        fp32_gflops: measured fp32 matmul peak on the CPU.
        memory_bandwidth_gbs: measured copy bandwidth on the CPU.
        cuda: on a CUDA machine: device name, measured fp32 GFLOP/s and bandwidth.
        libraries: installed versions of the libraries that decide speed.
        backends: each backend's probe: available, version, devices, reason.
        load_average: the 1, 5 and 15 minute load averages when the facts were taken
            (other work on the machine slows every figure).
        environment: the environment variables that change what runs or how fast.
        read_gbs_by_mib: the CPU's read rate (GB/s) over a buffer of each size in MiB
            (:data:`READ_PROBE_MIB`), measured with the peaks: a step between two sizes is
            where the cache this machine may use ended at that moment.
    """

    cpu: str
    cpu_count: int
    cpu_flags: tuple[str, ...]
    torch_threads: int
    memory_gib: float
    python: str
    platform: str
    fp32_gflops: float
    memory_bandwidth_gbs: float
    cuda: dict[str, Any] | None
    libraries: dict[str, str]
    backends: dict[str, dict[str, Any]]
    load_average: tuple[float, ...] = ()
    environment: dict[str, str] = dataclasses.field(default_factory=dict)
    read_gbs_by_mib: dict[int, float] = dataclasses.field(default_factory=dict)

    def peaks(self, device: str) -> tuple[float, float]:
        """``(fp32 GFLOP/s, bandwidth GB/s)`` of the device a figure was taken on."""
        if str(device).lower().startswith("cuda") and self.cuda:
            return float(self.cuda["fp32_gflops"]), float(self.cuda["memory_bandwidth_gbs"])
        return self.fp32_gflops, self.memory_bandwidth_gbs

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))


@functools.lru_cache(maxsize=1)
def machine_facts() -> MachineFacts:
    """Probe the machine once per process (about three seconds: the peaks and the read rates are timed)."""
    import torch

    from ..backends.pytorch import cuda_works

    report = doctor()
    cuda: dict[str, Any] | None = None
    ok, detail = cuda_works()
    if ok:
        cuda = {
            "device": detail,
            "count": torch.cuda.device_count(),
            "fp32_gflops": measure_fp32_gflops("cuda:0", n=4096),
            "memory_bandwidth_gbs": measure_memory_bandwidth_gbs("cuda:0", mib=1024),
        }
    return MachineFacts(
        cpu=report.cpu, cpu_count=report.cpu_count, cpu_flags=report.cpu_flags,
        torch_threads=torch.get_num_threads(), memory_gib=report.memory_gib, python=report.python,
        platform=report.platform, fp32_gflops=measure_fp32_gflops("cpu"),
        memory_bandwidth_gbs=measure_memory_bandwidth_gbs("cpu"), cuda=cuda,
        read_gbs_by_mib={mib: measure_read_gbs(mib) for mib in READ_PROBE_MIB},
        libraries=dict(report.libraries),
        backends={
            name: {"available": p.available, "version": p.version, "devices": list(p.devices), "reason": p.reason}
            for name, p in report.backends.items()
        },
        load_average=tuple(round(x, 2) for x in os.getloadavg()) if hasattr(os, "getloadavg") else (),
        environment=environment_variables(),
    )


def environment_variables() -> dict[str, str]:
    """The environment variables that change what runs or how fast (recorded in reports)."""
    keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CUDA_VISIBLE_DEVICES", "HF_HUB_OFFLINE",
            "TOKENIZERS_PARALLELISM")
    return {k: os.environ[k] for k in keys if k in os.environ}


def _small_step_seconds(threads: int, *, seconds: float = 0.25, max_reps: int = 100) -> float:
    """Median seconds of one small transformer-like step (batch 1) with ``threads`` threads."""
    import statistics

    import torch

    torch.set_num_threads(threads)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(1, 16, 384, generator=gen)
    w1 = torch.randn(384, 1536, generator=gen)
    w2 = torch.randn(1536, 384, generator=gen)
    norm = torch.nn.LayerNorm(384)
    times: list[float] = []
    with torch.inference_mode():
        for _ in range(2):
            norm(torch.nn.functional.gelu(x @ w1) @ w2 + x)
        started = time.perf_counter()
        while len(times) < max_reps and (len(times) < 3 or time.perf_counter() - started < seconds):
            t0 = time.perf_counter()
            norm(torch.nn.functional.gelu(x @ w1) @ w2 + x)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def choose_torch_threads() -> tuple[int, str]:
    """Set torch's intra-op threads to what runs small steps fastest here, and say why.

    On CPUs shared with other busy processes, threads of one operation wait for each other
    at every barrier and a batch-1 model can run many times slower on all cores than on one.
    Timing a small step both ways (about a second) detects that. The choice applies to our
    cases and the baselines alike, so their ratios stay fair; the report records it.

    Returns:
        ``(threads, reason)``.
    """
    import torch

    default = torch.get_num_threads()
    if default <= 1:
        return default, "torch uses one thread"
    many = _small_step_seconds(default)
    one = _small_step_seconds(1)
    if one * 1.5 < many:
        torch.set_num_threads(1)
        return 1, (f"torch threads set to 1: a small step took {many * 1e3:.1f} ms on {default} threads and "
                   f"{one * 1e3:.1f} ms on one (the CPUs are busy with other work, so threads wait for each other). "
                   "This applies to every torch figure, ours and the baselines'; OpenVINO and ONNX Runtime keep "
                   "their own thread pools, so compare their figures with torch's with care in this run")
    torch.set_num_threads(default)
    return default, (f"torch keeps {default} threads (a small step: {many * 1e3:.2f} ms on {default} threads, "
                     f"{one * 1e3:.2f} ms on one)")
