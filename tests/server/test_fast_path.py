"""The lean serving path: /v1/embeddings answered as FastAPI's route answers, token counts, access log, GC."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from ipfs_accelerate.server import ServerConfig, TokenCounter, load_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# FastAPI parses any application/*+json body; the fast path takes only application/json, so the
# same body under this type goes through FastAPI's route (pydantic, routing, handlers).
VIA_FASTAPI = {"content-type": "application/x-test+json"}


def _post(client: Any, payload: Any, headers: dict[str, str] | None = None) -> Any:
    return client.post("/v1/embeddings", content=json.dumps(payload).encode(),
                       headers={"content-type": "application/json", **(headers or {})})


@pytest.mark.parametrize("payload", [
    {"model": "mini", "input": "one sentence"},
    {"model": "mini", "input": ["a first sentence", "and a second, longer one"], "encoding_format": "float"},
    {"model": "mini", "input": ["base64 please"], "encoding_format": "base64", "user": "ignored"},
])
def test_fast_path_answers_what_the_fastapi_route_answers(client: Any, payload: dict[str, Any]) -> None:
    fast = _post(client, payload)
    routed = _post(client, payload, VIA_FASTAPI)
    assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
    assert fast.headers["content-type"] == routed.headers["content-type"] == "application/json"
    assert fast.json() == routed.json()
    accelerate = {k: v for k, v in fast.headers.items() if k.startswith("x-accelerate-")}
    assert accelerate and accelerate == {k: v for k, v in routed.headers.items() if k.startswith("x-accelerate-")}
    assert fast.json()["provenance"]["model_id"] == fast.headers["x-accelerate-model"]


@pytest.mark.parametrize(("payload", "param", "code"), [
    ({"model": "mini", "input": []}, "input", "invalid_input"),  # the fast path's own check
    ({"model": "mini", "input": ["x"] * 9}, "input", "too_many_items"),
    ({"model": "mini", "input": "word " * 60}, "input", "too_many_tokens"),
    ({"model": "gpt", "input": "x"}, "model", "wrong_task"),
    ({"model": "mini", "input": "x", "dimensions": 8}, "dimensions", "unsupported_parameter"),  # FastAPI's
    ({"model": "mini", "input": [1, 2]}, "input.str", "invalid_input"),  # falls through to pydantic
    ({"model": "mini", "input": "x", "encoding_format": "hex"}, "encoding_format", "invalid_input"),
    ({"input": "x"}, "model", "invalid_input"),
])
def test_errors_are_the_same_on_both_paths(client: Any, payload: dict[str, Any], param: str, code: str) -> None:
    fast = _post(client, payload)
    routed = _post(client, payload, VIA_FASTAPI)
    assert fast.status_code == routed.status_code == 400, (fast.text, routed.text)
    assert fast.json() == routed.json()
    assert fast.json()["error"]["param"] == param and fast.json()["error"]["code"] == code


def test_unknown_model_and_broken_json(client: Any) -> None:
    missing = _post(client, {"model": "nope", "input": "x"})
    assert missing.status_code == 404 and missing.json() == _post(client, {"model": "nope", "input": "x"},
                                                                  VIA_FASTAPI).json()
    broken = client.post("/v1/embeddings", content=b'{"model": "mini", "input": ', headers={
        "content-type": "application/json"})
    assert broken.status_code == 400 and broken.json()["error"]["code"] == "invalid_input"


def test_the_fast_path_still_asks_for_the_key_and_counts_metrics(client: Any) -> None:
    assert _post(client, {"model": "mini", "input": "x"}, {"Authorization": "Bearer wrong"}).status_code == 401
    before = client.get("/metrics").text
    _post(client, {"model": "mini", "input": "counted"})
    after = client.get("/metrics").text
    line = 'ia_requests_total{model="mini",route="/v1/embeddings",status="200"}'

    def value(text: str) -> float:
        return next((float(row.split()[-1]) for row in text.splitlines() if row.startswith(line)), 0.0)

    assert value(after) == value(before) + 1


def test_floats_are_the_float32_values(client: Any, tiny_endpoints: dict[str, Any]) -> None:
    body = _post(client, {"model": "mini", "input": "exact values"}).json()
    expected = np.asarray(tiny_endpoints["mini"](["exact values"]).outputs[0], dtype=np.float32).ravel()
    got = np.asarray(body["data"][0]["embedding"], dtype=np.float64)
    # The shortest decimals of each float32: they read back to the very same float32 values.
    np.testing.assert_array_equal(got.astype(np.float32), expected)


@pytest.mark.parametrize("name", ["mini", "gpt", "mask"])
def test_token_counter_counts_as_the_tokenizer(tiny_endpoints: dict[str, Any], name: str) -> None:
    tokenizer = tiny_endpoints[name].handler.tokenizer
    counter = TokenCounter(tokenizer)
    texts = ["Hello there.", "word " * 700, "Ünïcödé and émojis 🙂 mixed in", ""]
    for special in (True, False):
        expected = [len(ids) for ids in tokenizer(texts, add_special_tokens=special)["input_ids"]]
        assert counter.count(texts, special=special) == expected
        assert [counter.count([t], special=special)[0] for t in texts] == expected
    assert max(counter.count(texts)) > 512  # never cut at the tokenizer's own window


def test_the_access_log_is_off_unless_asked(tmp_path: Any) -> None:
    assert ServerConfig().access_log is False
    path = tmp_path / "serve.toml"
    path.write_text("access_log = true\n", encoding="utf-8")
    assert load_config(path).access_log is True


@pytest.mark.parametrize("freeze", [True, False])
def test_loaded_models_are_frozen_out_of_the_gc(cache_dir: Any, freeze: bool) -> None:
    import gc
    import threading
    import time

    from starlette.testclient import TestClient

    from ipfs_accelerate.server import ModelConfig, create_app
    from tests.fixtures.models import TINY

    model = "sentence-transformers/all-MiniLM-L6-v2"
    config = ServerConfig(models=(ModelConfig(model=model, name="m", weights="synthetic", backend="torch",
                                              precision="fp32", config_overrides=TINY[model]),),
                          cache_dir=str(cache_dir), freeze_gc=freeze)
    gc.unfreeze()
    try:
        with TestClient(create_app(config)) as c:
            deadline = time.monotonic() + 120
            while c.get("/ready").status_code != 200:
                assert time.monotonic() < deadline, c.get("/ready").json()
                time.sleep(0.1)
            for thread in threading.enumerate():  # the loader freezes after the last model is in
                if thread.name == "ipfs-accelerate-load":
                    thread.join(60)
            assert (gc.get_freeze_count() > 0) is freeze
            assert c.post("/v1/embeddings", json={"model": "m", "input": "still served"}).status_code == 200
    finally:
        gc.unfreeze()
