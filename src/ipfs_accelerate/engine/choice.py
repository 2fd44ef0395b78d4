"""One place decides the backend, device and precision, and the chain to fall back along.

Preference, by device (fastest first, from the measurements in docs/backends.md):

==========  ===========================================================
device      backends tried, in order
==========  ===========================================================
cuda        torch (fp16, or bf16 where fp16 overflows) → openvino → onnxruntime → torch CPU
cpu         openvino → onnxruntime → torch
==========  ===========================================================

One exception, measured: int8 text generation on a CPU tries ONNX Runtime first. Its
int8 products (with the decoder graph fused where onnxruntime knows the architecture)
decode a GPT-2-size model at 61–79 tokens/s on 2 AVX2 cores, OpenVINO's int8 weight
decompression at about 60; for encoders and Whisper OpenVINO's int8 stays ahead.

``precision="auto"`` picks fp16 on CUDA (bf16 for models that overflow in fp16, fp32 where
the card lacks bf16) and fp32 on CPUs, except torch's bf16 on CPUs with native bf16
(AVX512-BF16 or AMX; emulated bf16 does not pay). OpenVINO stays in fp32 there although its
bf16 is faster: bf16 turns near-ties of greedy decoding, and served throughput leaves the
HTTP work a larger share (docs/server.md); ``precision="bf16"`` asks for it. int8 is never
chosen automatically because it changes the outputs. A
candidate in a lower precision is followed by the same backend in fp32 before the next
backend is tried.
"""

from __future__ import annotations

import dataclasses

from ..backends import REGISTRY, get_backend
from ..backends.base import ModelSpec
from ..backends.pytorch import cpu_has_native_bf16, cuda_works
from .options import LoadOptions

__all__ = ["Candidate", "plan_candidates", "resolve_device"]

PREFERENCE: dict[str, tuple[str, ...]] = {
    "cuda": ("torch", "openvino", "onnxruntime"),
    "cpu": ("openvino", "onnxruntime", "torch"),
}

# (device kind, precision asked for, model kind) → the order that measured faster there.
PREFERENCE_FOR: dict[tuple[str, str, str], tuple[str, ...]] = {
    ("cpu", "int8", "text-generation"): ("onnxruntime", "openvino", "torch"),
}


@dataclasses.dataclass(frozen=True, kw_only=True)
class Candidate:
    """One (backend, device, precision) to try."""

    backend: str
    device: str
    precision: str

    def label(self) -> str:
        return f"{self.backend}/{self.device}/{self.precision}"


def resolve_device(device: str) -> str:
    """``"auto"`` becomes ``"cuda:0"`` when CUDA really works, else ``"cpu"``."""
    if device == "auto":
        return "cuda:0" if cuda_works()[0] else "cpu"
    if device == "cuda":
        return "cuda:0"
    return device


def auto_precision(backend: str, device: str, spec: ModelSpec) -> str:
    """The precision ``"auto"`` stands for on this backend and device."""
    if device.startswith("cuda") and backend == "torch":
        if spec.fp16_safe:
            return "fp16"
        return "bf16" if get_backend("torch").unsupported(device=device, precision="bf16") is None else "fp32"
    if device == "cpu" and backend == "torch" and cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def plan_candidates(options: LoadOptions, spec: ModelSpec) -> list[Candidate]:
    """Every candidate to try, in order; with ``strict`` only the first."""
    device = resolve_device(options.device)
    kind = "cuda" if device.startswith("cuda") else "cpu"
    order = PREFERENCE_FOR.get((kind, options.precision, spec.kind), PREFERENCE[kind])
    if options.backend == "auto":
        backends = [b for b in order if b in REGISTRY]
    else:
        backends = [options.backend] + [b for b in order if b in REGISTRY and b != options.backend]
    out: list[Candidate] = []
    for backend in backends:
        precision: str = options.precision
        if precision == "auto":
            precision = auto_precision(backend, device, spec)
        out.append(Candidate(backend=backend, device=device, precision=precision))
        if precision != "fp32":
            out.append(Candidate(backend=backend, device=device, precision="fp32"))
    if kind == "cuda":
        out.append(Candidate(backend="torch", device="cpu", precision="fp32"))
    if options.strict:
        return out[:1]
    return list(dict.fromkeys(out))  # drop repeats, keep order
