"""Plain greedy decoding as a short loop over the model's forward pass, with the KV cache.

Where :func:`greedy_applies` holds (greedy decoding of text prompts with a generation config
that asks for nothing more), this loop picks the same tokens as ``model.generate`` without
its per-step machinery, a measurable share of a small model's decode step (docs/families.md);
everything else goes through :func:`~.decode.generate`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .controls import generate_kwargs, stop_criteria
from .decode import decode_sequences
from .params import GenerationOutput, GenerationParams

if TYPE_CHECKING:
    from ..backends.base import Runtime

__all__ = ["greedy_applies", "greedy_ends", "greedy_generate", "greedy_seq2seq", "plain_greedy"]


def greedy_ends(params: GenerationParams, tokenizer: Any, config: Any, max_new_tokens: int) -> tuple[Any, Any, Any]:
    """What ends a greedy loop, as generate() would be given it.

    Returns:
        The end-of-sequence id(s), the pad id, and a stopping criterion for the stop strings
        called on the new tokens only (None without stop strings).
    """
    kwargs = generate_kwargs(params, tokenizer, config, max_new_tokens)
    stop = stop_criteria(tokenizer, params.stop, 0) if params.stop else None
    return kwargs["eos_token_id"], kwargs["pad_token_id"], stop


# Generation-config fields that add nothing to greedy decoding: special ids, bookkeeping, and
# the sampling warpers, which transformers applies only when sampling.
_GREEDY_NEUTRAL = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "max_length",
    "max_new_tokens", "use_cache", "transformers_version", "_from_model_config", "do_sample",
    "temperature", "top_p", "top_k", "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff",
})


def greedy_applies(model: Any, inputs: Mapping[str, Any], params: GenerationParams) -> bool:
    """Whether :func:`greedy_generate` picks exactly the tokens ``model.generate`` would.

    (or :func:`greedy_seq2seq`, for an encoder-decoder). That holds for greedy decoding (no
    sampling, no repetition penalty) of token ids and an attention mask alone (no images)
    when the model's generation config asks for nothing beyond greedy search: no beams, no
    forced or suppressed tokens, no minimum length. Anything else goes through ``generate``.
    """
    return set(inputs) == {"input_ids", "attention_mask"} and plain_greedy(model, params, neutral=_GREEDY_NEUTRAL)


def plain_greedy(model: Any, params: GenerationParams, *, neutral: frozenset[str]) -> bool:
    """Greedy decoding (no sampling, no repetition penalty) with a generation config that
    sets nothing outside ``neutral``: the part of the greedy-loop check every family shares."""
    if params.do_sample or params.repetition_penalty != 1.0:
        return False
    config = getattr(model, "generation_config", None)
    try:
        asked = set(config.to_diff_dict()) if config is not None else None
    except (AttributeError, TypeError, ValueError):
        asked = None
    return asked is not None and asked <= neutral


def greedy_generate(
    runtime: Runtime,
    inputs: dict[str, Any],
    params: GenerationParams,
    *,
    tokenizer: Any,
    config: Any,
    max_new_tokens: int,
) -> GenerationOutput:
    """Greedy decoding of a left-padded batch with the KV cache, one forward pass per token.

    Same arguments as :func:`generate` (the prompt is every leading position); only for
    the cases :func:`greedy_applies` accepts. Rows that reach end-of-sequence or a stop
    string are padded until every row has, as ``generate`` does. Where the runtime offers a
    :attr:`Runtime.decoder_step`, the steps go straight to it.
    """
    import torch

    started = time.perf_counter()
    eos, pad, stop = greedy_ends(params, tokenizer, config, max_new_tokens)
    model, decoder_step = runtime.model, runtime.decoder_step
    with torch.inference_mode():
        prepared = runtime.prepare(inputs)
        ids, mask = prepared["input_ids"], prepared["attention_mask"]
        # Left padding: positions count real tokens only, as generate() computes them.
        positions = mask.long().cumsum(-1) - 1
        positions.masked_fill_(mask == 0, 1)

        def step(step_ids: Any, past: Any) -> tuple[Any, Any]:
            nonlocal mask, positions
            if past is not None:
                mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
                positions = positions[:, -1:] + 1
            if decoder_step is not None:
                return decoder_step({"input_ids": step_ids, "attention_mask": mask, "position_ids": positions}, past)
            out = model(input_ids=step_ids, attention_mask=mask, position_ids=positions,
                        past_key_values=past, use_cache=True)
            return out.logits[:, -1, :], out.past_key_values

        sequences, ttft = _greedy_tokens(step, ids, eos=eos, pad=pad, max_new_tokens=max_new_tokens, stop=stop,
                                         started=started)
    return decode_sequences(sequences.cpu(), int(ids.shape[1]), tokenizer, params, eos, pad, ttft)


def greedy_seq2seq(
    runtime: Runtime,
    inputs: dict[str, Any],
    *,
    decoder_prompt: Sequence[int],
    eos: Any,
    pad: Any,
    max_new_tokens: int,
    processors: Sequence[Any] = (),
    stop: Any = None,
    started: float | None = None,
) -> tuple[Any, float]:
    """Greedy decoding for an encoder-decoder: the encoder once, then one decoder step per token.

    The caller vouches that ``generate`` would do no more than this: start every row from
    ``decoder_prompt``, apply ``processors`` (``processor(ids, scores)``, as transformers'
    logits processors) and take the most likely token, padding rows that reached
    end-of-sequence (or, with ``stop``, a stopping criterion called on the new tokens) until
    all have or ``max_new_tokens`` are generated. The runtime's model needs ``get_encoder()``
    and a forward pass taking ``encoder_outputs``, ``decoder_input_ids`` and
    ``past_key_values`` (transformers', optimum's ONNX Runtime and OpenVINO models all do);
    where the runtime offers a :attr:`Runtime.decoder_step`, the steps go straight to it.

    Returns:
        ``(sequences, time_to_first_token_s)``: the decoder prompt followed by the new tokens,
        one row per input, as ``generate`` returns them.
    """
    import torch

    started = time.perf_counter() if started is None else started
    model = runtime.model
    with torch.inference_mode():
        prepared = runtime.prepare(inputs)
        encoder = model.get_encoder()
        encoder_inputs = dict(prepared)
        if "attention_mask" not in encoder_inputs and "attention_mask" in _parameters(encoder.forward):
            encoder_inputs["attention_mask"] = None  # optimum's ONNX Runtime speech encoder requires the argument
        encoded = encoder(**encoder_inputs)
        mask = prepared.get("attention_mask")
        rows = int(next(iter(prepared.values())).shape[0])

        decoder_step = runtime.decoder_step
        fixed = {"encoder_hidden_states": encoded[0]}
        if mask is not None:
            fixed["encoder_attention_mask"] = mask

        def step(step_ids: Any, past: Any) -> tuple[Any, Any]:
            if decoder_step is not None:
                return decoder_step({**fixed, "input_ids": step_ids}, past)
            out = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=step_ids.to(encoded[0].device),
                        past_key_values=past, use_cache=True)
            # On the host in fp32, as generate() hands scores to its processors.
            return out.logits[:, -1, :].to(device="cpu", dtype=torch.float32, copy=True), out.past_key_values

        return _greedy_tokens(step, torch.tensor([list(decoder_prompt)] * rows, dtype=torch.long), eos=eos, pad=pad,
                              max_new_tokens=max_new_tokens, processors=processors, stop=stop, started=started)


def _greedy_tokens(
    step: Callable[[Any, Any], tuple[Any, Any]],
    prompt: Any,
    *,
    eos: Any,
    pad: Any,
    max_new_tokens: int,
    processors: Sequence[Any] = (),
    stop: Any = None,
    started: float,
) -> tuple[Any, float]:
    """The token loop both greedy decoders share.

    ``step(ids, past)`` runs the model on the ids not yet seen (the whole ``prompt`` first,
    with ``past`` None) and returns the last position's scores and the new cache. Rows that
    produce an end-of-sequence token, or that ``stop`` (a transformers stopping criterion,
    called on the new tokens) ends, get ``pad`` from then on; the loop ends when every row
    has ended or after ``max_new_tokens``.

    Returns:
        ``(prompt followed by the new tokens, seconds from started to the first token)``.
    """
    import torch

    eos_ids = torch.tensor([e for e in (eos if isinstance(eos, (list, tuple)) else [eos]) if e is not None],
                           dtype=prompt.dtype, device=prompt.device)
    unfinished = torch.ones(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    sequences, step_ids, past = prompt, prompt, None
    ttft: float | None = None
    for _ in range(max_new_tokens):
        scores, past = step(step_ids, past)
        for processor in processors:
            scores = processor(sequences, scores)
        tokens = _most_likely(scores).to(prompt.device)
        if ttft is None:
            ttft = time.perf_counter() - started
        if pad is not None:
            tokens = torch.where(unfinished, tokens, torch.full_like(tokens, pad))
        sequences = torch.cat([sequences, tokens[:, None]], dim=-1)
        unfinished &= ~torch.isin(tokens, eos_ids)
        if stop is not None:
            unfinished &= ~stop(sequences[:, prompt.shape[1]:], None).to(unfinished.device)
        if not bool(unfinished.any()):
            break
        step_ids = tokens[:, None]
    return sequences, ttft if ttft is not None else time.perf_counter() - started


def _most_likely(scores: Any) -> Any:
    """The index of each row's highest score, the first one on ties (as ``torch.argmax``).

    A float32 CPU tensor goes through numpy's argmax: over a 50,257-entry vocabulary it takes
    a few microseconds against torch's ~60 on one thread, about 1 % of a GPT-2 size int8
    step (docs/backends.md, "Measurements behind the code").
    """
    import torch

    if scores.device.type == "cpu" and scores.dtype == torch.float32 and not scores.requires_grad:
        return torch.from_numpy(scores.numpy().argmax(-1))
    return scores.argmax(-1)


def _parameters(function: Any) -> frozenset[str]:
    import inspect

    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()
