"""``serve --ray``: the server on a local two-node Ray cluster (127.0.0.1 only).

The head and a second node are started with ``ray start --block`` in their own process
groups (their files under the test's temp dir) and stopped by those groups' ids at the end.
A tiny synthetic MiniLM (its weights in the session cache) is served by 2 replicas.
"""

from __future__ import annotations

import concurrent.futures
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.fixtures.models import TINY, cosine

pytest.importorskip("ray.serve")
httpx = pytest.importorskip("httpx")

pytestmark = pytest.mark.ray

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SRC = str(Path(__file__).resolve().parents[2] / "src")
RAY = str(Path(sys.executable).with_name("ray"))
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "RAY_DEDUP_LOGS": "0"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _model_config(cache_dir: Path, replicas: int) -> dict[str, Any]:
    return {"model": MODEL, "task": "embed", "name": "mini", "backend": "torch", "weights": "synthetic",
            "config_overrides": TINY[MODEL], "max_batch_size": 8, "queue_size": 64, "num_replicas": replicas,
            "threads": 1}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> Iterator[dict[str, Any]]:
    """A head and a second node on 127.0.0.1; yields their address and environment."""
    temp = tmp_path_factory.mktemp("ray")
    env = {**os.environ, **RAY_ENV, "PYTHONPATH": SRC + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "IPFS_ACCELERATE_CACHE": str(cache_dir)}
    port = _free_port()
    address = f"127.0.0.1:{port}"
    common = ["--node-ip-address", "127.0.0.1", "--block", "--disable-usage-stats"]
    groups: list[subprocess.Popen[bytes]] = []
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    try:
        groups.append(subprocess.Popen(
            [RAY, "start", "--head", "--port", str(port), "--num-cpus", "2", "--include-dashboard=false",
             "--temp-dir", str(temp), "--ray-client-server-port", str(_free_port()), *common],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        _wait(lambda: _port_open(port), 60, "the Ray head")
        groups.append(subprocess.Popen(
            [RAY, "start", "--address", address, "--num-cpus", "1", *common],
            env=env, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        import ray

        ray.init(address=address, logging_level="WARNING")
        _wait(lambda: len([n for n in ray.nodes() if n["Alive"]]) == 2, 60, "the second Ray node")
        yield {"address": address, "env": env, "temp": temp}
    finally:
        import ray

        if ray.is_initialized():
            from ray import serve

            serve.shutdown()
            ray.shutdown()
        for group in reversed(groups):
            if group.poll() is None:
                os.killpg(group.pid, signal.SIGTERM)
        for group in reversed(groups):
            try:
                group.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(group.pid, signal.SIGKILL)
                group.wait(timeout=10)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _embed(client: Any, base: str, texts: list[str]) -> Any:
    return client.post(f"{base}/v1/embeddings", json={"model": "mini", "input": texts}, timeout=60)


def test_serve_ray_cli_serves_and_stops_on_sigterm(cluster: dict[str, Any], load_tiny: Any,
                                                    tmp_path: Path) -> None:
    """``ipfs-accelerate serve --ray ADDRESS`` of a model known only by its CID: the replica fetches
    it from a peer (node A's trustless gateway) into an empty cache, verified; the server is ready,
    answers with the CID as its source, and exits 0 on SIGTERM (port closed)."""
    from fastapi import FastAPI

    from ipfs_accelerate.store.gateway import gateway_router
    from ipfs_accelerate.store.models import ModelStore
    from tests.store.conftest import serve as serve_in_thread

    node_a = ModelStore(tmp_path / "node-a" / "ipfs")
    root = node_a.add(Path(load_tiny(MODEL, "embed").handler.weights.path)).root
    gateway = FastAPI()
    gateway.include_router(gateway_router(node_a))
    empty_cache = tmp_path / "replica-cache"
    config = tmp_path / "serve.toml"
    config.write_text(f'cache_dir = "{empty_cache}"\n[[models]]\nmodel = "ipfs://{root}"\ntask = "embed"\n'
                      'name = "mini"\nbackend = "torch"\nmax_batch_size = 8\nqueue_size = 64\n'
                      "num_replicas = 1\nthreads = 1\n", encoding="utf-8")
    with serve_in_thread(gateway) as peer:
        env = {**cluster["env"], "IPFS_ACCELERATE_PEERS": peer}
        _serve_ray_cli_until_sigterm(cluster["address"], config, env, root)


def _serve_ray_cli_until_sigterm(address: str, config: Path, env: dict[str, str], root: str) -> None:
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "ipfs_accelerate.cli", "serve", "--ray", address,
                             "--config", str(config), "--port", str(port)], env=env,
                            start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        with httpx.Client() as client:
            def ready() -> bool:
                if proc.poll() is not None:
                    raise AssertionError(f"serve --ray exited early: {proc.stdout.read().decode()[-3000:]}")  # type: ignore[union-attr]
                try:
                    return client.get(f"{base}/ready", timeout=5).status_code == 200
                except httpx.HTTPError:
                    return False

            _wait(ready, 120, "serve --ray to be ready")
            response = _embed(client, base, ["hello world"])
            assert response.status_code == 200, response.text
            body = response.json()
            assert len(body["data"][0]["embedding"]) == TINY[MODEL]["hidden_size"]
            assert body["provenance"]["replica"] and body["provenance"]["node"]
            assert body["provenance"]["source"] == f"ipfs:{root}"
            assert body["provenance"]["weights"] == "synthetic"  # stays labelled after the exchange
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=90) == 0
        assert not _port_open(port)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


@pytest.fixture(scope="module")
def deployed(cluster: dict[str, Any], cache_dir: Path) -> Iterator[str]:
    """The app with 2 replicas of ``mini`` on the cluster; yields its base URL."""
    from ray import serve

    from ipfs_accelerate.server import ModelConfig, ServerConfig
    from ipfs_accelerate.server.ray import APP_NAME, SERVE_LOGGING, build_app

    port = _free_port()
    gpt = ModelConfig(model="gpt2", task="generate", name="gpt", backend="torch", weights="synthetic",
                      config_overrides=TINY["gpt2"], max_batch_size=4, threads=1)
    config = ServerConfig(models=(ModelConfig(**_model_config(cache_dir, replicas=2)), gpt), port=port,
                          cache_dir=str(cache_dir))
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        serve.run(build_app(config, {"IPFS_ACCELERATE_CACHE": str(cache_dir)}), name=APP_NAME, route_prefix="/",
                  logging_config=SERVE_LOGGING)
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()


def _replicas_of(base: str, requests: int) -> tuple[set[str], set[str], list[Any]]:
    with httpx.Client() as client, concurrent.futures.ThreadPoolExecutor(8) as pool:
        texts = [[f"sentence number {i}"] for i in range(requests)]
        responses = list(pool.map(lambda t: _embed(client, base, t), texts))
    for r in responses:
        assert r.status_code == 200, r.text
    provenance = [r.json()["provenance"] for r in responses]
    return {p["replica"] for p in provenance}, {p["node"] for p in provenance}, responses


def test_requests_spread_over_two_replicas_and_match_the_endpoint(deployed: str, load_tiny: Any) -> None:
    replicas, nodes, responses = _replicas_of(deployed, 32)
    assert len(replicas) == 2, replicas
    assert all(nodes)
    # The replicas load the same synthetic weights from the cache: same vectors as in process.
    local = load_tiny(MODEL, "embed")
    for i in (0, 17):
        direct = np.asarray(local([f"sentence number {i}"]).outputs[0])
        served = np.asarray(responses[i].json()["data"][0]["embedding"])
        assert cosine(direct, served) > 0.999
    assert responses[0].headers["x-accelerate-task"] == "embed"


def test_chat_streams_through_a_streaming_handle(deployed: str) -> None:
    """SSE chat through the ingress and a streaming handle: the same text as the non-streamed answer."""
    import json

    payload = {"model": "gpt", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5,
               "temperature": 0}
    with httpx.Client(timeout=60) as client:
        plain = client.post(f"{deployed}/v1/chat/completions", json=payload)
        assert plain.status_code == 200, plain.text
        with client.stream("POST", f"{deployed}/v1/chat/completions", json={**payload, "stream": True}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            lines = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(line) for line in lines[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert streamed == plain.json()["choices"][0]["message"]["content"]
    assert plain.json()["provenance"]["replica"] and chunks[0]["provenance"]["replica"]


def test_killing_a_replica_loses_no_request_and_ray_brings_it_back(deployed: str) -> None:
    import ray

    before, _, _ = _replicas_of(deployed, 16)
    assert len(before) == 2
    names = [a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
             if "SERVE_REPLICA" in a["name"] and "model-mini" in a["name"]]
    assert len(names) == 2, names
    victim = names[0]
    statuses: list[int] = []

    def client_with_retries(i: int) -> bool:
        """One client's request; a 429/503 is retried (as the Retry-After asks), anything else fails."""
        with httpx.Client() as client:
            for _ in range(40):
                try:
                    r = _embed(client, deployed, [f"load {i}"])
                except httpx.HTTPError:
                    return False
                statuses.append(r.status_code)
                if r.status_code == 200:
                    return True
                if r.status_code not in (429, 503):
                    return False
                time.sleep(0.25)
        return False

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(client_with_retries, i) for i in range(60)]
        _wait(lambda: len(statuses) >= 10, 60, "the load to start")
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        done = [f.result(timeout=120) for f in futures]
    assert all(done), sorted(set(statuses))
    assert set(statuses) <= {200, 429, 503}

    def replaced() -> set[str] | None:
        now, _, _ = _replicas_of(deployed, 16)
        return now if len(now) == 2 and now != before else None

    after = _wait(replaced, 90, "Ray to bring the replica back")
    assert len(after & before) == 1  # the survivor, plus a new replica
