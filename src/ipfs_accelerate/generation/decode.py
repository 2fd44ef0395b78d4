"""One ``model.generate`` call with the shared controls, and decoding its new tokens into text.

The loop is the runtime's ``model.generate`` (transformers' GenerationMixin, which optimum's
ONNX Runtime and OpenVINO models share), so the KV cache is used on every backend.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .controls import cut_at_stop, first_token_clock, generate_kwargs, stop_criteria
from .params import GenerationOutput, GenerationParams

if TYPE_CHECKING:
    from ..backends.base import Runtime

__all__ = ["decode_sequences", "generate", "split_generated"]


def generate(
    runtime: Runtime,
    inputs: dict[str, Any],
    params: GenerationParams,
    *,
    tokenizer: Any,
    config: Any,
    max_new_tokens: int,
    prompt_len: int,
    extra: dict[str, Any] | None = None,
) -> GenerationOutput:
    """Run ``runtime.model.generate`` with the shared controls and decode the new tokens.

    Args:
        runtime: the loaded model.
        inputs: model inputs (CPU tensors; moved by ``runtime.prepare``).
        params: the validated controls.
        tokenizer: decodes tokens and gives eos/pad ids.
        config: the model config (fallback for special ids).
        max_new_tokens: the already-capped number of new tokens.
        prompt_len: how many leading positions of each returned sequence are the prompt
            (the padded prompt length for decoder-only models, 0 for encoder-decoders).
        extra: further keyword arguments for ``generate`` (task, language …).
    """
    import torch
    from transformers import LogitsProcessorList, StoppingCriteriaList

    started = time.perf_counter()
    box: dict[str, float] = {}
    kwargs = generate_kwargs(params, tokenizer, config, max_new_tokens)
    kwargs["logits_processor"] = LogitsProcessorList([first_token_clock(started, box)])
    if params.stop:
        kwargs["stopping_criteria"] = StoppingCriteriaList([stop_criteria(tokenizer, params.stop, prompt_len)])
    kwargs.update(extra or {})
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        if params.seed is not None:
            torch.manual_seed(params.seed)
        sequences = runtime.model.generate(**runtime.prepare(inputs), **kwargs)
    if not isinstance(sequences, torch.Tensor):
        sequences = sequences.sequences
    return decode_sequences(sequences.cpu(), prompt_len, tokenizer, params, kwargs["eos_token_id"], kwargs["pad_token_id"],
                   box.get("ttft", time.perf_counter() - started))


def split_generated(row: Sequence[int], *, eos: Any, pad: Any) -> tuple[list[int], int]:
    """The new tokens of one generated row up to its end-of-sequence, and how many were generated.

    The end-of-sequence token counts as generated but is not kept; without one, trailing
    pads are batch padding, not generated tokens.
    """
    eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos]) - {None}
    kept: list[int] = []
    for tok in row:
        if tok in eos_ids:
            return kept, len(kept) + 1
        kept.append(tok)
    while kept and pad is not None and kept[-1] == pad and pad not in eos_ids:
        kept.pop()
    return kept, len(kept)


def decode_sequences(
    sequences: Any, prompt_len: int, tokenizer: Any, params: GenerationParams,
    eos: Any, pad: Any, ttft: float,
) -> GenerationOutput:
    """Decode each row's tokens after ``prompt_len`` into text, cut at the stop strings, and count them."""
    texts, ids, count = [], [], 0
    for row in sequences[:, prompt_len:].tolist():
        kept, generated = split_generated(row, eos=eos, pad=pad)
        count += generated
        text, _ = cut_at_stop(tokenizer.decode(kept, skip_special_tokens=True), params.stop)
        texts.append(text)
        ids.append(kept)
    return GenerationOutput(texts=texts, token_ids=ids, new_tokens=count, time_to_first_token_s=ttft)
