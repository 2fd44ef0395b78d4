"""Audio items shared by the audio families: one decoding path, per-item errors, figures."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from .._exceptions import InvalidInput
from ..media.audio import load_audio

__all__ = [
    "AudioParams",
    "Transcription",
    "audio_as_items",
    "decode_audio_items",
    "is_single_audio",
    "pipeline_transcriptions",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Transcription:
    """What every speech-recognition task returns per input.

    Attributes:
        text: the whole transcript.
        segments: ``{"start", "end", "text"}`` dicts (seconds) when the model gives times.
        language: the language asked for, if any.
        words: ``{"word", "start", "end"}`` dicts (seconds), when word timestamps were asked
            for and the model gives them.
    """

    text: str
    segments: tuple[dict[str, Any], ...] = ()
    language: str | None = None
    words: tuple[dict[str, Any], ...] = ()

    def __str__(self) -> str:
        return self.text


def pipeline_transcriptions(outputs: Sequence[Any]) -> list[Transcription]:
    """The speech-recognition pipeline's ``{"text": ...}`` outputs as ours, for the benchmark's
    plain baseline (``BenchProfile.plain_outputs``); its segment times are not compared."""
    return [Transcription(text=str(out["text"]).strip()) for out in outputs]


@dataclasses.dataclass(frozen=True, kw_only=True)
class AudioParams:
    """The parameter every audio task shares.

    Attributes:
        sample_rate: the rate, in Hz, of inputs given as sample arrays (files and bytes
            carry their own rate). ``(array, rate)`` tuples and ``{"array", "sampling_rate"}``
            dicts may give it per item instead.
    """

    sample_rate: int | None = None

    def __post_init__(self) -> None:
        rate = self.sample_rate
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int) or rate <= 0):
            raise InvalidInput(f"sample_rate must be a positive integer (Hz); got {rate!r}")


def is_single_audio(inputs: Any) -> bool:
    """One audio item rather than a list of them."""
    if isinstance(inputs, (str, os.PathLike, bytes, bytearray, memoryview, np.ndarray, dict)):
        return True
    return isinstance(inputs, tuple) and len(inputs) == 2 and isinstance(inputs[0], np.ndarray)


def audio_as_items(inputs: Any) -> list[Any]:
    """A single audio item becomes a batch of one; a list is a batch."""
    if is_single_audio(inputs):
        return [inputs]
    if isinstance(inputs, (list, tuple)):
        return list(inputs)
    return [inputs]


def decode_audio_items(items: Sequence[Any], *, sampling_rate: int, sample_rate: int | None) -> list[np.ndarray]:
    """Decode every item to mono float32 at ``sampling_rate``.

    Raises:
        InvalidInput: naming the bad item's position and what is wrong with it.
    """
    if not items:
        raise InvalidInput("empty batch: pass at least one audio input")
    out = []
    for index, item in enumerate(items):
        source, rate = item, sample_rate
        if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
            source, rate = item
        elif isinstance(item, dict):
            if "array" not in item:
                raise InvalidInput(f"audio #{index}: a dict input needs 'array' and 'sampling_rate' keys")
            source, rate = item["array"], item.get("sampling_rate", sample_rate)
        try:
            out.append(load_audio(source, sampling_rate=sampling_rate, sample_rate=rate))
        except InvalidInput as exc:
            raise InvalidInput(f"audio #{index}: {exc}") from exc
    return out
