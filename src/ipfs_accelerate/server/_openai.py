"""Request bodies of the OpenAI-compatible routes (pydantic models).

Fields the official API has and these routes do not use are kept aside (``model_extra``): most
change nothing here (``user``, ``metadata`` …), and the ones that would change what is
generated or returned (:data:`NOT_IMPLEMENTED`) are refused with a 400 instead of ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "NOT_IMPLEMENTED",
    "ChatMessage",
    "ChatRequest",
    "CompletionRequest",
    "EmbeddingRequest",
    "InferRequest",
    "StreamOptions",
]


# OpenAI parameters that change what is generated or returned and that no model served here
# implements, with the values that ask for nothing (some clients send them on every request).
# None is always such a value. Any other value answers 400: a client asking for echo or
# log-probabilities must not get an answer without them as if it had what it asked for.
NOT_IMPLEMENTED: dict[str, tuple[Any, ...]] = {
    "best_of": (1,),
    "echo": (False,),
    "frequency_penalty": (0,),
    "functions": ([],),
    "logit_bias": ({},),
    "logprobs": (False, 0),
    "presence_penalty": (0,),
    "response_format": ({"type": "text"},),
    "suffix": ("",),
    "tools": ([],),
    "top_logprobs": (0,),
}


class _Body(BaseModel):
    # The official client sends fields we do not use (user, metadata …): kept aside, unused.
    model_config = ConfigDict(extra="allow")


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

    def not_implemented(self) -> tuple[str, Any] | None:
        """The first parameter of :data:`NOT_IMPLEMENTED` that asks for something, and its value."""
        for name, value in (self.model_extra or {}).items():
            if name in NOT_IMPLEMENTED and value is not None and value not in NOT_IMPLEMENTED[name]:
                return name, value
        return None


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
