"""OpenVINO int8: nncf weight compression of the fp32 IR, held to the accuracy gate.

INT8_SYM, per channel: a weight is scale × int8, cheaper to decompress than optimum-intel's
default INT8_ASYM (measurements: docs/backends.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..base import ModelSpec
from ..converting import accuracy, direct
from .export import copy_metadata
from .model import compile_config, open_export

__all__ = ["INT8_MODE", "INT8_RECIPE", "compress_int8", "shape_reads_to_compressed_weights"]

# nncf weight compression for int8. Symmetric: a weight is scale × int8, no zero point to
# subtract while decompressing, so faster than INT8_ASYM (optimum-intel's default) at the
# same accuracy (measured: docs/backends.md).
INT8_MODE = "INT8_SYM"
# Names what compress_int8 does beside nncf; a change invalidates cached int8 exports.
INT8_RECIPE = "shape-reads-on-compressed-weights"


def compress_int8(
    spec: ModelSpec, plan: direct.Plan, fp32_dir: Path, device: str, cache_dir: Path, target: Path,
) -> dict[str, Any]:
    """Compress the fp32 IR's weights to int8 with nncf into ``target``, then gate it."""
    import nncf
    import openvino as ov

    core = ov.Core()
    copy_metadata(fp32_dir, target)
    moved = 0
    for xml in sorted(fp32_dir.glob("*.xml")):
        compressed = nncf.compress_weights(core.read_model(xml), mode=getattr(nncf.CompressWeightsMode, INT8_MODE))
        moved += shape_reads_to_compressed_weights(compressed)
        ov.save_model(compressed, target / xml.name, compress_to_fp16=False)
    inputs = direct.example_inputs(spec)
    reference = open_export(plan, fp32_dir, device, compile_config(core, device, "fp32", spec, cache_dir, "gate-fp32"))
    candidate = open_export(plan, target, device, compile_config(core, device, "int8", spec, cache_dir, "gate-int8"))
    cosine = accuracy.run_gate(
        reference, candidate, inputs,
        output_names=direct.output_names(spec) if plan.route == "direct" else spec.output_names,
        generates=spec.generates,
    )
    del reference, candidate
    return {"int8_gate_cosine": cosine, "gate_device": device, "conversion": f"nncf.compress_weights({INT8_MODE})"} | (
        {"shape_reads_moved": moved} if moved else {})


# The nodes between a compressed weight's constant and the weight the graph uses (nncf's
# decompression: Convert, then Multiply by the scale, then Convert), none of which change its shape.
_DECOMPRESSION = ("Convert", "Multiply", "Subtract")


def shape_reads_to_compressed_weights(model: Any) -> int:
    """Point each ``ShapeOf`` that reads a decompressed weight at the compressed constant itself.

    nncf leaves a compressed weight as an int8 constant decompressed in the graph. A tied
    input embedding's weight feeds the embedding lookup and the output layer, and in some
    exports also a ``ShapeOf`` (OPT reads its vocabulary size from it); with that third reader
    the CPU plugin no longer runs the output layer on its int8 weights but decompresses them
    to f32 when it compiles (OPT-125m: a 154 MB output layer read at every step in place of
    39 MB; docs/backends.md). The shape is the constant's, so the ``ShapeOf`` reads it from
    the constant, and the weight has the readers the plugin expects.

    Returns:
        How many ``ShapeOf`` nodes were moved.
    """
    import openvino as ov

    moved = 0
    for node in model.get_ordered_ops():
        if node.get_type_name() != "ShapeOf":
            continue
        read = node.input_value(0)
        source, steps = read.get_node(), 0
        while source.get_type_name() in _DECOMPRESSION:
            source, steps = source.input_value(0).get_node(), steps + 1
        if (not steps or source.get_type_name() != "Constant"
                or source.get_output_element_type(0) not in (ov.Type.i8, ov.Type.u8)
                or source.get_output_partial_shape(0) != read.get_partial_shape()):
            continue
        node.input(0).replace_source_output(source.output(0))
        moved += 1
    return moved
