"""ONNX Runtime exports: the fp32 graphs of a model, and their fp16 copy.

Export routes (decided per spec by :func:`export_plan`):

* optimum, for the kinds in :data:`KINDS` when optimum-onnx's exporter supports the
  architecture: ``optimum.exporters.onnx.main_export`` writes the graphs (decoders with a
  KV cache, encoder-decoders with a merged decoder) and the matching ``ORTModelFor*`` class
  runs them, ``generate`` included;
* the vision-language split of :mod:`.vlm`, for image-text generators (CPU only);
* a direct ``torch.onnx.export`` of a small wrapper module, for a model method other than
  ``forward`` (optimum exports ``forward`` only) and for architectures optimum-onnx does not
  support. The TorchDynamo exporter is tried first when its dependency (onnxscript) is
  installed; the TorchScript exporter (``dynamo=False``) is the fallback.
"""

from __future__ import annotations

import importlib.util
import logging
import shutil
import warnings
from pathlib import Path
from typing import Any

from ..._exceptions import BackendUnavailable
from ..base import ModelSpec
from ..converting import direct
from . import vlm

__all__ = [
    "EXPORT_MEMORY_FACTOR",
    "EXTERNAL_DATA_BYTES",
    "KINDS",
    "MERGED_DECODER",
    "UNMERGED_DECODERS",
    "convert_fp16",
    "copy_metadata",
    "export_fp32",
    "export_plan",
    "graph_bytes",
    "onnx_files",
]

log = logging.getLogger(__name__)

# Model kind → (optimum-onnx class, optimum export task). "-with-past" exports the KV cache.
KINDS: dict[str, tuple[str, str]] = {
    "feature-extraction": ("ORTModelForFeatureExtraction", "feature-extraction"),
    "fill-mask": ("ORTModelForMaskedLM", "fill-mask"),
    "text-generation": ("ORTModelForCausalLM", "text-generation-with-past"),
    "text2text-generation": ("ORTModelForSeq2SeqLM", "text2text-generation-with-past"),
    "automatic-speech-recognition": ("ORTModelForSpeechSeq2Seq", "automatic-speech-recognition-with-past"),
    "ctc": ("ORTModelForCTC", "automatic-speech-recognition"),
    "zero-shot-image-classification": ("ORTModelForZeroShotImageClassification", "zero-shot-image-classification"),
}
# Kinds optimum-onnx cannot export, converted by :mod:`.vlm` instead (with a KV cache).
_VLM_KIND = "image-text-to-text"
# Peak memory of an export ÷ the fp32 weight bytes: the TorchScript exporter holds the model,
# the traced graph's constants and the serialized protobuf at once (measured: llava-interleave
# 0.5B synthetic, 3.3 GB of weights, peaked at 11.4 GB: 3.5×).
EXPORT_MEMORY_FACTOR = 3.5
# Encoder-decoder exports hold a merged decoder (one graph with and without past) and the
# two separate decoders it was merged from; the loader prefers the merged one.
MERGED_DECODER = "decoder_model_merged.onnx"
UNMERGED_DECODERS = ("decoder_model.onnx", "decoder_with_past_model.onnx")
# Above this size a graph's weights go to an external data file (protobuf's limit is 2 GB).
EXTERNAL_DATA_BYTES = 1_500_000_000


def export_plan(spec: ModelSpec, device: str) -> direct.Plan:
    """optimum where it can export the model; the vision-language split; a direct export."""
    if spec.kind != _VLM_KIND:
        return direct.plan_export(spec, kinds=KINDS, exporter="onnx", backend="onnxruntime")
    if device != "cpu":
        raise BackendUnavailable(
            "ONNX Runtime runs vision-language generators on the CPU provider only: their KV cache "
            "passes through host memory at every step"
        )
    return direct.Plan(
        "vlm", model_class=spec.torch_class,
        why="optimum-onnx 0.1.0 has no ONNX export for vision-language generators",
    )


def export_fp32(spec: ModelSpec, plan: direct.Plan, target: Path) -> dict[str, Any]:
    """Write the fp32 ONNX export of ``spec`` into ``target``."""
    direct.require_export_memory(spec, factor=EXPORT_MEMORY_FACTOR, what="the ONNX export")
    if plan.route == "direct":
        return _export_direct(spec, target)
    if plan.route == "vlm":
        return vlm.export(spec, target)
    from optimum.exporters.onnx import main_export

    with direct.frozen_gc(), warnings.catch_warnings():
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

    module, input_names, args, names = direct.conversion_module(spec)
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
    direct.copy_model_metadata(spec.model_dir, target)
    return direct.conversion_meta(spec, how)


def convert_fp16(fp32_dir: Path, target: Path) -> dict[str, Any]:
    """Convert the fp32 graphs to fp16, keeping fp32 inputs and outputs.

    Keeping the I/O in fp32 means the ORTModel classes and ``prepare`` feed the same
    tensors in every precision. Encoder-decoders are converted from their two separate
    decoders: the converter breaks the merged decoder (an If node whose branch would
    return an outer-scope value, which ONNX Runtime rejects).
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    copy_metadata(fp32_dir, target)
    files = onnx_files(fp32_dir)
    if MERGED_DECODER in files and all(f in files for f in UNMERGED_DECODERS):
        files = [f for f in files if f != MERGED_DECODER]
    for name in files:
        graph = onnx.load(str(fp32_dir / name))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            half = convert_float_to_float16(graph, keep_io_types=True)
        # fp16 halves the weights; only very large graphs still need external data.
        external = graph_bytes(fp32_dir, name) > 2 * EXTERNAL_DATA_BYTES
        onnx.save(half, str(target / name), save_as_external_data=external,
                  location=f"{name}_data" if external else None)
    return {"conversion": "onnxruntime.transformers.float16.convert_float_to_float16(keep_io_types=True)"}


def onnx_files(path: Path) -> list[str]:
    return sorted(p.name for p in path.glob("*.onnx"))


def copy_metadata(src: Path, dst: Path) -> None:
    """Copy everything but the graphs and their weights (configs, generation defaults)."""
    for item in src.iterdir():
        if item.is_file() and item.suffix not in (".onnx", ".onnx_data", ".data") and item.name != "manifest.json":
            shutil.copy2(item, dst / item.name)


def graph_bytes(path: Path, name: str) -> int:
    stem = name.removesuffix(".onnx")
    return sum(p.stat().st_size for p in path.iterdir() if p.is_file() and p.name.startswith(stem))
