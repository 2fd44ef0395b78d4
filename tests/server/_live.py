"""A real ``ipfs-accelerate serve`` process on a free 127.0.0.1 port, for the live tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from ipfs_accelerate.bench.http import stop_process
from tests.fixtures.models import TINY

API_KEY = "live-key-456"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"no TOML for {value!r}")


def tiny_model_table(model: str, name: str, **keys: Any) -> dict[str, Any]:
    """A ``[[models]]`` table for a tiny synthetic model (the tests' own architecture sizes)."""
    return {"model": model, "name": name, "weights": "synthetic", "backend": "torch",
            "config_overrides": TINY.get(model, {}), **keys}


def write_config(path: Path, models: list[dict[str, Any]], **top: Any) -> Path:
    lines = [f"{k} = {_toml_value(v)}" for k, v in top.items() if not isinstance(v, Mapping)]
    for k, v in top.items():
        if isinstance(v, Mapping):
            lines += [f"[{k}]", *(f"{kk} = {_toml_value(vv)}" for kk, vv in v.items())]
    for table in models:
        lines.append("[[models]]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in table.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@contextmanager
def live_server(config: Path, cache_dir: Path, *, ready_timeout_s: float = 240.0) -> Iterator[tuple[str, Any]]:
    """Start ``ipfs-accelerate serve`` and wait for ``/ready``; yields (base URL, process)."""
    port = free_port()
    env = {**os.environ, "IPFS_ACCELERATE_CACHE": str(cache_dir), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "IPFS_ACCELERATE_API_KEY": API_KEY,
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).resolve().parents[2] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    log = config.with_suffix(".log")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "ipfs_accelerate.cli", "serve", "--config", str(config), "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout_s
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(base + "/ready", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the server was not ready in {ready_timeout_s} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield base, process
    finally:
        stop_process(process)
