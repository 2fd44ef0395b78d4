"""Shared pieces of the store tests: a tiny model folder, HTTP servers on 127.0.0.1."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

TINY_MODEL = "prajjwal1/bert-tiny"
TEXTS = ["hello world", "content addressed weights"]


@pytest.fixture(scope="session")
def tiny_endpoint(load_tiny: Any) -> Any:
    """A tiny synthetic BERT loaded from its folder (the reference outputs)."""
    return load_tiny(TINY_MODEL)


@pytest.fixture(scope="session")
def tiny_folder(tiny_endpoint: Any) -> Path:
    """The folder of that tiny model (config, safetensors, tokenizer, synthetic marker)."""
    return Path(tiny_endpoint.handler.weights.path)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
