"""``create_app``: the FastAPI application (state on ``app.state``, never in module globals)."""

from __future__ import annotations

import asyncio
import gc
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from ._config import ServerConfig
from ._errors import ApiError, error_body, error_response, status_of
from ._metrics import Metrics
from ._registry import ModelRegistry

if TYPE_CHECKING:
    from fastapi import APIRouter, FastAPI

__all__ = ["create_app"]

log = logging.getLogger("ipfs_accelerate.server")

_OPEN_PATHS = frozenset({"/health", "/ready"})


class _Guard:
    """Pure ASGI middleware: API key, body size, and the per-request metrics."""

    def __init__(self, app: Any, *, config: ServerConfig, metrics: Metrics) -> None:
        self.app = app
        self.config = config
        self.metrics = metrics
        self.key = config.api_key.encode() if config.api_key else None

    async def _refuse(self, send: Any, status: int, message: str, code: str, headers: Sequence[tuple[bytes, bytes]] = ()
                      ) -> None:
        body = json.dumps(error_body(status, message, code=code)).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), *headers]})
        await send({"type": "http.response.body", "body": body})

    def _authorised(self, scope: Any) -> bool:
        if self.key is None:
            return True
        path: str = scope["path"]
        if scope.get("method") == "OPTIONS" and self.config.cors_origins:
            return True  # CORS preflights carry no credentials; the CORS middleware answers them
        if path in _OPEN_PATHS or (path == "/metrics" and not self.config.metrics_need_key):
            return True
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                scheme, _, token = value.partition(b" ")
                # compare_digest: the time taken does not tell how much of the key was right.
                return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key)
        return False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope.setdefault("state", {})
        status_box = {"status": 500}

        async def send_wrapper(message: Any) -> None:
            if message["type"] == "http.response.start":
                status_box["status"] = message["status"]
            await send(message)

        try:
            if not self._authorised(scope):
                await self._refuse(send_wrapper, 401, "missing or wrong API key (send Authorization: Bearer KEY)",
                                   "invalid_api_key", [(b"www-authenticate", b"Bearer")])
                return
            limit = self.config.limits.max_body_bytes
            declared = None
            for name, value in scope.get("headers", ()):
                if name == b"content-length" and value.isdigit():
                    declared = int(value)
            if declared is not None and declared > limit:
                await self._refuse(send_wrapper, 413, f"request body over the limit of {limit} bytes",
                                   "body_too_large")
                return
            receive_next = receive
            if declared is None and scope.get("method") in ("POST", "PUT", "PATCH"):
                # No length given (chunked): read the body here, bounded, so that a body over
                # the limit answers 413 rather than whatever the route's parser makes of it.
                chunks: list[bytes] = []
                seen = 0
                while True:
                    message = await receive()
                    if message["type"] != "http.request":
                        return  # the client went away
                    seen += len(message.get("body", b""))
                    if seen > limit:
                        await self._refuse(send_wrapper, 413, f"request body over the limit of {limit} bytes",
                                           "body_too_large")
                        return
                    chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        break
                replay: list[Any] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

                async def replayed() -> Any:
                    return replay.pop() if replay else await receive()

                receive_next = replayed

            await self.app(scope, receive_next, send_wrapper)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", None) or "unmatched"
            model = str(scope["state"].get("model", ""))
            self.metrics.requests.labels(path, model, str(status_box["status"])).inc()
            self.metrics.latency.labels(path, model).observe(time.perf_counter() - started)


def create_app(
    config: ServerConfig | None = None,
    *,
    registry: ModelRegistry | None = None,
    extra_routers: Sequence[APIRouter] = (),
    load_models: bool = True,
) -> FastAPI:
    """Build the OpenAI-compatible app.

    Args:
        config: the server configuration (limits, auth, CORS, models to load).
        registry: the served models; None builds one from ``config.models``.
        extra_routers: more routers to mount (e.g. the IPFS store's ``GET /ipfs/{cid}``).
        load_models: load the registry's configured models in a background thread at
            start-up (``/ready`` answers 503 until they are in); False serves what the
            registry already holds.

    Returns:
        The FastAPI app; its state holds ``config``, ``registry`` and ``metrics``.
    """
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    from ._routes import FastEmbeddings, build_router

    config = config or ServerConfig()
    if registry is None:
        registry = ModelRegistry(config.models, cache_dir=config.cache_dir, peers=config.peers,
                                 kubo_api=config.kubo_api)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loader: threading.Thread | None = None
        if load_models and registry.pending():
            def load() -> None:
                registry.load_all()
                for model in registry.all():
                    metrics.load_seconds.labels(model.name).set(model.load_s)
                if config.freeze_gc:
                    # The models and the libraries behind them are half a million objects that
                    # every full collection would walk again (a pause in the middle of requests,
                    # the p99); they live as long as the server, so take them out of its reach.
                    gc.collect()
                    gc.freeze()
                    log.info("%d objects frozen out of the cyclic garbage collector", gc.get_freeze_count())

            loader = threading.Thread(target=load, name="ipfs-accelerate-load", daemon=True)
            loader.start()
        for model in registry.all():
            metrics.load_seconds.labels(model.name).set(model.load_s)
        yield
        # Uvicorn has already drained in-flight requests (timeout_graceful_shutdown);
        # the batchers finish what is queued, bounded by drain_s.
        await asyncio.to_thread(registry.close, timeout=config.drain_s)

    app = FastAPI(title="ipfs_accelerate", version="1", lifespan=lifespan)
    app.state.config = config
    app.state.registry = registry
    app.state.metrics = metrics

    def answer(exc: ApiError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return answer(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(x) for x in first.get("loc", ()) if x not in ("body", "query", "path")]
        message = "; ".join(f"{'.'.join(str(x) for x in e.get('loc', ()))}: {e.get('msg')}" for e in errors[:5])
        return answer(ApiError(400, message or "invalid request", param=".".join(loc) or None, code="invalid_input"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = "no such route" if exc.status_code == 404 else str(exc.detail)
        return answer(ApiError(exc.status_code, message, headers=dict(exc.headers or {})))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return answer(status_of(exc))

    router = build_router()
    app.include_router(router)
    for extra in extra_routers:
        app.include_router(extra)
    # Innermost of the middleware: CORS and the guard (auth, body limit, metrics) still see
    # every request the fast /v1/embeddings path answers.
    embeddings = next(r for r in router.routes if getattr(r, "path", None) == "/v1/embeddings")
    app.add_middleware(FastEmbeddings, route=embeddings)
    if config.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(CORSMiddleware, allow_origins=list(config.cors_origins), allow_methods=["*"],
                           allow_headers=["*"])
    app.add_middleware(_Guard, config=config, metrics=metrics)
    return app
