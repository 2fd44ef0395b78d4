"""A real uvicorn process driven by the official ``openai`` package; SIGTERM drains."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from tests.server._live import API_KEY, live_server, tiny_model_table, write_config

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path, real_whisper: Any) -> Iterator[tuple[str, Any]]:
    # real_whisper: the conversion of the packaged weights lands in the shared cache first.
    config = write_config(tmp_path_factory.mktemp("live") / "serve.toml", [
        tiny_model_table("sentence-transformers/all-MiniLM-L6-v2", "mini", task="embed"),
        tiny_model_table("sentence-transformers/all-MiniLM-L6-v2", "mini-tight", task="embed", queue_size=1,
                         max_batch_size=1, max_wait_s=0.0),
        tiny_model_table("gpt2", "gpt", task="generate"),
        {"model": "openai/whisper-tiny.en", "name": "whisper-1", "backend": "torch"},
    ], drain_s=30)
    with live_server(config, cache_dir) as running:
        yield running


@pytest.fixture(scope="module")
def client(server: tuple[str, Any]) -> Any:
    return openai.OpenAI(base_url=server[0] + "/v1", api_key=API_KEY, max_retries=0, timeout=120)


def test_embeddings_float_and_base64(client: Any) -> None:
    texts = ["hello there", "a second sentence"]
    as_float = client.embeddings.create(model="mini", input=texts, encoding_format="float")
    as_base64 = client.embeddings.create(model="mini", input=texts)  # the client's default: base64
    assert len(as_float.data) == 2 and as_float.usage.prompt_tokens > 0
    for a, b in zip(as_float.data, as_base64.data, strict=True):
        assert len(a.embedding) == 32  # the tiny MiniLM's width
        np.testing.assert_allclose(a.embedding, b.embedding, rtol=1e-6)


def test_completion_and_chat_stream(client: Any) -> None:
    done = client.completions.create(model="gpt", prompt="Hello", max_tokens=5, temperature=0)
    assert done.choices[0].finish_reason in ("stop", "length") and done.usage.completion_tokens <= 5
    plain = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=5, temperature=0)
    stream = client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "Hi"}],
                                            max_tokens=5, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    pieces, usage = [], None
    for chunk in stream:  # ends only if the raw "data: [DONE]" arrives
        if chunk.choices:
            pieces.append(chunk.choices[0].delta.content or "")
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(pieces) == plain.choices[0].message.content
    assert usage is not None and usage.prompt_tokens == plain.usage.prompt_tokens


def _words(text: str) -> list[str]:
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def test_transcription_every_format(client: Any, speech_wav: tuple[Path, str]) -> None:
    path, spoken = speech_wav
    for fmt in ("json", "text", "srt", "vtt", "verbose_json"):
        with path.open("rb") as f:
            out = client.audio.transcriptions.create(model="whisper-1", file=f, response_format=fmt)
        if fmt in ("json", "verbose_json"):
            assert _words(out.text) == _words(spoken), fmt
            if fmt == "verbose_json":
                assert out.segments and out.duration > 5
        else:
            text = out if isinstance(out, str) else str(out)
            lines = [ln for ln in text.splitlines() if ln and "-->" not in ln and not ln.isdigit() and ln != "WEBVTT"]
            assert _words(" ".join(lines)) == _words(spoken), fmt
            if fmt != "text":
                assert "-->" in text
    with path.open("rb") as f:
        out = client.audio.transcriptions.create(model="whisper-1", file=f, response_format="verbose_json",
                                                 timestamp_granularities=["word"], prompt="Please.")
    assert out.words and _words(" ".join(w.word for w in out.words)) == _words(spoken)


def test_client_error_classes(server: tuple[str, Any], client: Any) -> None:
    wrong = openai.OpenAI(base_url=server[0] + "/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    with pytest.raises(openai.NotFoundError) as missing:
        client.embeddings.create(model="nope", input="x")
    assert missing.value.body["code"] == "model_not_found"

    def one(_: int) -> str:
        try:
            client.embeddings.create(model="mini-tight", input="some words " * 20)
        except openai.RateLimitError:
            return "429"
        return "200"

    outcomes: list[str] = []
    with ThreadPoolExecutor(32) as pool:
        for _ in range(5):  # bounded: a queue of one under 32 callers overflows in the first round here
            outcomes += pool.map(one, range(64))
            if "429" in outcomes:
                break
    assert "429" in outcomes and "200" in outcomes
    metrics = httpx.get(server[0] + "/metrics").text
    counted = [ln for ln in metrics.splitlines() if ln.startswith('ia_rejected_total{model="mini-tight"}')]
    assert counted and float(counted[0].split()[-1]) == outcomes.count("429")


def test_sigterm_drains_in_flight_then_exits_0(tmp_path: Path, cache_dir: Path, real_whisper: Any,
                                               speech_wav: tuple[Path, str]) -> None:
    config = write_config(tmp_path / "drain.toml", [
        {"model": "openai/whisper-tiny.en", "name": "whisper-1", "backend": "torch"}], drain_s=60)
    path, spoken = speech_wav
    with live_server(config, cache_dir) as (base, process):
        answers: list[httpx.Response] = []

        def transcribe() -> None:
            answers.append(httpx.post(base + "/v1/audio/transcriptions", timeout=120,
                                      headers={"Authorization": f"Bearer {API_KEY}"},
                                      files={"file": ("s.wav", path.read_bytes(), "audio/wav")},
                                      data={"model": "whisper-1"}))

        threads = [threading.Thread(target=transcribe) for _ in range(3)]
        for t in threads:
            t.start()
        # SIGTERM once the server holds the requests (the queue or the worker has them).
        for _ in range(200):
            depth = httpx.get(base + "/metrics").text
            if 'ia_requests_total{model="whisper-1"' in depth or "ia_queue_depth{model=\"whisper-1\"}" in depth:
                break
            threading.Event().wait(0.02)
        threading.Event().wait(0.3)  # the other two callers have connected by now (same start)
        process.send_signal(signal.SIGTERM)
        for t in threads:
            t.join(timeout=120)
        assert process.wait(timeout=90) == 0
    assert len(answers) == 3
    for response in answers:
        assert response.status_code == 200, response.text
        assert _words(response.json()["text"]) == _words(spoken)


def test_a_client_leaving_mid_stream_leaves_the_server_serving(server: tuple[str, Any], client: Any) -> None:
    base, process = server
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": "gpt", "prompt": "Once upon a time", "max_tokens": 64, "temperature": 0, "stream": True}
    with httpx.stream("POST", base + "/v1/completions", json=body, headers=headers, timeout=60) as response:
        assert response.status_code == 200
        first = next(response.iter_lines())
        assert first.startswith("data: ")
    # The connection is closed after one event; the server goes on answering.
    done = client.completions.create(model="gpt", prompt="Hello", max_tokens=3, temperature=0)
    assert done.choices[0].text is not None and process.poll() is None
