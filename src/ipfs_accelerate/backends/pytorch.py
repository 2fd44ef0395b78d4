"""PyTorch on CPU and CUDA: the reference backend every other backend is compared with.

Precisions: fp32 everywhere; bf16 on CPU and on CUDA cards that support it; fp16 on CUDA
only (CPU fp16 is emulated and slow); int8 on CPU through dynamic quantization of the
``nn.Linear`` layers (weights int8 per channel, activations quantized at run time; see
:func:`_quantize_dynamic_int8` for why the kernels are chosen by CPU feature).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._exceptions import BackendUnavailable, OutOfMemory
from .base import Backend, BackendProbe, ModelSpec, Runtime

__all__ = ["EntryPoint", "TorchBackend", "cpu_has_native_bf16", "cuda_works", "prepare_inputs"]

_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16", "int8": "float32"}


@functools.lru_cache(maxsize=1)
def cuda_works() -> tuple[bool, str]:
    """Whether CUDA really works: a real allocation and a kernel, not a flag."""
    try:
        import torch
    except ImportError:
        return False, "torch is not installed"
    if not torch.cuda.is_available():
        return False, "torch sees no CUDA device"
    try:
        x = torch.ones(1024, device="cuda")
        if float((x * 2).sum().item()) != 2048.0:
            return False, "a CUDA kernel returned a wrong result"
        return True, torch.cuda.get_device_name(0)
    except Exception as exc:  # noqa: BLE001 - any failure means CUDA does not work here
        return False, f"a CUDA allocation failed: {exc}"


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes bf16 natively (AVX512-BF16 or AMX); else bf16 is emulated."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class EntryPoint:
    """Calls one method of a model (``get_text_features`` …) like a forward.

    The method's tensor result comes back as an attribute named ``output_name``, so the
    model_family reads it the same way whatever backend runs the model.
    """

    def __init__(self, model: Any, entry: str, output_name: str) -> None:
        self.model = model
        self.entry = entry
        self.output_name = output_name

    def __call__(self, **inputs: Any) -> Any:
        from types import SimpleNamespace

        out = getattr(self.model, self.entry)(**inputs)
        if not hasattr(out, "shape") and hasattr(out, "pooler_output"):
            out = out.pooler_output  # transformers ≥ 4.57 may return an output object
        return SimpleNamespace(**{self.output_name: out})

    def __getattr__(self, name: str) -> Any:
        return getattr(self.model, name)


class TorchBackend(Backend):
    """Runs models with PyTorch, eager, on CPU or CUDA."""

    name = "torch"
    extra = "torch"

    def probe(self) -> BackendProbe:
        try:
            import torch
        except ImportError:
            return BackendProbe(name=self.name, available=False, reason="torch is not installed", extra=self.extra)
        devices = ["cpu"]
        ok, detail = cuda_works()
        if ok:
            devices += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
        return BackendProbe(
            name=self.name, available=True, version=torch.__version__, devices=tuple(devices),
            extra=self.extra,
            details={"cuda": detail, "cpu_native_bf16": cpu_has_native_bf16(), "threads": torch.get_num_threads()},
        )

    def unsupported(self, *, device: str, precision: str) -> str | None:
        if device.startswith("cuda"):
            ok, detail = cuda_works()
            if not ok:
                return f"CUDA is unavailable: {detail}"
            if precision == "int8":
                return "torch int8 (dynamic quantization) runs on the CPU only"
            if precision == "bf16":
                import torch

                if not torch.cuda.is_bf16_supported():
                    return "this CUDA device has no bf16 support"
            return None
        if precision == "fp16":
            return "torch fp16 on the CPU is emulated and slow; use bf16 or fp32"
        return None

    def load(self, spec: ModelSpec, *, device: str, precision: str, cache_dir: Path) -> Runtime:
        import torch
        import transformers

        reason = self.unsupported(device=device, precision=precision)
        if reason:
            raise BackendUnavailable(reason)
        started = time.perf_counter()
        model_cls = getattr(transformers, spec.torch_class)
        dtype = getattr(torch, _DTYPES[precision])
        try:
            model = model_cls.from_pretrained(
                spec.model_dir, dtype=dtype, use_safetensors=True, local_files_only=True,
            )
            model.eval()
            if precision == "int8":
                model, int8_engine = _quantize_dynamic_int8(model)
            model.to(device)
        except torch.cuda.OutOfMemoryError as exc:
            raise OutOfMemory(f"CUDA ran out of memory loading {spec.weights.model_id}: {exc}") from exc
        except OSError as exc:
            raise BackendUnavailable(f"torch could not load {spec.model_dir}: {exc}") from exc
        param = next(model.parameters(), None)
        actual_device = str(param.device) if param is not None else device
        float_dtype = param.dtype if param is not None and param.dtype.is_floating_point else torch.float32
        runnable: Any = model
        if spec.entry:
            runnable = EntryPoint(model, spec.entry, spec.output_names[0])
        return Runtime(
            backend=self.name,
            device=actual_device,
            precision=precision,
            model=runnable,
            details={"dtype": str(float_dtype).removeprefix("torch."), "torch": torch.__version__,
                     **({"int8": f"dynamic, per-channel weights, {int8_engine} kernels"} if precision == "int8" else {})},
            load_s=time.perf_counter() - started,
            prepare=functools.partial(prepare_inputs, device=actual_device, dtype=float_dtype),
        )


def _cpu_has_vnni() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags


def _quantize_dynamic_int8(model: Any) -> tuple[Any, str]:
    """Dynamic int8 for every ``nn.Linear``: per-channel int8 weights, full-range activations.

    torch's dynamic ``Linear`` always asks its kernels for 7-bit activations
    (``reduce_range=True``), which fbgemm/x86/oneDNN honour: real all-MiniLM-L6-v2 then read a
    worst-sentence cosine of 0.94-0.98 to fp32. Where the CPU has VNNI, its u8·s8 products do not
    saturate, so the modules here ask for the full 8 bits (:class:`FullRangeDynamicLinear`,
    cosine 0.991 on the x86 engine); without VNNI the qnnpack kernels keep 8 bits on their own
    (they ignore the request) at some speed cost. The engine is chosen at packing time (the packed
    weights carry their kernels), so the global engine is restored after.
    """
    import torch
    from torch.ao.quantization import PerChannelMinMaxObserver, PlaceholderObserver, QConfig, quantize_dynamic

    engine = "x86" if _cpu_has_vnni() else "qnnpack"
    if engine not in torch.backends.quantized.supported_engines:
        engine = torch.backends.quantized.engine
    qconfig = QConfig(
        activation=PlaceholderObserver.with_args(dtype=torch.quint8, quant_min=0, quant_max=255, is_dynamic=True),
        weight=PerChannelMinMaxObserver.with_args(dtype=torch.qint8, qscheme=torch.per_channel_symmetric),
    )
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        mapping = {torch.nn.Linear: full_range_dynamic_linear()}
        return quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8, mapping=mapping), engine
    finally:
        torch.backends.quantized.engine = previous


@functools.cache
def full_range_dynamic_linear() -> type:
    """torch's dynamic int8 ``Linear`` with 8-bit activations (``reduce_range=False``).

    Built on first use so that importing this module does not import torch.
    """
    import torch
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    class FullRangeDynamicLinear(DynamicLinear):
        """Asks the int8 kernels for full-range activations; only safe where they do not
        saturate (VNNI) or ignore the request (qnnpack)."""

        def forward(self, x: Any) -> Any:
            packed = self._packed_params._packed_params
            return torch.ops.quantized.linear_dynamic(x, packed, reduce_range=False).to(x.dtype)

    return FullRangeDynamicLinear


def prepare_inputs(inputs: Mapping[str, Any], *, device: str, dtype: Any) -> dict[str, Any]:
    """Move tensors to the model's device; floating inputs take the model's dtype."""
    import torch

    out: dict[str, Any] = {}
    for key, value in inputs.items():
        if isinstance(value, torch.Tensor):
            if value.is_floating_point():
                value = value.to(device=device, dtype=dtype)
            else:
                value = value.to(device)
        out[key] = value
    return out
