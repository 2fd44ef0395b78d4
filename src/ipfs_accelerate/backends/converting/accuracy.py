"""The int8 accuracy gate shared by the ONNX Runtime and OpenVINO backends.

Quantizing to int8 can quietly ruin a model (an activation outlier, a layer that does not
survive 8 bits), and a wrong answer served fast is worse than a right one served slowly.
So after an int8 export both backends run the family's example inputs through the int8 model
and through the fp32 export of the same model, and compare the outputs the family reads by
cosine similarity, one batch item at a time; the worst item decides. Below
:data:`INT8_MIN_COSINE` the int8 model is refused with :class:`BackendUnavailable`, which
lets the engine fall back to the next precision. OpenVINO's bf16 (weights converted to bf16
when the model compiles) is held to the same gate.

For generators the gate compares the first-step logits (the distribution of the first new
token): a small change there is what turns greedy decoding onto another path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from ..._exceptions import BackendUnavailable

__all__ = [
    "INT8_MIN_COSINE",
    "check_gate",
    "gate_outputs",
    "min_cosine",
    "run_gate",
]

INT8_MIN_COSINE = 0.99
"""The lowest per-item cosine similarity to fp32 that an int8 export may show."""

# Outputs compared when the spec names none, in order of preference.
_DEFAULT_OUTPUTS = ("logits", "last_hidden_state")


def gate_outputs(model: Any, inputs: Mapping[str, Any], *, output_names: tuple[str, ...], generates: bool) -> dict[str, Any]:
    """Run ``model`` once and return the output tensors the gate compares.

    Args:
        model: a runtime model (called like a transformers model).
        inputs: prepared model inputs.
        output_names: the outputs the family reads; for generators they are ignored.
        generates: compare first-step logits (the next-token distribution).

    Returns:
        Output name → tensor, with padded positions zeroed where a mask says so.
    """
    import torch

    mask = inputs.get("attention_mask")
    with torch.no_grad():
        if generates:
            return {"first_step_logits": _first_step_logits(model, inputs)}
        out = model(**inputs)
    names = [n for n in output_names if _get(out, n) is not None]
    if not names:
        names = [n for n in _DEFAULT_OUTPUTS if _get(out, n) is not None][:1]
    if not names:
        raise BackendUnavailable(
            f"the accuracy gate found none of the outputs {output_names or _DEFAULT_OUTPUTS} in the model's result"
        )
    result: dict[str, Any] = {}
    for name in names:
        value = torch.as_tensor(_get(out, name)).float()
        # Padded positions carry no meaning and may legitimately differ: compare real tokens only.
        if mask is not None and value.dim() >= 2 and tuple(value.shape[:2]) == tuple(mask.shape):
            value = value * mask.to(value.dtype).reshape(*mask.shape, *([1] * (value.dim() - 2)))
        result[name] = value
    return result


def min_cosine(reference: Mapping[str, Any], candidate: Mapping[str, Any]) -> float:
    """The lowest cosine similarity over outputs and batch items (each item flattened).

    Raises:
        BackendUnavailable: the two runs returned different outputs or shapes.
    """
    import torch

    worst = 1.0
    for name, ref in reference.items():
        cand = candidate.get(name)
        if cand is None or tuple(cand.shape) != tuple(ref.shape):
            got = None if cand is None else tuple(cand.shape)
            raise BackendUnavailable(
                f"int8 export failed the accuracy gate: output {name!r} has shape {got}, fp32 has {tuple(ref.shape)}"
            )
        a = ref.reshape(ref.shape[0], -1).double() if ref.dim() else ref.reshape(1, 1).double()
        b = cand.reshape(cand.shape[0], -1).double() if cand.dim() else cand.reshape(1, 1).double()
        if a.shape[1] == 0:
            continue
        both_zero = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
        cos = torch.nn.functional.cosine_similarity(a, b, dim=1, eps=1e-12)
        cos = torch.where(both_zero, torch.ones_like(cos), cos)
        worst = min(worst, float(cos.min()))
    return worst


def run_gate(
    reference_model: Any,
    candidate_model: Any,
    inputs: Mapping[str, Any],
    *,
    output_names: tuple[str, ...],
    generates: bool,
    prepare: Callable[[Mapping[str, Any]], Mapping[str, Any]] = dict,
) -> float:
    """Measure the lower-precision (int8, bf16) model against the fp32 model on the same inputs.

    Returns:
        The worst per-item cosine similarity of the compared outputs.
    """
    prepared = prepare(inputs)
    ref = gate_outputs(reference_model, prepared, output_names=output_names, generates=generates)
    cand = gate_outputs(candidate_model, prepared, output_names=output_names, generates=generates)
    return min_cosine(ref, cand)


def check_gate(cosine: float, *, what: str = "int8 export") -> None:
    """Refuse an int8 (or bf16) model whose measured cosine is below :data:`INT8_MIN_COSINE`.

    The threshold is read at call time, so a cached measurement is judged by the current
    threshold.

    Raises:
        BackendUnavailable: the cosine is below the threshold.
    """
    threshold = INT8_MIN_COSINE
    if cosine < threshold:
        # Rounded down, so that the message never shows a value at or above the threshold.
        shown = math.floor(cosine * 1e6) / 1e6
        raise BackendUnavailable(
            f"{what} failed the accuracy gate: cosine {shown:.6f} < {threshold} against fp32 on the "
            "example inputs (worst batch item); use fp32 or another backend"
        )


def _first_step_logits(model: Any, inputs: Mapping[str, Any]) -> Any:
    """The logits of the first generated token, one row per batch item."""
    import torch

    config = getattr(model, "config", None)
    kwargs = dict(inputs)
    if getattr(config, "is_encoder_decoder", False):
        start = _decoder_start(model)
        batch = _batch_size(inputs)
        kwargs["decoder_input_ids"] = torch.full((batch, 1), start, dtype=torch.long)
        return torch.as_tensor(model(**kwargs).logits)[:, -1, :].float()
    logits = torch.as_tensor(model(**kwargs).logits).float()
    mask = inputs.get("attention_mask")
    if mask is None or mask.shape[1] != logits.shape[1]:
        return logits[:, -1, :]
    # The next token follows the last real position, whichever side the padding is on.
    flipped_first_one = torch.argmax(mask.flip(1).to(torch.int64), dim=1)
    last = mask.shape[1] - 1 - flipped_first_one
    return logits[torch.arange(logits.shape[0]), last, :]


def _decoder_start(model: Any) -> int:
    for source in (getattr(model, "generation_config", None), getattr(model, "config", None)):
        start = getattr(source, "decoder_start_token_id", None)
        if isinstance(start, int):
            return start
    raise BackendUnavailable("the accuracy gate needs decoder_start_token_id in the model's config")


def _batch_size(inputs: Mapping[str, Any]) -> int:
    for value in inputs.values():
        if hasattr(value, "shape") and len(value.shape):
            return int(value.shape[0])
    raise BackendUnavailable("the accuracy gate found no batched tensor in the example inputs")


def _get(out: Any, name: str) -> Any:
    if isinstance(out, Mapping):
        return out.get(name)
    return getattr(out, name, None)
