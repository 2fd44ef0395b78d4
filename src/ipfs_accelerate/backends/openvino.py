"""OpenVINO: models exported to OpenVINO IR by optimum-intel, run by OVModelFor* classes.

Export routes (decided per spec by :func:`._direct.plan_export`):

* optimum-intel, for the kinds in :data:`_KINDS` when its exporter supports the
  architecture: ``optimum.exporters.openvino.main_export`` writes the IR (stateful
  decoders that keep the KV cache inside the model, vision-language models split into
  vision, embedding and language parts) and the matching ``OVModelFor*`` class runs it,
  ``generate`` included;
* ``openvino.convert_model`` of a small wrapper module, for a model method other than
  ``forward`` (optimum exports ``forward`` only) and for architectures optimum-intel does
  not support.

Precisions: fp32 is fp32 throughout: the IR is saved without FP16 compression (which
``openvino.save_model`` applies by default), and the compiled model is asked for f32
inference and an f32 KV cache (optimum's exports ask for an f16 KV cache). fp16 stores the
weights in fp16 and asks for f16 inference where the device offers it (it is read back:
a CPU without FP16 computes in f32). int8 compresses the weights with nncf (INT8_SYM,
per channel: cheaper to decompress than optimum-intel's default INT8_ASYM), and is
refused when it fails the accuracy gate. Exports are cached (see :mod:`._export_cache`).

Devices: our ``"cpu"`` is OpenVINO's ``CPU``; OpenVINO device names (``GPU``, ``GPU.0``,
``NPU``) are accepted when ``Core().available_devices`` lists them. CUDA is not an
OpenVINO device.
"""

from __future__ import annotations

import contextlib
import functools
import shutil
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from .._exceptions import BackendUnavailable
from .._logs import quiet_loggers
from . import _accuracy, _direct
from ._export_cache import CacheEntry, export_key, get_or_build, library_versions
from .base import Backend, BackendProbe, ModelSpec, Runtime, module_exists

__all__ = ["OVGraphModel", "OpenVINOBackend"]

_EXTRA = "openvino"
_INSTALL = "pip install 'ipfs-accelerate[openvino]'"
_PRECISIONS = ("fp32", "fp16", "int8")
# The libraries whose versions change the exported or compressed bytes.
_EXPORT_LIBS = ("optimum", "optimum-intel", "openvino", "nncf", "torch", "transformers")

# Model kind → (optimum-intel class, optimum export task). "-with-past" exports the KV cache.
_KINDS: dict[str, tuple[str, str]] = {
    "feature-extraction": ("OVModelForFeatureExtraction", "feature-extraction"),
    "fill-mask": ("OVModelForMaskedLM", "fill-mask"),
    "text-generation": ("OVModelForCausalLM", "text-generation-with-past"),
    "text2text-generation": ("OVModelForSeq2SeqLM", "text2text-generation-with-past"),
    "automatic-speech-recognition": ("OVModelForSpeechSeq2Seq", "automatic-speech-recognition-with-past"),
    "ctc": ("OVModelForCTC", "automatic-speech-recognition"),
    "image-text-to-text": ("OVModelForVisualCausalLM", "image-text-to-text"),
    "zero-shot-image-classification": ("OVModelForZeroShotImageClassification", "zero-shot-image-classification"),
}
_DIRECT_XML = "openvino_model.xml"
# nncf weight compression for int8. Symmetric: a weight is scale × int8, no zero point to
# subtract while decompressing; measured here on Whisper tiny.en's decoder step (AVX2):
# 6.5 ms against 7.3 ms with INT8_ASYM (optimum-intel's default), logits cosine to fp32
# 0.9999 with either.
_INT8_MODE = "INT8_SYM"
# Peak memory of an export ÷ the fp32 weight bytes: the model, the TorchScript trace and the
# converted model's constants; an estimate, not measured on a large model yet.
_EXPORT_MEMORY_FACTOR = 3.0


class OpenVINOBackend(Backend):
    """Runs OpenVINO IR on the devices OpenVINO finds (CPU, Intel GPU, NPU)."""

    name = "openvino"
    extra = _EXTRA

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
            return f"the OpenVINO backend offers fp32, fp16 and int8, not {precision}"
        try:
            import openvino as ov
        except ImportError:
            return f"openvino is not installed: {_INSTALL}"
        available = ov.Core().available_devices
        if device == "cuda" or device.startswith("cuda:"):
            return (
                "CUDA is not an OpenVINO device; OpenVINO runs on CPUs, Intel GPUs and NPUs "
                f"(here: {', '.join(available) or 'none'})"
            )
        target = _ov_device(device)
        if not any(dev == target or dev.split(".")[0] == target for dev in available):
            return f"OpenVINO has no device {target!r} here (available: {', '.join(available) or 'none'})"
        return None

    def load(self, spec: ModelSpec, *, device: str, precision: str, cache_dir: Path) -> Runtime:
        started = time.perf_counter()
        ov = _import_runtime()
        reason = self.unsupported(device=device, precision=precision)
        if reason:
            raise BackendUnavailable(reason)
        target = _ov_device(device)
        plan = _direct.plan_export(spec, kinds=_KINDS, exporter="openvino", backend=self.name)
        versions = library_versions(_EXPORT_LIBS) | {"openvino": ov.__version__}
        describe = {"model_id": spec.weights.model_id, "kind": spec.kind, "route": plan.route}
        details: dict[str, Any] = {"openvino": ov.__version__, "export_route": _route_name(plan)}
        if plan.why:
            details["direct_conversion_reason"] = plan.why
        core = ov.Core()

        fp32 = get_or_build(
            cache_dir, self.name, export_key(spec, cache_dir=cache_dir, backend=self.name, precision="fp32", versions=versions),
            functools.partial(_export, spec, plan), describe=describe | {"precision": "fp32"},
        )
        entry, export_s = fp32, fp32.build_s
        if precision == "int8":
            entry = get_or_build(
                cache_dir, self.name,
                export_key(spec, cache_dir=cache_dir, backend=self.name, precision="int8", versions=versions,
                           extra={"compression": _INT8_MODE}),
                functools.partial(_compress_int8, spec, plan, fp32.path, target, cache_dir),
                describe=describe | {"precision": "int8"},
            )
            export_s += entry.build_s
            cosine = float(entry.meta["int8_gate_cosine"])
            details |= {"int8_gate_cosine": cosine, "int8_gate_device": entry.meta.get("gate_device")}
            _accuracy.check_gate(cosine, what="OpenVINO int8 export")
        elif precision == "fp16":
            entry = get_or_build(
                cache_dir, self.name, export_key(spec, cache_dir=cache_dir, backend=self.name, precision="fp16", versions=versions),
                functools.partial(_compress_fp16, fp32.path), describe=describe | {"precision": "fp16"},
            )
            export_s += entry.build_s

        config = _compile_config(core, target, precision, spec, cache_dir, entry.path.name)
        compiling = time.perf_counter()
        model = _open(plan, entry.path, target, config)
        compile_s = time.perf_counter() - compiling
        compiled = _compiled_models(model)
        if not compiled:
            raise BackendUnavailable("OpenVINO loaded the model but no compiled model could be found to read back")
        executing = sorted({str(d) for cm in compiled for d in cm.get_property("EXECUTION_DEVICES")})
        actual_device = "cpu" if executing == ["CPU"] else ",".join(executing)
        if target not in executing and not any(d.split(".")[0] == target for d in executing):
            details["fallback"] = f"OpenVINO device {target} was requested but the model executes on {executing}"
        details |= _cache_details(entry, export_s) | {
            "execution_devices": executing,
            "inference_precision": _read_property(compiled, "INFERENCE_PRECISION_HINT"),
            "weights": {"fp32": "f32", "fp16": "f16", "int8": f"int8 (nncf {_INT8_MODE}, per channel)"}[precision],
            "ov_config": config,
            "compile_s": round(compile_s, 3),
        }
        if spec.generates:
            details["kv_cache_precision"] = _read_property(compiled, "KV_CACHE_PRECISION")
        conversion = entry.meta.get("conversion") or fp32.meta.get("conversion")
        if conversion:
            details["conversion"] = conversion
        if entry.meta.get("stateful_fix"):
            details["stateful_fix"] = entry.meta["stateful_fix"]
        import torch

        from .pytorch import _prepare

        return Runtime(
            backend=self.name,
            device=actual_device,
            precision=precision,
            model=model,
            details=details,
            load_s=time.perf_counter() - started,
            # OpenVINO takes host tensors; its models keep fp32 inputs in every precision.
            prepare=functools.partial(_prepare, device="cpu", dtype=torch.float32),
            host_threads=_direct.HOST_THREADS,
            decoder_step=_stateful_decoder_step(model),
        )


# The inputs a stateful optimum seq2seq decoder may have for a direct step to feed them all.
_DECODER_STEP_INPUTS = frozenset({"input_ids", "encoder_hidden_states", "encoder_attention_mask", "beam_idx"})


def _stateful_decoder_step(model: Any) -> Any:
    """A :attr:`Runtime.decoder_step` straight on the infer request of optimum's stateful
    seq2seq decoder, or None when the model has none (or inputs this step does not feed).

    optimum's path through the model's and the decoder's ``forward`` (argument routing, input
    conversion, a logits copy, output objects) cost about 0.4 ms of a 7 ms Whisper tiny.en
    int8 decoder step here: 30–35 ms of a 1.3 s, 29 s clip (two A/B runs, alternating in
    one process), same transcripts.
    """
    import numpy as np
    import torch

    decoder = getattr(model, "decoder", None)
    if decoder is None or not getattr(decoder, "stateful", False) or not callable(getattr(decoder, "compile", None)):
        return None
    names = frozenset(getattr(decoder, "input_names", None) or ())
    if not {"input_ids", "encoder_hidden_states", "beam_idx"} <= names <= _DECODER_STEP_INPUTS:
        return None

    def step(inputs: Any, past: Any) -> tuple[Any, Any]:
        decoder.compile()
        request = decoder.request
        if past is None:
            request.reset_state()
        feed = {name: value.numpy() for name, value in inputs.items() if name in names}
        # One cache row per input row, none reordered (beams would reorder them).
        feed["beam_idx"] = np.arange(feed["input_ids"].shape[0], dtype=np.int32)
        request.infer(feed, share_inputs=True)
        logits = request.get_tensor("logits").data[:, -1, :]
        # The cache lives in the request's state: the marker only says it is not empty.
        return torch.from_numpy(np.array(logits, dtype=np.float32)), True

    return step


class OVGraphModel:
    """Runs a directly converted OpenVINO model like a transformers model.

    ``model(**inputs)`` takes torch tensors by the names of the traced method's arguments
    and returns an object whose attributes are the model's named outputs (torch tensors).

    Attributes:
        compiled: the OpenVINO compiled model.
        config: the model's transformers config (for families that read it).
    """

    def __init__(self, compiled: Any, config: Any) -> None:
        self.compiled = compiled
        self.config = config
        self.input_names = [port.get_any_name() for port in compiled.inputs]
        self.output_names = [port.get_any_name() for port in compiled.outputs]

    def __call__(self, **inputs: Any) -> SimpleNamespace:
        import numpy as np
        import torch

        # Non-tensor arguments (flags) were fixed when the model was converted.
        tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor | np.ndarray)}
        unknown = sorted(set(tensors) - set(self.input_names))
        missing = sorted(set(self.input_names) - set(tensors))
        if unknown or missing:
            raise TypeError(
                f"the converted model takes {', '.join(self.input_names)}; "
                f"unknown: {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'}"
            )
        feed: dict[str, Any] = {}
        for name in self.input_names:
            value = tensors[name]
            feed[name] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
        # A request per call: a compiled model's default request is not safe to share.
        result = self.compiled.create_infer_request().infer(feed)
        return SimpleNamespace(**{
            name: torch.from_numpy(np.array(result[port], copy=True))
            for name, port in zip(self.output_names, self.compiled.outputs, strict=True)
        })


def _import_runtime() -> Any:
    """Import openvino and optimum-intel, or say how to install them."""
    try:
        import openvino as ov
        import optimum.intel.openvino  # noqa: F401 - the OVModel classes and the exporter
    except ImportError as exc:
        raise BackendUnavailable(
            f"the OpenVINO backend is not installed ({exc.name or exc} is missing): {_INSTALL}",
            extra=_EXTRA,
        ) from exc
    return ov


def _ov_device(device: str) -> str:
    """OpenVINO's name for our device: ``cpu`` → ``CPU``; OpenVINO names pass through."""
    return "CPU" if device == "cpu" else device.upper()


def _route_name(plan: _direct.Plan) -> str:
    return f"optimum:{plan.model_class}" if plan.route == "optimum" else "direct:openvino.convert_model"


def _cache_details(entry: CacheEntry, export_s: float) -> dict[str, Any]:
    return {
        "export_cache": entry.status,
        "export_dir": str(entry.path),
        "export_s": round(export_s, 3),
        "export_cache_verify_s": round(entry.verify_s, 3),
    }


def _compile_config(
    core: Any, device: str, precision: str, spec: ModelSpec, cache_dir: Path, key: str,
) -> dict[str, str]:
    """The compile properties that make the device run the precision we report."""
    supported = set(core.get_property(device, "SUPPORTED_PROPERTIES"))
    capabilities = {str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")}
    config: dict[str, str] = {}
    if precision == "fp32":
        # CPUs with bf16 units default to bf16 inference, and optimum's exports ask for an
        # f16 KV cache: fp32 has to be asked for explicitly, twice.
        config |= {"INFERENCE_PRECISION_HINT": "f32", "KV_CACHE_PRECISION": "f32"}
    elif precision == "fp16":
        # An architecture that overflows in fp16 keeps fp16 weights but computes in f32.
        native = "FP16" in capabilities and spec.fp16_safe
        config["INFERENCE_PRECISION_HINT"] = "f16" if native else "f32"
    elif device == "CPU":
        # int8 means int8 weights; on a CPU the arithmetic stays f32 (not bf16) so that the
        # accuracy gate measures the weight compression alone.
        config["INFERENCE_PRECISION_HINT"] = "f32"
    config = {k: v for k, v in config.items() if k in supported}
    if device != "CPU":
        # optimum-intel would put a GPU's compiled-kernel cache inside the export
        # directory, which the export cache must keep byte-identical: keep it beside it.
        config["CACHE_DIR"] = str(Path(cache_dir) / "exports" / "openvino-compiled" / key)
    return config


def _read_property(compiled: list[Any], name: str) -> str | None:
    """A property of the (first) compiled model, as text; None where the device lacks it."""
    try:
        value = compiled[0].get_property(name)
    except Exception:  # noqa: BLE001 - not every device reports every property
        return None
    text = str(value)
    for short, long in (("f32", "float32"), ("f16", "float16"), ("bf16", "bfloat16"), ("u8", "uint8_t"), ("i8", "int8_t")):
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


def _export(spec: ModelSpec, plan: _direct.Plan, target: Path) -> dict[str, Any]:
    """Write the fp32 OpenVINO IR of ``spec`` into ``target``."""
    _direct.require_export_memory(spec, factor=_EXPORT_MEMORY_FACTOR, what="the OpenVINO export")
    if plan.route == "direct":
        return _export_direct(spec, target)
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    with (_direct.frozen_gc(), _named_state_variables() as fixed, _stacked_vision_feature_layers() as stacked,
          warnings.catch_warnings()):
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches
        # dtype="fp32": no FP16 compression of the weights, and no automatic int8 (which
        # optimum applies by default to models above a billion parameters).
        main_export(
            str(spec.model_dir), target, task=plan.task, library_name="transformers",
            ov_config=OVConfig(dtype="fp32"), local_files_only=True,
        )
    meta: dict[str, Any] = {"conversion": f"optimum.exporters.openvino.main_export(task={plan.task!r})"}
    if fixed:
        meta["stateful_fix"] = fixed[0]
    if stacked:
        meta["vision_feature_fix"] = stacked[0]
    return meta


def _export_direct(spec: ModelSpec, target: Path) -> dict[str, Any]:
    """Convert ``spec.entry`` (or forward) with ``openvino.convert_model``."""
    import openvino as ov
    import torch

    module, input_names, args, names = _direct.conversion_module(spec)
    with torch.no_grad(), _direct.frozen_gc(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # Without an explicit input shape the converter keeps every dimension dynamic.
        ov_model = ov.convert_model(module, example_input=args)
    if len(ov_model.inputs) != len(input_names) or len(ov_model.outputs) != len(names):
        raise BackendUnavailable(
            f"openvino.convert_model produced {len(ov_model.inputs)} inputs and {len(ov_model.outputs)} outputs; "
            f"expected {input_names} → {list(names)}"
        )
    for port, name in zip(ov_model.inputs, input_names, strict=True):
        port.get_tensor().set_names({name})
    for port, name in zip(ov_model.outputs, names, strict=True):
        port.get_tensor().set_names({name})
    ov.save_model(ov_model, target / _DIRECT_XML, compress_to_fp16=False)
    _direct.copy_model_metadata(spec.model_dir, target)
    return _direct.conversion_meta(spec, "openvino.convert_model")


def _copy_metadata(src: Path, dst: Path) -> None:
    """Copy everything but the IR files (configs, generation defaults)."""
    for item in src.iterdir():
        if item.is_file() and item.suffix not in (".xml", ".bin") and item.name != "manifest.json":
            shutil.copy2(item, dst / item.name)


def _compress_fp16(fp32_dir: Path, target: Path) -> dict[str, Any]:
    """Store the fp32 IR's weights in fp16 (the compute precision is chosen at compile time)."""
    import openvino as ov

    core = ov.Core()
    _copy_metadata(fp32_dir, target)
    for xml in sorted(fp32_dir.glob("*.xml")):
        ov.save_model(core.read_model(xml), target / xml.name, compress_to_fp16=True)
    return {"conversion": "openvino.save_model(compress_to_fp16=True)"}


def _compress_int8(
    spec: ModelSpec, plan: _direct.Plan, fp32_dir: Path, device: str, cache_dir: Path, target: Path,
) -> dict[str, Any]:
    """Compress the fp32 IR's weights to int8 with nncf into ``target``, then gate it."""
    import nncf
    import openvino as ov

    core = ov.Core()
    _copy_metadata(fp32_dir, target)
    for xml in sorted(fp32_dir.glob("*.xml")):
        compressed = nncf.compress_weights(core.read_model(xml), mode=getattr(nncf.CompressWeightsMode, _INT8_MODE))
        ov.save_model(compressed, target / xml.name, compress_to_fp16=False)
    inputs = _direct.example_inputs(spec)
    reference = _open(plan, fp32_dir, device, _compile_config(core, device, "fp32", spec, cache_dir, "gate-fp32"))
    candidate = _open(plan, target, device, _compile_config(core, device, "int8", spec, cache_dir, "gate-int8"))
    cosine = _accuracy.run_gate(
        reference, candidate, inputs,
        output_names=_direct.output_names(spec) if plan.route == "direct" else spec.output_names,
        generates=spec.generates,
    )
    del reference, candidate
    return {"int8_gate_cosine": cosine, "gate_device": device, "conversion": f"nncf.compress_weights({_INT8_MODE})"}


def _open(plan: _direct.Plan, path: Path, device: str, config: dict[str, str]) -> Any:
    """Compile an export directory with the plan's OVModel class (or plain OpenVINO)."""
    if plan.route == "direct":
        import openvino as ov
        from transformers import AutoConfig

        compiled = ov.Core().compile_model(str(path / _DIRECT_XML), device, config)
        try:
            hf_config = AutoConfig.from_pretrained(path, local_files_only=True)
        except (OSError, ValueError):
            hf_config = None
        return OVGraphModel(compiled, hf_config)
    import optimum.intel as oi

    cls = getattr(oi, plan.model_class)
    # A local directory of IR, so export=False. optimum-intel 1.27 still looks the path up
    # as a hub id in the HF cache first, fails, and logs a warning that says nothing useful
    # ("Could not infer whether the model was already converted"): that logger is muted for
    # the call (its errors still show).
    with warnings.catch_warnings(), quiet_loggers("optimum.intel.openvino.modeling_base"):
        warnings.simplefilter("ignore")
        return cls.from_pretrained(str(path), export=False, device=device, ov_config=dict(config))


@contextlib.contextmanager
def _named_state_variables() -> Iterator[list[str]]:
    """Let optimum-intel make encoder-decoders stateful when a KV tensor has no name.

    With openvino 2026, optimum-intel 1.27's ``insert_state_for_nodes`` fails on some
    encoder-decoder models ("Check '!get_names().empty()' failed"): it names each state
    variable after its tensor, and some cross-attention tensors have no name. Upstream
    fixed it (huggingface/optimum-intel#1857) by falling back to the node's name; this
    applies that same fallback for the duration of one export. Yields a list that holds a
    note when the fallback was installed.
    """
    notes: list[str] = []
    try:
        from optimum.exporters.openvino import stateful
    except ImportError:
        yield notes
        return
    original = getattr(stateful, "insert_state_for_nodes", None)
    if original is None:
        yield notes
        return

    def insert_state_for_nodes(model: Any, nodes: Any) -> None:
        import openvino as ov

        outputs = [output for node in nodes for output in node.outputs()]
        for output in outputs:
            consumers = output.get_target_inputs()
            if output.get_names():
                variable_id = output.get_any_name()
            else:
                variable_id = f"{output.get_node().get_friendly_name()}.{output.get_index()}"
                if not notes:
                    notes.append("unnamed KV tensors named after their nodes (optimum-intel#1857)")
            read_value = ov.opset13.read_value(output, variable_id)
            for consumer in consumers:
                consumer.replace_source_output(read_value.output(0))
            assign = ov.opset13.assign(read_value, variable_id)
            model.add_sinks([assign])

    with _direct.patched((stateful, "insert_state_for_nodes", insert_state_for_nodes)):
        yield notes


@contextlib.contextmanager
def _stacked_vision_feature_layers() -> Iterator[list[str]]:
    """Let optimum-intel export image encoders that concatenate several vision layers.

    optimum-intel 1.27 exports the image-embedding part of its visual causal LMs with a
    ``forward`` that indexes the vision tower's hidden states with
    ``config.vision_feature_layer``, which fails when that is a list of layers ("tuple
    indices must be integers or slices, not list"), as in checkpoints that feed the
    projector several SigLIP layers at once. transformers concatenates the listed layers'
    states along the feature axis before the projector; this applies the same for one
    export. Yields a list that holds a note when the replacement was used.
    """
    notes: list[str] = []
    try:
        from optimum.exporters.openvino import model_patcher
    except ImportError:
        yield notes
        return
    name = "llava_vision_embed_forward"  # optimum-intel's function, looked up at patch time
    original = getattr(model_patcher, name, None)
    if original is None:
        yield notes
        return

    def vision_embed_forward(self: Any, pixel_values: Any) -> Any:
        layers = self.config.vision_feature_layer
        if isinstance(layers, int):
            return original(self, pixel_values)
        import torch

        if not notes:
            notes.append(f"vision_feature_layer {list(layers)} concatenated as transformers does")
        states = self.vision_tower(pixel_values, output_hidden_states=True).hidden_states
        selected = torch.cat([states[i] for i in layers], dim=-1)
        if self.config.vision_feature_select_strategy == "default":
            selected = selected[:, 1:]
        return self.multi_modal_projector(selected)

    with _direct.patched((model_patcher, name, vision_embed_forward)):
        yield notes
