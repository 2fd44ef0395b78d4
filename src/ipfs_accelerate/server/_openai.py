"""Request bodies of the OpenAI-compatible routes (pydantic models, extra fields ignored)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "InferRequest",
    "StreamOptions",
]


class _Body(BaseModel):
    # The official client sends fields we do not use (user, logit_bias …): ignore them.
    model_config = ConfigDict(extra="ignore")


class EmbeddingRequest(_Body):
    """``POST /v1/embeddings``."""

    model: str
    input: str | list[str]
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None


class StreamOptions(_Body):
    """``stream_options``: ``include_usage`` adds a final chunk with the usage."""

    include_usage: bool = False


class _Generation(_Body):
    model: str
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = 1
    stream: bool = False
    stream_options: StreamOptions | None = None


class CompletionRequest(_Generation):
    """``POST /v1/completions``."""

    prompt: str | list[str]


class ChatMessage(_Body):
    """One chat message; ``content`` is text or a list of parts (text, image_url)."""

    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Generation):
    """``POST /v1/chat/completions``."""

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)


class InferRequest(_Body):
    """``POST /v1/infer/{model}``: the task's inputs and parameters, media as ``data:`` URIs."""

    inputs: Any
    parameters: dict[str, Any] = Field(default_factory=dict)
