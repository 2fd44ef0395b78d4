"""What the ONNX Runtime and OpenVINO backends share: choosing an export route, and the
direct conversion of models that optimum cannot export.

optimum exports standard (architecture, task) pairs with KV caches and generation wired
up; it is always preferred. It has no export for a model method other than ``forward``
(``get_text_features`` …) and none at all for some architectures, so those are converted
directly: a small :class:`EntryModule` calls the method and returns the tensors the family
reads, in the order of ``spec.output_names``, and the backend converts that module with
its own converter (``torch.onnx.export`` / ``openvino.convert_model``). A direct conversion
has no KV cache, so a generator is never converted directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import shutil
import struct
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..._exceptions import BackendUnavailable
from ...store.disk import memory_shortfall
from ...store.weights import parameter_counts

if TYPE_CHECKING:
    import torch

    from ..base import ModelSpec

__all__ = [
    "HOST_THREADS",
    "EntryModule",
    "Plan",
    "conversion_meta",
    "conversion_module",
    "copy_model_metadata",
    "example_inputs",
    "fp32_weight_bytes",
    "frozen_gc",
    "graph_feed",
    "load_torch_model",
    "model_type",
    "optimum_supports",
    "output_names",
    "patched",
    "pick_outputs",
    "plan_export",
    "require_export_memory",
    "saved_config",
]

# Files of a model directory that the exported copy keeps, so that optimum's loaders and
# the direct runners find the config (and generation defaults) next to the graphs.
_METADATA_FILES = ("config.json", "generation_config.json", "preprocessor_config.json")

# torch's threads while an exported graph runs: its thread pool does the arithmetic, and
# torch only the host-side glue (see Runtime.host_threads).
HOST_THREADS = 1


@dataclasses.dataclass(frozen=True)
class Plan:
    """How a backend exports one spec.

    Attributes:
        route: ``"optimum"`` (an optimum exporter and model class) or ``"direct"``.
        model_class: the optimum class name (``"ORTModelForCausalLM"`` …); empty for direct.
        task: the optimum export task (``"text-generation-with-past"`` …); empty for direct.
        why: for a direct conversion, why optimum is not used.
    """

    route: str
    model_class: str = ""
    task: str = ""
    why: str = ""


def model_type(spec: ModelSpec) -> str:
    """The ``model_type`` in the spec's config.json (``""`` when absent)."""
    try:
        return str(json.loads((spec.model_dir / "config.json").read_text()).get("model_type", ""))
    except (OSError, ValueError) as exc:
        raise BackendUnavailable(f"cannot read {spec.model_dir / 'config.json'}: {exc}") from exc


def optimum_supports(model_type_: str, task: str, exporter: str) -> bool:
    """Whether optimum's exporter ``exporter`` (``"onnx"``/``"openvino"``) knows this pair."""
    import importlib

    from optimum.exporters.tasks import TasksManager

    # The exporter packages (optimum-onnx, optimum-intel) register their architectures with
    # TasksManager when their model_configs module is imported (lazily, on first export).
    importlib.import_module(f"optimum.exporters.{exporter}.model_configs")
    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(
            model_type_, exporter=exporter, library_name="transformers"
        )
    except (KeyError, ValueError):
        return False
    return task in tasks


def plan_export(
    spec: ModelSpec, *, kinds: Mapping[str, tuple[str, str]], exporter: str, backend: str,
    missing: Mapping[str, str] | None = None,
) -> Plan:
    """Choose optimum or a direct conversion for ``spec``.

    Args:
        spec: what to load.
        kinds: model kind → (optimum class name, optimum export task) for this backend.
        exporter: optimum's exporter name, to ask which architectures it supports.
        backend: the backend's name, for messages.
        missing: model kind → why optimum offers this backend nothing for it (for messages).

    Raises:
        BackendUnavailable: the spec needs generation and optimum cannot export it (a
            direct conversion has no KV cache and no ``generate``).
    """
    kind = spec.kind
    if kind in ("automatic-speech-recognition", "ctc") and "CTC" in spec.torch_class:
        kind = "ctc"  # a CTC head is a plain forward, whatever task name the family uses
    if spec.forward_rewrite:
        why = f"the family converts its own forward ({spec.forward_rewrite.name}) in place of transformers'"
    elif spec.entry:
        # optimum's classes return a task's standard outputs from forward(); a named method
        # (or forward() with outputs the family names itself) needs its own graph outputs.
        why = f"optimum has no export for {spec.entry}() returning {', '.join(output_names(spec))}"
    elif kind not in kinds:
        why = (missing or {}).get(kind) or f"no optimum {backend} model class is mapped to the kind {spec.kind!r}"
    else:
        cls_name, task = kinds[kind]
        mtype = model_type(spec)
        if optimum_supports(mtype, task, exporter):
            return Plan("optimum", cls_name, task)
        why = f"optimum's {exporter} exporter does not support the architecture {mtype!r} for {task!r}"
    if spec.generates:
        raise BackendUnavailable(
            f"{backend} cannot run this {spec.kind} model: {why}, and a direct conversion has no KV cache "
            "for generate()"
        )
    return Plan("direct", why=why)


def output_names(spec: ModelSpec) -> tuple[str, ...]:
    """The outputs a direct conversion returns: the spec's, or the kind's usual one."""
    if spec.output_names:
        return tuple(spec.output_names)
    return ("last_hidden_state",) if spec.kind == "feature-extraction" else ("logits",)


def example_inputs(spec: ModelSpec) -> dict[str, Any]:
    """The spec's example inputs as CPU tensors (needed to trace and to gate).

    Raises:
        BackendUnavailable: the spec gives no example inputs.
    """
    import torch

    if spec.example_inputs is None:
        raise BackendUnavailable("this export needs example inputs (spec.example_inputs) and the spec has none")
    inputs = {k: v for k, v in dict(spec.example_inputs()).items() if v is not None}
    return {k: (v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}


def load_torch_model(spec: ModelSpec) -> torch.nn.Module:
    """Load the spec's transformers class in fp32, in eval mode, from local files only."""
    import torch
    import transformers

    try:
        model_cls = getattr(transformers, spec.torch_class)
    except AttributeError as exc:
        raise BackendUnavailable(f"transformers has no class {spec.torch_class!r}") from exc
    try:
        model = model_cls.from_pretrained(
            spec.model_dir, torch_dtype=torch.float32, use_safetensors=True, local_files_only=True,
        )
    except OSError as exc:
        raise BackendUnavailable(f"cannot load {spec.model_dir} for conversion: {exc}") from exc
    return model.eval()


def _entry_module_class() -> type:
    import torch

    class EntryModule(torch.nn.Module):
        """Calls one method of a model with positional tensors and returns named outputs.

        Positional arguments (in the order of ``input_names``) keep the traced graph's
        inputs in a known order for both converters.
        """

        def __init__(
            self, model: torch.nn.Module, entry: str, input_names: list[str], names: tuple[str, ...],
            constants: Mapping[str, Any],
        ) -> None:
            super().__init__()
            self.model = model
            self.entry = entry
            self.input_names = list(input_names)
            self.names = names
            self.constants = dict(constants)

        def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
            kwargs = dict(zip(self.input_names, args, strict=True)) | self.constants
            out = getattr(self.model, self.entry)(**kwargs)
            return pick_outputs(out, self.names, self.entry)

    return EntryModule


def EntryModule(
    model: Any, entry: str | None, input_names: list[str], names: tuple[str, ...],
    constants: Mapping[str, Any] | None = None,
) -> Any:
    """Build the wrapper module (a function so that torch is imported only when needed).

    Args:
        model: the transformers model.
        entry: the method to call (``None`` → ``forward``).
        input_names: the method's tensor arguments, in the order the module takes them.
        names: the outputs to return, in order.
        constants: non-tensor keyword arguments fixed at conversion time.
    """
    return _entry_module_class()(model, entry or "forward", input_names, names, constants or {}).eval()


def conversion_module(spec: ModelSpec) -> tuple[Any, list[str], tuple[Any, ...], tuple[str, ...]]:
    """What a direct conversion traces: the module, its input names, example arguments and outputs.

    The module wraps the spec's forward rewrite when it has one, else the transformers
    model's ``spec.entry`` (or ``forward``); its positional inputs are the example inputs'
    tensors, in their order, and the example's non-tensor values are fixed as constants.

    Raises:
        BackendUnavailable: the model cannot be loaded, or the spec gives no example inputs.
    """
    import torch

    model = load_torch_model(spec)
    if spec.forward_rewrite is not None:
        model = spec.forward_rewrite.build(model)
    inputs = example_inputs(spec)
    input_names = [k for k, v in inputs.items() if isinstance(v, torch.Tensor)]
    constants = {k: v for k, v in inputs.items() if not isinstance(v, torch.Tensor)}
    names = output_names(spec)
    module = EntryModule(model, spec.entry, input_names, names, constants)
    return module, input_names, tuple(inputs[n] for n in input_names), names


def conversion_meta(spec: ModelSpec, how: str) -> dict[str, Any]:
    """The facts a direct conversion records in its export's metadata."""
    meta: dict[str, Any] = {"conversion": how, "entry": spec.entry or "forward", "outputs": list(output_names(spec))}
    if spec.forward_rewrite is not None:
        meta["forward_rewrite"] = spec.forward_rewrite.name
    return meta


def pick_outputs(out: Any, names: tuple[str, ...], entry: str) -> tuple[Any, ...]:
    """The tensors named ``names`` from a method's result, in that order."""
    if hasattr(out, "shape"):
        return (out,)
    picked = []
    for name in names:
        value = out.get(name) if isinstance(out, Mapping) else getattr(out, name, None)
        if value is None and len(names) == 1 and getattr(out, "pooler_output", None) is not None:
            value = out.pooler_output  # transformers ≥ 4.57 may wrap a feature method's result
        if value is None:
            raise BackendUnavailable(f"the model's {entry}() returns no output named {name!r}")
        picked.append(value)
    return tuple(picked)


def copy_model_metadata(model_dir: Path, target: Path) -> None:
    """Copy config.json and friends next to an export (loaders read them from there)."""
    for name in _METADATA_FILES:
        src = model_dir / name
        if src.is_file():
            shutil.copy2(src, target / name)


def saved_config(export_dir: Path) -> Any:
    """The transformers config copied next to a direct export (:func:`copy_model_metadata`),
    or None where there is none to read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(export_dir, local_files_only=True)
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def frozen_gc() -> Iterator[None]:
    """Exclude the objects that already exist from garbage collection during an export.

    optimum's exporters call ``gc.collect()`` after every submodel; each call walks the
    whole heap of torch and transformers objects, seconds per call on a large model. The
    objects alive before the export are long-lived anyway; they go back to normal
    collection afterwards.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


@contextlib.contextmanager
def patched(*attributes: tuple[Any, str, Any]) -> Iterator[None]:
    """Swap library attributes (``(owner, name, value)``) for the block; the old values are
    put back however it ends.

    For the exporters' functions that one export needs replaced (a fix not yet released, a
    traceable variant): the replacement never outlives the export.

    Raises:
        AttributeError: an owner lacks the attribute (checked before anything changes).
    """
    saved = [(owner, name, getattr(owner, name)) for owner, name, _ in attributes]
    try:
        for owner, name, value in attributes:
            setattr(owner, name, value)
        yield
    finally:
        for owner, name, value in saved:
            setattr(owner, name, value)


def fp32_weight_bytes(model_dir: Path) -> int:
    """The bytes of the model's weights once loaded in fp32 (the precision exports start from).

    Counted from the safetensors headers; for pickled weights, from the file sizes and the
    config's dtype.
    """
    try:
        parameters, _ = parameter_counts(model_dir)
    except (OSError, ValueError, struct.error):
        parameters = 0
    if parameters:
        return 4 * parameters
    files = list(model_dir.glob("*.bin"))
    stored = sum(f.stat().st_size for f in files)
    try:
        dtype = str(json.loads((model_dir / "config.json").read_text()).get("torch_dtype") or "float32")
    except (OSError, ValueError):
        dtype = "float32"
    return stored * 2 if dtype in ("float16", "bfloat16") else stored


def require_export_memory(spec: ModelSpec, *, factor: float, what: str) -> None:
    """Refuse an export that would not fit in the memory available now.

    An export holds the fp32 model, the traced graph and the serialized copy of the weights
    at once; a process that runs out of memory is killed without a word (and a benchmark
    with it), so a clear refusal before starting is worth the estimate's roughness.

    Args:
        spec: what would be exported.
        factor: peak memory ÷ fp32 weight bytes, measured for this kind of export.
        what: the export in words, for the message.

    Raises:
        BackendUnavailable: the estimate exceeds the memory available.
    """
    weights = fp32_weight_bytes(spec.model_dir)
    shortfall = memory_shortfall(factor * weights, what=what,
                                 breakdown=f"{factor:g}× the {weights / 1e9:.1f} GB of fp32 weights",
                                 advice="run it with the torch backend or on a machine with more memory")
    if shortfall:
        raise BackendUnavailable(shortfall)


def graph_feed(inputs: dict[str, Any], input_names: Sequence[str], *, what: str) -> dict[str, Any]:
    """The numpy arrays a converted graph takes, by input name, from a forward's keyword arguments.

    Non-tensor arguments (flags) were fixed when the graph was made and are dropped.

    Raises:
        TypeError: an input the graph does not take, or one it needs is missing (``what``
            names the graph in the message, e.g. "the exported graph").
    """
    import numpy as np
    import torch

    tensors = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor | np.ndarray)}
    unknown = sorted(set(tensors) - set(input_names))
    missing = sorted(set(input_names) - set(tensors))
    if unknown or missing:
        raise TypeError(
            f"{what} takes {', '.join(input_names)}; "
            f"unknown: {', '.join(unknown) or 'none'}; missing: {', '.join(missing) or 'none'}"
        )
    feed: dict[str, Any] = {}
    for name in input_names:
        value = tensors[name]
        feed[name] = value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else value
    return feed
