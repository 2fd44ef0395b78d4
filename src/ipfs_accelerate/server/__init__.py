"""An OpenAI-compatible HTTP server over the engine: ``ipfs-accelerate serve`` or :func:`create_app`.

Every model is loaded once and served through its own
:class:`~ipfs_accelerate.engine.batcher.DynamicBatcher`; inference runs in the batcher's
worker thread, never on the event loop. See ``docs/server.md``.
"""

from __future__ import annotations

from ._app import create_app
from ._config import DEFAULT_MODELS, Limits, ModelConfig, ServerConfig, load_config, parse_model_arg
from ._errors import ApiError
from ._metrics import Metrics
from ._registry import PLAIN_CHAT_TEMPLATE, ModelRegistry, ModelService, ServedModel, plain_chat_prompt
from ._routes import decode_data_uri, render_transcript

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
    "create_app",
    "decode_data_uri",
    "load_config",
    "parse_model_arg",
    "plain_chat_prompt",
    "render_transcript",
]
