"""Streaming: text pieces as ``model.generate`` produces them, held back at a possible stop string."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .controls import cut_at_stop, generate_kwargs, stop_criteria
from .params import GenerationParams

if TYPE_CHECKING:
    from ..backends.base import Runtime

__all__ = ["stream_generate"]


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
    kwargs = generate_kwargs(params, tokenizer, config, max_new_tokens)
    kwargs["streamer"] = streamer
    if params.stop:
        kwargs["stopping_criteria"] = StoppingCriteriaList([stop_criteria(tokenizer, params.stop, prompt_len)])
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
        cut, stopped = cut_at_stop(text, params.stop)
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
    cut, _ = cut_at_stop(text, params.stop)
    if len(cut) > emitted:
        yield cut[emitted:]
