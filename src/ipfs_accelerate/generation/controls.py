"""What callers add around a generation loop: transformers logits processors and stopping
criteria (a time-to-first-token clock, stop strings, suppressed tokens with a mask built once)
and the ``generate`` keyword arguments of the shared controls."""

from __future__ import annotations

import functools
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any

from .params import GenerationParams

__all__ = ["cut_at_stop", "first_token_clock", "generate_kwargs", "masked_suppression", "stop_criteria"]


def first_token_clock(started: float, box: dict[str, float]) -> Any:
    """A logits processor that records in ``box["ttft"]`` the seconds from ``started`` to its first call."""
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
    vocabulary that is a large share of each decode step (docs/families.md). The replacements
    subclass them (Whisper looks its processors up by class and sets their begin index) and
    keep one mask per vocabulary size and device.

    On first use the token lists move out of ``model.generation_config`` into this module
    (``generate`` would otherwise restore transformers' own processors from the model's
    defaults, whatever the call passes), so a caller of ``model.generate`` that bypasses the
    task handlers must add these processors itself.

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


def stop_criteria(tokenizer: Any, stop: Sequence[str], prompt_len: int) -> Any:
    """A stopping criterion that ends a row once its text after ``prompt_len`` holds a ``stop`` string."""
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


def generate_kwargs(params: GenerationParams, tokenizer: Any, config: Any, max_new_tokens: int) -> dict[str, Any]:
    """The ``generate`` keyword arguments of the shared controls (special ids from the tokenizer, else ``config``)."""
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


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, bool]:
    """``text`` up to the first stop string, and whether one was found."""
    cuts = [text.index(s) for s in stop if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)
