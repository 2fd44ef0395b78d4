"""Every route and every error status through FastAPI's test client (tiny models, real Whisper)."""

from __future__ import annotations

import base64
import json
import re
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.server import Limits, ModelConfig, ModelRegistry, ServerConfig, create_app, load_config
from tests.server.conftest import API_KEY, make_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _error(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text
    return body["error"]


def test_health_ready_metrics_are_open_without_a_key(client: Any) -> None:
    bare = {"Authorization": ""}
    assert client.get("/health", headers=bare).json() == {"status": "ok"}
    ready = client.get("/ready", headers=bare)
    assert ready.status_code == 200 and ready.json()["ready"] is True
    assert "whisper-1" in ready.json()["models"]
    assert client.get("/metrics", headers=bare).status_code == 200


def test_missing_or_wrong_key_is_401(client: Any) -> None:
    err = _error(client.get("/v1/models", headers={"Authorization": ""}), 401)
    assert err["type"] == "authentication_error"
    _error(client.get("/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    _error(client.post("/v1/embeddings", json={"model": "mini", "input": "x"},
                       headers={"Authorization": f"Basic {API_KEY}"}), 401)


def test_models_list_and_get(client: Any, tiny_endpoints: dict[str, Any]) -> None:
    listed = client.get("/v1/models").json()
    assert listed["object"] == "list"
    by_id = {m["id"]: m for m in listed["data"]}
    assert set(by_id) == {"mini", "gpt", "mask", "whisper-1"}
    mini = client.get("/v1/models/mini").json()
    assert mini == by_id["mini"]
    assert mini["object"] == "model" and mini["task"] == "embed" and mini["weights"] == "synthetic"
    assert mini["backend"] == tiny_endpoints["mini"].runtime.backend
    assert by_id["whisper-1"]["weights"] == "pretrained"
    err = _error(client.get("/v1/models/nope"), 404)
    assert err["code"] == "model_not_found" and "nope" in err["message"]


def test_unknown_route_is_404_in_openai_shape(client: Any) -> None:
    _error(client.get("/v1/nothing-here"), 404)


def test_embeddings_float_match_the_endpoint(client: Any, tiny_endpoints: dict[str, Any]) -> None:
    texts = ["a first sentence", "and a second, longer sentence here"]
    response = client.post("/v1/embeddings", json={"model": "mini", "input": texts, "encoding_format": "float"})
    assert response.status_code == 200, response.text
    body = response.json()
    direct = tiny_endpoints["mini"](texts)
    assert [d["index"] for d in body["data"]] == [0, 1]
    for item, expected in zip(body["data"], direct.outputs, strict=True):
        assert item["object"] == "embedding"
        np.testing.assert_allclose(item["embedding"], expected, rtol=1e-4, atol=1e-5)
    tokenizer = tiny_endpoints["mini"].handler.tokenizer
    tokens = sum(len(tokenizer(t)["input_ids"]) for t in texts)
    assert body["usage"] == {"prompt_tokens": tokens, "total_tokens": tokens}
    assert body["provenance"]["weights"] == "synthetic" and body["model"] == "mini"
    expected_provenance = direct.provenance.to_dict()
    assert set(body["provenance"]) == set(expected_provenance)
    for key in ("model_id", "family", "task", "backend", "device", "precision", "weights", "source", "fallbacks"):
        assert body["provenance"][key] == expected_provenance[key], key
    assert response.headers["x-accelerate-backend"] == direct.provenance.backend
    assert response.headers["x-accelerate-weights"] == "synthetic"


def test_embeddings_base64_is_little_endian_float32(client: Any) -> None:
    floats = client.post("/v1/embeddings", json={"model": "mini", "input": "one sentence"}).json()
    b64 = client.post("/v1/embeddings", json={"model": "mini", "input": "one sentence",
                                              "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, floats["data"][0]["embedding"], rtol=1e-6)


@pytest.mark.parametrize(("payload", "param"), [
    ({"model": "mini", "input": "x", "dimensions": 8}, "dimensions"),
    ({"model": "mini", "input": ["x"] * 9}, "input"),
    ({"model": "mini", "input": "word " * 60}, "input"),
    ({"model": "mini", "input": []}, "input"),
    ({"model": "mini", "input": ["ok", "a\ud800b"]}, "input"),  # a lone surrogate: valid JSON, not valid text
    ({"model": "mini"}, "input"),
    ({"model": "mini", "input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"model": "gpt", "input": "x"}, "model"),
])
def test_embeddings_bad_requests_are_400(client: Any, payload: dict[str, Any], param: str) -> None:
    body = json.dumps(payload)  # ASCII escapes: the client would refuse to encode a lone surrogate itself
    err = _error(client.post("/v1/embeddings", content=body, headers={"content-type": "application/json"}), 400)
    assert err["param"] == param
    assert err["type"] == "invalid_request_error"


def test_unknown_model_is_404(client: Any) -> None:
    _error(client.post("/v1/embeddings", json={"model": "nope", "input": "x"}), 404)


def test_body_over_the_limit_is_413(client: Any) -> None:
    err = _error(client.post("/v1/embeddings", content=b"x" * 2_000_001,
                             headers={"content-type": "application/json"}), 413)
    assert "limit" in err["message"]


def test_chunked_body_over_the_limit_is_413_on_every_route(client: Any) -> None:
    def chunks() -> Any:
        for _ in range(5):
            yield b"x" * 500_000

    for route, content_type in (("/v1/embeddings", "application/json"),
                                ("/v1/audio/transcriptions", "multipart/form-data; boundary=abc")):
        err = _error(client.post(route, content=chunks(), headers={"content-type": content_type}), 413)
        assert err["code"] == "body_too_large"
    small = client.post("/v1/embeddings", content=iter([b'{"model": "mini", ', b'"input": "x"}']),
                        headers={"content-type": "application/json"})
    assert small.status_code == 200, small.text


def test_malformed_json_is_400(client: Any) -> None:
    _error(client.post("/v1/embeddings", content=b"{not json", headers={"content-type": "application/json"}), 400)


def test_completions_greedy_equal_the_endpoint(client: Any, tiny_endpoints: dict[str, Any]) -> None:
    prompt = "Hello, my name is"
    response = client.post("/v1/completions", json={"model": "gpt", "prompt": prompt, "max_tokens": 6,
                                                    "temperature": 0})
    assert response.status_code == 200, response.text
    body = response.json()
    expected = tiny_endpoints["gpt"](prompt, max_new_tokens=6, temperature=0.0).outputs[0]
    assert body["object"] == "text_completion"
    assert body["choices"][0]["text"] == expected
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    usage = body["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] == len(tiny_endpoints["gpt"].handler.tokenizer(prompt)["input_ids"])
    assert body["provenance"]["task"] == "generate"


@pytest.mark.parametrize(("payload", "param"), [
    ({"model": "gpt", "prompt": "x", "n": 2}, "n"),
    ({"model": "gpt", "prompt": "x", "max_tokens": 65}, "max_tokens"),
    ({"model": "gpt", "prompt": "x", "temperature": -1}, "temperature"),
    ({"model": "mini", "prompt": "x"}, "model"),
    ({"model": "gpt", "prompt": "a\ud800b"}, "prompt"),
    ({"model": "gpt", "prompt": "x", "echo": True}, "echo"),
    ({"model": "gpt", "prompt": "x", "logprobs": 2}, "logprobs"),
    ({"model": "gpt", "prompt": "x", "best_of": 3}, "best_of"),
    ({"model": "gpt", "prompt": "x", "presence_penalty": 0.5}, "presence_penalty"),
])
def test_completions_bad_requests_are_400(client: Any, payload: dict[str, Any], param: str) -> None:
    body = json.dumps(payload)  # ASCII escapes, as for the embeddings above
    response = client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
    assert _error(response, 400)["param"] == param


def test_parameters_that_would_change_the_answer_are_refused_not_ignored(client: Any) -> None:
    chat = {"model": "gpt", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    for extra, param in [({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
                         ({"response_format": {"type": "json_object"}}, "response_format"),
                         ({"logprobs": True, "top_logprobs": 2}, "logprobs")]:
        err = _error(client.post("/v1/chat/completions", json={**chat, **extra}), 400)
        assert err["param"] == param and err["code"] == "unsupported_parameter"
        assert err["message"].startswith(f"{param} ") and "is not supported by this server" in err["message"]
    # what asks for nothing is what some clients send on every request: accepted, as are unknown fields
    quiet = {"logprobs": False, "frequency_penalty": 0, "presence_penalty": 0.0, "logit_bias": {}, "tools": None,
             "response_format": {"type": "text"}, "user": "someone", "metadata": {"k": "v"}}
    assert client.post("/v1/chat/completions", json={**chat, **quiet}).status_code == 200
    completion = {"model": "gpt", "prompt": "hi", "max_tokens": 4, "echo": False, "best_of": 1, "suffix": None}
    assert client.post("/v1/completions", json=completion).status_code == 200


def test_chat_turns_without_content_are_400_except_the_assistants(client: Any) -> None:
    for role in ("user", "system"):
        body = {"model": "gpt", "max_tokens": 4, "messages": [{"role": role}]}
        err = _error(client.post("/v1/chat/completions", json=body), 400)
        assert err["param"] == "messages.0.content" and err["message"] == f"messages.0: a {role} message needs content"
    turns = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": None}, {"role": "user", "content": "?"}]
    assert client.post("/v1/chat/completions", json={"model": "gpt", "max_tokens": 4, "messages": turns}).status_code == 200


def test_chat_with_a_lone_surrogate_is_400(client: Any) -> None:
    body = json.dumps({"model": "gpt", "messages": [{"role": "user", "content": "a\ud800b"}], "max_tokens": 6})
    err = _error(client.post("/v1/chat/completions", content=body, headers={"content-type": "application/json"}), 400)
    assert err["param"] == "messages" and "not valid Unicode" in err["message"]


def _sse_events(text: str) -> list[str]:
    return [line[len("data: "):] for line in text.splitlines() if line.startswith("data: ")]


def test_chat_stream_sends_chunks_usage_and_raw_done(client: Any) -> None:
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]
    plain = client.post("/v1/chat/completions", json={"model": "gpt", "messages": messages, "max_tokens": 6,
                                                      "temperature": 0}).json()
    assert plain["object"] == "chat.completion"
    assert plain["choices"][0]["message"]["role"] == "assistant"
    with client.stream("POST", "/v1/chat/completions", json={
            "model": "gpt", "messages": messages, "max_tokens": 6, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        text = response.read().decode()
    events = _sse_events(text)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == plain["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == plain["usage"]["prompt_tokens"]


def test_completion_stream_matches_non_streamed(client: Any) -> None:
    payload = {"model": "gpt", "prompt": "The capital of France is", "max_tokens": 5, "temperature": 0}
    plain = client.post("/v1/completions", json=payload).json()["choices"][0]["text"]
    with client.stream("POST", "/v1/completions", json={**payload, "stream": True}) as response:
        events = _sse_events(response.read().decode())
    assert events[-1] == "[DONE]"
    assert "".join(json.loads(e)["choices"][0]["text"] for e in events[:-1]) == plain


def test_infer_fill_mask_answers_what_the_endpoint_answers(client: Any, tiny_endpoints: dict[str, Any]) -> None:
    text = "The capital of France is [MASK]."
    response = client.post("/v1/infer/mask", json={"inputs": [text], "parameters": {"top_k": 3}})
    assert response.status_code == 200, response.text
    direct = tiny_endpoints["mask"]([text], top_k=3)
    assert response.json()["outputs"] == json.loads(direct.to_json())["outputs"]
    assert response.json()["provenance"]["task"] == "fill-mask"
    err = _error(client.post("/v1/infer/mask", json={"inputs": [text], "parameters": {"bogus": 1}}), 400)
    assert "bogus" in err["message"]


@pytest.fixture(scope="module")
def speech(speech_wav: tuple[Path, str]) -> tuple[bytes, str]:
    path, text = speech_wav
    return path.read_bytes(), text


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def test_a_request_cannot_make_the_server_open_its_own_files(client: Any, speech_wav: tuple[Path, str]) -> None:
    path, _ = speech_wav  # a file on the server's disk that the model could read
    for body in ({"inputs": str(path)}, {"inputs": [str(path)]}, {"inputs": "/no/such/file.wav"}):
        err = _error(client.post("/v1/infer/whisper-1", json=body), 400)
        assert "does not open files or URLs given as text" in err["message"], err
    data_uri = "data:audio/wav;base64," + base64.b64encode(path.read_bytes()).decode()
    answer = client.post("/v1/infer/whisper-1", json={"inputs": data_uri})
    assert answer.status_code == 200 and answer.json()["outputs"][0]["text"].strip()  # the same file, sent


@pytest.mark.parametrize("response_format", ["json", "text", "srt", "vtt", "verbose_json"])
def test_transcription_formats(client: Any, speech: tuple[bytes, str], response_format: str) -> None:
    audio, spoken = speech
    response = client.post("/v1/audio/transcriptions", files={"file": ("speech.wav", audio, "audio/wav")},
                           data={"model": "whisper-1", "response_format": response_format})
    assert response.status_code == 200, response.text
    assert response.headers["x-accelerate-weights"] == "pretrained"
    if response_format in ("json", "verbose_json"):
        body = response.json()
        assert _words(body["text"]) == _words(spoken)
        if response_format == "verbose_json":
            assert body["segments"] and body["duration"] > 5
            assert all(s["end"] >= s["start"] for s in body["segments"])
            assert _words(" ".join(s["text"] for s in body["segments"])) == _words(spoken)
    elif response_format == "text":
        assert _words(response.text) == _words(spoken)
    else:
        lines = response.text.splitlines()
        arrow = [line for line in lines if "-->" in line]
        assert arrow
        if response_format == "vtt":
            assert lines[0] == "WEBVTT" and "." in arrow[0]
        else:
            assert lines[0] == "1" and "," in arrow[0]
        spoken_words = [line for line in lines if line and "-->" not in line and not line.isdigit()
                        and line != "WEBVTT"]
        assert _words(" ".join(spoken_words)) == _words(spoken)


def test_transcription_word_and_segment_granularities(client: Any, speech: tuple[bytes, str]) -> None:
    audio, spoken = speech
    files = {"file": ("speech.wav", audio, "audio/wav")}

    def verbose(*granularities: str) -> dict[str, Any]:
        response = client.post("/v1/audio/transcriptions", files=files,
                               data={"model": "whisper-1", "response_format": "verbose_json",
                                     "timestamp_granularities[]": list(granularities)})
        assert response.status_code == 200, response.text
        return dict(response.json())

    words_only = verbose("word")
    assert "segments" not in words_only
    assert _words(" ".join(w["word"] for w in words_only["words"])) == _words(spoken)
    assert all(w["end"] >= w["start"] >= 0 for w in words_only["words"])
    both = verbose("word", "segment")
    # The same words (their alignment differs a little when timestamp tokens are decoded too).
    assert both["segments"] and [w["word"] for w in both["words"]] == [w["word"] for w in words_only["words"]]
    assert "words" not in verbose("segment") and verbose("segment")["segments"]
    err = _error(client.post("/v1/audio/transcriptions", files=files,
                             data={"model": "whisper-1", "timestamp_granularities[]": "word"}), 400)
    assert "verbose_json" in err["message"]
    err = _error(client.post("/v1/audio/transcriptions", files=files,
                             data={"model": "whisper-1", "response_format": "verbose_json",
                                   "timestamp_granularities[]": "letter"}), 400)
    assert err["param"] == "timestamp_granularities"


def test_transcription_prompt_reaches_the_model(client: Any, speech: tuple[bytes, str]) -> None:
    from tests.fixtures.audio import speak_to_wav

    with tempfile.TemporaryDirectory() as folder:
        audio = speak_to_wav("The quick brown fox jumps over the lazy dog near the river bank.",
                             Path(folder) / "fox.wav").read_bytes()
    files = {"file": ("fox.wav", audio, "audio/wav")}
    plain = client.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1"}).json()["text"]
    prompted = client.post("/v1/audio/transcriptions", files=files,
                           data={"model": "whisper-1", "prompt": "Foxes and dogs. Riverbanks!"}).json()["text"]
    assert "riverbank" not in plain.lower() and "riverbank" in prompted.lower(), (plain, prompted)


def test_transcription_errors(client: Any, speech: tuple[bytes, str]) -> None:
    audio, _ = speech
    files = {"file": ("speech.wav", audio, "audio/wav")}
    _error(client.post("/v1/audio/transcriptions", files=files, data={"model": "whisper-1",
                                                                      "response_format": "xml"}), 400)
    _error(client.post("/v1/audio/transcriptions", files=files, data={"model": "mini"}), 400)
    _error(client.post("/v1/audio/transcriptions", files=files, data={"model": "nope"}), 404)
    _error(client.post("/v1/audio/transcriptions", files={"file": ("bad.wav", b"not audio", "audio/wav")},
                       data={"model": "whisper-1"}), 400)
    _error(client.post("/v1/audio/transcriptions", files={"file": ("big.wav", b"\0" * 2_000_100, "audio/wav")},
                       data={"model": "whisper-1"}), 413)


def test_metrics_count_requests_items_and_tokens(client: Any) -> None:
    client.post("/v1/embeddings", json={"model": "mini", "input": ["x", "y"]})
    text = client.get("/metrics").text
    assert 'ia_requests_total{model="mini",route="/v1/embeddings",status="200"}' in text
    assert 'ia_requests_total{model="mini",route="/v1/embeddings",status="400"}' in text
    assert 'ia_items_total{model="mini"}' in text
    for name in ("ia_request_latency_seconds_bucket", "ia_queue_seconds_bucket", "ia_inference_seconds_bucket",
                 "ia_batch_items_bucket", "ia_prompt_tokens_total", "ia_generated_tokens_total",
                 "ia_time_to_first_token_seconds_bucket", 'ia_queue_depth{model="mini"}'):
        assert name in text, name


def test_closed_batcher_answers_429_with_retry_after(tiny_endpoints: dict[str, Any]) -> None:
    from starlette.testclient import TestClient

    app = make_app({"mini": tiny_endpoints["mini"]}, api_key=None)
    app.state.registry.get("mini").batcher.close()
    with TestClient(app) as c:
        response = c.post("/v1/embeddings", json={"model": "mini", "input": "x"})
        err = _error(response, 429)
        assert err["type"] == "rate_limit_error" and response.headers["retry-after"] == "1"
        assert 'ia_rejected_total{model="mini"} 1.0' in c.get("/metrics").text


def test_not_ready_until_models_load() -> None:
    from starlette.testclient import TestClient

    config = ServerConfig(models=(ModelConfig(model="gpt2", name="later", weights="synthetic"),))
    app = create_app(config, load_models=False)
    with TestClient(app) as c:
        ready = c.get("/ready")
        assert ready.status_code == 503 and ready.json()["loading"] == ["later"]
        err = _error(c.post("/v1/completions", json={"model": "later", "prompt": "x"}), 503)
        assert err["code"] == "model_loading"


def test_metrics_can_require_the_key(tiny_endpoints: dict[str, Any]) -> None:
    from starlette.testclient import TestClient

    app = make_app({"mini": tiny_endpoints["mini"]}, metrics_need_key=True)
    with TestClient(app) as c:
        _error(c.get("/metrics"), 401)
        assert c.get("/metrics", headers={"Authorization": f"Bearer {API_KEY}"}).status_code == 200
        assert c.get("/health").status_code == 200


def test_config_toml(tmp_path: Path) -> None:
    path = tmp_path / "serve.toml"
    path.write_text('port = 9001\n[limits]\nmax_items = 3\n'
                    '[[models]]\nmodel = "gpt2"\nname = "g"\nweights = "synthetic"\nqueue_size = 4\n'
                    '[[models]]\nmodel = "prajjwal1/bert-tiny"\ntask = "fill-mask"\n')
    config = load_config(path, host="127.0.0.1")
    assert config.port == 9001 and config.limits == Limits(max_items=3)
    assert [m.served_name for m in config.models] == ["g", "prajjwal1/bert-tiny"]
    assert config.models[0].queue_size == 4 and config.models[1].task == "fill-mask"
    path.write_text('[[models]]\nmodel = "gpt2"\nbogus = 1\n')
    with pytest.raises(ValueError, match="bogus"):
        load_config(path)
    with pytest.raises(ValueError, match="share a name"):
        ModelRegistry([ModelConfig(model="a"), ModelConfig(model="b", name="a")])


@pytest.mark.parametrize(("toml", "message"), [
    ("port = 99999\n", r"^serve.toml: port must be a TCP port, 0 to 65535; got 99999$"),
    ("port = -1\n", r"^serve.toml: port must be an integer ≥ 0; got -1$"),
    ('port = "80"\n', r"^serve.toml: port must be an integer ≥ 0; got '80'$"),
    ("keep_alive_s = 0\n", r"^serve.toml: keep_alive_s must be a number > 0.0; got 0$"),
    ("drain_s = nan\n", r"^serve.toml: drain_s must be a number ≥ 0.0; got nan$"),
    ("[limits]\nmax_items = 0\n", r"^\[limits\]: max_items must be an integer ≥ 1; got 0$"),
    ("[limits]\nmax_audio_seconds = -5.0\n", r"^\[limits\]: max_audio_seconds must be a number > 0.0; got -5.0$"),
    ('[[models]]\nmodel = "gpt2"\nqueue_size = 0\n', r"^\[\[models\]\] #1: queue_size must be an integer ≥ 1; got 0$"),
    ('[[models]]\nmodel = "gpt2"\nthreads = 1.5\n', r"^\[\[models\]\] #1: threads must be an integer ≥ 1; got 1.5$"),
    ('[[models]]\nmodel = "gpt2"\nmax_wait_s = -0.1\n', r"^\[\[models\]\] #1: max_wait_s must be a number ≥ 0.0"),
])
def test_config_values_out_of_range_are_refused_when_read(tmp_path: Path, toml: str, message: str) -> None:
    path = tmp_path / "serve.toml"
    path.write_text(toml)
    with pytest.raises(ia.InvalidInput, match=message.replace("serve.toml", re.escape(str(path)))):
        load_config(path)


def test_extra_routers_mount_and_a_crash_is_a_logged_500_without_traceback(
        tiny_endpoints: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    from fastapi import APIRouter
    from starlette.testclient import TestClient

    router = APIRouter()

    @router.get("/ipfs/{cid}")
    async def crash(cid: str) -> dict[str, str]:
        if cid == "boom":
            raise RuntimeError("secret internal detail")
        return {"cid": cid}

    app = create_app(ServerConfig(), registry=ModelRegistry(models=[]), extra_routers=[router], load_models=False)
    with TestClient(app, raise_server_exceptions=False) as c, caplog.at_level("ERROR", "ipfs_accelerate.server"):
        assert c.get("/ipfs/bafy").json() == {"cid": "bafy"}
        response = c.get("/ipfs/boom")
    err = _error(response, 500)
    assert "secret" not in response.text and err["type"] == "server_error"
    request_id = response.headers["x-request-id"]
    assert request_id in err["message"]
    logged = [r for r in caplog.records if request_id in r.getMessage()]
    assert logged and logged[0].exc_info is not None


def test_cors_is_off_unless_configured(tiny_endpoints: dict[str, Any]) -> None:
    from starlette.testclient import TestClient

    preflight = {"Origin": "http://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization,content-type"}
    with TestClient(make_app({"mini": tiny_endpoints["mini"]})) as c:
        assert "access-control-allow-origin" not in c.options("/v1/embeddings", headers=preflight).headers
        assert "access-control-allow-origin" not in c.get("/health", headers={"Origin": "http://app.example"}).headers
    app = make_app({"mini": tiny_endpoints["mini"]}, cors_origins=("http://app.example",))
    with TestClient(app) as c:
        answer = c.options("/v1/embeddings", headers=preflight)
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == "http://app.example"
        assert c.options("/v1/embeddings", headers={**preflight, "Origin": "http://other.example"}).status_code == 400
        # The key is still needed for the real request.
        _error(c.post("/v1/embeddings", json={"model": "mini", "input": "x"}, headers={"Origin": "http://app.example"}),
               401)


def test_serve_refuses_an_address_it_cannot_listen_on_before_loading_anything(capsys: pytest.CaptureFixture[str]
                                                                              ) -> None:
    import socket

    from ipfs_accelerate.cli import main

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["serve", "--port", str(port), "--model", "no/such-model"]) == 2
        refused = (f"error: InvalidInput: cannot listen on 127.0.0.1:{port}: Address already in use (another server "
                   "on that port, or an address of another machine?)")
        assert capsys.readouterr().err.strip() == refused
        assert main(["models", "serve", "--port", str(port)]) == 2  # the store's gateway alone, the same check
        assert capsys.readouterr().err.strip() == refused
    # 192.0.2.1 is a documentation address (TEST-NET-1): numeric, so no name lookup, and on no machine
    assert main(["serve", "--host", "192.0.2.1", "--model", "no/such-model"]) == 2
    assert capsys.readouterr().err.startswith("error: InvalidInput: cannot listen on 192.0.2.1:8000: Cannot assign "
                                              "requested address")


def test_a_host_name_that_does_not_resolve_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    from ipfs_accelerate._cli_args import require_listenable

    def no_such_name(*args: Any, **kwargs: Any) -> Any:  # the resolver's answer, without asking a DNS server
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", no_such_name)
    with pytest.raises(ia.InvalidInput, match=r"^host no-such-host: not an address this machine has "
                                              r"\(Name or service not known\)$"):
        require_listenable("no-such-host", 8000)
