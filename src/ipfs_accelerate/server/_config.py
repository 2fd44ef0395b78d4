"""Server configuration: frozen dataclasses, read from TOML or built in code."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .._exceptions import InvalidInput
from .._types import BackendChoice, DeviceChoice, PrecisionChoice, WeightsChoice
from ..engine.options import LoadOptions

__all__ = ["DEFAULT_MODELS", "Limits", "ModelConfig", "ServerConfig", "load_config", "models_or_defaults", "parse_model_arg"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """One served model (one ``[[models]]`` table of the TOML file).

    Attributes:
        model: hub id, local directory, or a checkpoint a package ships.
        task: the task to serve; None takes the family's default.
        name: the name clients use; None is the model id.
        backend: ``auto``, ``torch``, ``openvino`` or ``onnxruntime``.
        precision: ``auto``, ``fp32``, ``fp16``, ``bf16`` or ``int8``.
        device: ``auto``, ``cpu``, ``cuda`` …
        weights: ``auto``, ``pretrained`` or ``synthetic``.
        max_batch_size: the batcher's window; None takes the endpoint's.
        queue_size: the most requests waiting; more answer 429.
        max_wait_s: the longest a request waits for company.
        config_overrides: passed to ``ia.load`` (tiny synthetic models in tests).
        num_replicas: Ray Serve replicas of this model (``serve --ray``).
        autoscaling: a Ray Serve ``autoscaling_config`` table (``min_replicas``,
            ``max_replicas``, ``target_ongoing_requests`` …); replaces ``num_replicas``.
        threads: CPU threads of one replica (Ray's ``num_cpus`` for it and its
            ``OMP_NUM_THREADS``), so that replicas do not oversubscribe the cores.
    """

    model: str
    task: str | None = None
    name: str | None = None
    backend: BackendChoice = "auto"
    precision: PrecisionChoice = "auto"
    device: DeviceChoice = "auto"
    weights: WeightsChoice = "auto"
    max_batch_size: int | None = None
    queue_size: int = 256
    max_wait_s: float = 0.005
    config_overrides: Mapping[str, Any] | None = None
    num_replicas: int = 1
    autoscaling: Mapping[str, Any] | None = None
    threads: int = 1

    def __post_init__(self) -> None:
        # The load options are checked here, when the config is read, not when the model loads.
        LoadOptions(model_id=self.model, task=self.task, backend=self.backend, precision=self.precision,
                    device=self.device, weights=self.weights, config_overrides=self.config_overrides)
        if self.max_batch_size is not None:
            _at_least(self, "max_batch_size", 1)
        _at_least(self, "queue_size", 1)
        _at_least(self, "max_wait_s", 0.0)
        _at_least(self, "num_replicas", 1)
        _at_least(self, "threads", 1)

    @property
    def served_name(self) -> str:
        """The name clients ask for."""
        return self.name or self.model


@dataclasses.dataclass(frozen=True, kw_only=True)
class Limits:
    """Request limits; a request over one answers 400 (413 for the body).

    Attributes:
        max_body_bytes: the largest request body, uploads included (413 past it).
        max_items: the most inputs in one request.
        max_tokens_per_item: the most tokens an embedding input may have; longer ones
            are refused with 400 unless ``truncate_items`` is set, which cuts them (noted in
            the provenance).
        truncate_items: cut over-long embedding inputs instead of refusing them.
        max_tokens: the largest ``max_tokens`` a completion may ask for.
        max_image_pixels: the most pixels of one decoded image.
        max_audio_seconds: the longest decoded audio.
    """

    max_body_bytes: int = 25 * 1024 * 1024
    max_items: int = 256
    max_tokens_per_item: int = 512
    truncate_items: bool = True
    max_tokens: int = 1024
    max_image_pixels: int = 4096 * 4096
    max_audio_seconds: float = 1800.0

    def __post_init__(self) -> None:
        for name in ("max_body_bytes", "max_items", "max_tokens_per_item", "max_tokens", "max_image_pixels"):
            _at_least(self, name, 1)
        _at_least(self, "max_audio_seconds", 0.0, above=True)
        if not isinstance(self.truncate_items, bool):
            raise InvalidInput(f"truncate_items must be true or false; got {self.truncate_items!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ServerConfig:
    """The whole server.

    Attributes:
        models: what to serve.
        host: the address to bind (127.0.0.1 unless said otherwise).
        port: the TCP port.
        api_key: clients must send ``Authorization: Bearer KEY``; None turns auth off.
        metrics_need_key: whether ``/metrics`` asks for the key too.
        cors_origins: origins allowed by CORS; empty turns CORS off.
        limits: the request limits.
        drain_s: how long SIGTERM waits for in-flight requests.
        keep_alive_s: how long an idle HTTP connection stays open. Longer than the usual
            clients' own idle expiry (httpx, and so the ``openai`` client: 5 s), so that a client
            never reuses a connection the server is closing at that moment (a read error).
        cache_dir: the ipfs_accelerate cache (synthetic models, exports).
        peers: trustless gateways to fetch ``ipfs://`` models' blocks from.
        kubo_api: a kubo RPC API tried after the peers.
        access_log: log one line per request (uvicorn's access log). Off by default: at
            hundreds of requests a second the line costs more server CPU than parsing the request.
        freeze_gc: once the configured models have loaded, move every object then alive out of
            the cyclic garbage collector's reach (``gc.freeze``): otherwise each full collection
            walks the models' and libraries' half a million objects again, a pause of tens of
            milliseconds among the requests (measured: p99 of 64 clients 358 → 150 ms).
    """

    models: tuple[ModelConfig, ...] = ()
    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    metrics_need_key: bool = False
    cors_origins: tuple[str, ...] = ()
    limits: Limits = dataclasses.field(default_factory=Limits)
    drain_s: float = 30.0
    keep_alive_s: float = 75.0
    cache_dir: str | None = None
    peers: tuple[str, ...] = ()
    kubo_api: str | None = None
    access_log: bool = False
    freeze_gc: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host:
            raise InvalidInput(f"host must be an address to bind, such as 127.0.0.1; got {self.host!r}")
        _at_least(self, "port", 0)  # 0: any free port
        if self.port > 65535:
            raise InvalidInput(f"port must be a TCP port, 0 to 65535; got {self.port}")
        _at_least(self, "drain_s", 0.0)
        _at_least(self, "keep_alive_s", 0.0, above=True)
        if self.api_key is not None and (not isinstance(self.api_key, str) or not self.api_key):
            raise InvalidInput("api_key must be a non-empty string, or unset to turn authentication off")


def _at_least(config: Any, name: str, low: float, *, above: bool = False) -> None:
    """Raise InvalidInput unless ``config.<name>`` is a number ≥ ``low`` (> with ``above``),
    and a whole one when ``low`` is an int."""
    value: Any = getattr(config, name)
    whole = isinstance(low, int)
    number = not isinstance(value, bool) and isinstance(value, int if whole else (int, float))
    if not number or not (value > low if above else value >= low):  # NaN compares false: refused too
        kind = "an integer" if whole else "a number"
        raise InvalidInput(f"{name} must be {kind} {'>' if above else '≥'} {low}; got {value!r}")


#: What ``ipfs-accelerate serve`` serves with no model named: the defaults with real weights here.
DEFAULT_MODELS: tuple[ModelConfig, ...] = (
    ModelConfig(model="sentence-transformers/all-MiniLM-L6-v2", task="embed", max_batch_size=32),
    ModelConfig(model="openai/whisper-tiny.en", task="transcribe", max_batch_size=4),
)


def _build(cls: type, table: Mapping[str, Any], where: str) -> Any:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InvalidInput(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    try:
        return cls(**table)
    except (TypeError, InvalidInput) as exc:
        raise InvalidInput(f"{where}: {exc}") from exc


def load_config(path: str | Path | None = None, **overrides: Any) -> ServerConfig:
    """Read a TOML file (``[[models]]`` tables, ``[limits]``, top-level keys) into a config.

    Args:
        path: the TOML file; None starts from the defaults.
        **overrides: top-level fields that win over the file (None values are ignored).

    Raises:
        InvalidInput: the file has unknown keys or bad values.
    """
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    data: dict[str, Any] = {}
    if path is not None:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise InvalidInput(f"cannot read the server config {path}: {exc}") from exc
    models = tuple(_build(ModelConfig, m, f"[[models]] #{i + 1}") for i, m in enumerate(data.pop("models", [])))
    limits = _build(Limits, data.pop("limits", {}), "[limits]")
    if "cors_origins" in data:
        data["cors_origins"] = tuple(data["cors_origins"])
    fields: dict[str, Any] = {**data, "models": models, "limits": limits}
    fields.update({k: v for k, v in overrides.items() if v is not None})
    if isinstance(fields.get("models"), list):
        fields["models"] = tuple(fields["models"])
    config: ServerConfig = _build(ServerConfig, fields, str(path or "server config"))
    names = [m.served_name for m in config.models]
    if len(set(names)) != len(names):
        raise InvalidInput(f"two served models share a name: {names}")
    return config


def parse_model_arg(text: str) -> ModelConfig:
    """``ID[=NAME]`` from ``--model`` (an optional ``:TASK`` suffix is not parsed: use TOML)."""
    model, _, name = text.partition("=")
    if not model:
        raise InvalidInput(f"--model expects ID[=NAME]; got {text!r}")
    return ModelConfig(model=model, name=name or None)


def models_or_defaults(models: Sequence[ModelConfig]) -> tuple[ModelConfig, ...]:
    """The models given, or :data:`DEFAULT_MODELS` when none are."""
    return tuple(models) or DEFAULT_MODELS
