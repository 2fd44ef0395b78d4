"""``ipfs-accelerate serve``: environment variables are read here, at the edge."""

from __future__ import annotations

import argparse
import logging
import os
import signal
from pathlib import Path

from .._cli_args import require_listenable

__all__ = ["add_serve_parser", "run_serve"]


def run_serve(args: argparse.Namespace) -> int:
    """Build the config from the arguments and the environment, then run uvicorn until SIGTERM."""
    import uvicorn

    from ._app import create_app
    from ._config import load_config, models_or_defaults, parse_model_arg

    api_key = args.api_key or os.environ.get("IPFS_ACCELERATE_API_KEY") or None
    cache = os.environ.get("IPFS_ACCELERATE_CACHE")
    config = load_config(args.config, host=args.host, port=args.port, api_key=api_key, cache_dir=cache)
    models = [*config.models, *(parse_model_arg(m) for m in args.model or [])]
    from ..store.cli import ipfs_load_kwargs

    ipfs = ipfs_load_kwargs()  # IPFS_ACCELERATE_PEERS / IPFS_ACCELERATE_KUBO_API, for ipfs:// models
    config = load_config(args.config, host=args.host, port=args.port, api_key=api_key, cache_dir=cache,
                         models=models_or_defaults(models), peers=tuple(ipfs["peers"]), kubo_api=ipfs["kubo_api"],
                         access_log=True if getattr(args, "access_log", False) else None)
    if args.ray is None:  # on Ray, the cluster's HTTP proxy listens, perhaps on another machine
        require_listenable(config.host, config.port)
    logging.getLogger("ipfs_accelerate").setLevel(logging.INFO)  # the server's own log: loading, stopping
    if args.ray is not None:
        from .ray import serve_on_ray

        serve_on_ray(config, args.ray or os.environ.get("RAY_ADDRESS") or None)
        return 0
    from ..store.cli import store_from_env
    from ..store.gateway import gateway_router

    # The models' own store answers GET /ipfs/{cid} (trustless gateway) beside the OpenAI routes.
    app = create_app(config, extra_routers=[gateway_router(store_from_env())])
    server = uvicorn.Server(uvicorn.Config(app, host=config.host, port=config.port, log_level="info",
                                           access_log=config.access_log, timeout_keep_alive=int(config.keep_alive_s),
                                           timeout_graceful_shutdown=int(config.drain_s) or 1))
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again under the handlers that
    # were in place before it started; with these, a drained shutdown exits 0 instead of -15.
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda number, frame: stopped.append(number))
    server.run()
    logging.getLogger("ipfs_accelerate.server").info("stopped after draining (signals: %s)", stopped)
    return 0


def add_serve_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``serve`` (and ``bench-http``, the HTTP benchmark) on the CLI's subparsers."""
    p = subparsers.add_parser("serve", help="serve models over an OpenAI-compatible HTTP API")
    p.add_argument("--model", action="append", metavar="ID[=NAME]",
                   help="a model to serve, optionally under another name (repeatable); default: "
                        "MiniLM embeddings and Whisper tiny.en")
    p.add_argument("--config", type=Path, help="a TOML file with [[models]] tables and [limits]")
    p.add_argument("--host", default=None, help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=None, help="TCP port (default 8000)")
    p.add_argument("--api-key", default=None, help="require 'Authorization: Bearer KEY' (or IPFS_ACCELERATE_API_KEY)")
    p.add_argument("--access-log", action="store_true", help="log one line per request (off by default: it "
                                                                "costs server CPU at high request rates)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="deploy on Ray Serve: a deployment per model (num_replicas/autoscaling/threads in its "
                        "[[models]] table) behind the same app; ADDRESS joins a cluster (default RAY_ADDRESS, "
                        "else a local one)")
    p.set_defaults(func=run_serve)

    from ..bench.http import add_bench_http_parser

    add_bench_http_parser(subparsers)
