"""Opening an OpenVINO export: compile properties, optimum's OVModel classes, a plain
compiled model, and the stateful decoder's step."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..._logs import quiet_loggers
from ..base import ModelSpec
from ..converting import direct
from .export import DIRECT_XML

__all__ = [
    "OVGraphModel",
    "compile_config",
    "matmul_precisions",
    "native_bf16",
    "open_export",
    "ov_device",
    "stateful_causal_step",
    "stateful_decoder_step",
]

def ov_device(device: str) -> str:
    """OpenVINO's name for our device: ``cpu`` → ``CPU``; OpenVINO names pass through."""
    return "CPU" if device == "cpu" else device.upper()


def native_bf16(core: Any, device: str) -> bool:
    """Whether OpenVINO's ``device`` computes bf16 natively.

    OpenVINO's CPU plugin lists ``BF16`` among its optimization capabilities only on CPUs
    with AVX512-BF16 or AMX; elsewhere a bf16 hint would quietly run in f32.
    """
    try:
        capabilities = {str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES")}
    except Exception:  # noqa: BLE001 - a device that cannot say is not counted as native
        return False
    return "BF16" in capabilities


def compile_config(
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
    elif precision == "bf16":
        # The fp32 IR compiled for bf16 inference: the CPU plugin converts the weights of
        # its matrix multiplies to bf16 when it compiles (read back: matmul_precisions).
        config["INFERENCE_PRECISION_HINT"] = "bf16"
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


def matmul_precisions(compiled: Any) -> dict[str, int]:
    """How many matrix multiplies of a compiled model run in each precision (read back from
    its runtime graph: the plugin's ``FullyConnected`` and ``MatMul`` nodes); empty where
    the device does not expose a runtime graph."""
    counts: dict[str, int] = {}
    try:
        ops = compiled.get_runtime_model().get_ordered_ops()
    except Exception:  # noqa: BLE001 - not every device exposes its runtime graph
        return counts
    for op in ops:
        info = op.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        if info["layerType"].astype(str) in ("FullyConnected", "MatMul"):
            precision = info["runtimePrecision"].astype(str)
            counts[precision] = counts.get(precision, 0) + 1
    return dict(sorted(counts.items()))


def open_export(plan: direct.Plan, path: Path, device: str, config: dict[str, str]) -> Any:
    """Compile an export directory with the plan's OVModel class (or plain OpenVINO)."""
    if plan.route == "direct":
        import openvino as ov

        compiled = ov.Core().compile_model(str(path / DIRECT_XML), device, config)
        return OVGraphModel(compiled, direct.saved_config(path))
    import optimum.intel as oi

    cls = getattr(oi, plan.model_class)
    # A local directory of IR, so export=False. optimum-intel 1.27 still looks the path up
    # as a hub id in the HF cache first, fails, and logs a warning that says nothing useful
    # ("Could not infer whether the model was already converted"): that logger is muted for
    # the call (its errors still show).
    with warnings.catch_warnings(), quiet_loggers("optimum.intel.openvino.modeling_base"):
        warnings.simplefilter("ignore")
        return cls.from_pretrained(str(path), export=False, device=device, ov_config=dict(config))


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

        feed = direct.graph_feed(inputs, self.input_names, what="the converted model")
        # A request per call: a compiled model's default request is not safe to share.
        result = self.compiled.create_infer_request().infer(feed)
        return SimpleNamespace(**{
            name: torch.from_numpy(np.array(result[port], copy=True))
            for name, port in zip(self.output_names, self.compiled.outputs, strict=True)
        })


# The inputs a stateful optimum seq2seq decoder may have for a direct step to feed them all.
_DECODER_STEP_INPUTS = frozenset({"input_ids", "encoder_hidden_states", "encoder_attention_mask", "beam_idx"})


def stateful_decoder_step(model: Any) -> Any:
    """A :attr:`Runtime.decoder_step` straight on the infer request of optimum's stateful
    seq2seq decoder, or None when the model has none (or inputs this step does not feed).

    It skips optimum's path through the model's and the decoder's ``forward`` (argument
    routing, input conversion, a logits copy, output objects), a measurable part of a small
    decoder step, with the same transcripts (docs/backends.md, "Measurements behind the
    code").
    """
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
        # The cache lives in the request's state: the marker only says it is not empty.
        return _infer_last_logits(request, inputs, names), True

    return step


def _infer_last_logits(request: Any, inputs: Any, names: frozenset[str]) -> Any:
    """One synchronous step of a stateful decoder's infer request: the inputs it takes (host
    torch tensors) in, the last position's logits out as an fp32 host tensor."""
    import numpy as np
    import torch

    feed = {name: value.numpy() for name, value in inputs.items() if name in names}
    # One cache row per input row, none reordered (beams would reorder them).
    feed["beam_idx"] = np.arange(feed["input_ids"].shape[0], dtype=np.int32)
    request.infer(feed, share_inputs=True)
    logits = request.get_tensor("logits").data[:, -1, :]
    return torch.from_numpy(np.array(logits, dtype=np.float32))


# The inputs a stateful optimum causal LM may have for a direct step to feed them all.
_CAUSAL_STEP_INPUTS = frozenset({"input_ids", "attention_mask", "position_ids", "beam_idx"})


def stateful_causal_step(model: Any) -> Any:
    """A :attr:`Runtime.decoder_step` straight on an infer request of optimum's stateful
    causal LM, or None when the model is not one (or has inputs this step does not feed).

    Each generation gets its own infer request (its KV cache is that request's state, and
    the request is the step's cache marker), so two loops may share one model. A
    synchronous ``infer`` on the caller's thread replaces optimum's ``start_async`` and
    ``wait`` (a hand-over to the plugin's thread per token, which costs most on a busy
    CPU), and its argument routing and logits copy are skipped (docs/backends.md,
    "Measurements behind the code"); the tokens are the same.
    """

    if getattr(model, "decoder", None) is not None or not getattr(model, "stateful", False):
        return None
    if not callable(getattr(model, "compile", None)):
        return None
    names = frozenset(getattr(model, "input_names", None) or ())
    if not {"input_ids", "attention_mask", "beam_idx"} <= names <= _CAUSAL_STEP_INPUTS:
        return None

    def step(inputs: Any, past: Any) -> tuple[Any, Any]:
        if past is None:
            model.compile()
            # A new request starts with an empty state: this generation's KV cache.
            past = model.request.get_compiled_model().create_infer_request()
        return _infer_last_logits(past, inputs, names), past

    return step
