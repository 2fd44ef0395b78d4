"""Media over HTTP: CLIP image embeddings and LLaVA chat take data: URIs (tiny synthetic models)."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.server import Limits, ModelConfig, ModelRegistry, ServedModel, ServerConfig, create_app

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _png(width: int = 40, height: int = 30, seed: int = 0) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _uri(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


@pytest.fixture(scope="module")
def media(load_tiny: Any) -> Iterator[tuple[Any, dict[str, Any]]]:
    from starlette.testclient import TestClient

    endpoints = {"clip-image": load_tiny("openai/clip-vit-base-patch32", "embed-image"),
                 "llava": load_tiny("llava-hf/llava-interleave-qwen-0.5b-hf", "generate")}
    models = [ServedModel.from_endpoint(ep, ModelConfig(model=ep.handler.weights.model_id, name=name))
              for name, ep in endpoints.items()]
    app = create_app(ServerConfig(limits=Limits(max_image_pixels=50 * 50)), registry=ModelRegistry(models=models))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, endpoints


def test_clip_image_embeddings_from_data_uris(media: tuple[Any, dict[str, Any]]) -> None:
    client, endpoints = media
    images = [_png(seed=1), _png(seed=2)]
    response = client.post("/v1/embeddings", json={"model": "clip-image", "input": [_uri(i) for i in images],
                                                   "encoding_format": "float"})
    assert response.status_code == 200, response.text
    direct = endpoints["clip-image"](images)
    for item, expected in zip(response.json()["data"], direct.outputs, strict=True):
        np.testing.assert_allclose(item["embedding"], np.asarray(expected).ravel(), rtol=1e-4, atol=1e-5)
    too_big = client.post("/v1/embeddings", json={"model": "clip-image", "input": _uri(_png(60, 60))})
    assert too_big.status_code == 400 and too_big.json()["error"]["code"] == "image_too_large"
    bad = client.post("/v1/embeddings", json={"model": "clip-image", "input": "data:image/png;base64,@@@"})
    assert bad.status_code == 400


def test_llava_chat_takes_image_parts(media: tuple[Any, dict[str, Any]]) -> None:
    client, endpoints = media
    image = _png(seed=3)
    response = client.post("/v1/chat/completions", json={
        "model": "llava", "max_tokens": 3, "temperature": 0,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "What is shown?"},
                                                  {"type": "image_url", "image_url": {"url": _uri(image)}}]}]})
    assert response.status_code == 200, response.text
    expected = endpoints["llava"]({"prompt": "What is shown?", "images": [image]}, max_new_tokens=3,
                                  temperature=0.0).outputs[0]
    assert response.json()["choices"][0]["message"]["content"] == expected
    remote = client.post("/v1/chat/completions", json={
        "model": "llava", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "http://example.com/x.png"}}]}]})
    assert remote.status_code == 400 and "data: URI" in remote.json()["error"]["message"]


def test_wav2vec2_and_translation_routes(load_tiny: Any, real_whisper: Any, speech_wav: tuple[Any, str]) -> None:
    from starlette.testclient import TestClient

    wav2vec2 = load_tiny("facebook/wav2vec2-base-960h", "transcribe")
    models = [ServedModel.from_endpoint(wav2vec2, ModelConfig(model="facebook/wav2vec2-base-960h", name="w2v")),
              ServedModel.from_endpoint(real_whisper, ModelConfig(model="openai/whisper-tiny.en", name="en"))]
    app = create_app(ServerConfig(), registry=ModelRegistry(models=models))
    audio = speech_wav[0].read_bytes()
    with TestClient(app, raise_server_exceptions=False) as client:
        files = {"file": ("s.wav", audio, "audio/wav")}
        response = client.post("/v1/audio/transcriptions", files=files,
                               data={"model": "w2v", "response_format": "verbose_json"})
        assert response.status_code == 200, response.text
        body = response.json()
        assert isinstance(body["text"], str) and body["provenance"]["family"] == "wav2vec2"
        assert body["provenance"]["weights"] == "synthetic" and body["segments"]
        # wav2vec2 has no translate task; English-only Whisper refuses to translate (400, not 500).
        assert client.post("/v1/audio/translations", files=files, data={"model": "w2v"}).status_code == 400
        refused = client.post("/v1/audio/translations", files=files, data={"model": "en"})
        assert refused.status_code == 400, refused.text
