"""The routes: OpenAI-compatible ones under /v1, /v1/infer, and the operational ones."""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import json
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import orjson
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from .._exceptions import InvalidInput, Overloaded
from ..engine.result import Result, to_jsonable
from ..media.remote import RemoteText
from ._errors import ApiError, error_response, status_of
from ._openai import ChatRequest, CompletionRequest, EmbeddingRequest, InferRequest

if TYPE_CHECKING:
    from ._config import Limits
    from ._metrics import Metrics
    from ._registry import ModelRegistry, ModelService

__all__ = ["FastEmbeddings", "build_router", "decode_data_uri", "render_transcript"]

EMBED_TASKS = frozenset({"embed", "embed-text", "embed-image", "embed-audio"})
GENERATE_TASKS = frozenset({"generate", "text2text"})
SPEECH_TASKS = frozenset({"transcribe"})
RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")

def decode_data_uri(text: str) -> bytes:
    """The bytes of a ``data:[type][;base64],payload`` URI.

    Raises:
        InvalidInput: the URI is malformed.
    """
    head, sep, payload = text.partition(",")
    if not sep or not head.startswith("data:"):
        raise InvalidInput("a media input must be a data: URI (data:TYPE;base64,PAYLOAD)")
    if head.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidInput(f"the data: URI's base64 payload is invalid: {exc}") from exc
    from urllib.parse import unquote_to_bytes

    return unquote_to_bytes(payload)


def _decode_media(value: Any, limits: Limits) -> Any:
    """Replace every ``data:`` URI string in a JSON value by its bytes (checked against the limits).

    Every other string becomes :class:`RemoteText`: the model reads it as text, and a media
    loader refuses it as a file path (a client does not get to open this machine's files).
    """
    if isinstance(value, str):
        if not value.startswith("data:"):
            return RemoteText(value)
        data = decode_data_uri(value)
        _check_image(value, data, limits)
        return data
    if isinstance(value, list):
        return [_decode_media(v, limits) for v in value]
    if isinstance(value, dict):
        return {k: _decode_media(v, limits) for k, v in value.items()}
    return value


def _check_image(uri: str, data: bytes, limits: Limits) -> None:
    if not uri.startswith("data:image/"):
        return
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:  # reads the header only
            width, height = image.size
    except Exception:  # noqa: BLE001 - not decodable here: the family's loader names the error
        return
    if width * height > limits.max_image_pixels:
        raise ApiError(400, f"image of {width}x{height} pixels is over the limit of {limits.max_image_pixels}",
                       code="image_too_large")


def _provenance_headers(result: Result) -> dict[str, str]:
    p = result.provenance
    fallbacks = "; ".join(f"{f.tried} -> {f.next}" for f in p.fallbacks)
    headers = {"x-accelerate-model": p.model_id, "x-accelerate-family": p.family, "x-accelerate-task": p.task,
               "x-accelerate-backend": p.backend, "x-accelerate-device": p.device,
               "x-accelerate-precision": p.precision, "x-accelerate-weights": p.weights,
               "x-accelerate-batch-size": str(p.batch_size), "x-accelerate-fallbacks": fallbacks or "none"}
    # Header values must be latin-1; provenance is mostly ASCII already.
    return {k: v.encode("ascii", "replace").decode("ascii") for k, v in headers.items()}


def _stream_provenance(model: ModelService) -> dict[str, Any]:
    return model.provenance().to_dict()


def _state(request: Request) -> tuple[ModelRegistry, Metrics, Limits]:
    app = request.app
    return app.state.registry, app.state.metrics, app.state.config.limits


def _served(request: Request, name: str, tasks: frozenset[str] | None = None, route: str = "") -> ModelService:
    request.state.model = name
    return _find_model(request.app.state.registry, name, tasks, route)


def _find_model(registry: ModelRegistry, name: str, tasks: frozenset[str] | None = None, route: str = ""
                ) -> ModelService:
    model = registry.get(name)
    if model is None:
        if name in registry.pending() and name not in registry.errors:
            raise ApiError(503, f"model {name!r} is still loading; retry later", code="model_loading",
                           headers={"Retry-After": "5"})
        known = ", ".join(m.name for m in registry.all()) or "none"
        raise ApiError(404, f"the model {name!r} does not exist here; served: {known}", param="model",
                       code="model_not_found")
    if tasks is not None and model.task not in tasks:
        raise ApiError(400, f"model {name!r} serves the task {model.task!r}, which {route} does not take "
                            f"(it takes {', '.join(sorted(tasks))}); use /v1/infer/{name} for it",
                       param="model", code="wrong_task")
    return model


async def _run(request: Request, model: ModelService, inputs: Any, params: Mapping[str, Any] | None = None) -> Result:
    """One call through the model's batcher, with its metrics; errors become ApiError."""
    return await _run_model(request.app.state.metrics, model, inputs, params)


async def _prompt_tokens(model: ModelService, texts: Sequence[str], *, param: str) -> list[int]:
    """Tokens per request text; a text no tokenizer can take is a 400 naming ``param``."""
    try:
        return await model.count_tokens(texts)
    except InvalidInput as exc:
        raise ApiError(400, str(exc), param=param, code="invalid_input") from exc


async def _run_model(metrics: Metrics, model: ModelService, inputs: Any, params: Mapping[str, Any] | None = None
                     ) -> Result:
    depth = metrics.queue_depth.labels(model.name)
    try:
        result = await model.run(inputs, params or {})
    except Overloaded as exc:
        metrics.rejected.labels(model.name).inc()
        raise status_of(exc) from exc
    except ApiError:
        raise
    except Exception as exc:
        raise status_of(exc) from exc
    finally:
        depth.set(model.queued())
    t = result.timings
    metrics.queue_time.labels(model.name).observe(t.get("queue_s", 0.0))
    metrics.inference_time.labels(model.name).observe(t.get("compute_s", t.get("total_s", 0.0)))
    metrics.batch_size.labels(model.name).observe(t.get("batch_items", len(result.outputs)))
    metrics.items.labels(model.name).inc(len(result.outputs))
    return result


def _provenance_dict(result: Result) -> dict[str, Any]:
    """``Provenance.to_dict`` without its deep copies (a batch's callers share one provenance)."""
    p = result.provenance
    return {"model_id": p.model_id, "family": p.family, "task": p.task, "backend": p.backend, "device": p.device,
            "precision": p.precision, "batch_size": p.batch_size, "weights": p.weights, "source": p.source,
            "fallbacks": [{"stage": f.stage, "tried": f.tried, "reason": f.reason, "next": f.next}
                          for f in p.fallbacks],
            "notes": list(p.notes), "runtime": to_jsonable(dict(p.runtime)), "replica": p.replica, "node": p.node}


def _json(content: Any, result: Result | None = None, status: int = 200) -> Response:
    headers = _provenance_headers(result) if result is not None else None
    return JSONResponse(content, status_code=status, headers=headers)


# -- embeddings ---------------------------------------------------------------------------

async def _embeddings(request: Request, body: EmbeddingRequest) -> Response:
    request.state.model = body.model
    state = request.app.state
    content, headers = await _embed(state.registry, state.metrics, state.config.limits, body.model, body.input,
                                    body.encoding_format, body.dimensions)
    return Response(content, media_type="application/json", headers=headers)


async def _embed(registry: ModelRegistry, metrics: Metrics, limits: Limits, name: str, text: str | Sequence[str],
                 encoding_format: str, dimensions: int | None) -> tuple[bytes, dict[str, str]]:
    """The ``/v1/embeddings`` answer (JSON bytes and provenance headers) to an already-parsed request."""
    model = _find_model(registry, name, EMBED_TASKS, "/v1/embeddings")
    texts = [text] if isinstance(text, str) else list(text)
    if not texts:
        raise ApiError(400, "input is empty", param="input", code="invalid_input")
    if len(texts) > limits.max_items:
        raise ApiError(400, f"{len(texts)} inputs is over the limit of {limits.max_items}", param="input",
                       code="too_many_items")
    if dimensions is not None:
        raise ApiError(400, f"model {model.name!r} does not support dimensions (its vectors have a fixed size)",
                       param="dimensions", code="unsupported_parameter")
    inputs: list[Any] = texts
    tokens: list[int]
    if model.task in ("embed-image", "embed-audio"):
        inputs = [_decode_media(t, limits) for t in texts]
        tokens = [0] * len(texts)
    else:
        tokens = await _prompt_tokens(model, texts, param="input")
        too_long = [i for i, n in enumerate(tokens) if n > limits.max_tokens_per_item]
        if too_long and not limits.truncate_items:
            raise ApiError(400, f"input {too_long[0]} has {tokens[too_long[0]]} tokens, over the limit of "
                                f"{limits.max_tokens_per_item}", param="input", code="too_many_tokens")
    result = await _run_model(metrics, model, inputs)
    prompt_tokens = sum(tokens)
    metrics.prompt_tokens.labels(model.name).inc(prompt_tokens)
    data = []
    for index, vector in enumerate(result.outputs):
        # orjson writes a float32 array as the shortest decimals that read back to the same
        # float32s, ten times faster than json.dumps of tolist()'s float64 digits.
        array = np.ascontiguousarray(vector, dtype=np.float32).ravel()
        embedding: Any = (base64.b64encode(array.astype("<f4", copy=False).tobytes()).decode("ascii")
                          if encoding_format == "base64" else array)
        data.append({"object": "embedding", "index": index, "embedding": embedding})
    content = orjson.dumps({"object": "list", "data": data, "model": model.name,
                            "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
                            "provenance": _provenance_dict(result)}, option=orjson.OPT_SERIALIZE_NUMPY)
    return content, _provenance_headers(result)


class FastEmbeddings:
    """Pure-ASGI ``POST /v1/embeddings`` for the usual request, in front of FastAPI's route.

    A JSON body with a string ``model``, an ``input`` that is a string or a list of strings,
    ``encoding_format`` ``float``/``base64`` (or none) and no ``dimensions`` is answered here,
    through the same code as the FastAPI route (:func:`_embed`) and with the same bytes, errors
    and headers, but without the routing, dependency and pydantic layers (half of a small
    request's server CPU). Every other request, including every malformed one, goes on to
    FastAPI unchanged (its body replayed), which answers it as before; the route stays in the
    OpenAPI schema.

    Args:
        app: the rest of the ASGI stack.
        route: the FastAPI route of ``/v1/embeddings`` (the metrics label it by its path).
    """

    def __init__(self, app: Any, *, route: Any) -> None:
        self.app = app
        self.route = route
        self.path = route.path

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"] != self.path or scope["method"] != "POST" \
                or not _is_json(scope):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        request = _plain_embedding_request(body)
        if request is None:
            replay: list[Any] = [{"type": "http.request", "body": body, "more_body": False}]

            async def replayed() -> Any:
                return replay.pop() if replay else await receive()

            await self.app(scope, replayed, send)
            return
        name, text, encoding_format = request
        scope["route"] = self.route
        scope.setdefault("state", {})["model"] = name
        state = scope["app"].state
        try:
            content, headers = await _embed(state.registry, state.metrics, state.config.limits, name, text,
                                            encoding_format, None)
        except Exception as exc:  # noqa: BLE001 - answered as the app's handlers answer it
            await error_response(status_of(exc))(scope, receive, send)
            return
        raw = [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json"),
               *((k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items())]
        await send({"type": "http.response.start", "status": 200, "headers": raw})
        await send({"type": "http.response.body", "body": content})


def _is_json(scope: Any) -> bool:
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return bool(value.partition(b";")[0].strip().lower() == b"application/json")
    return False


def _plain_embedding_request(body: bytes) -> tuple[str, str | list[str], str] | None:
    """``(model, input, encoding_format)`` of a body in the usual shape, else None (FastAPI decides)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    if type(data) is not dict or data.get("dimensions") is not None:
        return None
    model, text, encoding_format = data.get("model"), data.get("input"), data.get("encoding_format", "float")
    if type(model) is not str or encoding_format not in ("float", "base64") or type(encoding_format) is not str:
        return None
    if type(text) is str or (type(text) is list and all(type(t) is str for t in text)):
        return model, text, encoding_format
    return None


# -- completions and chat -----------------------------------------------------------------

def _generation_params(body: CompletionRequest | ChatRequest, limits: Limits, *, default_max: int,
                       extra_stop: Sequence[str] = ()) -> dict[str, Any]:
    if body.n != 1:
        raise ApiError(400, "only n=1 is supported", param="n", code="unsupported_parameter")
    asked = body.not_implemented()
    if asked is not None:
        name, value = asked
        shown = json.dumps(value, default=str)
        shown = shown if len(shown) <= 60 else shown[:57] + "…"
        raise ApiError(400, f"{name} {shown} is not supported by this server (leave it out, or send its default)",
                       param=name, code="unsupported_parameter")
    max_tokens = body.max_tokens
    if isinstance(body, ChatRequest) and body.max_completion_tokens is not None:
        max_tokens = body.max_completion_tokens
    max_tokens = max_tokens or default_max
    if max_tokens > limits.max_tokens:
        raise ApiError(400, f"max_tokens {max_tokens} is over the limit of {limits.max_tokens}",
                       param="max_tokens", code="max_tokens_over_limit")
    stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    stop = [s for s in stop if s] + list(extra_stop)
    if len(stop) > 4:
        raise ApiError(400, "at most 4 stop sequences", param="stop", code="invalid_input")
    params: dict[str, Any] = {"max_new_tokens": max_tokens,
                              "temperature": 1.0 if body.temperature is None else body.temperature,
                              "top_p": 1.0 if body.top_p is None else body.top_p}
    if stop:
        params["stop"] = tuple(stop)
    if body.seed is not None:
        params["seed"] = body.seed
    return params


def _finish_reason(generated: int, max_tokens: int) -> str:
    return "length" if generated >= max_tokens else "stop"


async def _chat_input(model: ModelService, body: ChatRequest, limits: Limits) -> tuple[Any, str, list[str]]:
    """The generate input for a chat, the prompt text (for token counts) and extra stop strings."""
    messages: list[tuple[str, str]] = []
    images: list[bytes] = []
    for index, message in enumerate(body.messages):
        if message.content is None and message.role != "assistant":
            # as OpenAI: only an assistant turn (one that called tools) may come without content
            raise ApiError(400, f"messages.{index}: a {message.role} message needs content",
                           param=f"messages.{index}.content", code="invalid_input")
        if message.content is None or isinstance(message.content, str):
            messages.append((message.role, message.content or ""))
            continue
        texts = []
        for part in message.content:
            kind = part.get("type")
            if kind == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif kind == "image_url":
                if not model.chat_images:
                    raise ApiError(400, f"model {model.name!r} does not take images", param=f"messages.{index}",
                                   code="invalid_input")
                url = part.get("image_url")
                url = url.get("url") if isinstance(url, dict) else url
                if not isinstance(url, str) or not url.startswith("data:"):
                    raise ApiError(400, "image_url must be a data: URI here (no URL is fetched)",
                                   param=f"messages.{index}", code="invalid_input")
                images.append(_decode_media(url, limits))
            else:
                raise ApiError(400, f"unsupported content part {kind!r}", param=f"messages.{index}",
                               code="invalid_input")
        messages.append((message.role, " ".join(texts)))
    return await model.chat_prompt(messages, images)


def _sse(data: Any) -> bytes:
    return f"data: {json.dumps(data)}\n\n".encode()


async def _stream(request: Request, model: ModelService, inputs: Any, params: dict[str, Any], *, chat: bool,
                  prompt_tokens: int, include_usage: bool) -> AsyncIterator[bytes]:
    """SSE chunks of one generation; a client that goes away stops reading (and the stream closes)."""
    _, metrics, _ = _state(request)
    ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
    created = int(time.time())
    kind = "chat.completion.chunk" if chat else "text_completion"
    provenance = _stream_provenance(model)

    def chunk(text: str | None, finish: str | None, *, first: bool = False) -> dict[str, Any]:
        if chat:
            delta: dict[str, Any] = {}
            if first:
                delta["role"] = "assistant"
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
        else:
            choice = {"index": 0, "text": text or "", "finish_reason": finish, "logprobs": None}
        return {"id": ident, "object": kind, "created": created, "model": model.name, "choices": [choice],
                "provenance": provenance}

    started = time.perf_counter()
    pieces = model.stream(inputs, params)
    text = ""
    first = True
    try:
        if chat:
            yield _sse(chunk(None, None, first=True))
            first = False
        async for piece in pieces:
            if not text:
                metrics.ttft.labels(model.name).observe(time.perf_counter() - started)
            text += str(piece)
            yield _sse(chunk(str(piece), None, first=first))
            first = False
        generated = (await model.count_tokens([text], special=False))[0] if text else 0
        metrics.generated_tokens.labels(model.name).inc(generated)
        metrics.prompt_tokens.labels(model.name).inc(prompt_tokens)
        metrics.items.labels(model.name).inc()
        yield _sse(chunk(None, _finish_reason(generated, params["max_new_tokens"])))
        if include_usage:
            yield _sse({"id": ident, "object": kind, "created": created, "model": model.name, "choices": [],
                        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                                  "total_tokens": prompt_tokens + generated}})
        yield b"data: [DONE]\n\n"
    finally:
        await pieces.aclose()


def _stream_response(iterator: AsyncIterator[bytes], model: ModelService) -> Response:
    p = model.provenance()
    headers = _provenance_headers(Result(outputs=[], provenance=p, timings={}))
    headers.update({"cache-control": "no-cache", "x-accel-buffering": "no"})
    return StreamingResponse(iterator, media_type="text/event-stream", headers=headers)


async def _completions(request: Request, body: CompletionRequest) -> Response:
    model = _served(request, body.model, GENERATE_TASKS, "/v1/completions")
    _, metrics, limits = _state(request)
    prompts = [body.prompt] if isinstance(body.prompt, str) else list(body.prompt)
    if not prompts or len(prompts) > limits.max_items:
        raise ApiError(400, f"prompt must hold 1 to {limits.max_items} strings", param="prompt", code="invalid_input")
    params = _generation_params(body, limits, default_max=16)
    prompt_counts = await _prompt_tokens(model, prompts, param="prompt")
    if body.stream:
        if len(prompts) != 1:
            raise ApiError(400, "stream takes exactly one prompt", param="prompt", code="invalid_input")
        try:
            await model.parse_params(params)
        except Exception as exc:
            raise status_of(exc) from exc
        include = bool(body.stream_options and body.stream_options.include_usage)
        return _stream_response(_stream(request, model, prompts[0], params, chat=False,
                                        prompt_tokens=prompt_counts[0], include_usage=include), model)
    result = await _run(request, model, prompts, params)
    texts = [str(t) for t in result.outputs]
    generated = await model.count_tokens(texts, special=False)
    _count_generation(metrics, model, result, sum(prompt_counts), sum(generated))
    choices = [{"index": i, "text": t, "finish_reason": _finish_reason(g, params["max_new_tokens"]),
                "logprobs": None} for i, (t, g) in enumerate(zip(texts, generated, strict=True))]
    return _json({"id": "cmpl-" + uuid.uuid4().hex, "object": "text_completion", "created": int(time.time()),
                  "model": model.name, "choices": choices,
                  "usage": {"prompt_tokens": sum(prompt_counts), "completion_tokens": sum(generated),
                            "total_tokens": sum(prompt_counts) + sum(generated)},
                  "provenance": _provenance_dict(result)}, result)


def _count_generation(metrics: Metrics, model: ModelService, result: Result, prompt: int, generated: int) -> None:
    metrics.prompt_tokens.labels(model.name).inc(prompt)
    metrics.generated_tokens.labels(model.name).inc(generated)
    ttft = result.timings.get("time_to_first_token_s")
    if ttft is not None:
        metrics.ttft.labels(model.name).observe(ttft)


async def _chat(request: Request, body: ChatRequest) -> Response:
    model = _served(request, body.model, GENERATE_TASKS, "/v1/chat/completions")
    _, metrics, limits = _state(request)
    inputs, prompt, extra_stop = await _chat_input(model, body, limits)
    params = _generation_params(body, limits, default_max=256, extra_stop=extra_stop)
    prompt_tokens = (await _prompt_tokens(model, [prompt], param="messages"))[0]
    if body.stream:
        try:
            await model.parse_params(params)
        except Exception as exc:
            raise status_of(exc) from exc
        include = bool(body.stream_options and body.stream_options.include_usage)
        return _stream_response(_stream(request, model, inputs, params, chat=True, prompt_tokens=prompt_tokens,
                                        include_usage=include), model)
    result = await _run(request, model, [inputs], params)
    text = str(result.outputs[0])
    generated = (await model.count_tokens([text], special=False))[0] if text else 0
    _count_generation(metrics, model, result, prompt_tokens, generated)
    return _json({"id": "chatcmpl-" + uuid.uuid4().hex, "object": "chat.completion", "created": int(time.time()),
                  "model": model.name,
                  "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                               "finish_reason": _finish_reason(generated, params["max_new_tokens"]),
                               "logprobs": None}],
                  "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": generated,
                            "total_tokens": prompt_tokens + generated},
                  "provenance": _provenance_dict(result)}, result)


# -- audio --------------------------------------------------------------------------------

def _audio_seconds(data: bytes) -> float | None:
    try:
        import soundfile

        return float(soundfile.info(io.BytesIO(data)).duration)
    except Exception:  # noqa: BLE001 - not readable here: the family's decoder names the error
        return None


def _timestamp(seconds: float, sep: str) -> str:
    ms = round(seconds * 1000)
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def _segments(transcript: Any, duration: float | None) -> list[dict[str, Any]]:
    segments = [dict(s) for s in getattr(transcript, "segments", ()) or ()]
    if not segments:
        segments = [{"start": 0.0, "end": duration or 0.0, "text": str(transcript)}]
    return [{"id": i, "seek": 0, "start": float(s.get("start") or 0.0), "end": float(s.get("end") or 0.0),
             "text": str(s.get("text", "")), "tokens": [], "temperature": 0.0, "avg_logprob": 0.0,
             "compression_ratio": 0.0, "no_speech_prob": 0.0} for i, s in enumerate(segments)]


def render_transcript(transcript: Any, response_format: str, *, duration: float | None, task: str,
                      granularities: tuple[str, ...] = ("segment",)) -> tuple[str | dict[str, Any], str]:
    """The body of a transcription in ``response_format``, and its media type.

    ``verbose_json`` carries ``segments`` and/or ``words`` as ``granularities`` ask (OpenAI's
    ``timestamp_granularities[]``; segments when none is given).
    """
    text = str(transcript).strip()
    if response_format == "json":
        return {"text": text}, "application/json"
    if response_format == "text":
        return text + "\n", "text/plain; charset=utf-8"
    segments = _segments(transcript, duration)
    if response_format == "verbose_json":
        body: dict[str, Any] = {"task": task, "language": getattr(transcript, "language", None) or "english",
                                "duration": duration or (segments[-1]["end"] if segments else 0.0), "text": text}
        if "segment" in granularities:
            body["segments"] = segments
        if "word" in granularities:
            body["words"] = [{"word": str(w["word"]), "start": float(w["start"]), "end": float(w["end"])}
                             for w in getattr(transcript, "words", ())]
        return body, "application/json"
    if response_format == "srt":
        blocks = [f"{i + 1}\n{_timestamp(s['start'], ',')} --> {_timestamp(s['end'], ',')}\n{s['text'].strip()}\n"
                  for i, s in enumerate(segments)]
        return "\n".join(blocks), "text/plain; charset=utf-8"
    blocks = [f"{_timestamp(s['start'], '.')} --> {_timestamp(s['end'], '.')}\n{s['text'].strip()}\n"
              for s in segments]
    return "WEBVTT\n\n" + "\n".join(blocks), "text/vtt; charset=utf-8"


async def _audio(request: Request, *, translate: bool) -> Response:
    form = await request.form(max_part_size=request.app.state.config.limits.max_body_bytes)
    model_name = form.get("model")
    upload = form.get("file")
    if not isinstance(model_name, str) or not model_name:
        raise ApiError(400, "the form needs a model field", param="model", code="invalid_input")
    model = _served(request, model_name, SPEECH_TASKS, "/v1/audio/translations" if translate
                    else "/v1/audio/transcriptions")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, "the form needs a file field (the audio)", param="file", code="invalid_input")
    _, _, limits = _state(request)
    response_format = str(form.get("response_format") or "json")
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                       param="response_format", code="invalid_input")
    granularities = [str(g) for g in form.getlist("timestamp_granularities[]")]
    unknown = sorted(set(granularities) - {"word", "segment"})
    if unknown:
        raise ApiError(400, f"timestamp_granularities takes word and/or segment, not {', '.join(unknown)}",
                       param="timestamp_granularities", code="invalid_input")
    if granularities and response_format != "verbose_json":
        raise ApiError(400, "timestamp_granularities needs response_format=verbose_json",
                       param="timestamp_granularities", code="invalid_input")
    data = await upload.read()
    if not data:
        raise ApiError(400, "the uploaded file is empty", param="file", code="invalid_input")
    duration = await asyncio.to_thread(_audio_seconds, data)
    if duration is not None and duration > limits.max_audio_seconds:
        raise ApiError(400, f"audio of {duration:.1f} s is over the limit of {limits.max_audio_seconds} s",
                       param="file", code="audio_too_long")
    fields = model.param_names
    if "word" in granularities and "word_timestamps" not in fields:
        raise ApiError(400, f"model {model.name!r} gives no word timestamps; segment timestamps it does",
                       param="timestamp_granularities", code="unsupported_parameter")
    params: dict[str, Any] = {}
    prompt = form.get("prompt")
    if isinstance(prompt, str) and prompt and "prompt" in fields:
        params["prompt"] = prompt
    if "word" in granularities:
        params["word_timestamps"] = True
    language = form.get("language")
    if isinstance(language, str) and language and "language" in fields:
        params["language"] = language
    temperature = form.get("temperature")
    if isinstance(temperature, str) and temperature and "temperature" in fields:
        try:
            params["temperature"] = float(temperature)
        except ValueError as exc:
            raise ApiError(400, "temperature must be a number", param="temperature", code="invalid_input") from exc
    segments = response_format in ("srt", "vtt") or (response_format == "verbose_json" and (
        not granularities or "segment" in granularities))
    if "timestamps" in fields and segments:
        params["timestamps"] = True
    if translate:
        if "task" not in fields:
            raise ApiError(400, f"model {model.name!r} cannot translate", param="model", code="invalid_input")
        params["task"] = "translate"
    result = await _run(request, model, [data], params)
    body, media_type = render_transcript(result.outputs[0], response_format, duration=duration,
                                         task="translate" if translate else "transcribe",
                                         granularities=tuple(granularities) or ("segment",))
    if isinstance(body, dict):
        body["provenance"] = _provenance_dict(result)
        return _json(body, result)
    return PlainTextResponse(body, media_type=media_type, headers=_provenance_headers(result))


# -- the router ---------------------------------------------------------------------------

def build_router() -> APIRouter:
    """Every route of the server (the app adds error handlers and middleware)."""
    router = APIRouter()

    @router.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/ready")
    async def ready(request: Request) -> Response:
        registry: ModelRegistry = request.app.state.registry
        body = {"ready": registry.ready, "models": [m.name for m in registry.all()],
                "loading": [n for n in registry.pending() if n not in registry.errors], "failed": registry.errors}
        return JSONResponse(body, status_code=200 if registry.ready else 503)

    @router.get("/metrics")
    async def metrics(request: Request) -> Response:
        m: Metrics = request.app.state.metrics
        for model in request.app.state.registry.all():
            m.queue_depth.labels(model.name).set(model.queued())
        return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    @router.get("/v1/models")
    async def list_models(request: Request) -> dict[str, Any]:
        registry: ModelRegistry = request.app.state.registry
        return {"object": "list", "data": [m.describe() for m in registry.all()]}

    @router.get("/v1/models/{model_id:path}")
    async def get_model(request: Request, model_id: str) -> dict[str, Any]:
        return _served(request, model_id).describe()

    @router.post("/v1/embeddings")
    async def embeddings(request: Request, body: EmbeddingRequest) -> Response:
        return await _embeddings(request, body)

    @router.post("/v1/completions")
    async def completions(request: Request, body: CompletionRequest) -> Response:
        return await _completions(request, body)

    @router.post("/v1/chat/completions")
    async def chat(request: Request, body: ChatRequest) -> Response:
        return await _chat(request, body)

    @router.post("/v1/audio/transcriptions")
    async def transcriptions(request: Request) -> Response:
        return await _audio(request, translate=False)

    @router.post("/v1/audio/translations")
    async def translations(request: Request) -> Response:
        return await _audio(request, translate=True)

    @router.post("/v1/infer/{model_id:path}")
    async def infer(request: Request, model_id: str, body: InferRequest) -> Response:
        model = _served(request, model_id)
        if "inputs" in body.parameters:
            raise ApiError(400, "parameters cannot be named 'inputs'", param="parameters", code="invalid_input")
        limits: Limits = request.app.state.config.limits
        inputs = _decode_media(body.inputs, limits)
        if isinstance(inputs, list) and len(inputs) > limits.max_items:
            raise ApiError(400, f"{len(inputs)} inputs is over the limit of {limits.max_items}", param="inputs",
                           code="too_many_items")
        result = await _run(request, model, inputs, body.parameters)
        return _json({"model": model.name, "outputs": to_jsonable(result.outputs),
                      "provenance": _provenance_dict(result), "timings": to_jsonable(dict(result.timings))},
                     result)

    return router
