"""OpenVINO: models exported to OpenVINO IR (by optimum-intel, or directly), run by OVModelFor* classes.

The load pipeline is :class:`..converting.ConvertingBackend`'s; this backend fills in its
steps: the export routes and the fp16 copy (:mod:`.export`), int8 weight compression
(:mod:`.quantize`), the bf16 entry (:mod:`.bf16`), and compiling an export for a device with the properties that make it
run the precision reported (:mod:`.model`).

Precisions: fp32 is fp32 throughout: the IR is saved without FP16 compression, and the
compiled model is asked for f32 inference and an f32 KV cache (optimum's exports ask for an
f16 KV cache). fp16 stores the weights in fp16 and asks for f16 inference where the device
offers it (it is read back: a CPU without FP16 computes in f32). bf16 compiles the fp32 IR
for bf16 inference, which the CPU plugin runs with bf16 weights on AMX or AVX512-BF16; it
is offered only where the device computes bf16 natively (:func:`.model.native_bf16`) and
is refused when it fails the accuracy gate, as int8 is. int8 compresses the weights with
nncf (INT8_SYM, per channel), and is refused when it fails the accuracy gate. The matrix
multiplies' precisions are read back from the compiled model's runtime graph.
Exports are cached (see :mod:`..converting.export_cache`).

Devices: our ``"cpu"`` is OpenVINO's ``CPU``; OpenVINO device names (``GPU``, ``GPU.0``,
``NPU``) are accepted when ``Core().available_devices`` lists them. CUDA is not an
OpenVINO device.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..._exceptions import BackendUnavailable
from ..base import BackendProbe, ModelSpec, module_exists
from ..converting import ConvertingBackend, Derivation, OpenedModel
from ..converting.direct import Plan, plan_export
from ..converting.export_cache import CacheEntry
from .bf16 import link_bf16
from .export import KINDS, compress_fp16, export_fp32
from .model import (
    compile_config,
    matmul_precisions,
    native_bf16,
    open_export,
    ov_device,
    stateful_causal_step,
    stateful_decoder_step,
)
from .quantize import INT8_MODE, INT8_RECIPE, compress_int8

__all__ = ["OpenVINOBackend"]

_EXTRA = "openvino"
_INSTALL = "pip install 'ipfs-accelerate[openvino]'"
_PRECISIONS = ("fp32", "fp16", "bf16", "int8")


class OpenVINOBackend(ConvertingBackend):
    """Runs OpenVINO IR on the devices OpenVINO finds (CPU, Intel GPU, NPU)."""

    name = "openvino"
    extra = _EXTRA
    display_name = "OpenVINO"
    # The libraries whose versions change the exported or compressed bytes.
    export_libraries = ("optimum", "optimum-intel", "openvino", "nncf", "torch", "transformers")
    entry_facts = ("stateful_fix",)
    # Largest seen (2026-12-06): llava-interleave-qwen-0.5b's IR 1.24x its weights; bf16 and int8
    # copies at most 1.0x.
    export_disk_factor = 1.3
    derived_disk_factor = 1.0

    def probe(self) -> BackendProbe:
        try:
            import openvino as ov
        except ImportError:
            return BackendProbe(
                name=self.name, available=False, extra=self.extra,
                reason=f"openvino is not installed: {_INSTALL}",
            )
        core = ov.Core()
        try:
            available = list(core.available_devices)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the probe
            return BackendProbe(
                name=self.name, available=False, version=ov.__version__, extra=self.extra,
                reason=f"OpenVINO could not list its devices: {exc}",
            )
        names: dict[str, str] = {}
        capabilities: dict[str, list[str]] = {}
        for dev in available:
            try:
                names[dev] = str(core.get_property(dev, "FULL_DEVICE_NAME"))
                capabilities[dev] = [str(c) for c in core.get_property(dev, "OPTIMIZATION_CAPABILITIES")]
            except Exception as exc:  # noqa: BLE001 - a broken device driver must not break the probe
                names[dev] = f"unreadable: {exc}"
        details = {"device_names": names, "optimization_capabilities": capabilities}
        if not module_exists("optimum.intel"):
            return BackendProbe(
                name=self.name, available=False, version=ov.__version__, extra=self.extra, details=details,
                reason=f"optimum-intel (the exporter and OVModel classes) is not installed: {_INSTALL}",
            )
        devices = tuple("cpu" if dev == "CPU" else dev for dev in available)
        return BackendProbe(
            name=self.name, available=bool(devices), version=ov.__version__, devices=devices,
            extra=self.extra, details=details, reason="" if devices else "OpenVINO finds no device",
        )

    def unsupported(self, *, device: str, precision: str) -> str | None:
        if precision not in _PRECISIONS:
            return f"the OpenVINO backend offers fp32, fp16, bf16 and int8, not {precision}"
        try:
            import openvino as ov
        except ImportError:
            return f"openvino is not installed: {_INSTALL}"
        core = ov.Core()
        available = core.available_devices
        if device == "cuda" or device.startswith("cuda:"):
            return (
                "CUDA is not an OpenVINO device; OpenVINO runs on CPUs, Intel GPUs and NPUs "
                f"(here: {', '.join(available) or 'none'})"
            )
        target = ov_device(device)
        if not any(dev == target or dev.split(".")[0] == target for dev in available):
            return f"OpenVINO has no device {target!r} here (available: {', '.join(available) or 'none'})"
        if precision == "bf16" and not native_bf16(core, target):
            return (
                f"OpenVINO's {target} does not compute bf16 natively here (it needs AVX512-BF16 or AMX on a CPU), "
                "and would run a bf16 request in f32: use fp16 (half the weight bytes) or fp32"
            )
        return None

    def import_runtime(self) -> str:
        """Import openvino and optimum-intel, or say how to install them."""
        try:
            import openvino as ov
            import optimum.intel.openvino  # noqa: F401 - the OVModel classes and the exporter
        except ImportError as exc:
            raise BackendUnavailable(
                f"the OpenVINO backend is not installed ({exc.name or exc} is missing): {_INSTALL}",
                extra=_EXTRA,
            ) from exc
        return str(ov.__version__)

    def plan(self, spec: ModelSpec, *, device: str) -> Plan:
        return plan_export(spec, kinds=KINDS, exporter="openvino", backend=self.name)

    def route_name(self, plan: Plan) -> str:
        return f"optimum:{plan.model_class}" if plan.route == "optimum" else "direct:openvino.convert_model"

    def export(self, spec: ModelSpec, plan: Plan, target: Path) -> dict[str, Any]:
        return export_fp32(spec, plan, target)

    def derive(
        self, spec: ModelSpec, plan: Plan, fp32_dir: Path, *, precision: str, device: str, cache_dir: Path,
    ) -> Derivation:
        if precision == "bf16":
            return Derivation(
                build=functools.partial(link_bf16, spec, plan, fp32_dir, ov_device(device), cache_dir),
                key_extra={"inference_precision": "bf16"},
            )
        if precision == "int8":
            return Derivation(
                build=functools.partial(compress_int8, spec, plan, fp32_dir, ov_device(device), cache_dir),
                key_extra={"compression": INT8_MODE, "recipe": INT8_RECIPE},
            )
        return Derivation(build=functools.partial(compress_fp16, fp32_dir))

    def int8_details(self, entry: CacheEntry, cosine: float) -> dict[str, Any]:
        return {"int8_gate_cosine": cosine, "int8_gate_device": entry.meta.get("gate_device")} | (
            {"shape_reads_moved": entry.meta["shape_reads_moved"]} if entry.meta.get("shape_reads_moved") else {})

    def open(
        self, spec: ModelSpec, plan: Plan, path: Path, *, device: str, precision: str, cache_dir: Path,
    ) -> OpenedModel:
        import openvino as ov

        target = ov_device(device)
        config = compile_config(ov.Core(), target, precision, spec, cache_dir, path.name)
        compiling = time.perf_counter()
        model = open_export(plan, path, target, config)
        compile_s = time.perf_counter() - compiling
        compiled = _compiled_models(model)
        if not compiled:
            raise BackendUnavailable("OpenVINO loaded the model but no compiled model could be found to read back")
        executing = sorted({str(d) for cm in compiled for d in cm.get_property("EXECUTION_DEVICES")})
        fallback = None
        if target not in executing and not any(d.split(".")[0] == target for d in executing):
            fallback = f"OpenVINO device {target} was requested but the model executes on {executing}"
        read_back: dict[str, Any] = {
            "execution_devices": executing,
            "inference_precision": _read_property(compiled, "INFERENCE_PRECISION_HINT"),
            "weights": {"fp32": "f32", "fp16": "f16", "bf16": "bf16 (the fp32 IR's, converted when compiled)",
                        "int8": f"int8 (nncf {INT8_MODE}, per channel)"}[precision],
            "matmul_precisions": matmul_precisions(compiled[0]),
            "ov_config": config,
            "compile_s": round(compile_s, 3),
        }
        if spec.generates:
            read_back["kv_cache_precision"] = _read_property(compiled, "KV_CACHE_PRECISION")
        return OpenedModel(
            model=model,
            device="cpu" if executing == ["CPU"] else ",".join(executing),
            # OpenVINO takes host tensors, whatever device computes.
            input_device="cpu",
            read_back=read_back,
            fallback=fallback,
        )

    def decoder_step(self, plan: Plan, opened: OpenedModel) -> Callable[[Mapping[str, Any], Any], tuple[Any, Any]] | None:
        step: Callable[[Mapping[str, Any], Any], tuple[Any, Any]] | None = (
            stateful_decoder_step(opened.model) or stateful_causal_step(opened.model))
        return step


def _read_property(compiled: list[Any], name: str) -> str | None:
    """A property of the (first) compiled model, as text; None where the device lacks it."""
    try:
        value = compiled[0].get_property(name)
    except Exception:  # noqa: BLE001 - not every device reports every property
        return None
    text = str(value)
    # bfloat16 before float16, which it contains.
    for short, long in (("f32", "float32"), ("bf16", "bfloat16"), ("f16", "float16"), ("u8", "uint8_t"), ("i8", "int8_t")):
        if long in text:
            return short
    return text


def _compiled_models(model: Any) -> list[Any]:
    """Every OpenVINO compiled model inside a runtime model (parts of optimum models included)."""
    import openvino as ov

    found: list[Any] = []
    seen: set[int] = set()

    def visit(obj: Any, depth: int) -> None:
        if id(obj) in seen or depth > 3:
            return
        seen.add(id(obj))
        if isinstance(obj, ov.CompiledModel):
            found.append(obj)
            return
        if isinstance(obj, ov.InferRequest):
            found.append(obj.get_compiled_model())
            return
        attrs = getattr(obj, "__dict__", None)
        if not isinstance(attrs, dict):
            return
        for value in list(attrs.values()):
            if isinstance(value, ov.CompiledModel | ov.InferRequest):
                visit(value, depth + 1)
            elif type(value).__module__.startswith(("optimum.", "ipfs_accelerate.")):
                visit(value, depth + 1)
            elif isinstance(value, dict):
                for item in value.values():
                    if type(item).__module__.startswith("optimum."):
                        visit(item, depth + 1)

    visit(model, 0)
    return found
