"""Ray Serve: one deployment per served model, and the same FastAPI app as the ingress.

Each ``[[models]]`` table becomes a deployment of :class:`ModelReplica`: every replica
loads the model with ``ia.load`` (an ``ipfs://<cid>`` model id resolves through the
node's store or its peers like any other id) and runs the one batching layer, our
:class:`~ipfs_accelerate.engine.batcher.DynamicBatcher`. The ingress deployment runs
:func:`~ipfs_accelerate.server.create_app` with a registry of :class:`RemoteModel`,
which forward every call over a Ray Serve ``DeploymentHandle``; so routes, error shapes,
auth and metrics are those of the single-process server. See docs/scaling.md.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import socket
import threading
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from .._exceptions import AccelerateError, InvalidInput
from ._config import ModelConfig, ServerConfig
from ._errors import ApiError
from ._registry import ModelRegistry, ServedModel, TokenCounter, count_tokens

if TYPE_CHECKING:
    from fastapi import FastAPI
    from ray.serve.handle import DeploymentHandle

    from ..engine.result import Provenance, Result

__all__ = ["APP_NAME", "FORWARDED_ENV", "SERVE_LOGGING", "Ingress", "ModelReplica", "RemoteModel", "build_app",
           "deployment_options", "serve_on_ray"]

log = logging.getLogger("ipfs_accelerate.server")

#: The Ray Serve application name of ``serve --ray``.
APP_NAME = "ipfs-accelerate"

#: Environment variables the replicas get from the process that deploys them: the
#: store's cache and peers (so ``ipfs://`` ids resolve on every node) and offline hubs.
FORWARDED_ENV = ("IPFS_ACCELERATE_CACHE", "IPFS_ACCELERATE_PEERS", "IPFS_ACCELERATE_KUBO_API", "HF_HUB_OFFLINE",
                 "TOKENIZERS_PARALLELISM")

#: Ray Serve's logging for our deployments: no access log line per request (two hops
#: each, ingress and model, at several hundred requests/s they cost a core).
SERVE_LOGGING: dict[str, Any] = {"enable_access_log": False, "log_level": "WARNING"}

#: The default batch window when a model's config names none (the replica's batcher may
#: still choose the endpoint's own; this only sizes ``max_ongoing_requests``).
_DEFAULT_BATCH = 32


def deployment_options(config: ModelConfig, env: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The Ray Serve options of one model's deployment.

    ``num_cpus`` is the replica's threads, so Ray places no more replicas on a node than
    it has cores for; ``max_ongoing_requests`` is two batch windows (one computing, one
    filling), and ``max_queued_requests`` the model's ``queue_size``: past it a caller
    gets Ray's back-pressure error, which the ingress answers with 503 + Retry-After.

    Args:
        config: the model's ``[[models]]`` table.
        env: environment variables for the replicas (see :data:`FORWARDED_ENV`).
    """
    batch = config.max_batch_size or _DEFAULT_BATCH
    env_vars = {**(env or {}), "OMP_NUM_THREADS": str(config.threads)}
    options: dict[str, Any] = {
        "name": _deployment_name(config.served_name),
        "ray_actor_options": {"num_cpus": config.threads, "runtime_env": {"env_vars": env_vars}},
        "max_ongoing_requests": 2 * batch,
        "max_queued_requests": config.queue_size,
        "graceful_shutdown_timeout_s": 10.0,
        "health_check_period_s": 2.0,
    }
    if config.autoscaling is not None:
        options["autoscaling_config"] = _checked_autoscaling(config)
    else:
        options["num_replicas"] = config.num_replicas
    return options


def _checked_autoscaling(config: ModelConfig) -> dict[str, Any]:
    """The model's autoscaling table; a key Ray does not know is refused (Ray itself ignores it)."""
    from ray.serve.config import AutoscalingConfig

    table = dict(config.autoscaling or {})
    known = set(AutoscalingConfig.model_fields)
    unknown = sorted(set(table) - known)
    if unknown:
        raise InvalidInput(f"model {config.served_name!r}: unknown autoscaling key(s) {', '.join(unknown)}; "
                           f"Ray Serve knows {', '.join(sorted(known))}")
    return table


def _deployment_name(served_name: str) -> str:
    return "model-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in served_name)


def _node_name() -> str:
    import ray

    return f"{socket.gethostname()}/{ray.get_runtime_context().get_node_id()[:12]}"


class ModelReplica:
    """One replica of one model's deployment: the model and its batcher, in a Ray actor.

    Args:
        config: the model to load.
        cache_dir: the ipfs_accelerate cache on the replica's node.
        peers: trustless gateways an ``ipfs://`` model's blocks come from (every block verified).
        kubo_api: a kubo RPC API tried after the peers.
    """

    def __init__(self, config: ModelConfig, cache_dir: str | None = None, peers: Sequence[str] = (),
                 kubo_api: str | None = None) -> None:
        from ray import serve

        self.model = ServedModel.load(config, cache_dir=cache_dir, peers=peers, kubo_api=kubo_api)
        self.replica = serve.get_replica_context().replica_tag
        self.node = _node_name()
        log.info("replica %s on %s serves %s (%.1f s to load)", self.replica, self.node, self.model.name,
                 self.model.load_s)

    def info(self) -> dict[str, Any]:
        """What the ingress keeps of the model: name, task, capabilities, description, tokenizer."""
        m = self.model
        return {"name": m.name, "task": m.task, "load_s": m.load_s, "param_names": m.param_names,
                "chat_images": m.chat_images, "describe": m.describe(), "provenance": self._stamp(m.provenance()),
                "tokenizer": getattr(m.endpoint.handler, "tokenizer", None)}

    def _stamp(self, provenance: Provenance) -> Provenance:
        return dataclasses.replace(provenance, replica=self.replica, node=self.node)

    async def run(self, inputs: Any, params: Mapping[str, Any]) -> Result:
        """One call through this replica's batcher; the provenance names the replica and node."""
        result = await self.model.run(inputs, params)
        return dataclasses.replace(result, provenance=self._stamp(result.provenance))

    async def stream(self, inputs: Any, params: Mapping[str, Any]) -> AsyncGenerator[str, None]:
        """The generated text piece by piece (called through a streaming handle)."""
        pieces = self.model.stream(inputs, params)
        try:
            async for piece in pieces:
                yield piece
        finally:
            await pieces.aclose()

    async def parse_params(self, params: Mapping[str, Any]) -> None:
        """Validate task parameters (raises InvalidInput)."""
        await self.model.parse_params(params)

    async def count_tokens(self, texts: Sequence[str], special: bool = True) -> list[int]:
        """Tokens per text."""
        return await self.model.count_tokens(texts, special=special)

    async def chat_prompt(self, messages: Sequence[tuple[str, str]], images: Sequence[bytes]
                          ) -> tuple[Any, str, list[str]]:
        """The generate input for a chat, its prompt text and extra stop strings."""
        return await self.model.chat_prompt(messages, images)

    def __del__(self) -> None:
        # Ray Serve calls __del__ when it stops the replica: finish what the batcher holds.
        model = getattr(self, "model", None)
        if model is not None:
            model.close(timeout=5.0)


def _unavailable(name: str, exc: BaseException) -> ApiError:
    return ApiError(503, f"model {name!r}: no replica could take the request ({type(exc).__name__}); retry",
                    code="replica_unavailable", headers={"Retry-After": "1"})


def _translate(name: str, exc: BaseException) -> BaseException:
    """The exception a route should see for one a deployment call raised."""
    from ray.exceptions import RayActorError, RayTaskError
    from ray.serve.exceptions import RayServeException

    if isinstance(exc, RayTaskError):
        cause = exc.cause
        if isinstance(cause, (AccelerateError, ApiError)):
            return cause
        if isinstance(cause, (RayActorError, RayServeException)):
            return _unavailable(name, cause)
        return cause if isinstance(cause, Exception) else exc
    if isinstance(exc, (RayActorError, RayServeException)):
        return _unavailable(name, exc)
    return exc


class RemoteModel:
    """A served model whose replicas run in a Ray Serve deployment (a :class:`ModelService`).

    Build it with :meth:`connect` (it asks one replica for the model's description).
    ``queued`` is what this ingress replica has sent and not had back: each model
    replica's batcher queue is its own.
    """

    def __init__(self, handle: DeploymentHandle, info: Mapping[str, Any]) -> None:
        self.handle = handle
        self.name: str = info["name"]
        self.load_s: float = info["load_s"]
        self._info = {k: v for k, v in info.items() if k != "tokenizer"}
        # Token counts (limits, usage) on the ingress's own copy of the tokenizer: one hop
        # to a model replica per request instead of two.
        self.tokens = TokenCounter(info.get("tokenizer"))
        self._in_flight = 0

    @classmethod
    async def connect(cls, handle: DeploymentHandle) -> RemoteModel:
        """Ask the deployment what it serves (waits for a replica to be up)."""
        return cls(handle, await handle.info.remote())

    @property
    def task(self) -> str:
        return str(self._info["task"])

    @property
    def param_names(self) -> frozenset[str]:
        return frozenset(self._info["param_names"])

    @property
    def chat_images(self) -> bool:
        return bool(self._info["chat_images"])

    def describe(self) -> dict[str, Any]:
        """The ``/v1/models`` entry (as a replica reported it)."""
        return dict(self._info["describe"])

    def provenance(self) -> Provenance:
        """One replica's provenance of an unbatched call (stream headers name that replica)."""
        provenance: Provenance = self._info["provenance"]
        return provenance

    def queued(self) -> int:
        """Calls this ingress replica has in flight to the model's replicas."""
        return self._in_flight

    async def _call(self, method: str, *args: Any) -> Any:
        self._in_flight += 1
        try:
            return await getattr(self.handle, method).remote(*args)
        except Exception as exc:
            raise _translate(self.name, exc) from exc
        finally:
            self._in_flight -= 1

    async def run(self, inputs: Any, params: Mapping[str, Any]) -> Result:
        """One call, batched on whichever replica Ray routes it to."""
        result: Result = await self._call("run", inputs, dict(params))
        return result

    async def stream(self, inputs: Any, params: Mapping[str, Any]) -> AsyncGenerator[str, None]:
        """The generated text through a streaming handle; closing it cancels the generation."""
        response: Any = self.handle.options(method_name="stream", stream=True).remote(inputs, dict(params))
        try:
            async for piece in response:
                yield str(piece)
        except Exception as exc:
            raise _translate(self.name, exc) from exc
        finally:
            response.cancel()

    async def parse_params(self, params: Mapping[str, Any]) -> None:
        """Validate task parameters on a replica (raises InvalidInput)."""
        await self._call("parse_params", dict(params))

    async def count_tokens(self, texts: Sequence[str], *, special: bool = True) -> list[int]:
        """Tokens per text, counted here with the replicas' tokenizer."""
        return await count_tokens(self.tokens, texts, special=special)

    async def chat_prompt(self, messages: Sequence[tuple[str, str]], images: Sequence[bytes]
                          ) -> tuple[Any, str, list[str]]:
        """The generate input for a chat, rendered on a replica (it holds the tokenizer)."""
        rendered: tuple[Any, str, list[str]] = await self._call("chat_prompt", list(messages), list(images))
        return rendered

    def close(self, *, timeout: float | None = None) -> None:
        """Nothing to close here: Ray stops the model's replicas (each drains its batcher)."""


class Ingress:
    """The ingress deployment: the single-process app over :class:`RemoteModel` s.

    Args:
        config: the server configuration (limits, auth, CORS).
        handles: a deployment handle per served model name.
    """

    def __init__(self, config: ServerConfig, handles: Mapping[str, DeploymentHandle]) -> None:
        self.config = config
        self.handles = dict(handles)

    async def __serve_build_asgi_app__(self) -> FastAPI:
        from ._app import create_app

        models = [await RemoteModel.connect(handle) for handle in self.handles.values()]
        return create_app(self.config, registry=ModelRegistry(models=models), load_models=False)


def build_app(config: ServerConfig, env: Mapping[str, str] | None = None) -> Any:
    """The Ray Serve application: a deployment per model and the ingress bound to them.

    Args:
        config: the server configuration; each model's ``num_replicas``/``autoscaling``/``threads``
            size its deployment.
        env: environment variables for the model replicas (see :data:`FORWARDED_ENV`).

    Returns:
        The bound application for ``serve.run``.
    """
    from ray import serve

    replica: Any = serve.deployment(ModelReplica)
    handles = {m.served_name: replica.options(**deployment_options(m, env)).bind(m, config.cache_dir, config.peers, config.kubo_api)
               for m in config.models}
    ingress: Any = serve.deployment(serve.ingress()(Ingress))
    # The ingress only awaits: it must hold every request the models' replicas and queues can
    # (Ray's default of 5 ongoing requests would make it the bottleneck).
    ongoing = sum(2 * (m.max_batch_size or _DEFAULT_BATCH) * (m.num_replicas if m.autoscaling is None
                  else int(m.autoscaling.get("max_replicas", 1))) + m.queue_size for m in config.models)
    ingress = ingress.options(name="ingress", num_replicas=1, ray_actor_options={"num_cpus": 0},
                              max_ongoing_requests=max(ongoing, 64))
    return ingress.bind(config, handles)


def serve_on_ray(config: ServerConfig, address: str | None = None, *, stop: threading.Event | None = None) -> None:
    """Deploy ``config`` on Ray Serve and serve HTTP on ``config.host:port`` until SIGTERM/SIGINT.

    Args:
        config: what to serve.
        address: a Ray cluster's address (``HOST:PORT``, ``auto``); None or empty
            starts a local one (with no dashboard, bound to the config's host).
        stop: an event that ends serving too (tests); SIGTERM and SIGINT set it.
    """
    import ray
    from ray import serve

    stop = stop or threading.Event()
    env = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
    if address:
        ray.init(address=address, logging_level=logging.WARNING)
    else:
        ray.init(include_dashboard=False, _node_ip_address=config.host, logging_level=logging.WARNING)
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        serve.start(http_options={"host": config.host, "port": config.port})
        serve.run(build_app(config, env), name=APP_NAME, route_prefix="/", logging_config=SERVE_LOGGING)
        log.info("serving %d model(s) on Ray Serve at http://%s:%d", len(config.models), config.host, config.port)
        stop.wait()
        log.info("stopping: Ray Serve drains the replicas")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        try:
            serve.shutdown()
        finally:
            ray.shutdown()
