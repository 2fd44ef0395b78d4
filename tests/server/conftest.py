"""Served models for the server tests: tiny synthetic ones, and the real Whisper tiny.en."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ipfs_accelerate.server import Limits, ModelConfig, ModelRegistry, ServedModel, ServerConfig, create_app

API_KEY = "test-key-123"


def served(endpoint: Any, name: str, **kwargs: Any) -> ServedModel:
    return ServedModel.from_endpoint(endpoint, ModelConfig(model=endpoint.handler.weights.model_id, name=name,
                                                           **kwargs))


@pytest.fixture(scope="session")
def tiny_endpoints(load_tiny: Any) -> dict[str, Any]:
    """Tiny synthetic endpoints, one per served task (built once per session)."""
    return {
        "mini": load_tiny("sentence-transformers/all-MiniLM-L6-v2", "embed"),
        "gpt": load_tiny("gpt2", "generate"),
        "mask": load_tiny("prajjwal1/bert-tiny", "fill-mask"),
    }


def make_app(endpoints: dict[str, Any], *, whisper: Any = None, limits: Limits | None = None,
             api_key: str | None = API_KEY, queue_size: int = 64, **config: Any) -> Any:
    models = [served(ep, name, queue_size=queue_size) for name, ep in endpoints.items()]
    if whisper is not None:
        models.append(served(whisper, "whisper-1", queue_size=queue_size))
    cfg = ServerConfig(api_key=api_key, limits=limits or Limits(), **config)
    return create_app(cfg, registry=ModelRegistry(models=models))


@pytest.fixture(scope="module")
def client(tiny_endpoints: dict[str, Any], real_whisper: Any) -> Iterator[Any]:
    from starlette.testclient import TestClient

    app = make_app(tiny_endpoints, whisper=real_whisper,
                   limits=Limits(max_body_bytes=2_000_000, max_items=8, max_tokens=64, max_tokens_per_item=40,
                                 truncate_items=False))
    with TestClient(app, headers={"Authorization": f"Bearer {API_KEY}"}, raise_server_exceptions=False) as c:
        yield c
