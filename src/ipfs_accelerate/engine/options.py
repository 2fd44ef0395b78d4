"""The caller's choices for loading a model, validated without side effects."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .._exceptions import InvalidInput
from .._types import (
    BACKEND_CHOICES,
    DEVICE_CHOICES,
    PRECISION_CHOICES,
    WEIGHTS_CHOICES,
    BackendChoice,
    DeviceChoice,
    PrecisionChoice,
    WeightsChoice,
)

__all__ = [
    "BACKENDS",
    "DEVICES",
    "PRECISIONS",
    "WEIGHTS",
    "LoadOptions",
    "default_cache_dir",
]

BACKENDS = BACKEND_CHOICES
PRECISIONS = PRECISION_CHOICES
WEIGHTS = WEIGHTS_CHOICES
DEVICES = DEVICE_CHOICES
_DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def default_cache_dir() -> Path:
    """Where synthetic models, conversions and exports are kept unless the caller says."""
    return Path.home() / ".cache" / "ipfs_accelerate"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoadOptions:
    """How to load a model. Every field is checked on construction.

    Attributes:
        model_id: a hub id (``"gpt2"``), a local directory, or ``ipfs://CID``.
        task: the task to run; ``None`` takes the family's default task.
        backend: ``"auto"`` or one backend name.
        precision: ``"auto"`` or one of fp32, fp16, bf16, int8.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
        weights: ``"auto"`` (real weights or a clear error), ``"pretrained"`` or
            ``"synthetic"`` (random weights from the checkpoint's published config).
        family: force a family instead of inferring it from the model id or config.
        strict: raise instead of falling back to another backend or precision.
        trust_remote_code: allow a checkpoint's own Python code (off by default).
        config_overrides: changes to the published config; only with synthetic weights
            (tests use it to build tiny models of a real architecture).
        cache_dir: where synthetic models and exports are kept.
        max_batch_size: the largest batch one forward pass may take.
    """

    model_id: str
    task: str | None = None
    backend: BackendChoice = "auto"
    precision: PrecisionChoice = "auto"
    device: DeviceChoice = "auto"
    weights: WeightsChoice = "auto"
    family: str | None = None
    strict: bool = False
    trust_remote_code: bool = False
    config_overrides: Mapping[str, Any] | None = None
    cache_dir: Path = dataclasses.field(default_factory=default_cache_dir)
    max_batch_size: int = 32

    def __post_init__(self) -> None:
        if not isinstance(self.model_id, str) or not self.model_id.strip():
            raise InvalidInput("model_id must be a non-empty string")
        _one_of("backend", self.backend, BACKENDS)
        _one_of("precision", self.precision, PRECISIONS)
        _one_of("weights", self.weights, WEIGHTS)
        if not isinstance(self.device, str) or not _DEVICE_RE.match(self.device):
            raise InvalidInput(
                f"device must be one of {', '.join(DEVICES)}; got {self.device!r}"
            )
        for name in ("strict", "trust_remote_code"):
            if not isinstance(getattr(self, name), bool):
                raise InvalidInput(f"{name} must be True or False; got {getattr(self, name)!r}")
        for name in ("task", "family"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise InvalidInput(f"{name} must be a non-empty string, or None for the default; got {value!r}")
        if self.config_overrides is not None and not isinstance(self.config_overrides, Mapping):
            raise InvalidInput(f"config_overrides must be a mapping of config fields to values; "
                               f"got {type(self.config_overrides).__name__}")
        if self.config_overrides and self.weights != "synthetic":
            raise InvalidInput(
                "config_overrides changes the architecture, so it needs weights='synthetic'"
            )
        if isinstance(self.max_batch_size, bool) or not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise InvalidInput(f"max_batch_size must be a positive integer; got {self.max_batch_size!r}")
        object.__setattr__(self, "cache_dir", Path(self.cache_dir))


def _one_of(name: str, value: object, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise InvalidInput(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
