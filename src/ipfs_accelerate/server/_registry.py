"""The served models: loading (apart from the app, so Ray Serve or tests can do it their way)."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from .._exceptions import InvalidInput
from ._config import ModelConfig

if TYPE_CHECKING:
    from ..engine.batcher import DynamicBatcher
    from ..engine.endpoint import Endpoint

__all__ = ["ModelRegistry", "ServedModel", "TokenCounter"]

log = logging.getLogger("ipfs_accelerate.server")


class TokenCounter:
    """Counts tokens for usage figures and limits, on the server's own tokenizer copy.

    A fast tokenizer is not safe to call from two threads at once ("Already borrowed"),
    and the batcher's worker uses the endpoint's own: the server counts on a copy, one
    caller at a time.
    """

    def __init__(self, tokenizer: Any) -> None:
        import copy

        self._tokenizer = copy.deepcopy(tokenizer) if tokenizer is not None else None
        self._lock = threading.Lock()

    @overload
    def count(self, texts: Sequence[str], *, special: bool = ..., wait: Literal[True] = ...) -> list[int]: ...

    @overload
    def count(self, texts: Sequence[str], *, special: bool = ..., wait: bool) -> list[int] | None: ...

    def count(self, texts: Sequence[str], *, special: bool = True, wait: bool = True) -> list[int] | None:
        """Tokens per text (whitespace words when the model has no tokenizer).

        With ``wait=False`` it answers None instead of waiting for another caller (so the
        event loop never blocks on the lock).
        """
        if self._tokenizer is None or not texts:
            return [len(t.split()) for t in texts]
        if not self._lock.acquire(blocking=wait):
            return None
        try:
            encoded = self._tokenizer(list(texts), add_special_tokens=special)["input_ids"]
        finally:
            self._lock.release()
        return [len(ids) for ids in encoded]


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
    def load(cls, config: ModelConfig, *, cache_dir: str | Path | None = None) -> ServedModel:
        """Load ``config``'s model with ``ia.load`` (blocking; run it off the event loop)."""
        from ..engine.loader import load

        started = time.perf_counter()
        endpoint = load(config.model, config.task, backend=config.backend, precision=config.precision,
                        device=config.device, weights=config.weights, config_overrides=config.config_overrides,
                        cache_dir=cache_dir)
        return cls.from_endpoint(endpoint, config, load_s=time.perf_counter() - started)


class ModelRegistry:
    """The served models by name; ``ready`` once every configured model has loaded.

    Args:
        configs: the models to load with :meth:`load_all`.
        models: models already loaded (tests, Ray Serve replicas); served at once.
        cache_dir: the ipfs_accelerate cache for :meth:`load_all`.
    """

    def __init__(self, configs: Sequence[ModelConfig] = (), *, models: Iterable[ServedModel] = (),
                 cache_dir: str | Path | None = None) -> None:
        self.configs = tuple(configs)
        self.cache_dir = cache_dir
        self._models: dict[str, ServedModel] = {}
        self._lock = threading.Lock()
        self.errors: dict[str, str] = {}
        for model in models:
            self.add(model)
        names = [c.served_name for c in self.configs] + list(self._models)
        if len(set(names)) != len(names):
            raise InvalidInput(f"two served models share a name: {names}")

    def add(self, model: ServedModel) -> None:
        """Serve a loaded model."""
        with self._lock:
            self._models[model.name] = model

    def get(self, name: str) -> ServedModel | None:
        """The model served as ``name``, or None."""
        return self._models.get(name)

    def all(self) -> list[ServedModel]:
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
                model = ServedModel.load(config, cache_dir=self.cache_dir)
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
            model.batcher.close(drain=True, timeout=timeout)
