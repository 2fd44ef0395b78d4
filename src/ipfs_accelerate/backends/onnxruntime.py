"""ONNX Runtime: models exported to ONNX by optimum, run by ORTModelFor* classes.

Export routes (decided per spec by :func:`._direct.plan_export`):

* optimum, for the kinds in :data:`_KINDS` when optimum-onnx's exporter supports the
  architecture: ``optimum.exporters.onnx.main_export`` writes the graphs (decoders with a
  KV cache, encoder-decoders with a merged decoder) and the matching ``ORTModelFor*`` class
  runs them, ``generate`` included;
* a direct ``torch.onnx.export`` of a small wrapper module, for a model method other than
  ``forward`` (optimum exports ``forward`` only) and for architectures optimum-onnx does not
  support. The TorchDynamo exporter is tried first when its dependency (onnxscript) is
  installed; the TorchScript exporter (``dynamo=False``) is the fallback.

Precisions: fp32; int8 through dynamic quantization (onnxruntime's ``quantize_dynamic``:
the MatMuls with constant weights, weights int8 per channel, activations quantized at run
time; decoder-only generators fused by onnxruntime's transformer optimizer first) on the
CPU provider, refused when it fails the accuracy gate; fp16 (graphs converted to fp16 with
fp32 inputs and outputs) on the CUDA provider only. Exports are cached (see :mod:`._export_cache`).
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import logging
import shutil
import time
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .._exceptions import BackendUnavailable
from .._logs import one_line, quiet_loggers
from . import _accuracy, _direct, _ort_vlm
from ._export_cache import CacheEntry, export_key, get_or_build, library_versions
from .base import Backend, BackendProbe, ModelSpec, Runtime, module_exists

__all__ = ["OnnxRuntimeBackend"]

log = logging.getLogger(__name__)

_EXTRA = "onnxruntime"
_INSTALL = "pip install 'ipfs-accelerate[onnxruntime]'"
_PRECISIONS = ("fp32", "fp16", "int8")
# The libraries whose versions change the exported or quantized bytes.
_EXPORT_LIBS = ("optimum", "optimum-onnx", "onnx", "torch", "transformers")

# Model kind → (optimum-onnx class, optimum export task). "-with-past" exports the KV cache.
_KINDS: dict[str, tuple[str, str]] = {
    "feature-extraction": ("ORTModelForFeatureExtraction", "feature-extraction"),
    "fill-mask": ("ORTModelForMaskedLM", "fill-mask"),
    "text-generation": ("ORTModelForCausalLM", "text-generation-with-past"),
    "text2text-generation": ("ORTModelForSeq2SeqLM", "text2text-generation-with-past"),
    "automatic-speech-recognition": ("ORTModelForSpeechSeq2Seq", "automatic-speech-recognition-with-past"),
    "ctc": ("ORTModelForCTC", "automatic-speech-recognition"),
    "zero-shot-image-classification": ("ORTModelForZeroShotImageClassification", "zero-shot-image-classification"),
}

# Kinds optimum-onnx cannot export, converted by :mod:`._ort_vlm` instead (with a KV cache).
_VLM_KIND = "image-text-to-text"

# Peak memory of an export ÷ the fp32 weight bytes: the TorchScript exporter holds the model,
# the traced graph's constants and the serialized protobuf at once (measured: llava-interleave
# 0.5B synthetic, 3.3 GB of weights, peaked at 11.4 GB: 3.5×).
_EXPORT_MEMORY_FACTOR = 3.5
# Names how _quantize chooses the nodes it quantizes; a change invalidates cached int8 exports.
_INT8_RECIPE = "fused-decoders, cached-attention-fused, const-weight-matmuls, formats-then-down-projections-fp32"
# The weight formats each dynamic-quantization flavour tries, fastest first:
# (onnxruntime QuantType name, reduce_range). Without VNNI, x86 multiplies uint8 activations
# by int8 weights with VPMADDUBSW, whose pairwise 16-bit sums saturate for full-range int8
# weights; 7-bit weights (reduce_range) cannot saturate (2 × 255 × 64 < 2¹⁵) and keep that
# fast kernel. uint8 weights take the slower uint8 × uint8 kernel without the limit, at one
# more bit. Measured here, GPT-2 size at batch 1: 14.5 ms per step with 7-bit int8 weights,
# 15.7 ms with uint8 (logit cosine to fp32 0.9985 and 0.9993); the real MiniLM at batch 32
# runs alike either way (sentence cosine 0.9938 and 0.9937 with the down-projections in fp32).
_WEIGHT_FORMATS: dict[str, tuple[tuple[str, bool], ...]] = {
    "avx2": (("QInt8", True), ("QUInt8", False)),
    "avx512_vnni": (("QInt8", False),),
    "arm64": (("QInt8", False),),
}
# Fused fp32 graphs are written here inside the int8 export while it is built, then removed.
_FUSED_DIR = "fused-fp32"
# Encoder-decoder exports hold a merged decoder (one graph with and without past) and the
# two separate decoders it was merged from; the loader prefers the merged one.
_MERGED = "decoder_model_merged.onnx"
_UNMERGED = ("decoder_model.onnx", "decoder_with_past_model.onnx")
# Above this size a graph's weights go to an external data file (protobuf's limit is 2 GB).
_EXTERNAL_DATA_BYTES = 1_500_000_000

_ORT_TO_NUMPY = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(uint8)": "uint8",
    "tensor(int8)": "int8",
}


class OnnxRuntimeBackend(Backend):
    """Runs ONNX exports with ONNX Runtime on the CPU or CUDA execution provider."""

    name = "onnxruntime"
    extra = _EXTRA

    def probe(self) -> BackendProbe:
        try:
            import onnxruntime as ort
        except ImportError:
            return BackendProbe(
                name=self.name, available=False, extra=self.extra,
                reason=f"onnxruntime is not installed: {_INSTALL}",
            )
        providers = list(ort.get_available_providers())
        details: dict[str, Any] = {"providers": providers, "int8_kernels": _quant_flavour()}
        if not module_exists("optimum.onnxruntime"):
            return BackendProbe(
                name=self.name, available=False, version=ort.__version__, extra=self.extra, details=details,
                reason=f"optimum-onnx (the exporter and ORTModel classes) is not installed: {_INSTALL}",
            )
        devices = ["cpu"]
        if "CUDAExecutionProvider" in providers:
            from .pytorch import cuda_works

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
            from .pytorch import cuda_works

            # Inputs reach the CUDA session as torch CUDA tensors (IO binding).
            ok, detail = cuda_works()
            return None if ok else f"CUDA is unavailable: {detail}"
        return f"ONNX Runtime runs on 'cpu' or 'cuda[:N]', not {device!r}"

    def load(self, spec: ModelSpec, *, device: str, precision: str, cache_dir: Path) -> Runtime:
        started = time.perf_counter()
        ort = _import_runtime()
        reason = self.unsupported(device=device, precision=precision)
        if reason:
            raise BackendUnavailable(reason)
        if precision == "fp16" and not spec.fp16_safe:
            raise BackendUnavailable("this architecture loses accuracy in fp16 (activations overflow); use fp32")
        plan = _plan(spec, device)
        versions = library_versions(_EXPORT_LIBS) | {"onnxruntime": ort.__version__}
        describe = {"model_id": spec.weights.model_id, "kind": spec.kind, "route": plan.route}
        details: dict[str, Any] = {"onnxruntime": ort.__version__, "export_route": _route_name(plan)}
        if plan.why:
            details["direct_conversion_reason"] = plan.why

        fp32 = get_or_build(
            cache_dir, self.name, export_key(spec, cache_dir=cache_dir, backend=self.name, precision="fp32", versions=versions),
            functools.partial(_export, spec, plan), describe=describe | {"precision": "fp32"},
        )
        entry, export_s = fp32, fp32.build_s
        if precision == "int8":
            flavour = _quant_flavour()
            entry = get_or_build(
                cache_dir, self.name,
                export_key(spec, cache_dir=cache_dir, backend=self.name, precision="int8", versions=versions, extra={"quantization": flavour, "recipe": _INT8_RECIPE}),
                functools.partial(_quantize, spec, plan, fp32.path, flavour),
                describe=describe | {"precision": "int8"},
            )
            export_s += entry.build_s
            cosine = float(entry.meta["int8_gate_cosine"])
            details |= {"quantization": entry.meta.get("quantization", flavour), "int8_gate_cosine": cosine,
                        "int8_attempts": entry.meta.get("int8_attempts", [])}
            if entry.meta.get("fusion"):
                details["fusion"] = entry.meta["fusion"]
            _accuracy.check_gate(cosine, what="ONNX Runtime int8 export")
        elif precision == "fp16":
            entry = get_or_build(
                cache_dir, self.name, export_key(spec, cache_dir=cache_dir, backend=self.name, precision="fp16", versions=versions),
                functools.partial(_convert_fp16, fp32.path), describe=describe | {"precision": "fp16"},
            )
            export_s += entry.build_s

        providers, options = _providers(device)
        opened = time.perf_counter()
        model = _open(plan, entry.path, providers, options)
        active = _active_providers(model)
        if providers[0] != "CPUExecutionProvider" and active[0] != providers[0]:
            if precision == "fp16":
                raise BackendUnavailable(
                    f"{providers[0]} was requested for fp16 but the session runs on {active[0]}"
                )
            # Reopen on the CPU alone: optimum chose IO binding for the requested provider.
            details["fallback"] = f"{providers[0]} was requested but the session runs on {active[0]}"
            model = _open(plan, entry.path, ["CPUExecutionProvider"], None)
            active = _active_providers(model)
        session_s = time.perf_counter() - opened
        actual_device = _device_of(model, active)
        details |= _cache_details(entry, export_s) | {
            "providers": active,
            "requested_providers": providers,
            "session_s": round(session_s, 3),
        }
        if entry.meta.get("conversion"):
            details["conversion"] = entry.meta["conversion"]
        elif fp32.meta.get("conversion"):
            details["conversion"] = fp32.meta["conversion"]
        import torch

        from .pytorch import _prepare

        return Runtime(
            backend=self.name,
            device=actual_device,
            precision=precision,
            model=model,
            details=details,
            load_s=time.perf_counter() - started,
            # fp16 graphs keep fp32 inputs and outputs, so inputs stay fp32 in every precision.
            prepare=functools.partial(_prepare, device=actual_device, dtype=torch.float32),
            host_threads=_direct.HOST_THREADS,
            decoder_step=_causal_decoder_step(model, active) if plan.model_class == "ORTModelForCausalLM" else None,
        )


def _causal_decoder_step(model: Any, providers: list[str]) -> Any:
    """A :attr:`Runtime.decoder_step` straight on the session of optimum's causal-LM model.

    The cache is the list of present tensors the last step returned, fed back as the next
    step's past: nothing is kept in the runtime, so two loops may share one model. optimum's
    ``forward`` (argument checks, past-tensor bookkeeping, output objects) cost about 0.6 ms of
    an 11.4 ms GPT-2 size int8 step here; through the whole greedy loop, 85.9 → 88.9 tokens/s
    at batch 1 (fp32: 36.5 → 36.8, bound by memory bandwidth). CPU sessions only: on CUDA
    optimum binds the tensors to the device, which a host loop would undo. None when the
    graph's inputs are not the ones fed here.
    """
    import numpy as np
    import torch

    session = getattr(model, "session", None)
    past_names = list(getattr(model, "key_value_input_names", None) or ())
    if session is None or not past_names or providers[:1] != ["CPUExecutionProvider"]:
        return None
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name for o in session.get_outputs()}
    present_names = [name.replace("past_key_values", "present", 1) for name in past_names]
    fed = {"input_ids", "attention_mask", "position_ids"}
    if (not {"input_ids", "attention_mask"} <= set(inputs) <= fed | set(past_names)
            or not {"logits", *present_names} <= outputs):
        return None
    # An empty cache per input row: after the batch size, the graph's fixed sizes (heads,
    # head size) and 0 for the past length; any other unnamed size would be a guess, so no
    # step then.
    row_shapes: dict[str, list[int]] = {}
    for name in past_names:
        sizes = list(inputs[name].shape)[1:]
        if any(not isinstance(d, int) and "sequence" not in str(d) for d in sizes):
            return None
        row_shapes[name] = [d if isinstance(d, int) else 0 for d in sizes]
    dtypes = {name: np.dtype(_ORT_TO_NUMPY.get(i.type, "float32")) for name, i in inputs.items()}
    wanted = ["logits", *present_names]

    def step(tensors: Any, past: Any) -> tuple[Any, Any]:
        feed = {name: value.numpy().astype(dtypes[name], copy=False) for name, value in tensors.items() if name in inputs}
        rows = feed["input_ids"].shape[0]
        if past is None:
            past = [np.zeros([rows, *row_shapes[name]], dtype=dtypes[name]) for name in past_names]
        feed.update(zip(past_names, past, strict=True))
        logits, *present = session.run(wanted, feed)
        return torch.from_numpy(np.ascontiguousarray(logits[:, -1, :], dtype=np.float32)), present

    return step


class OrtGraphModel:
    """Runs a directly converted ONNX graph like a transformers model.

    ``model(**inputs)`` takes torch tensors by the names of the traced method's arguments
    and returns an object whose attributes are the graph's named outputs (torch tensors).

    Attributes:
        session: the ONNX Runtime inference session.
        config: the model's transformers config (for families that read it).
    """

    def __init__(self, session: Any, config: Any) -> None:
        self.session = session
        self.config = config
        self.input_names = [i.name for i in session.get_inputs()]
        self._input_types = {i.name: _ORT_TO_NUMPY.get(i.type) for i in session.get_inputs()}
        self.output_names = [o.name for o in session.get_outputs()]

    @property
    def providers(self) -> list[str]:
        """The execution providers the session really uses, in priority order."""
        return list(self.session.get_providers())

    def __call__(self, **inputs: Any) -> SimpleNamespace:
        import numpy as np
        import torch

        # Non-tensor arguments (flags) were fixed when the graph was traced.
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor | np.ndarray)}
        unknown = sorted(set(tensors) - set(self.input_names))
        missing = sorted(set(self.input_names) - set(tensors))
        if unknown or missing:
            raise TypeError(
                f"the exported graph takes {', '.join(self.input_names)}; "
                f"unknown: {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'}"
            )
        feed = {}
        for name in self.input_names:
            value = tensors[name]
            array = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
            wanted = self._input_types.get(name)
            feed[name] = array.astype(wanted, copy=False) if wanted else array
        outputs = self.session.run(self.output_names, feed)
        return SimpleNamespace(**{
            name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in zip(self.output_names, outputs, strict=True)
        })


def _import_runtime() -> Any:
    """Import onnxruntime and optimum-onnx, or say how to install them."""
    try:
        import onnxruntime as ort
        import optimum.onnxruntime  # noqa: F401 - the ORTModel classes and the exporter
    except ImportError as exc:
        raise BackendUnavailable(
            f"the ONNX Runtime backend is not installed ({exc.name or exc} is missing): {_INSTALL}",
            extra=_EXTRA,
        ) from exc
    return ort


def _plan(spec: ModelSpec, device: str) -> _direct.Plan:
    """optimum where it can export the model; the vision-language split; a direct export."""
    if spec.kind != _VLM_KIND:
        return _direct.plan_export(spec, kinds=_KINDS, exporter="onnx", backend="onnxruntime")
    if device != "cpu":
        raise BackendUnavailable(
            "ONNX Runtime runs vision-language generators on the CPU provider only: their KV cache "
            "passes through host memory at every step"
        )
    return _direct.Plan(
        "vlm", model_class=spec.torch_class,
        why="optimum-onnx 0.1.0 has no ONNX export for vision-language generators",
    )


def _route_name(plan: _direct.Plan) -> str:
    if plan.route == "optimum":
        return f"optimum:{plan.model_class}"
    if plan.route == "vlm":
        return "direct:torch.onnx.export(vision tower + language model with KV cache)"
    return "direct:torch.onnx.export"


def _cache_details(entry: CacheEntry, export_s: float) -> dict[str, Any]:
    return {
        "export_cache": entry.status,
        "export_dir": str(entry.path),
        "export_s": round(export_s, 3),
        "export_cache_verify_s": round(entry.verify_s, 3),
    }


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


def _quant_flavour() -> str:
    """The dynamic-quantization configuration that suits this CPU.

    On x86 CPUs without VNNI, int8 matrix products multiply uint8 activations by int8
    weights with an instruction that saturates 16-bit sums; per-channel full-range int8
    weights hit that limit and lose accuracy (measured here: a worse error than per-tensor).
    The ``avx2`` flavour therefore quantizes weights to a 7-bit range, or to uint8 (optimum's
    ``avx2`` configuration), see :data:`_WEIGHT_FORMATS`.
    """
    import platform

    if platform.machine().lower() in ("arm64", "aarch64"):
        return "arm64"
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        flags = ""
    if "avx512_vnni" in flags or "avx_vnni" in flags:
        return "avx512_vnni"
    return "avx2"


def _export(spec: ModelSpec, plan: _direct.Plan, target: Path) -> dict[str, Any]:
    """Write the fp32 ONNX export of ``spec`` into ``target``."""
    _direct.require_export_memory(spec, factor=_EXPORT_MEMORY_FACTOR, what="the ONNX export")
    if plan.route == "direct":
        return _export_direct(spec, target)
    if plan.route == "vlm":
        return _ort_vlm.export(spec, target)
    from optimum.exporters.onnx import main_export

    with _direct.frozen_gc(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches
        # Validation against PyTorch is skipped: fp32 parity is covered by the test-suite
        # and int8 by the accuracy gate, and validation roughly doubles the export time.
        main_export(
            str(spec.model_dir), target, task=plan.task, library_name="transformers",
            do_validation=False, local_files_only=True,
        )
    return {"conversion": f"optimum.exporters.onnx.main_export(task={plan.task!r})"}


def _export_direct(spec: ModelSpec, target: Path) -> dict[str, Any]:
    """Convert ``spec.entry`` (or forward) with ``torch.onnx.export``."""
    import torch

    module, input_names, args, names = _direct.conversion_module(spec)
    # Every input's batch size is its own (a text batch and a video batch may differ);
    # integer inputs of rank ≥ 2 (token ids, masks) also vary in length.
    axes: dict[str, dict[int, str]] = {}
    for name, value in zip(input_names, args, strict=True):
        axes[name] = {0: f"{name}_dim0"}
        if not value.is_floating_point() and value.dim() >= 2:
            axes[name][1] = f"{name}_dim1"
    path = target / "model.onnx"
    how = None
    if importlib.util.find_spec("onnxscript") is not None:
        try:
            dims = torch.export.Dim.AUTO
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module, args, str(path), input_names=input_names, output_names=list(names),
                    dynamic_shapes=(tuple({axis: dims for axis in axes[n]} for n in input_names),),
                    dynamo=True,
                )
            how = "torch.onnx.export(dynamo=True)"
        except Exception as exc:  # noqa: BLE001 - any failure: fall back to the TorchScript exporter
            log.info("the TorchDynamo ONNX export failed (%s); using dynamo=False", exc)
            for leftover in target.iterdir():
                leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover)
    if how is None:
        # The TorchDynamo exporter needs onnxscript (not a dependency here) and fails on some
        # models; the TorchScript exporter handles these wrappers with dynamic axes.
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module, args, str(path), input_names=input_names, output_names=list(names),
                dynamic_axes=axes, opset_version=17, do_constant_folding=True, dynamo=False,
            )
        how = "torch.onnx.export(dynamo=False)"
    _direct.copy_model_metadata(spec.model_dir, target)
    return _direct.conversion_meta(spec, how)


def _onnx_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.onnx"))


def _copy_metadata(src: Path, dst: Path) -> None:
    """Copy everything but the graphs and their weights (configs, generation defaults)."""
    for item in src.iterdir():
        if item.is_file() and item.suffix not in (".onnx", ".onnx_data", ".data") and item.name != "manifest.json":
            shutil.copy2(item, dst / item.name)


def _graph_bytes(path: Path, name: str) -> int:
    stem = name.removesuffix(".onnx")
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name.startswith(stem))


def _expanding_reductions(path: Path) -> list[str]:
    """The MatMul nodes whose constant weight reduces a wider input to a narrower output.

    In transformer blocks these are the feed-forward down-projections (``[4h, h]``): their
    input is the activation after GELU/SiLU, which carries the largest outliers of the
    model, and they sum over the longest dimension, so 8-bit activations cost them the most
    accuracy (the LLM.int8() observation). Keeping them in fp32 keeps most of int8's size
    and speed. Decided by weight shapes only, so no architecture is named.
    """
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    shapes = {init.name: list(init.dims) for init in graph.initializer}
    names = []
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        weight = next((shapes[i] for i in node.input[1:] if i in shapes), None)
        if weight is not None and len(weight) == 2 and weight[0] > weight[1]:
            names.append(node.name)
    return names


def _quantize(spec: ModelSpec, plan: _direct.Plan, fp32_dir: Path, flavour: str, target: Path) -> dict[str, Any]:
    """Quantize the fp32 export dynamically into ``target``, then measure it (the gate).

    For each weight format of the flavour (:data:`_WEIGHT_FORMATS`, fastest first), two
    attempts: every MatMul with a constant weight in int8, then the same with the
    down-projections (:func:`_expanding_reductions`) kept in fp32. The first attempt that
    passes the accuracy gate is kept. The real MiniLM measured here (7-bit int8 weights):
    cosine 0.985 with all of them in int8 (refused), 0.992 with its six down-projections in
    fp32. When none passes, the last attempt stays in the cache with its cosine, and loading
    refuses it.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    # Conv is left in float: ConvInteger is slow on CPUs, and convolutions whose weight is
    # computed (weight normalisation) cannot be quantized at all.
    operators = [op for op in IntegerOpsRegistry if op != "Conv"]
    files = _onnx_files(fp32_dir)
    if _MERGED in files:  # the loader uses the merged decoder; quantizing the others is wasted work
        files = [f for f in files if f not in _UNMERGED]
    inputs = _direct.example_inputs(spec)
    reference = _open(plan, fp32_dir, ["CPUExecutionProvider"], None)
    sources, fusion = _fused_sources(spec, fp32_dir, files, target)
    keep_fp32 = {name: _expanding_reductions(sources[name]) for name in files}
    kept = sum(map(len, keep_fp32.values()))
    attempts = [
        (weight_type, reduce_range, exclude)
        for weight_type, reduce_range in _WEIGHT_FORMATS[flavour]
        for exclude in ((False, True) if kept else (False,))
    ]
    tried: list[str] = []
    for weight_type, reduce_range, exclude in attempts:
        how = (f"{_weight_format_name(weight_type, reduce_range)}, "
               + (f"{kept} down-projection MatMuls kept in fp32" if exclude else "every MatMul with constant weights in int8"))
        for leftover in target.iterdir():
            if leftover.name != _FUSED_DIR:  # the fused sources stay until the last attempt
                leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover)
        _copy_metadata(fp32_dir, target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in files:
                # onnxruntime's own defaults, which optimum's ORTQuantizer does not pass on:
                # only MatMuls with a constant weight (attention's Q·K and P·V multiply two
                # activations; quantizing them re-quantizes the whole KV cache at every
                # decode step: GPT-2 int8 16.3 → 14.8 ms per token here, and less error).
                quantize_dynamic(
                    sources[name], target / name, op_types_to_quantize=operators, per_channel=True,
                    reduce_range=reduce_range, weight_type=getattr(QuantType, weight_type),
                    nodes_to_exclude=keep_fp32[name] if exclude else None,
                    use_external_data_format=_graph_bytes(fp32_dir, name) > _EXTERNAL_DATA_BYTES,
                    extra_options={
                        "MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False,
                        # Fused contrib ops have no ONNX shape inference; their outputs are float.
                        "DefaultTensorType": TensorProto.FLOAT,
                    },
                )
        candidate = _open(plan, target, ["CPUExecutionProvider"], None)
        cosine = _accuracy.run_gate(
            reference, candidate, inputs,
            output_names=_direct.output_names(spec) if plan.route == "direct" else spec.output_names,
            generates=spec.generates,
        )
        del candidate
        tried.append(f"{how}: cosine {cosine:.4f}")
        if cosine >= _accuracy.INT8_MIN_COSINE:
            break
    del reference
    shutil.rmtree(target / _FUSED_DIR, ignore_errors=True)
    return {
        "int8_gate_cosine": cosine,
        "quantization": f"dynamic, per-channel weights, {flavour} kernels, {how}",
        "int8_attempts": tried,
    } | ({"fusion": fusion} if fusion else {})


def _weight_format_name(weight_type: str, reduce_range: bool) -> str:
    """How a weight format reads in provenance: "int8 weights (7-bit range)", "uint8 weights"."""
    kind = {"QInt8": "int8", "QUInt8": "uint8"}[weight_type]
    return f"{kind} weights" + (" (7-bit range)" if reduce_range else "")


def _fused_sources(spec: ModelSpec, fp32_dir: Path, files: list[str], target: Path) -> tuple[dict[str, Path], str]:
    """The graphs to quantize: decoder-only generators with fewer, larger nodes.

    A decoder's step at batch 1 runs several hundred small nodes around a few dozen matrix
    products, and each node costs ONNX Runtime some microseconds. Two rewrites, in turn:
    onnxruntime's transformer optimizer, for a ``model_type`` it knows (GELU, layer norms
    with their residual adds; GPT-2 int8: 3,100 nodes to 1,400, 14.8 → 13.8 ms per token
    here), then :func:`._ort_attention.shrink_decoder`, for any decoder (each cached
    self-attention into one MultiHeadAttention node, static shape reads into constants).
    Encoders are not rewritten: at batch size they are compute-bound and gain nothing. A
    rewrite that fails is skipped, and what is returned says so (the accuracy gate judges
    what is kept).

    Returns:
        The graph file to quantize for each name, and what was rewritten or left and why
        ("" when rewriting does not apply).
    """
    sources = {name: fp32_dir / name for name in files}
    if spec.kind != "text-generation":
        return sources, ""
    import onnx

    from ._ort_attention import shrink_decoder

    fused_dir = target / _FUSED_DIR
    fused_dir.mkdir(exist_ok=True)
    model_type = _direct.model_type(spec)
    try:
        from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model
    except ImportError:
        MODEL_TYPES = {}
    optimizer = f"onnxruntime.transformers.optimizer(model_type={model_type!r})"
    done: list[str] = []
    for name in files:
        external = _graph_bytes(fp32_dir, name) > _EXTERNAL_DATA_BYTES
        if model_type in MODEL_TYPES:
            try:
                with warnings.catch_warnings(), quiet_loggers("onnxruntime.transformers", "fusion", "onnx_model"):
                    warnings.simplefilter("ignore")
                    optimized = optimize_model(str(fp32_dir / name), model_type=model_type, opt_level=0)
                    counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
                    optimized.save_model_to_file(str(fused_dir / name), use_external_data_format=external)
                sources[name] = fused_dir / name
                done.append(f"{optimizer}: " + (", ".join(f"{n} {op}" for op, n in sorted(counts.items())) or "nothing to fuse"))
            except Exception as exc:  # noqa: BLE001 - the optimizer's failures are many; unfused still works
                log.info("graph fusion skipped for %s: %s", name, exc)
                done.append(f"{optimizer}: {name} left unfused ({one_line(exc)})")
        try:
            model = onnx.load(str(sources[name]))
            counts = shrink_decoder(model)
            if any(counts.values()):
                onnx.save(model, str(fused_dir / f"{name}.shrunk"), save_as_external_data=external,
                          location=f"{name}.shrunk_data" if external else None)
                (fused_dir / f"{name}.shrunk").replace(fused_dir / name)
                sources[name] = fused_dir / name
            done.append("cached attention: " + (", ".join(f"{n} {what}" for what, n in counts.items()) if any(counts.values())
                                                else f"{name}: nothing matched"))
        except Exception as exc:  # noqa: BLE001 - a graph the rewrite does not understand runs as it is
            log.info("attention fusion skipped for %s: %s", name, exc)
            done.append(f"cached attention: {name} left as it is ({one_line(exc)})")
    return sources, "; ".join(done)


def _convert_fp16(fp32_dir: Path, target: Path) -> dict[str, Any]:
    """Convert the fp32 graphs to fp16, keeping fp32 inputs and outputs.

    Keeping the I/O in fp32 means the ORTModel classes and ``prepare`` feed the same
    tensors in every precision. Encoder-decoders are converted from their two separate
    decoders: the converter breaks the merged decoder (an If node whose branch would
    return an outer-scope value, which ONNX Runtime rejects).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    _copy_metadata(fp32_dir, target)
    files = _onnx_files(fp32_dir)
    if _MERGED in files and all(f in files for f in _UNMERGED):
        files = [f for f in files if f != _MERGED]
    for name in files:
        graph = onnx.load(str(fp32_dir / name))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            half = convert_float_to_float16(graph, keep_io_types=True)
        # fp16 halves the weights; only very large graphs still need external data.
        external = _graph_bytes(fp32_dir, name) > 2 * _EXTERNAL_DATA_BYTES
        onnx.save(half, str(target / name), save_as_external_data=external,
                  location=f"{name}_data" if external else None)
    return {"conversion": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"}


def _open(plan: _direct.Plan, path: Path, providers: list[str], options: list[dict[str, Any]] | None) -> Any:
    """Open an export directory with the plan's ORTModel class (or a plain session)."""
    if plan.route == "vlm":
        import onnxruntime as ort

        return _ort_vlm.open_model(path, plan.model_class, lambda name: ort.InferenceSession(
            str(path / name), providers=providers, provider_options=options))
    if plan.route == "direct":
        import onnxruntime as ort
        from transformers import AutoConfig

        session = ort.InferenceSession(str(path / "model.onnx"), providers=providers, provider_options=options)
        try:
            config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError):
            config = None
        return OrtGraphModel(session, config)
    import optimum.onnxruntime as ortm

    cls = getattr(ortm, plan.model_class)
    kwargs: dict[str, Any] = {"providers": providers, "provider_options": options}
    files = _onnx_files(path)
    if _MERGED not in files and all(f in files for f in _UNMERGED):
        kwargs["use_merged"] = False  # the fp16 copy holds the separate decoders only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(path, local_files_only=True, **kwargs)
