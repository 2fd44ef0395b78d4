"""OpenVINO bf16: the fp32 IR compiled for bf16 inference, held to the accuracy gate.

The CPU plugin converts the weights of its matrix multiplies to bf16 when it compiles a
model with ``INFERENCE_PRECISION_HINT=bf16`` and runs them on AMX or AVX512-BF16, so the
export on disk stays the fp32 one: the bf16 cache entry holds hard links to its files (no
second copy) and the gate's measurement. A decode step then reads half the weight bytes of
fp32, the bound of batch-1 generation (measurements: docs/backends.md).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from ..base import ModelSpec
from ..converting import accuracy, direct
from .model import compile_config, open_export

__all__ = ["BF16_CONVERSION", "link_bf16"]

BF16_CONVERSION = "fp32 IR compiled with INFERENCE_PRECISION_HINT=bf16 (the plugin converts the weights)"


def link_bf16(
    spec: ModelSpec, plan: direct.Plan, fp32_dir: Path, device: str, cache_dir: Path, target: Path,
) -> dict[str, Any]:
    """Link the fp32 export's files into ``target``, then gate bf16 against fp32 on ``device``.

    Returns:
        The entry's metadata: the gate's cosine as ``bf16_gate_cosine``, its device, and
        the conversion in words.
    """
    import openvino as ov

    for item in sorted(fp32_dir.iterdir()):
        if item.is_file() and item.name != "manifest.json":
            try:
                os.link(item, target / item.name)
            except OSError:  # another file system, or links not allowed: copy
                shutil.copy2(item, target / item.name)
    core = ov.Core()
    reference = open_export(plan, fp32_dir, device, compile_config(core, device, "fp32", spec, cache_dir, "gate-fp32"))
    candidate = open_export(plan, target, device, compile_config(core, device, "bf16", spec, cache_dir, "gate-bf16"))
    cosine = accuracy.run_gate(
        reference, candidate, direct.example_inputs(spec),
        output_names=direct.output_names(spec) if plan.route == "direct" else spec.output_names,
        generates=spec.generates,
    )
    del reference, candidate
    return {"bf16_gate_cosine": cosine, "gate_device": device, "conversion": BF16_CONVERSION}
