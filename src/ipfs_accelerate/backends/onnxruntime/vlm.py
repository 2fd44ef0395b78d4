"""ONNX Runtime for image-text generators, which optimum-onnx cannot export.

optimum-onnx 0.1.0 has no ONNX export for vision-language generators (its TasksManager
lists only the OpenVINO exporter for them). They are converted directly, in two graphs
that hold all the heavy compute:

* ``vision_model.onnx``: the vision tower, ``pixel_values`` → the hidden states of the
  layers the projector reads (``config.vision_feature_layer``, one or several);
* ``language_model.onnx``: one decoding step of the language model with its KV cache,
  ``inputs_embeds``, ``attention_mask``, ``position_ids`` and ``past_key_values.N.key/value``
  → the next-token ``logits`` (last position only: a prompt's other positions are never
  read, and the vocabulary projection of a long prompt would cost more than the model)
  and ``present.N.key/value``.

Everything else is small and stays in PyTorch, in transformers' own class for the model
(``spec.torch_class``): the token embedding, the projector, the merging of image features
into the prompt (with LLaVA-Next's tiling and newline tokens) and ``generate``, whose KV
cache carries the graph's presents from step to step. The replaced parts follow
transformers' convention for vision-language models (``model.model.vision_tower``,
``model.model.language_model``, ``model.lm_head``), so no architecture is named here.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from ..._exceptions import BackendUnavailable
from ..converting import direct

if TYPE_CHECKING:
    from ..base import ModelSpec

__all__ = ["GLUE_FILE", "LANGUAGE_FILE", "VISION_FILE", "export", "open_model"]

VISION_FILE = "vision_model.onnx"
LANGUAGE_FILE = "language_model.onnx"
GLUE_FILE = "glue.safetensors"
# Parts of the transformers model that the graphs replace (their weights are not kept).
_REPLACED = ("model.vision_tower.", "model.language_model.", "lm_head.")
_EMBEDDING = "model.language_model.embed_tokens.weight"


def _feature_layers(config: Any) -> list[int]:
    layers = config.vision_feature_layer
    return [int(layers)] if isinstance(layers, int) else [int(x) for x in layers]


def _parts(model: Any) -> tuple[Any, Any, Any]:
    inner = getattr(model, "model", None)
    tower = getattr(inner, "vision_tower", None)
    language = getattr(inner, "language_model", None)
    head = getattr(model, "lm_head", None)
    if tower is None or language is None or head is None:
        raise BackendUnavailable(
            f"{type(model).__name__} does not follow transformers' vision-language layout "
            "(model.vision_tower, model.language_model, lm_head); it cannot be split for ONNX Runtime"
        )
    return tower, language, head


@contextlib.contextmanager
def _traceable() -> Iterator[None]:
    """transformers' mask and cache code made traceable, as optimum-onnx does for its exports.

    transformers ≥ 4.53 builds attention masks with ``torch.vmap`` and finds packed
    sequences with ``torch.diff``, and its DynamicLayer concatenates onto an empty tensor:
    none of it traces. optimum-onnx's exporter swaps in traceable versions for the
    duration of an export; the same functions are used here.
    """
    import transformers.masking_utils as masking
    from optimum.exporters.onnx import model_patcher as patches
    from transformers.cache_utils import DynamicLayer

    # The mask registry's class-wide mapping is swapped whole (``registry[key] = f`` would
    # leave an instance override behind that shadows later registrations, e.g. by
    # optimum-intel's own exporter).
    registry = type(masking.ALL_MASK_ATTENTION_FUNCTIONS)
    traceable = {**registry._global_mapping, "sdpa": patches.sdpa_mask_without_vmap,
                 "eager": patches.eager_mask_without_vmap}
    with direct.patched(
        (registry, "_global_mapping", traceable),
        (masking, "find_packed_sequence_indices", patches.find_packed_sequence_indices_patched),
        (DynamicLayer, "update", patches.patched_dynamic_layer_update),
    ):
        yield


def _modules() -> tuple[type, type]:
    import torch

    class VisionStates(torch.nn.Module):
        """pixel_values → the hidden states of the listed layers."""

        def __init__(self, tower: torch.nn.Module, layers: Sequence[int]) -> None:
            super().__init__()
            self.tower = tower
            self.layers = list(layers)

        def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
            states = self.tower(pixel_values, output_hidden_states=True).hidden_states
            return tuple(states[i] for i in self.layers)

    class LanguageStep(torch.nn.Module):
        """One decoding step: embeddings + mask + positions + past → last logits + presents."""

        def __init__(self, language: torch.nn.Module, head: torch.nn.Module, n_layers: int) -> None:
            super().__init__()
            self.language = language
            self.head = head
            self.n_layers = n_layers

        def forward(self, inputs_embeds: torch.Tensor, attention_mask: torch.Tensor, position_ids: torch.Tensor,
                    *past: torch.Tensor) -> tuple[torch.Tensor, ...]:
            from transformers.cache_utils import DynamicCache

            cache = DynamicCache()
            for i in range(self.n_layers):
                cache.update(past[2 * i], past[2 * i + 1], i)
            out = self.language(inputs_embeds=inputs_embeds, attention_mask=attention_mask,
                                position_ids=position_ids, past_key_values=cache, use_cache=True)
            logits = self.head(out.last_hidden_state[:, -1:, :])
            presents = [t for layer in out.past_key_values.layers for t in (layer.keys, layer.values)]
            return (logits, *presents)

    return VisionStates, LanguageStep


def export(spec: ModelSpec, target: Path) -> dict[str, Any]:
    """Write the two graphs and the PyTorch glue of ``spec`` into ``target``."""
    import torch
    from safetensors.torch import save_file

    model: Any = direct.load_torch_model(spec)
    tower, language, head = _parts(model)
    vision_states, language_step = _modules()
    layers = _feature_layers(model.config)
    n_states = model.config.vision_config.num_hidden_layers + 1
    positive = [i % n_states for i in layers]

    example = direct.example_inputs(spec)
    pixels = example.get("pixel_values")
    if not isinstance(pixels, torch.Tensor):
        raise BackendUnavailable("this export needs pixel_values in the spec's example inputs")
    pixels = pixels.reshape(-1, *pixels.shape[-3:])[:2]  # tiled inputs: every tile is one image
    with torch.no_grad(), warnings.catch_warnings(), direct.frozen_gc():
        warnings.simplefilter("ignore")  # tracer warnings about data-dependent branches
        torch.onnx.export(
            vision_states(tower, layers).eval(), (pixels,), str(target / VISION_FILE),
            input_names=["pixel_values"], output_names=[f"hidden_state.{i}" for i in positive],
            dynamic_axes={"pixel_values": {0: "images"}} | {f"hidden_state.{i}": {0: "images"} for i in positive},
            opset_version=17, do_constant_folding=True, dynamo=False,
        )
        # Example step: a batch of 2, 3 new positions after 4 cached ones (both axes dynamic).
        embeds = torch.randn(2, 3, model.config.text_config.hidden_size)
        mask = torch.ones(2, 7, dtype=torch.long)
        positions = torch.arange(4, 7).expand(2, -1)
        with _traceable():
            first = language(inputs_embeds=torch.randn(2, 4, embeds.shape[-1]), use_cache=True).past_key_values
            past = [t for layer in first.layers for t in (layer.keys, layer.values)]
            n_layers = len(first.layers)
            names = [f"past_key_values.{i}.{kv}" for i in range(n_layers) for kv in ("key", "value")]
            presents = [n.replace("past_key_values", "present") for n in names]
            axes: dict[str, dict[int, str]] = {
                "inputs_embeds": {0: "batch", 1: "new"}, "attention_mask": {0: "batch", 1: "total"},
                "position_ids": {0: "batch", 1: "new"}, "logits": {0: "batch"},
            }
            axes |= {n: {0: "batch", 2: "past"} for n in names} | {n: {0: "batch", 2: "total"} for n in presents}
            torch.onnx.export(
                language_step(language, head, n_layers).eval(), (embeds, mask, positions, *past),
                str(target / LANGUAGE_FILE),
                input_names=["inputs_embeds", "attention_mask", "position_ids", *names],
                output_names=["logits", *presents], dynamic_axes=axes,
                opset_version=17, do_constant_folding=True, dynamo=False,
            )
    glue = {k: v.contiguous().clone() for k, v in model.state_dict().items() if not k.startswith(_REPLACED)}
    glue[_EMBEDDING] = language.get_input_embeddings().weight.detach().clone()
    save_file(glue, str(target / GLUE_FILE))
    direct.copy_model_metadata(spec.model_dir, target)
    return {
        "conversion": "torch.onnx.export(dynamo=False): vision tower + language model step with KV cache; "
                      "embedding, projector and generate() in transformers",
        "vision_feature_layers": positive,
    }


def open_model(path: Path, torch_class: str, make_session: Any) -> Any:
    """Build transformers' model class around the two ONNX Runtime sessions.

    Args:
        path: the export directory.
        torch_class: the transformers class of the model (``spec.torch_class``).
        make_session: ``make_session(file)`` → an ``onnxruntime.InferenceSession``.
    """
    import torch
    import transformers
    from safetensors.torch import load_file

    config = transformers.AutoConfig.from_pretrained(path, local_files_only=True)
    with torch.device("meta"):
        model = getattr(transformers, torch_class)(config)
    _, language, _ = _parts(model)
    glue = load_file(str(path / GLUE_FILE))
    embedding = torch.nn.Embedding.from_pretrained(glue.pop(_EMBEDDING), freeze=True)
    vision = make_session(VISION_FILE)
    step = make_session(LANGUAGE_FILE)
    n_states = config.vision_config.num_hidden_layers + 1
    model.model.vision_tower = _vision_tower_class()(vision, n_states)
    model.model.language_model = _language_model_class()(step, embedding, language.config)
    model.lm_head = torch.nn.Identity()  # the language graph already returns logits
    _, unexpected = model.load_state_dict(glue, strict=False, assign=True)
    leftover = [n for n, p in model.named_parameters() if p.is_meta]
    if leftover or unexpected:
        raise BackendUnavailable(
            f"the ONNX Runtime export in {path} does not match {torch_class}: "
            f"weights missing for {leftover[:3]}, unexpected {list(unexpected)[:3]}"
        )
    model.eval()
    model.providers = list(step.get_providers())
    model.sessions = (vision, step)
    return model


def _vision_tower_class() -> type:
    import torch

    class OrtVisionTower(torch.nn.Module):
        """Stands in for the vision tower: returns the exported layers' hidden states."""

        def __init__(self, session: Any, n_states: int) -> None:
            super().__init__()
            self.session = session
            self.n_states = n_states
            self.output_names = [o.name for o in session.get_outputs()]

        def forward(self, pixel_values: torch.Tensor, output_hidden_states: bool = True, **_: Any) -> SimpleNamespace:
            import numpy as np

            outputs = self.session.run(self.output_names, {"pixel_values": pixel_values.detach().float().cpu().numpy()})
            by_layer = {int(n.rsplit(".", 1)[1]): torch.from_numpy(np.ascontiguousarray(v))
                        for n, v in zip(self.output_names, outputs, strict=True)}
            return SimpleNamespace(hidden_states=_LayerStates(by_layer, self.n_states))

    return OrtVisionTower


class _LayerStates:
    """The hidden states a vision tower would return, holding only the exported layers."""

    def __init__(self, by_layer: dict[int, Any], n_states: int) -> None:
        self.by_layer = by_layer
        self.n_states = n_states

    def __len__(self) -> int:
        return self.n_states

    def __getitem__(self, index: int) -> Any:
        layer = index % self.n_states
        if layer not in self.by_layer:
            raise BackendUnavailable(f"vision layer {index} was not exported (exported: {sorted(self.by_layer)})")
        return self.by_layer[layer]


def _language_model_class() -> type:
    import torch

    class OrtLanguageModel(torch.nn.Module):
        """Stands in for the language model: one ONNX Runtime step per call, KV cache kept in
        the caller's transformers cache. Its ``last_hidden_state`` holds the logits of the
        last position (the model's ``lm_head`` is replaced by an identity)."""

        def __init__(self, session: Any, embedding: torch.nn.Module, config: Any) -> None:
            super().__init__()
            self.session = session
            self.embed_tokens = embedding
            self.config = config
            self.input_names = [i.name for i in session.get_inputs()]
            self.output_names = [o.name for o in session.get_outputs()]
            self.n_layers = sum(1 for n in self.input_names if n.endswith(".key"))

        def get_input_embeddings(self) -> torch.nn.Module:
            return self.embed_tokens

        def forward(self, inputs_embeds: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                    position_ids: torch.Tensor | None = None, past_key_values: Any = None,
                    cache_position: torch.Tensor | None = None, input_ids: torch.Tensor | None = None,
                    **_: Any) -> SimpleNamespace:
            import numpy as np
            from transformers.cache_utils import DynamicCache

            if inputs_embeds is None:
                inputs_embeds = self.embed_tokens(input_ids)
            batch, new = inputs_embeds.shape[:2]
            if past_key_values is None:
                past_key_values = DynamicCache()
            past = past_key_values.get_seq_length()
            if attention_mask is None:
                attention_mask = torch.ones(batch, past + new, dtype=torch.long)
            if position_ids is None:
                start = past if cache_position is None else int(cache_position[0])
                position_ids = torch.arange(start, start + new).expand(batch, -1)
            feed: dict[str, Any] = {
                "inputs_embeds": inputs_embeds.detach().float().cpu().numpy(),
                "attention_mask": attention_mask.detach().cpu().numpy().astype(np.int64),
                "position_ids": position_ids.detach().cpu().numpy().astype(np.int64),
            }
            empty = None
            for i in range(self.n_layers):
                if past:
                    layer = past_key_values.layers[i]
                    key, value = layer.keys.numpy(), layer.values.numpy()
                else:
                    if empty is None:
                        shape = self.session.get_inputs()[3].shape
                        empty = np.zeros((batch, int(shape[1]), 0, int(shape[3])), dtype=np.float32)
                    key = value = empty
                feed[f"past_key_values.{i}.key"], feed[f"past_key_values.{i}.value"] = key, value
            outputs = self.session.run(self.output_names, feed)
            logits = torch.from_numpy(outputs[0])
            for i in range(self.n_layers):
                # The graph returns past + new; the cache appends the new part.
                key, value = outputs[1 + 2 * i], outputs[2 + 2 * i]
                past_key_values.update(torch.from_numpy(np.ascontiguousarray(key[:, :, past:])),
                                       torch.from_numpy(np.ascontiguousarray(value[:, :, past:])), i)
            return SimpleNamespace(last_hidden_state=logits, past_key_values=past_key_values,
                                   hidden_states=None, attentions=None)

    return OrtLanguageModel
