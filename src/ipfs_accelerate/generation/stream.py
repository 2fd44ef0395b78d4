"""Streaming: text pieces as ``model.generate`` produces them, held back at a possible stop string."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from .._logs import library_records_demoted
from .controls import cut_at_stop, generate_kwargs, stop_criteria
from .params import GenerationParams

if TYPE_CHECKING:
    from ..backends.base import Runtime

__all__ = ["GenerationStream", "stream_generate"]


class GenerationStream(Iterator[str]):
    """The text pieces of one generation, and a way to stop it from any thread.

    :meth:`cancel` asks the generation to stop at its next token (a stopping criterion reads
    it), so a server whose client went away frees the model instead of running on to
    ``max_new_tokens``; the pieces then end. Closing the stream cancels it too.
    """

    def __init__(self, pieces: Iterator[str], cancelled: threading.Event) -> None:
        self._pieces = pieces
        self._cancelled = cancelled

    def __next__(self) -> str:
        return next(self._pieces)

    def cancel(self) -> None:
        """Stop the generation at its next token (thread-safe; idempotent)."""
        self._cancelled.set()

    @property
    def cancelled(self) -> bool:
        """Whether :meth:`cancel` was called."""
        return self._cancelled.is_set()

    def close(self) -> None:
        """Cancel, and close the pieces when no other thread is reading them."""
        self.cancel()
        close = getattr(self._pieces, "close", None)
        if close is not None:
            try:
                close()
            except ValueError:  # another thread is inside next(): it sees the end once generation stops
                pass


def _cancel_criterion(cancelled: threading.Event) -> Any:
    from transformers import StoppingCriteria

    class Cancelled(StoppingCriteria):
        def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
            import torch

            return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool, device=input_ids.device)

    return Cancelled()


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
) -> GenerationStream:
    """Text pieces as ``generate`` produces them (one prompt); ``cancel()`` stops it early."""
    from transformers import StoppingCriteriaList, TextIteratorStreamer

    streamer = TextIteratorStreamer(tokenizer, skip_prompt=skip_prompt, skip_special_tokens=True, timeout=600)
    kwargs = generate_kwargs(params, tokenizer, config, max_new_tokens)
    kwargs["streamer"] = streamer
    cancelled = threading.Event()
    criteria = [_cancel_criterion(cancelled)]
    if params.stop:
        criteria.append(stop_criteria(tokenizer, params.stop, prompt_len))
    kwargs["stopping_criteria"] = StoppingCriteriaList(criteria)
    kwargs.update(extra or {})
    return GenerationStream(_pieces(runtime, inputs, params, kwargs, streamer, cancelled), cancelled)


def _pieces(runtime: Runtime, inputs: dict[str, Any], params: GenerationParams, kwargs: dict[str, Any],
            streamer: Any, cancelled: threading.Event) -> Iterator[str]:
    import torch

    failure: list[BaseException] = []

    def work() -> None:
        try:
            # The runtime's lock: a batch of the same model must not run inside this generation.
            with runtime.lock, library_records_demoted(), torch.random.fork_rng(devices=[]), torch.inference_mode():
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
    try:
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
    finally:
        # Closed early (the reader left): stop the generation rather than let it run on.
        if thread.is_alive() and not cancelled.is_set():
            cancelled.set()
    thread.join()
    if failure:
        raise failure[0]
    cut, _ = cut_at_stop(text, params.stop)
    if len(cut) > emitted:
        yield cut[emitted:]
