"""The served models: loading (apart from the app, so Ray Serve or tests can do it their way)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections.abc import AsyncGenerator, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, overload

from .._exceptions import InvalidInput
from ..media.text import require_unicode
from ._config import ModelConfig

if TYPE_CHECKING:
    from ..engine.batcher import DynamicBatcher
    from ..engine.endpoint import Endpoint
    from ..engine.result import Provenance, Result

__all__ = ["PLAIN_CHAT_TEMPLATE", "ModelRegistry", "ModelService", "ServedModel", "TokenCounter", "count_tokens",
           "plain_chat_prompt"]

#: The chat template for checkpoints that carry none: one ``Role: content`` line per
#: message, then ``Assistant:``; generation also stops at a new ``\nUser:`` line.
PLAIN_CHAT_TEMPLATE = "{Role}: {content}\n ... Assistant:"


def plain_chat_prompt(messages: Sequence[tuple[str, str]]) -> str:
    """The documented plain template: ``Role: content`` lines, then ``Assistant:``."""
    lines = [f"{role.capitalize()}: {content}" for role, content in messages]
    return "\n".join([*lines, "Assistant:"])


class ModelService(Protocol):
    """What the routes need of a served model, wherever it runs.

    :class:`ServedModel` runs in this process; ``ipfs_accelerate.server.ray.RemoteModel``
    forwards every call to a Ray Serve deployment whose replicas each hold a
    :class:`ServedModel`. Routes name no family: what differs between models is asked
    here (``task``, ``param_names``, ``chat_images``).

    """

    @property
    def name(self) -> str:
        """The name clients use."""
        ...

    @property
    def load_s(self) -> float:
        """Seconds it took to load."""
        ...

    @property
    def task(self) -> str:
        """The task it serves."""
        ...

    @property
    def param_names(self) -> frozenset[str]:
        """The task parameters it accepts."""
        ...

    @property
    def chat_images(self) -> bool:
        """Whether a chat message may carry images."""
        ...

    def describe(self) -> dict[str, Any]:
        """The ``/v1/models`` entry."""
        ...

    def provenance(self) -> Provenance:
        """The provenance of one unbatched call (stream headers)."""
        ...

    def queued(self) -> int:
        """Requests waiting in its batcher as this process sees it."""
        ...

    async def run(self, inputs: Any, params: Mapping[str, Any]) -> Result:
        """One call through the batcher (raises Overloaded when its queue is full)."""
        ...

    def stream(self, inputs: Any, params: Mapping[str, Any]) -> AsyncGenerator[str, None]:
        """The generated text piece by piece (one prompt); ``aclose`` stops the generation."""
        ...

    async def parse_params(self, params: Mapping[str, Any]) -> None:
        """Validate task parameters (raises InvalidInput)."""
        ...

    async def count_tokens(self, texts: Sequence[str], *, special: bool = True) -> list[int]:
        """Tokens per text (whitespace words when the model has no tokenizer)."""
        ...

    async def chat_prompt(self, messages: Sequence[tuple[str, str]], images: Sequence[bytes]
                          ) -> tuple[Any, str, list[str]]:
        """The generate input for a chat, the prompt text (for token counts) and extra stop strings."""
        ...

    def close(self, *, timeout: float | None = None) -> None:
        """Drain and stop what serves it here."""
        ...

log = logging.getLogger("ipfs_accelerate.server")


class TokenCounter:
    """Counts tokens for usage figures and limits, on the server's own tokenizer copy.

    A fast tokenizer is not safe to call from two threads at once ("Already borrowed"),
    and the batcher's worker uses the endpoint's own: the server counts on a copy, one
    caller at a time. A fast tokenizer counts with the Rust tokenizer behind it (a third less
    time per short text than the transformers call, which re-sets padding and truncation on
    every call), once checked to give the same counts.
    """

    def __init__(self, tokenizer: Any) -> None:
        import copy

        self._tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else None
        self._backend = _backend_tokenizer(self._tokenizer)
        self._lock = threading.Lock()

    @overload
    def count(self, texts: Sequence[str], *, special: bool = ..., wait: Literal[True] = ...) -> list[int]: ...

    @overload
    def count(self, texts: Sequence[str], *, special: bool = ..., wait: bool) -> list[int] | None: ...

    def count(self, texts: Sequence[str], *, special: bool = True, wait: bool = True) -> list[int] | None:
        """Tokens per text (whitespace words when the model has no tokenizer).

        With ``wait=False`` it answers None instead of waiting for another caller (so the
        event loop never blocks on the lock).

        Raises:
            InvalidInput: a text is not valid Unicode (a lone surrogate).
        """
        for index, text in enumerate(texts):  # before the tokenizer, whose own error names nothing
            require_unicode(text, what=f"text #{index}")
        if self._tokenizer is None or not texts:
            return [len(t.split()) for t in texts]
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            if self._backend is not None:
                if len(texts) == 1:
                    return [len(self._backend.encode(texts[0], add_special_tokens=special))]
                return [len(e) for e in self._backend.encode_batch(list(texts), add_special_tokens=special)]
            encoded = self._tokenizer(list(texts), add_special_tokens=special)["input_ids"]
        finally:
            self._lock.release()
        return [len(ids) for ids in encoded]


_CHECK_TEXTS = ("Hello world, this is a test.", "  Ünïcödé  text\twith   spaces; 12345 and CamelCase words!")


def _backend_tokenizer(tokenizer: Any) -> Any:
    """The Rust tokenizer of a fast tokenizer (truncation and padding off) when it counts as the
    tokenizer does; else None."""
    try:
        from tokenizers import Tokenizer
    except ImportError:
        return None
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        return None
    backend.no_truncation()
    backend.no_padding()
    try:
        for special in (True, False):
            expected = [len(ids) for ids in tokenizer(list(_CHECK_TEXTS), add_special_tokens=special)["input_ids"]]
            if [len(e) for e in backend.encode_batch(list(_CHECK_TEXTS), add_special_tokens=special)] != expected:
                return None
    except Exception:  # noqa: BLE001 - a tokenizer that cannot be checked counts the usual way
        return None
    return backend


# Counting this many characters takes well under a millisecond: cheaper on the event loop than
# a hop to a worker thread and back.
_INLINE_COUNT_CHARS = 2048


async def count_tokens(counter: TokenCounter, texts: Sequence[str], *, special: bool = True) -> list[int]:
    """Tokens per text: short inputs inline on the event loop when the counter is free, else on a thread."""
    if sum(len(t) for t in texts) <= _INLINE_COUNT_CHARS:
        counts = counter.count(texts, special=special, wait=False)
        if counts is not None:
            return counts
    return await asyncio.to_thread(counter.count, texts, special=special)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServedModel:
    """One loaded model and the batcher every request to it goes through.

    Attributes:
        name: the name clients use.
        config: how it was asked for.
        endpoint: the loaded endpoint.
        batcher: its dynamic batcher (one per model).
        created: Unix seconds when it finished loading (the OpenAI ``created`` field).
        load_s: seconds it took to load.
        tokens: the token counter of its text inputs and outputs.
    """

    name: str
    config: ModelConfig
    endpoint: Endpoint
    batcher: DynamicBatcher
    created: int
    load_s: float
    tokens: TokenCounter

    @property
    def task(self) -> str:
        return self.endpoint.task

    @property
    def param_names(self) -> frozenset[str]:
        return frozenset(f.name for f in dataclasses.fields(self.endpoint.handler.Params))

    @property
    def chat_images(self) -> bool:
        return bool(getattr(self.endpoint.handler, "chat_images", False))

    def provenance(self) -> Provenance:
        """The provenance of one unbatched call."""
        return self.endpoint.provenance(batch_size=1)

    def queued(self) -> int:
        """Requests waiting in the batcher."""
        return self.batcher.stats().queued

    async def run(self, inputs: Any, params: Mapping[str, Any]) -> Result:
        """One call through the batcher (raises Overloaded at once when its queue is full)."""
        return await asyncio.wrap_future(self.batcher.submit(inputs, **params))

    async def stream(self, inputs: Any, params: Mapping[str, Any]) -> AsyncGenerator[str, None]:
        """The generated text piece by piece; generation stops when the caller stops reading."""
        pieces = await asyncio.to_thread(self.endpoint.stream, inputs, **params)
        done = object()
        try:
            while True:
                piece = await asyncio.to_thread(next, pieces, done)
                if piece is done:
                    return
                yield str(piece)
        finally:
            # A client that went away closes this generator, maybe while a worker thread is inside
            # next(pieces): cancelling stops the generation at its next token (GenerationStream),
            # so the model is not kept busy to max_tokens for nobody.
            cancel = getattr(pieces, "cancel", None)
            if cancel is not None:
                cancel()

    async def parse_params(self, params: Mapping[str, Any]) -> None:
        """Validate task parameters (raises InvalidInput)."""
        self.endpoint.parse_params(dict(params))

    async def count_tokens(self, texts: Sequence[str], *, special: bool = True) -> list[int]:
        """Tokens per text with the model's tokenizer (whitespace words when it has none)."""
        return await count_tokens(self.tokens, texts, special=special)

    async def chat_prompt(self, messages: Sequence[tuple[str, str]], images: Sequence[bytes]
                          ) -> tuple[Any, str, list[str]]:
        """The generate input for a chat, the prompt text and extra stop strings.

        A handler that takes chat images applies the checkpoint's template itself; else
        the tokenizer's chat template, else :data:`PLAIN_CHAT_TEMPLATE`.
        """
        if self.chat_images:
            prompt = "\n".join(content for role, content in messages if role in ("user", "system", "developer"))
            return ({"prompt": prompt, "images": list(images)} if images else prompt), prompt, []
        tokenizer = getattr(self.endpoint.handler, "tokenizer", None)
        if tokenizer is not None and getattr(tokenizer, "chat_template", None):
            prompt = tokenizer.apply_chat_template([{"role": r, "content": c} for r, c in messages], tokenize=False,
                                                   add_generation_prompt=True)
            return prompt, prompt, []
        prompt = plain_chat_prompt(messages)
        return prompt, prompt, ["\nUser:"]

    def close(self, *, timeout: float | None = None) -> None:
        """Drain and stop the batcher."""
        self.batcher.close(drain=True, timeout=timeout)

    def describe(self) -> dict[str, Any]:
        """The ``/v1/models`` entry."""
        runtime = self.endpoint.runtime
        weights = self.endpoint.handler.weights
        return {"id": self.name, "object": "model", "created": self.created, "owned_by": "ipfs-accelerate",
                "family": self.endpoint.family, "task": self.task, "backend": runtime.backend,
                "device": runtime.device, "precision": runtime.precision, "weights": weights.weights,
                "source": weights.source, "model": weights.model_id}

    @classmethod
    def from_endpoint(cls, endpoint: Endpoint, config: ModelConfig, *, load_s: float = 0.0) -> ServedModel:
        """Wrap an already-loaded endpoint with a batcher configured by ``config``."""
        batcher = endpoint.batched(max_batch_size=config.max_batch_size, max_wait_s=config.max_wait_s,
                                   max_queue=config.queue_size)
        return cls(name=config.served_name, config=config, endpoint=endpoint, batcher=batcher,
                   created=int(time.time()), load_s=load_s,
                   tokens=TokenCounter(getattr(endpoint.handler, "tokenizer", None)))

    @classmethod
    def load(cls, config: ModelConfig, *, cache_dir: str | Path | None = None, peers: Sequence[str] = (),
             kubo_api: str | None = None) -> ServedModel:
        """Load ``config``'s model with ``ia.load`` (blocking; run it off the event loop); ``peers``
        and ``kubo_api`` are where an ``ipfs://`` model's blocks come from."""
        from ..engine.loader import load

        started = time.perf_counter()
        endpoint = load(config.model, config.task, backend=config.backend, precision=config.precision,
                        device=config.device, weights=config.weights, config_overrides=config.config_overrides,
                        cache_dir=cache_dir, peers=peers, kubo_api=kubo_api)
        return cls.from_endpoint(endpoint, config, load_s=time.perf_counter() - started)


class ModelRegistry:
    """The served models by name; ``ready`` once every configured model has loaded.

    Args:
        configs: the models to load with :meth:`load_all`.
        models: models already loaded (tests, Ray Serve replicas); served at once.
        cache_dir: the ipfs_accelerate cache for :meth:`load_all`.
        peers: trustless gateways for ``ipfs://`` models (:meth:`load_all`).
        kubo_api: a kubo RPC API for ``ipfs://`` models.
    """

    def __init__(self, configs: Sequence[ModelConfig] = (), *, models: Iterable[ModelService] = (),
                 cache_dir: str | Path | None = None, peers: Sequence[str] = (), kubo_api: str | None = None) -> None:
        self.configs = tuple(configs)
        self.cache_dir = cache_dir
        self.peers = tuple(peers)
        self.kubo_api = kubo_api
        self._models: dict[str, ModelService] = {}
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}
        for model in models:
            self.add(model)
        names = [c.served_name for c in self.configs] + list(self._models)
        if len(set(names)) != len(names):
            raise InvalidInput(f"two served models share a name: {names}")

    def add(self, model: ModelService) -> None:
        """Serve a loaded model."""
        with self._lock:
            self._models[model.name] = model

    def get(self, name: str) -> ModelService | None:
        """The model served as ``name``, or None."""
        return self._models.get(name)

    def all(self) -> list[ModelService]:
        """Every loaded model, in load order."""
        return list(self._models.values())

    @property
    def ready(self) -> bool:
        """Whether every configured model is loaded (and at least one model is served)."""
        return bool(self._models) and all(c.served_name in self._models for c in self.configs)

    def pending(self) -> list[str]:
        """Configured models not loaded yet."""
        return [c.served_name for c in self.configs if c.served_name not in self._models]

    def load_all(self) -> None:
        """Load every configured model not loaded yet, logging progress; failures are kept in ``errors``."""
        todo = [c for c in self.configs if c.served_name not in self._models]
        for index, config in enumerate(todo, 1):
            log.info("loading model %d/%d: %s (task %s)", index, len(todo), config.model, config.task or "default")
            try:
                model = ServedModel.load(config, cache_dir=self.cache_dir, peers=self.peers, kubo_api=self.kubo_api)
            except Exception as exc:  # noqa: BLE001 - one bad model must not stop the others; /ready says so
                self.errors[config.served_name] = f"{type(exc).__name__}: {exc}"
                log.error("model %s failed to load: %s: %s", config.served_name, type(exc).__name__, exc)
                continue
            self.add(model)
            p = model.endpoint
            log.info("loaded %s in %.1f s: %s/%s on %s %s %s", model.name, model.load_s, p.family, p.task,
                     p.runtime.backend, p.runtime.device, p.runtime.precision)

    def close(self, *, timeout: float | None = None) -> None:
        """Drain and stop every batcher."""
        for model in self.all():
            model.close(timeout=timeout)
