"""Generation controls, implemented once and shared by every generating family.

The loop is the runtime's ``model.generate`` (transformers' GenerationMixin, which
optimum's ONNX Runtime and OpenVINO models share), so the KV cache is used on every
backend. The exception is plain greedy decoding of text prompts (see :func:`greedy_applies`):
there a short loop over the model's forward pass picks the same tokens without
``generate()``'s per-step machinery, which cost 1.5 ms of each 16 ms int8 GPT-2 step on a
2-core CPU. This module adds what callers need around either loop: validated parameters,
seeded sampling that leaves the global RNG alone, stop strings, a time-to-first-token
clock, honest counting of new tokens, and streaming.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, ClassVar

from .._exceptions import InvalidInput
from ..backends.base import Runtime
from ._text import check_texts, tokenize
from .base import Prepared, TaskHandler

__all__ = [
    "CausalLMGenerate",
    "GenerationOutput",
    "GenerationParams",
    "Seq2SeqGenerate",
    "generate",
    "greedy_applies",
    "greedy_ends",
    "greedy_generate",
    "greedy_seq2seq",
    "masked_suppression",
    "plain_greedy",
    "split_generated",
    "stream_generate",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationParams:
    """The shared generation controls.

    Attributes:
        max_new_tokens: at most this many new tokens (capped to what the context window
            leaves after the prompt; the cap is reported).
        temperature: 0 for greedy decoding, > 0 to sample.
        top_p: nucleus sampling mass in (0, 1].
        top_k: sample among the k most likely tokens; 0 turns it off.
        repetition_penalty: > 0; 1.0 turns it off.
        stop: strings that end the generation; the output ends before the first one.
        seed: makes sampling reproducible without touching the global RNG.
        truncate: cut prompts longer than the window (reported); False raises.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        _int("max_new_tokens", self.max_new_tokens, low=1)
        _int("top_k", self.top_k, low=0)
        _number("temperature", self.temperature, low=0.0)
        _number("top_p", self.top_p, low=0.0, high=1.0, open_low=True)
        _number("repetition_penalty", self.repetition_penalty, low=0.0, open_low=True)
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise InvalidInput("stop must be a non-empty string or a list of non-empty strings")
        object.__setattr__(self, "stop", tuple(stop))
        if self.seed is not None:
            _int("seed", self.seed, low=0)
        if not isinstance(self.truncate, bool):
            raise InvalidInput("truncate must be True or False")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0


def _int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInput(f"{name} must be an integer ≥ {low}; got {value!r}")


def _number(name: str, value: Any, *, low: float, high: float | None = None, open_low: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        span = f"{'(' if open_low else '['}{low}, {high if high is not None else '∞'}{']' if high is not None else ')'}"
        raise InvalidInput(f"{name} must be a number in {span}; got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationOutput:
    """Decoded texts and the figures of one generate call."""

    texts: list[str]
    token_ids: list[list[int]]
    new_tokens: int
    time_to_first_token_s: float


def _first_token_clock(started: float, box: dict[str, float]) -> Any:
    from transformers import LogitsProcessor

    class FirstTokenClock(LogitsProcessor):
        # The first call comes right after the prefill forward pass: that is the first token.
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            box.setdefault("ttft", time.perf_counter() - started)
            return scores

    return FirstTokenClock()


def masked_suppression(model: Any) -> list[Any]:
    """Processors for the tokens a model's generation config suppresses, with the mask built once.

    transformers' ``SuppressTokensLogitsProcessor`` and ``SuppressTokensAtBeginLogitsProcessor``
    rebuild a vocabulary-sized mask with ``torch.isin`` at every step, and the second one
    builds it even on the steps where it suppresses nothing: for Whisper's 51,864-token
    vocabulary that was 4.5 ms of each ~18 ms decode step on a 2-core CPU. The replacements
    subclass them (Whisper looks its processors up by class and sets their begin index) and
    keep one mask per vocabulary size and device.

    On first use the token lists move out of ``model.generation_config`` into this module
    (``generate`` would otherwise restore transformers' own processors from the model's
    defaults, whatever the call passes), so a caller of ``model.generate`` that bypasses the
    model_family must add these processors itself.

    Returns:
        The processors to add to ``logits_processor`` (none when nothing is suppressed).
    """
    config = getattr(model, "generation_config", None)
    with _suppressed_lock:
        try:
            lists = _suppressed.get(model)
        except TypeError:  # an unhashable model object: leave transformers' processors in place
            return []
        if lists is None:
            lists = (list(getattr(config, "suppress_tokens", None) or []),
                     list(getattr(config, "begin_suppress_tokens", None) or []))
            _suppressed[model] = lists
            if config is not None:
                config.suppress_tokens = None
                config.begin_suppress_tokens = None
    suppress, at_begin = lists
    masked_always, masked_at_begin = _masked_suppression_classes()
    processors: list[Any] = []
    if at_begin:
        # Whisper sets the begin index before each window; 1 is the causal-LM default.
        processors.append(masked_at_begin(at_begin, begin_index=1))
    if suppress:
        processors.append(masked_always(suppress))
    return processors


_suppressed: weakref.WeakKeyDictionary[Any, tuple[list[int], list[int]]] = weakref.WeakKeyDictionary()
_suppressed_lock = threading.Lock()


@functools.cache
def _masked_suppression_classes() -> tuple[type, type]:
    import torch
    from transformers.generation.logits_process import (
        SuppressTokensAtBeginLogitsProcessor,
        SuppressTokensLogitsProcessor,
    )

    def mask(tokens: Any, scores: Any, cache: dict[tuple[int, str], Any]) -> Any:
        key = (scores.shape[-1], str(scores.device))
        if key not in cache:
            built = torch.zeros(scores.shape[-1], dtype=torch.bool, device=scores.device)
            ids = tokens.to(scores.device)
            built[ids[(ids >= 0) & (ids < scores.shape[-1])]] = True
            cache[key] = built
        return cache[key]

    class MaskedSuppressTokens(SuppressTokensLogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            masks = self.__dict__.setdefault("_masks", {})
            return scores.masked_fill(mask(self.suppress_tokens, scores, masks), -float("inf"))

    class MaskedSuppressTokensAtBegin(SuppressTokensAtBeginLogitsProcessor):
        def __call__(self, input_ids: Any, scores: Any) -> Any:
            if input_ids.shape[-1] != self.begin_index:
                return scores
            masks = self.__dict__.setdefault("_masks", {})
            return scores.masked_fill(mask(self.begin_suppress_tokens, scores, masks), -float("inf"))

    return MaskedSuppressTokens, MaskedSuppressTokensAtBegin


def _stop_criteria(tokenizer: Any, stop: Sequence[str], prompt_len: int) -> Any:
    import torch
    from transformers import StoppingCriteria

    longest = max(len(s) for s in stop)

    class StopOnStrings(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            done = []
            for row in input_ids:
                # Decoding a tail of tokens is enough: a stop string spans few tokens.
                tail = tokenizer.decode(row[prompt_len:][-(longest + 8):], skip_special_tokens=True)
                done.append(any(s in tail for s in stop))
            return torch.tensor(done, dtype=torch.bool, device=input_ids.device)

    return StopOnStrings()


def _generate_kwargs(params: GenerationParams, tokenizer: Any, config: Any, max_new_tokens: int) -> dict[str, Any]:
    eos = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else getattr(config, "eos_token_id", None)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": params.do_sample,
        "repetition_penalty": params.repetition_penalty,
        "pad_token_id": pad,
        "eos_token_id": eos,
    }
    if params.do_sample:
        kwargs.update(temperature=params.temperature, top_p=params.top_p, top_k=params.top_k)
    else:
        # Greedy: neutralise sampling knobs a checkpoint's generation_config may carry.
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def greedy_ends(params: GenerationParams, tokenizer: Any, config: Any, max_new_tokens: int) -> tuple[Any, Any, Any]:
    """What ends a greedy loop, as generate() would be given it.

    Returns:
        The end-of-sequence id(s), the pad id, and a stopping criterion for the stop strings
        called on the new tokens only (None without stop strings).
    """
    kwargs = _generate_kwargs(params, tokenizer, config, max_new_tokens)
    stop = _stop_criteria(tokenizer, params.stop, 0) if params.stop else None
    return kwargs["eos_token_id"], kwargs["pad_token_id"], stop


def _cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    cuts = [text.index(s) for s in stop if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


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
    kwargs = _generate_kwargs(params, tokenizer, config, max_new_tokens)
    kwargs["logits_processor"] = LogitsProcessorList([_first_token_clock(started, box)])
    if params.stop:
        kwargs["stopping_criteria"] = StoppingCriteriaList([_stop_criteria(tokenizer, params.stop, prompt_len)])
    kwargs.update(extra or {})
    with torch.random.fork_rng(devices=[]), torch.inference_mode():
        if params.seed is not None:
            torch.manual_seed(params.seed)
        sequences = runtime.model.generate(**runtime.prepare(inputs), **kwargs)
    if not isinstance(sequences, torch.Tensor):
        sequences = sequences.sequences
    return _decode(sequences.cpu(), prompt_len, tokenizer, params, kwargs["eos_token_id"], kwargs["pad_token_id"],
                   box.get("ttft", time.perf_counter() - started))


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
    return _decode(sequences.cpu(), int(ids.shape[1]), tokenizer, params, eos, pad, ttft)


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
        tokens = scores.argmax(-1).to(prompt.device)
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


def _parameters(function: Any) -> frozenset[str]:
    import inspect

    try:
        return frozenset(inspect.signature(function).parameters)
    except (TypeError, ValueError):
        return frozenset()


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


def _decode(
    sequences: Any, prompt_len: int, tokenizer: Any, params: GenerationParams,
    eos: Any, pad: Any, ttft: float,
) -> GenerationOutput:
    texts, ids, count = [], [], 0
    for row in sequences[:, prompt_len:].tolist():
        kept, generated = split_generated(row, eos=eos, pad=pad)
        count += generated
        text, _ = _cut_at_stop(tokenizer.decode(kept, skip_special_tokens=True), params.stop)
        texts.append(text)
        ids.append(kept)
    return GenerationOutput(texts=texts, token_ids=ids, new_tokens=count, time_to_first_token_s=ttft)


def stream_generate(
    runtime: Runtime,
    inputs: dict[str, Any],
    params: GenerationParams,
    *,
    tokenizer: Any,
    config: Any,
    max_new_tokens: int,
    prompt_len: int,
    skip_prompt: bool,
    extra: dict[str, Any] | None = None,
) -> Iterator[str]:
    """Yield text pieces as ``generate`` produces them (one prompt)."""
    import torch
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=skip_prompt, skip_special_tokens=True, timeout=600)
    kwargs = _generate_kwargs(params, tokenizer, config, max_new_tokens)
    kwargs["streamer"] = streamer
    if params.stop:
        kwargs["stopping_criteria"] = StoppingCriteriaList([_stop_criteria(tokenizer, params.stop, prompt_len)])
    kwargs.update(extra or {})
    failure: list[BaseException] = []

    def work() -> None:
        try:
            with torch.random.fork_rng(devices=[]), torch.inference_mode():
                if params.seed is not None:
                    torch.manual_seed(params.seed)
                runtime.model.generate(**runtime.prepare(inputs), **kwargs)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            failure.append(exc)
            streamer.end()

    thread = threading.Thread(target=work, name="ipfs-accelerate-stream", daemon=True)
    thread.start()
    text = ""
    emitted = 0
    for piece in streamer:
        text += piece
        cut, stopped = _cut_at_stop(text, params.stop)
        # Hold back a tail that could be the start of a stop string.
        hold = 0 if stopped else max((len(s) - 1 for s in params.stop), default=0)
        safe = len(cut) - hold
        if safe > emitted:
            yield cut[emitted:safe]
            emitted = safe
        if stopped:
            break
    thread.join()
    if failure:
        raise failure[0]
    cut, _ = _cut_at_stop(text, params.stop)
    if len(cut) > emitted:
        yield cut[emitted:]


def context_window(config: Any) -> int | None:
    """The longest sequence the model's positions allow, or None when unbounded."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_target_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


class _GenerateBase(TaskHandler):
    """Shared by the decoder-only and encoder-decoder text generators."""

    Params: ClassVar[type] = GenerationParams
    generates: ClassVar[bool] = True
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(weights.path, local_files_only=True)
        self.tokenizer.model_input_names = ["input_ids", "attention_mask"]
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def as_items(self, inputs: Any) -> list[Any]:
        return [inputs] if isinstance(inputs, str) else super().as_items(inputs)

    def example_inputs(self) -> list[Any]:
        return ["Hello, my name is", "The capital of France is"]

    def warmup_params(self) -> Any:
        return GenerationParams(max_new_tokens=2)

    def postprocess(self, raw: GenerationOutput, prepared: Prepared, params: Any) -> list[Any]:
        return list(raw.texts)

    def figures(self, raw: GenerationOutput, prepared: Prepared, params: Any, seconds: float) -> dict[str, float]:
        return {
            "new_tokens": float(raw.new_tokens),
            "prompt_tokens": float(prepared.extra["prompt_tokens"]),
            "time_to_first_token_s": raw.time_to_first_token_s,
        }


class CausalLMGenerate(_GenerateBase):
    """``generate`` for decoder-only models: left-padded batches, capped lengths."""

    name = "generate"
    kind = "text-generation"
    torch_class = "AutoModelForCausalLM"

    def preprocess(self, inputs: Sequence[Any], params: GenerationParams) -> Prepared:
        texts = check_texts(inputs, what="prompt")
        notes: list[str] = []
        window = context_window(self.config) or 10**9
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right
        self.tokenizer.truncation_side = "left"  # keep the end of an over-long prompt
        encoded = tokenize(self.tokenizer, texts, max_length=window - 1, truncate=params.truncate, notes=notes)
        prompt_len = int(encoded["input_ids"].shape[1])
        max_new = min(params.max_new_tokens, window - prompt_len)
        if max_new < params.max_new_tokens:
            notes.append(
                f"max_new_tokens capped from {params.max_new_tokens} to {max_new}: the context window "
                f"is {window} tokens and the prompt takes {prompt_len}"
            )
        prompt_tokens = int(encoded["attention_mask"].sum())
        return Prepared(inputs=encoded, count=len(texts), notes=notes,
                        extra={"prompt_len": prompt_len, "max_new_tokens": max_new, "prompt_tokens": prompt_tokens})

    @property
    def lm_config(self) -> Any:
        """The language model's config (the text part of a composite model)."""
        return self.config

    def forward(self, runtime: Runtime, prepared: Prepared, params: GenerationParams) -> GenerationOutput:
        if greedy_applies(runtime.model, prepared.inputs, params):
            return greedy_generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer,
                                   config=self.lm_config, max_new_tokens=prepared.extra["max_new_tokens"])
        return generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.lm_config,
                        max_new_tokens=prepared.extra["max_new_tokens"], prompt_len=prepared.extra["prompt_len"])

    def stream(self, runtime: Runtime, prepared: Prepared, params: GenerationParams) -> Iterator[str]:
        return stream_generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.lm_config,
                               max_new_tokens=prepared.extra["max_new_tokens"],
                               prompt_len=prepared.extra["prompt_len"], skip_prompt=True)


class Seq2SeqGenerate(_GenerateBase):
    """``text2text`` for encoder-decoder models."""

    name = "text2text"
    kind = "text2text-generation"
    torch_class = "AutoModelForSeq2SeqLM"
    fp16_safe = False  # T5-style models overflow in fp16; bf16 or fp32 instead

    def example_inputs(self) -> list[Any]:
        return ["translate English to German: The house is wonderful.", "summarize: It was a sunny day."]

    def preprocess(self, inputs: Sequence[Any], params: GenerationParams) -> Prepared:
        texts = check_texts(inputs, what="text")
        notes: list[str] = []
        window = min(self.tokenizer.model_max_length or 512, 4096)
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"
        encoded = tokenize(self.tokenizer, texts, max_length=window, truncate=params.truncate, notes=notes)
        max_new = min(params.max_new_tokens, window)
        if max_new < params.max_new_tokens:
            notes.append(f"max_new_tokens capped from {params.max_new_tokens} to {max_new} (decoder window {window})")
        return Prepared(inputs=encoded, count=len(texts), notes=notes,
                        extra={"max_new_tokens": max_new, "prompt_tokens": int(encoded["attention_mask"].sum())})

    def forward(self, runtime: Runtime, prepared: Prepared, params: GenerationParams) -> GenerationOutput:
        start = getattr(getattr(runtime.model, "generation_config", None), "decoder_start_token_id", None)
        if isinstance(start, int) and greedy_applies(runtime.model, prepared.inputs, params):
            started = time.perf_counter()
            eos, pad, stop = greedy_ends(params, self.tokenizer, self.config, prepared.extra["max_new_tokens"])
            sequences, ttft = greedy_seq2seq(runtime, prepared.inputs, decoder_prompt=[start], eos=eos, pad=pad,
                                             max_new_tokens=prepared.extra["max_new_tokens"], stop=stop,
                                             started=started)
            return _decode(sequences, 1, self.tokenizer, params, eos, pad, ttft)
        # Encoder-decoder outputs start with the decoder start token, not the prompt.
        return generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.config,
                        max_new_tokens=prepared.extra["max_new_tokens"], prompt_len=1)

    def stream(self, runtime: Runtime, prepared: Prepared, params: GenerationParams) -> Iterator[str]:
        return stream_generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.config,
                               max_new_tokens=prepared.extra["max_new_tokens"], prompt_len=1, skip_prompt=False)
