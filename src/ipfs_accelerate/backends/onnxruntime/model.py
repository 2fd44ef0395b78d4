"""Opening an ONNX Runtime export: optimum's ORTModel classes, a plain graph, the decoder step."""

from __future__ import annotations

import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from ..converting import direct
from . import vlm
from .export import MERGED_DECODER, UNMERGED_DECODERS, onnx_files

__all__ = ["OrtGraphModel", "causal_decoder_step", "open_export"]

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


def open_export(plan: direct.Plan, path: Path, providers: list[str], options: list[dict[str, Any]] | None) -> Any:
    """Open an export directory with the plan's ORTModel class (or a plain session)."""
    if plan.route == "vlm":
        import onnxruntime as ort

        return vlm.open_model(path, plan.model_class, lambda name: ort.InferenceSession(
            str(path / name), providers=providers, provider_options=options))
    if plan.route == "direct":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path / "model.onnx"), providers=providers, provider_options=options)
        return OrtGraphModel(session, direct.saved_config(path))
    import optimum.onnxruntime as ortm

    cls = getattr(ortm, plan.model_class)
    kwargs: dict[str, Any] = {"providers": providers, "provider_options": options}
    files = onnx_files(path)
    if MERGED_DECODER not in files and all(f in files for f in UNMERGED_DECODERS):
        kwargs["use_merged"] = False  # the fp16 copy holds the separate decoders only
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return cls.from_pretrained(path, local_files_only=True, **kwargs)


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

        feed = direct.graph_feed(inputs, self.input_names, what="the exported graph")
        for name, wanted in self._input_types.items():
            if name in feed and wanted:
                feed[name] = feed[name].astype(wanted, copy=False)
        outputs = self.session.run(self.output_names, feed)
        return SimpleNamespace(**{
            name: torch.from_numpy(np.ascontiguousarray(value)) for name, value in zip(self.output_names, outputs, strict=True)
        })


def causal_decoder_step(model: Any, providers: list[str]) -> Any:
    """A :attr:`Runtime.decoder_step` straight on the session of optimum's causal-LM model.

    The cache is the list of present tensors the last step returned, fed back as the next
    step's past: nothing is kept in the runtime, so two loops may share one model. It skips
    optimum's ``forward`` (argument checks, past-tensor bookkeeping, output objects), a
    measurable part of a small int8 step (docs/backends.md, "Measurements behind the
    code"). CPU sessions only: on CUDA
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
