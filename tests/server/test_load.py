"""A bounded load test on a live server: 64 concurrent clients, a small queue on purpose."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import psutil
import pytest

from tests.server._live import API_KEY, live_server, tiny_model_table, write_config

pytestmark = pytest.mark.slow

CLIENTS = 64
REQUESTS = 2048


def _metric(text: str, prefix: str) -> float:
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(prefix))


def test_64_clients_only_429_all_counted_rss_bounded(tmp_path: Path, cache_dir: Path) -> None:
    config = write_config(tmp_path / "load.toml", [
        tiny_model_table("sentence-transformers/all-MiniLM-L6-v2", "mini", task="embed", queue_size=8,
                         max_batch_size=8),
    ])
    with live_server(config, cache_dir) as (base, process):
        rss = psutil.Process(process.pid)
        statuses: dict[int, int] = {}
        depths: list[float] = []

        async def run() -> float:
            headers = {"Authorization": f"Bearer {API_KEY}"}
            limits = httpx.Limits(max_connections=CLIENTS + 2, keepalive_expiry=2.0)
            async with httpx.AsyncClient(base_url=base, headers=headers, limits=limits, timeout=60) as http:
                await http.post("/v1/embeddings", json={"model": "mini", "input": "warm up"})
                before = rss.memory_info().rss
                todo = iter(range(REQUESTS))
                finished = asyncio.Event()

                async def client(index: int) -> None:
                    for n in todo:
                        r = await http.post("/v1/embeddings",
                                            json={"model": "mini", "input": f"sentence {n} from client {index}"})
                        statuses[r.status_code] = statuses.get(r.status_code, 0) + 1
                        if r.status_code == 429:
                            assert r.headers["retry-after"] == "1"

                async def sample() -> None:
                    while not finished.is_set():
                        text = (await http.get("/metrics")).text
                        depths.append(_metric(text, 'ia_queue_depth{model="mini"}'))
                        await asyncio.sleep(0.05)

                sampler = asyncio.create_task(sample())
                await asyncio.gather(*(client(i) for i in range(CLIENTS)))
                finished.set()
                await sampler
                return float(before)

        before = asyncio.run(run())
        after = rss.memory_info().rss
        metrics = httpx.get(base + "/metrics").text
    assert sum(statuses.values()) == REQUESTS
    assert set(statuses) <= {200, 429}, statuses
    assert statuses.get(200, 0) > 0 and statuses.get(429, 0) > 0, statuses
    assert _metric(metrics, 'ia_rejected_total{model="mini"}') == statuses[429]
    counted = _metric(metrics, 'ia_requests_total{model="mini",route="/v1/embeddings",status="429"}')
    assert counted == statuses[429]
    assert max(depths) > 0  # the queue depth gauge moved under load
    assert after - before < 300 * 2**20, f"RSS grew by {(after - before) / 2**20:.0f} MiB"
