"""ONNX Runtime: models exported to ONNX (by optimum, or directly), run by ORTModelFor* classes.

The load pipeline is :class:`..converting.ConvertingBackend`'s; this backend fills in its
steps: the export routes and the fp16 copy (:mod:`.export`), int8 (:mod:`.quantize`, with
the decoder rewrite of :mod:`.attention`), image-text generators (:mod:`.vlm`), and opening
an export on the CPU or CUDA provider (:mod:`.model`).

Precisions: fp32; int8 through dynamic quantization on the CPU provider, refused when it
fails the accuracy gate; fp16 (graphs converted to fp16 with fp32 inputs and outputs) on
the CUDA provider only. Exports are cached (see :mod:`..converting.export_cache`).
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
from ..converting.direct import Plan
from ..converting.export_cache import CacheEntry
from . import quantize
from .export import convert_fp16, export_fp32, export_plan
from .model import causal_decoder_step, open_export

__all__ = ["OnnxRuntimeBackend"]

_EXTRA = "onnxruntime"
_INSTALL = "pip install 'ipfs-accelerate[onnxruntime]'"
_PRECISIONS = ("fp32", "fp16", "int8")


class OnnxRuntimeBackend(ConvertingBackend):
    """Runs ONNX exports with ONNX Runtime on the CPU or CUDA execution provider."""

    name = "onnxruntime"
    extra = _EXTRA
    display_name = "ONNX Runtime"
    # The libraries whose versions change the exported or quantized bytes.
    export_libraries = ("optimum", "optimum-onnx", "onnx", "torch", "transformers")
    # Largest seen (2026-12-06): Whisper tiny.en's export 4.2x its weights (encoder, decoder and the
    # decoder with past each hold a copy), its int8 copy 1.4x.
    export_disk_factor = 4.5
    derived_disk_factor = 1.5

    def probe(self) -> BackendProbe:
        try:
            import onnxruntime as ort
        except ImportError:
            return BackendProbe(
                name=self.name, available=False, extra=self.extra,
                reason=f"onnxruntime is not installed: {_INSTALL}",
            )
        providers = list(ort.get_available_providers())
        details: dict[str, Any] = {"providers": providers, "int8_kernels": quantize.quant_flavour()}
        if not module_exists("optimum.onnxruntime"):
            return BackendProbe(
                name=self.name, available=False, version=ort.__version__, extra=self.extra, details=details,
                reason=f"optimum-onnx (the exporter and ORTModel classes) is not installed: {_INSTALL}",
            )
        devices = ["cpu"]
        if "CUDAExecutionProvider" in providers:
            from ..pytorch import cuda_works

            ok, detail = cuda_works()
            details["cuda"] = detail
            if ok:
                import torch

                devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return BackendProbe(
            name=self.name, available=True, version=ort.__version__, devices=tuple(devices),
            extra=self.extra, details=details,
        )

    def unsupported(self, *, device: str, precision: str) -> str | None:
        if precision not in _PRECISIONS:
            return f"the ONNX Runtime backend offers fp32, fp16 (CUDA) and int8 (CPU), not {precision}"
        try:
            import onnxruntime as ort
        except ImportError:
            return f"onnxruntime is not installed: {_INSTALL}"
        if device == "cpu":
            if precision == "fp16":
                return "ONNX Runtime fp16 needs the CUDAExecutionProvider; the CPU provider lacks most fp16 kernels"
            return None
        if device == "cuda" or device.startswith("cuda:"):
            if "CUDAExecutionProvider" not in ort.get_available_providers():
                return (
                    "this onnxruntime build has no CUDAExecutionProvider "
                    f"(available: {', '.join(ort.get_available_providers())}); install onnxruntime-gpu"
                )
            if precision == "int8":
                return "ONNX Runtime dynamic int8 (MatMulInteger) runs on the CPU provider only"
            from ..pytorch import cuda_works

            # Inputs reach the CUDA session as torch CUDA tensors (IO binding).
            ok, detail = cuda_works()
            return None if ok else f"CUDA is unavailable: {detail}"
        return f"ONNX Runtime runs on 'cpu' or 'cuda[:N]', not {device!r}"

    def import_runtime(self) -> str:
        """Import onnxruntime and optimum-onnx, or say how to install them."""
        try:
            import onnxruntime as ort
            import optimum.onnxruntime  # noqa: F401 - the ORTModel classes and the exporter
        except ImportError as exc:
            raise BackendUnavailable(
                f"the ONNX Runtime backend is not installed ({exc.name or exc} is missing): {_INSTALL}",
                extra=_EXTRA,
            ) from exc
        return str(ort.__version__)

    def check_spec(self, spec: ModelSpec, *, precision: str) -> None:
        if precision == "fp16" and not spec.fp16_safe:
            raise BackendUnavailable("this architecture loses accuracy in fp16 (activations overflow); use fp32")

    def plan(self, spec: ModelSpec, *, device: str) -> Plan:
        return export_plan(spec, device)

    def route_name(self, plan: Plan) -> str:
        if plan.route == "optimum":
            return f"optimum:{plan.model_class}"
        if plan.route == "vlm":
            return "direct:torch.onnx.export(vision tower + language model with KV cache)"
        return "direct:torch.onnx.export"

    def export(self, spec: ModelSpec, plan: Plan, target: Path) -> dict[str, Any]:
        return export_fp32(spec, plan, target)

    def derive(
        self, spec: ModelSpec, plan: Plan, fp32_dir: Path, *, precision: str, device: str, cache_dir: Path,
    ) -> Derivation:
        if precision == "int8":
            flavour = quantize.quant_flavour()
            return Derivation(
                build=functools.partial(quantize.quantize_int8, spec, plan, fp32_dir, flavour),
                key_extra={"quantization": flavour, "recipe": quantize.INT8_RECIPE},
            )
        return Derivation(build=functools.partial(convert_fp16, fp32_dir))

    def int8_details(self, entry: CacheEntry, cosine: float) -> dict[str, Any]:
        details: dict[str, Any] = {
            "quantization": entry.meta.get("quantization", quantize.quant_flavour()), "int8_gate_cosine": cosine,
            "int8_attempts": entry.meta.get("int8_attempts", []),
        }
        if entry.meta.get("fusion"):
            details["fusion"] = entry.meta["fusion"]
        return details

    def open(
        self, spec: ModelSpec, plan: Plan, path: Path, *, device: str, precision: str, cache_dir: Path,
    ) -> OpenedModel:
        providers, options = _providers(device)
        opened = time.perf_counter()
        model = open_export(plan, path, providers, options)
        active = _active_providers(model)
        fallback = None
        if providers[0] != "CPUExecutionProvider" and active[0] != providers[0]:
            if precision == "fp16":
                raise BackendUnavailable(
                    f"{providers[0]} was requested for fp16 but the session runs on {active[0]}"
                )
            # Reopen on the CPU alone: optimum chose IO binding for the requested provider.
            fallback = f"{providers[0]} was requested but the session runs on {active[0]}"
            model = open_export(plan, path, ["CPUExecutionProvider"], None)
            active = _active_providers(model)
        session_s = time.perf_counter() - opened
        actual_device = _device_of(model, active)
        return OpenedModel(
            model=model,
            device=actual_device,
            # fp16 graphs keep fp32 inputs and outputs; inputs go where the session runs.
            input_device=actual_device,
            read_back={"providers": active, "requested_providers": providers, "session_s": round(session_s, 3)},
            fallback=fallback,
        )

    def decoder_step(self, plan: Plan, opened: OpenedModel) -> Callable[[Mapping[str, Any], Any], tuple[Any, Any]] | None:
        if plan.model_class != "ORTModelForCausalLM":
            return None
        step: Callable[[Mapping[str, Any], Any], tuple[Any, Any]] | None = causal_decoder_step(
            opened.model, list(opened.read_back["providers"]))
        return step


def _providers(device: str) -> tuple[list[str], list[dict[str, Any]] | None]:
    """The execution providers to ask for, best first, with their options."""
    if device == "cuda" or device.startswith("cuda:"):
        index = int(device.split(":", 1)[1]) if ":" in device else 0
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], [{"device_id": index}, {}]
    return ["CPUExecutionProvider"], None


def _active_providers(model: Any) -> list[str]:
    return list(model.providers)


def _device_of(model: Any, active: list[str]) -> str:
    """Our device name for what the session really runs on."""
    if active and active[0] == "CUDAExecutionProvider":
        session = getattr(model, "session", None)
        if session is None and getattr(model, "parts", None):
            session = model.parts[0].session
        index = 0
        if session is not None:
            options = session.get_provider_options().get("CUDAExecutionProvider", {})
            index = int(options.get("device_id", 0))
        return f"cuda:{index}"
    return "cpu"
