"""The load pipeline of the backends that convert a model before running it.

ONNX Runtime and OpenVINO load a model the same way; :meth:`ConvertingBackend.load` is
that pipeline, once:

1. refuse a device/precision pair the backend cannot run here (:meth:`Backend.unsupported`);
2. plan the export route (optimum, or a direct conversion; :meth:`ConvertingBackend.plan`);
3. export fp32 through the export cache (:meth:`ConvertingBackend.export`);
4. derive the lower-precision export from the fp32 one, also cached
   (:meth:`ConvertingBackend.derive`), and hold int8 (and a derivation that measured a
   ``<precision>_gate_cosine``, such as OpenVINO's bf16) to the accuracy gate;
5. open the export on the device (:meth:`ConvertingBackend.open`) and read back what
   really runs it (device, providers, precision);
6. return the :class:`Runtime`.

A backend subclass fills in the hooks; the steps and their order, the cache keys and the
provenance details they write are shared.
"""

from __future__ import annotations

import abc
import dataclasses
import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from ..._exceptions import BackendUnavailable
from ..base import Backend, ModelSpec, Runtime
from . import accuracy
from .direct import HOST_THREADS, Plan, fp32_weight_bytes
from .export_cache import CacheEntry, export_key, get_or_build, library_versions

__all__ = ["ConvertingBackend", "Derivation", "OpenedModel", "cache_details"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Derivation:
    """How a lower precision is built from the fp32 export.

    Attributes:
        build: writes the derived export into the directory it is given (see
            :func:`.export_cache.get_or_build`) and returns its metadata; an int8 build
            records its accuracy gate's cosine as ``int8_gate_cosine`` (another precision
            held to the gate records ``<precision>_gate_cosine``).
        key_extra: what else the derived bytes depend on (the int8 recipe …); it enters the
            export cache key.
    """

    build: Callable[[Path], Mapping[str, Any] | None]
    key_extra: Mapping[str, Any] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class OpenedModel:
    """An opened export and what was read back from the runtime that executes it.

    Attributes:
        model: called like a transformers model (see :attr:`Runtime.model`).
        device: our name of the device that really executes it.
        input_device: where ``Runtime.prepare`` puts the input tensors.
        read_back: the runtime's facts for the details (execution providers or devices,
            inference precision, seconds to open …), in the order they are reported.
        fallback: why the model runs elsewhere than asked, or None.
    """

    model: Any
    device: str
    input_device: str
    read_back: Mapping[str, Any]
    fallback: str | None = None


def cache_details(entry: CacheEntry, export_s: float) -> dict[str, Any]:
    """The export cache's facts for a runtime's details."""
    return {
        "export_cache": entry.status,
        "export_dir": str(entry.path),
        "export_s": round(export_s, 3),
        "export_cache_verify_s": round(entry.verify_s, 3),
    }


class ConvertingBackend(Backend):
    """A backend that exports the model (cached), derives lower precisions, then opens it.

    Subclasses set the class attributes and implement the hooks; :meth:`load` runs them in
    order (see the module docstring).

    Attributes:
        display_name: the runtime's name in messages (``"ONNX Runtime"``).
        export_libraries: the distributions whose versions change the exported bytes; they
            enter the export cache key with the runtime's own version.
        entry_facts: export metadata keys copied to the details when present
            (``"stateful_fix"`` …).
        export_disk_factor: the most an fp32 export writes ÷ the fp32 weight bytes, and
        derived_disk_factor: the same for a lower-precision copy; the export cache checks
            the free disk against them before building (see :func:`get_or_build`).
    """

    display_name: ClassVar[str]
    export_libraries: ClassVar[tuple[str, ...]]
    entry_facts: ClassVar[tuple[str, ...]] = ()
    export_disk_factor: ClassVar[float] = 1.5
    derived_disk_factor: ClassVar[float] = 1.5

    @abc.abstractmethod
    def import_runtime(self) -> str:
        """Import the runtime and its exporter, and return the runtime's version.

        Raises:
            BackendUnavailable: they are not installed (with the pip extra).
        """

    def check_spec(self, spec: ModelSpec, *, precision: str) -> None:
        """Refuse a spec this backend cannot run in ``precision`` (default: none refused).

        Raises:
            BackendUnavailable: the spec cannot run in that precision here.
        """

    @abc.abstractmethod
    def plan(self, spec: ModelSpec, *, device: str) -> Plan:
        """The export route for ``spec`` on ``device``."""

    @abc.abstractmethod
    def route_name(self, plan: Plan) -> str:
        """How the route reads in the details (``"optimum:ORTModelForCausalLM"`` …)."""

    @abc.abstractmethod
    def export(self, spec: ModelSpec, plan: Plan, target: Path) -> dict[str, Any]:
        """Write the fp32 export of ``spec`` into ``target`` and return its metadata."""

    @abc.abstractmethod
    def derive(
        self, spec: ModelSpec, plan: Plan, fp32_dir: Path, *, precision: str, device: str, cache_dir: Path,
    ) -> Derivation:
        """How the ``precision`` export (``"int8"``, ``"fp16"`` …) is built from ``fp32_dir``."""

    @abc.abstractmethod
    def int8_details(self, entry: CacheEntry, cosine: float) -> dict[str, Any]:
        """The int8 export's facts for the details (its gate cosine included)."""

    @abc.abstractmethod
    def open(
        self, spec: ModelSpec, plan: Plan, path: Path, *, device: str, precision: str, cache_dir: Path,
    ) -> OpenedModel:
        """Open the export in ``path`` on ``device`` and read back what runs it.

        Raises:
            BackendUnavailable: it cannot run as asked.
        """

    @abc.abstractmethod
    def decoder_step(self, plan: Plan, opened: OpenedModel) -> Callable[[Mapping[str, Any], Any], tuple[Any, Any]] | None:
        """A :attr:`Runtime.decoder_step` on the opened model, or None where it offers none."""

    def load(self, spec: ModelSpec, *, device: str, precision: str, cache_dir: Path) -> Runtime:
        started = time.perf_counter()
        version = self.import_runtime()
        reason = self.unsupported(device=device, precision=precision)
        if reason:
            raise BackendUnavailable(reason)
        self.check_spec(spec, precision=precision)
        plan = self.plan(spec, device=device)
        versions = library_versions(self.export_libraries) | {self.name: version}
        describe = {"model_id": spec.weights.model_id, "kind": spec.kind, "route": plan.route}
        details: dict[str, Any] = {self.name: version, "export_route": self.route_name(plan)}
        if plan.why:
            details["direct_conversion_reason"] = plan.why

        weight_bytes = fp32_weight_bytes(spec.model_dir)
        fp32 = get_or_build(
            cache_dir, self.name, export_key(spec, cache_dir=cache_dir, backend=self.name, precision="fp32", versions=versions),
            functools.partial(self.export, spec, plan), describe=describe | {"precision": "fp32"},
            disk_bytes=int(self.export_disk_factor * weight_bytes),
        )
        entry, export_s = fp32, fp32.build_s
        if precision != "fp32":
            derivation = self.derive(spec, plan, fp32.path, precision=precision, device=device, cache_dir=cache_dir)
            entry = get_or_build(
                cache_dir, self.name,
                export_key(spec, cache_dir=cache_dir, backend=self.name, precision=precision, versions=versions,
                           extra=derivation.key_extra),
                derivation.build, describe=describe | {"precision": precision},
                disk_bytes=int(self.derived_disk_factor * weight_bytes),
            )
            export_s += entry.build_s
            if precision == "int8":
                cosine = float(entry.meta["int8_gate_cosine"])
                details |= self.int8_details(entry, cosine)
                accuracy.check_gate(cosine, what=f"{self.display_name} int8 export")
            elif f"{precision}_gate_cosine" in entry.meta:
                cosine = float(entry.meta[f"{precision}_gate_cosine"])
                details[f"{precision}_gate_cosine"] = cosine
                details["gate_device"] = entry.meta.get("gate_device")
                accuracy.check_gate(cosine, what=f"{self.display_name} {precision} export")

        opened = self.open(spec, plan, entry.path, device=device, precision=precision, cache_dir=cache_dir)
        if opened.fallback:
            details["fallback"] = opened.fallback
        details |= cache_details(entry, export_s) | dict(opened.read_back)
        conversion = entry.meta.get("conversion") or fp32.meta.get("conversion")
        if conversion:
            details["conversion"] = conversion
        for fact in self.entry_facts:
            if entry.meta.get(fact):
                details[fact] = entry.meta[fact]
        import torch

        from ..pytorch import prepare_inputs

        return Runtime(
            backend=self.name,
            device=opened.device,
            precision=precision,
            model=opened.model,
            details=details,
            load_s=time.perf_counter() - started,
            # Converted models keep fp32 inputs and outputs in every precision.
            prepare=functools.partial(prepare_inputs, device=opened.input_device, dtype=torch.float32),
            host_threads=HOST_THREADS,
            decoder_step=self.decoder_step(plan, opened),
        )
