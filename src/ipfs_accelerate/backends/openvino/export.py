"""OpenVINO exports: the fp32 IR of a model, and its fp16 copy.

Export routes (decided per spec by :func:`..converting.direct.plan_export`):

* optimum-intel, for the kinds in :data:`KINDS` when its exporter supports the
  architecture: ``optimum.exporters.openvino.main_export`` writes the IR (stateful
  decoders that keep the KV cache inside the model, vision-language models split into
  vision, embedding and language parts) and the matching ``OVModelFor*`` class runs it,
  ``generate`` included;
* ``openvino.convert_model`` of a small wrapper module, for a model method other than
  ``forward`` (optimum exports ``forward`` only) and for architectures optimum-intel does
  not support.

fp32 is fp32 throughout: the IR is saved without FP16 compression (which
``openvino.save_model`` applies by default).
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..._exceptions import BackendUnavailable
from ..base import ModelSpec
from ..converting import direct

__all__ = ["DIRECT_XML", "EXPORT_MEMORY_FACTOR", "KINDS", "compress_fp16", "copy_metadata", "export_fp32"]

# Model kind → (optimum-intel class, optimum export task). "-with-past" exports the KV cache.
KINDS: dict[str, tuple[str, str]] = {
    "feature-extraction": ("OVModelForFeatureExtraction", "feature-extraction"),
    "fill-mask": ("OVModelForMaskedLM", "fill-mask"),
    "text-generation": ("OVModelForCausalLM", "text-generation-with-past"),
    "text2text-generation": ("OVModelForSeq2SeqLM", "text2text-generation-with-past"),
    "automatic-speech-recognition": ("OVModelForSpeechSeq2Seq", "automatic-speech-recognition-with-past"),
    "ctc": ("OVModelForCTC", "automatic-speech-recognition"),
    "image-text-to-text": ("OVModelForVisualCausalLM", "image-text-to-text"),
    "zero-shot-image-classification": ("OVModelForZeroShotImageClassification", "zero-shot-image-classification"),
}
DIRECT_XML = "openvino_model.xml"
# Peak memory of an export ÷ the fp32 weight bytes: the model, the TorchScript trace and the
# converted model's constants; an estimate, not measured on a large model yet.
EXPORT_MEMORY_FACTOR = 3.0


def export_fp32(spec: ModelSpec, plan: direct.Plan, target: Path) -> dict[str, Any]:
    """Write the fp32 OpenVINO IR of ``spec`` into ``target``."""
    direct.require_export_memory(spec, factor=EXPORT_MEMORY_FACTOR, what="the OpenVINO export")
    if plan.route == "direct":
        return _export_direct(spec, target)
    from optimum.exporters.openvino import main_export
    from optimum.intel import OVConfig

    with (direct.frozen_gc(), _named_state_variables() as fixed, _stacked_vision_feature_layers() as stacked,
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

    module, input_names, args, names = direct.conversion_module(spec)
    with torch.no_grad(), direct.frozen_gc(), warnings.catch_warnings():
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
    ov.save_model(ov_model, target / DIRECT_XML, compress_to_fp16=False)
    direct.copy_model_metadata(spec.model_dir, target)
    return direct.conversion_meta(spec, "openvino.convert_model")


def compress_fp16(fp32_dir: Path, target: Path) -> dict[str, Any]:
    """Store the fp32 IR's weights in fp16 (the compute precision is chosen at compile time)."""
    import openvino as ov

    core = ov.Core()
    copy_metadata(fp32_dir, target)
    for xml in sorted(fp32_dir.glob("*.xml")):
        ov.save_model(core.read_model(xml), target / xml.name, compress_to_fp16=True)
    return {"conversion": "openvino.save_model(compress_to_fp16=True)"}


def copy_metadata(src: Path, dst: Path) -> None:
    """Copy everything but the IR files (configs, generation defaults)."""
    for item in src.iterdir():
        if item.is_file() and item.suffix not in (".xml", ".bin") and item.name != "manifest.json":
            shutil.copy2(item, dst / item.name)


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

    with direct.patched((stateful, "insert_state_for_nodes", insert_state_for_nodes)):
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

    with direct.patched((model_patcher, name, vision_embed_forward)):
        yield notes
