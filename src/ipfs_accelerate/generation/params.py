"""The shared generation controls (validated parameters) and what one generate call returns."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from .._exceptions import InvalidInput

__all__ = ["GenerationOutput", "GenerationParams", "context_window"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationParams:
    """The shared generation controls.

    Attributes:
        max_new_tokens: at most this many new tokens (capped to what the context window
            leaves after the prompt; the cap is reported).
        temperature: 0 for greedy decoding, > 0 to sample.
        top_p: nucleus sampling mass in (0, 1].
        top_k: sample among the k most likely tokens; 0 turns it off.
        repetition_penalty: > 0; 1.0 turns it off.
        stop: strings that end the generation; the output ends before the first one.
        seed: makes sampling reproducible without touching the global RNG.
        truncate: cut prompts longer than the window (reported); False raises.
    """

    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    top_k: int = 0
    repetition_penalty: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        _int("max_new_tokens", self.max_new_tokens, low=1)
        _int("top_k", self.top_k, low=0)
        _number("temperature", self.temperature, low=0.0)
        _number("top_p", self.top_p, low=0.0, high=1.0, open_low=True)
        _number("repetition_penalty", self.repetition_penalty, low=0.0, open_low=True)
        stop = self.stop
        if isinstance(stop, str):
            stop = (stop,)
        if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) and s for s in stop):
            raise InvalidInput("stop must be a non-empty string or a list of non-empty strings")
        object.__setattr__(self, "stop", tuple(stop))
        if self.seed is not None:
            _int("seed", self.seed, low=0)
        if not isinstance(self.truncate, bool):
            raise InvalidInput("truncate must be True or False")

    @property
    def do_sample(self) -> bool:
        return self.temperature > 0


def _int(name: str, value: Any, *, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise InvalidInput(f"{name} must be an integer ≥ {low}; got {value!r}")


def _number(name: str, value: Any, *, low: float, high: float | None = None, open_low: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if open_low else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        span = f"{'(' if open_low else '['}{low}, {high if high is not None else '∞'}{']' if high is not None else ')'}"
        raise InvalidInput(f"{name} must be a number in {span}; got {value!r}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GenerationOutput:
    """Decoded texts and the figures of one generate call."""

    texts: list[str]
    token_ids: list[list[int]]
    new_tokens: int
    time_to_first_token_s: float


def context_window(config: Any) -> int | None:
    """The longest sequence the model's positions allow, or None when unbounded."""
    for key in ("n_positions", "max_position_embeddings", "n_ctx", "max_target_positions"):
        value = getattr(config, key, None)
        if isinstance(value, int) and value > 0:
            return value
    return None
