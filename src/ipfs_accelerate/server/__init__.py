"""An OpenAI-compatible HTTP server over the engine: ``ipfs-accelerate serve`` or :func:`create_app`.

Every model is loaded once and served through its own
:class:`~ipfs_accelerate.engine.batcher.DynamicBatcher`; inference runs in the batcher's
worker thread, never on the event loop. See ``docs/server.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ._app import create_app
    from ._config import DEFAULT_MODELS, Limits, ModelConfig, ServerConfig, load_config, parse_model_arg
    from ._errors import ApiError
    from ._metrics import Metrics
    from ._registry import (
        PLAIN_CHAT_TEMPLATE,
        ModelRegistry,
        ModelService,
        ServedModel,
        TokenCounter,
        plain_chat_prompt,
    )
    from ._routes import decode_data_uri, render_transcript

# Imported on first use: ``ipfs-accelerate`` registers ``serve`` through ``server.cli`` and must
# keep working (and starting fast) where the ``server`` extra (FastAPI) is not installed.
_HOMES = {
    "create_app": "._app", "DEFAULT_MODELS": "._config", "Limits": "._config", "ModelConfig": "._config",
    "ServerConfig": "._config", "load_config": "._config", "parse_model_arg": "._config", "ApiError": "._errors",
    "Metrics": "._metrics", "ModelRegistry": "._registry", "ModelService": "._registry",
    "ServedModel": "._registry", "PLAIN_CHAT_TEMPLATE": "._registry", "decode_data_uri": "._routes",
    "plain_chat_prompt": "._registry",
    "render_transcript": "._routes", "TokenCounter": "._registry",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(home, __name__), name)


__all__ = [
    "DEFAULT_MODELS",
    "PLAIN_CHAT_TEMPLATE",
    "ApiError",
    "Limits",
    "Metrics",
    "ModelConfig",
    "ModelRegistry",
    "ModelService",
    "ServedModel",
    "ServerConfig",
    "TokenCounter",
    "create_app",
    "decode_data_uri",
    "load_config",
    "parse_model_arg",
    "plain_chat_prompt",
    "render_transcript",
]
