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

__all__ = ["INT8_MODE", "compress_int8"]

# nncf weight compression for int8. Symmetric: a weight is scale × int8, no zero point to
# subtract while decompressing, so faster than INT8_ASYM (optimum-intel's default) at the
# same accuracy (measured: docs/backends.md).
INT8_MODE = "INT8_SYM"


def compress_int8(
    spec: ModelSpec, plan: direct.Plan, fp32_dir: Path, device: str, cache_dir: Path, target: Path,
) -> dict[str, Any]:
    """Compress the fp32 IR's weights to int8 with nncf into ``target``, then gate it."""
    import nncf
    import openvino as ov

    core = ov.Core()
    copy_metadata(fp32_dir, target)
    for xml in sorted(fp32_dir.glob("*.xml")):
        compressed = nncf.compress_weights(core.read_model(xml), mode=getattr(nncf.CompressWeightsMode, INT8_MODE))
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
    return {"int8_gate_cosine": cosine, "gate_device": device, "conversion": f"nncf.compress_weights({INT8_MODE})"}
