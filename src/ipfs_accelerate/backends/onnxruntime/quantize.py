"""ONNX Runtime int8: dynamic quantization of the fp32 export, held to the accuracy gate.

onnxruntime's own ``quantize_dynamic``: the MatMuls with constant weights, weights int8 per
channel, activations quantized at run time, on the CPU provider. Decoder-only generators
are first rewritten into fewer, larger nodes (onnxruntime's transformer optimizer, then
:func:`.attention.shrink_decoder`). Each weight format of the CPU's flavour is tried, then
the same with the feed-forward down-projections kept in fp32; the first attempt that passes
the gate is kept. Why these choices, with the measurements: docs/backends.md.
"""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..._logs import one_line, quiet_loggers
from ..base import ModelSpec
from ..converting import accuracy, direct
from .export import EXTERNAL_DATA_BYTES, MERGED_DECODER, UNMERGED_DECODERS, copy_metadata, graph_bytes, onnx_files
from .model import open_export

__all__ = [
    "INT8_RECIPE",
    "WEIGHT_FORMATS",
    "expanding_reductions",
    "fused_sources",
    "quant_flavour",
    "quantize_int8",
    "weight_format_name",
]

log = logging.getLogger(__name__)

# Names how quantize_int8 chooses the nodes it quantizes; a change invalidates cached int8 exports.
INT8_RECIPE = "fused-decoders, cached-attention-fused, shape-reads-shared, const-weight-matmuls, formats-then-down-projections-fp32"
# The weight formats each dynamic-quantization flavour tries, fastest first:
# (onnxruntime QuantType name, reduce_range). Without VNNI, x86 multiplies uint8 activations
# by int8 weights with VPMADDUBSW, whose pairwise 16-bit sums saturate for full-range int8
# weights; 7-bit weights (reduce_range) cannot saturate (2 × 255 × 64 < 2¹⁵) and keep that
# fast kernel. uint8 weights take the slower uint8 × uint8 kernel without the limit, at one
# more bit (the measured cost of each: docs/backends.md, "Measurements behind the code").
WEIGHT_FORMATS: dict[str, tuple[tuple[str, bool], ...]] = {
    "avx2": (("QInt8", True), ("QUInt8", False)),
    "avx512_vnni": (("QInt8", False),),
    "arm64": (("QInt8", False),),
}
# Fused fp32 graphs are written here inside the int8 export while it is built, then removed.
_FUSED_DIR = "fused-fp32"


def quant_flavour() -> str:
    """The dynamic-quantization configuration that suits this CPU.

    On x86 CPUs without VNNI, int8 matrix products multiply uint8 activations by int8
    weights with an instruction that saturates 16-bit sums; per-channel full-range int8
    weights hit that limit and lose accuracy (measured on an AVX2 CPU: a worse error than
    per-tensor).
    The ``avx2`` flavour therefore quantizes weights to a 7-bit range, or to uint8 (optimum's
    ``avx2`` configuration), see :data:`WEIGHT_FORMATS`.
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


def weight_format_name(weight_type: str, reduce_range: bool) -> str:
    """How a weight format reads in provenance: "int8 weights (7-bit range)", "uint8 weights"."""
    kind = {"QInt8": "int8", "QUInt8": "uint8"}[weight_type]
    return f"{kind} weights" + (" (7-bit range)" if reduce_range else "")


def expanding_reductions(path: Path) -> list[str]:
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


def quantize_int8(spec: ModelSpec, plan: direct.Plan, fp32_dir: Path, flavour: str, target: Path) -> dict[str, Any]:
    """Quantize the fp32 export dynamically into ``target``, then measure it (the gate).

    For each weight format of the flavour (:data:`WEIGHT_FORMATS`, fastest first), two
    attempts: every MatMul with a constant weight in int8, then the same with the
    down-projections (:func:`expanding_reductions`) kept in fp32. The first attempt that
    passes the accuracy gate is kept (the real MiniLM needs the second attempt on an AVX2
    CPU: docs/backends.md). When none passes, the last attempt stays in the cache with its
    cosine, and loading refuses it.
    """
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.registry import IntegerOpsRegistry

    # Conv is left in float: ConvInteger is slow on CPUs, and convolutions whose weight is
    # computed (weight normalisation) cannot be quantized at all.
    operators = [op for op in IntegerOpsRegistry if op != "Conv"]
    files = onnx_files(fp32_dir)
    if MERGED_DECODER in files:  # the loader uses the merged decoder; quantizing the others is wasted work
        files = [f for f in files if f not in UNMERGED_DECODERS]
    inputs = direct.example_inputs(spec)
    reference = open_export(plan, fp32_dir, ["CPUExecutionProvider"], None)
    sources, fusion = fused_sources(spec, fp32_dir, files, target)
    keep_fp32 = {name: expanding_reductions(sources[name]) for name in files}
    kept = sum(map(len, keep_fp32.values()))
    attempts = [
        (weight_type, reduce_range, exclude)
        for weight_type, reduce_range in WEIGHT_FORMATS[flavour]
        for exclude in ((False, True) if kept else (False,))
    ]
    tried: list[str] = []
    for weight_type, reduce_range, exclude in attempts:
        how = (f"{weight_format_name(weight_type, reduce_range)}, "
               + (f"{kept} down-projection MatMuls kept in fp32" if exclude else "every MatMul with constant weights in int8"))
        for leftover in target.iterdir():
            if leftover.name != _FUSED_DIR:  # the fused sources stay until the last attempt
                leftover.unlink() if leftover.is_file() else shutil.rmtree(leftover)
        copy_metadata(fp32_dir, target)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for name in files:
                # onnxruntime's own defaults, which optimum's ORTQuantizer does not pass on:
                # only MatMuls with a constant weight (attention's Q·K and P·V multiply two
                # activations; quantizing them re-quantizes the whole KV cache at every
                # decode step: slower, and more error).
                quantize_dynamic(
                    sources[name], target / name, op_types_to_quantize=operators, per_channel=True,
                    reduce_range=reduce_range, weight_type=getattr(QuantType, weight_type),
                    nodes_to_exclude=keep_fp32[name] if exclude else None,
                    use_external_data_format=graph_bytes(fp32_dir, name) > EXTERNAL_DATA_BYTES,
                    extra_options={
                        "MatMulConstBOnly": True, "WeightSymmetric": True, "ActivationSymmetric": False,
                        # Fused contrib ops have no ONNX shape inference; their outputs are float.
                        "DefaultTensorType": TensorProto.FLOAT,
                    },
                )
        candidate = open_export(plan, target, ["CPUExecutionProvider"], None)
        cosine = accuracy.run_gate(
            reference, candidate, inputs,
            output_names=direct.output_names(spec) if plan.route == "direct" else spec.output_names,
            generates=spec.generates,
        )
        del candidate
        tried.append(f"{how}: cosine {cosine:.4f}")
        if cosine >= accuracy.INT8_MIN_COSINE:
            break
    del reference
    shutil.rmtree(target / _FUSED_DIR, ignore_errors=True)
    return {
        "int8_gate_cosine": cosine,
        "quantization": f"dynamic, per-channel weights, {flavour} kernels, {how}",
        "int8_attempts": tried,
    } | ({"fusion": fusion} if fusion else {})


def fused_sources(spec: ModelSpec, fp32_dir: Path, files: list[str], target: Path) -> tuple[dict[str, Path], str]:
    """The graphs to quantize: decoder-only generators with fewer, larger nodes.

    A decoder's step at batch 1 runs several hundred small nodes around a few dozen matrix
    products, and each node costs ONNX Runtime some microseconds. Two rewrites, in turn:
    onnxruntime's transformer optimizer, for a ``model_type`` it knows (GELU, layer norms
    with their residual adds; GPT-2: 3,100 nodes to 1,400), then
    :func:`.attention.shrink_decoder`, for any decoder (each cached
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

    from .attention import shrink_decoder

    fused_dir = target / _FUSED_DIR
    fused_dir.mkdir(exist_ok=True)
    model_type = direct.model_type(spec)
    try:
        from onnxruntime.transformers.optimizer import MODEL_TYPES, optimize_model
    except ImportError:
        MODEL_TYPES = {}
    optimizer = f"onnxruntime.transformers.optimizer(model_type={model_type!r})"
    done: list[str] = []
    for name in files:
        external = graph_bytes(fp32_dir, name) > EXTERNAL_DATA_BYTES
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
