"""CLAP (laion/clap-htsat-unfused): ``embed-audio``, ``embed-text`` and zero-shot ``classify``.

The unfused model takes one 10-second mel window. Longer audio is cut to its middle 10
seconds here, deterministically and reported, instead of the feature extractor's default
"fusion" truncation (a 4-channel input that crashes the unfused model) or "rand_trunc"
(a random crop, so the same call would give different answers).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from ..media.audio import audio_seconds
from ._audio import AudioParams, audio_as_items, decode_audio_items
from ._plain import forward_baseline
from ._text import check_texts, tokenize
from ._vocab import roberta_tokenizer
from ._zero_shot import ZeroShotBench, ZeroShotClassify, ZeroShotParams
from .base import Baseline, Checkpoint, Family, Prepared, TaskHandler
from .bench_profile import BenchProfile, register_bench_profile

__all__ = ["ClapFamily"]

CLAP = "laion/clap-htsat-unfused"


def _htsat_unfused() -> Any:
    from transformers import ClapConfig

    return ClapConfig()  # the defaults are laion/clap-htsat-unfused (HTSAT audio, RoBERTa text, 512-d)


def _processor(out_dir: Path) -> None:
    from transformers import ClapFeatureExtractor, ClapProcessor, RobertaTokenizerFast

    roberta_tokenizer(out_dir)
    tokenizer = RobertaTokenizerFast.from_pretrained(out_dir)
    extractor = ClapFeatureExtractor(truncation="rand_trunc", padding="repeatpad")
    ClapProcessor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out_dir)


def clap_clips(
    extractor: Any, items: Sequence[Any], sample_rate: int | None, notes: list[str]
) -> tuple[list[np.ndarray], float]:
    """Decode clips at the extractor's rate; clips over its window keep their middle (reported).

    Returns the clips the model hears and the seconds of audio given.
    """
    rate = int(extractor.sampling_rate)
    window = int(extractor.nb_max_samples)
    audios = decode_audio_items(items, sampling_rate=rate, sample_rate=sample_rate)
    seconds = sum(audio_seconds(a, rate) for a in audios)
    clipped = []
    for index, audio in enumerate(audios):
        if len(audio) > window:
            start = (len(audio) - window) // 2
            notes.append(f"audio #{index} is {len(audio) / rate:.1f} s; the model hears "
                         f"{start / rate:.1f}–{(start + window) / rate:.1f} s (its middle {window / rate:g} s)")
            audio = audio[start : start + window]
        clipped.append(audio)
    return clipped, seconds


def clap_audio_features(
    extractor: Any, items: Sequence[Any], sample_rate: int | None, notes: list[str]
) -> tuple[Any, float]:
    """The model's ``input_features`` of :func:`clap_clips` and the seconds of audio given."""
    clipped, seconds = clap_clips(extractor, items, sample_rate, notes)
    feats = extractor(clipped, sampling_rate=int(extractor.sampling_rate), truncation="rand_trunc",
                      padding="repeatpad", return_tensors="pt")
    return feats["input_features"], seconds


def _unit_features(raw: Any) -> list[Any]:
    import torch

    # ClapModel's forward returns unit vectors; get_*_features the projections before that.
    return list(torch.nn.functional.normalize(raw.float(), p=2, dim=-1).cpu().numpy())


class _ClapBase(TaskHandler):
    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(weights.path, local_files_only=True)
        self.rate = int(self.processor.feature_extractor.sampling_rate)

    def text_inputs(self, texts: Sequence[str], notes: list[str]) -> dict[str, Any]:
        tok = self.processor.tokenizer
        enc = tokenize(tok, texts, max_length=min(tok.model_max_length, 512), truncate=True, notes=notes)
        return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _tone(rate: int, seconds: float, hz: float) -> tuple[np.ndarray, int]:
    t = np.arange(int(rate * seconds), dtype=np.float32) / rate
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), rate


class ClapEmbedAudio(_ClapBase):
    """``embed-audio``: one unit vector per clip, in the space shared with text."""

    name = "embed-audio"
    kind = "feature-extraction"
    torch_class = "ClapModel"
    entry = "get_audio_features"
    output_names: ClassVar[tuple[str, ...]] = ("audio_embeds",)
    Params: ClassVar[type] = AudioParams

    def as_items(self, inputs: Any) -> list[Any]:
        return audio_as_items(inputs)

    def example_inputs(self) -> list[Any]:
        return [_tone(self.rate, 1.0, 440.0), _tone(self.rate, 0.5, 880.0)]

    def preprocess(self, inputs: Sequence[Any], params: AudioParams) -> Prepared:
        notes: list[str] = []
        features, seconds = clap_audio_features(self.processor.feature_extractor, inputs, params.sample_rate, notes)
        return Prepared(inputs={"input_features": features}, count=len(inputs), notes=notes,
                        figures={"audio_seconds": seconds})

    def postprocess(self, raw: Any, prepared: Prepared, params: Any) -> list[Any]:
        return list(raw.float().cpu().numpy())


@register_bench_profile(ClapEmbedAudio)
class ClapEmbedAudioBench(BenchProfile[ClapEmbedAudio]):
    """Plain baseline: ``ClapModel.get_audio_features``."""

    def plain_baseline(self) -> Baseline:
        """``ClapModel.get_audio_features`` on ``ClapProcessor(audio=...)``, scaled to unit length like ours.

        The clips are decoded and cut to their middle window as ours are, so both hear the same audio.
        """

        def encode(processor: Any, items: list[Any], kwargs: dict[str, Any], params: Any) -> dict[str, Any]:
            extractor = processor.feature_extractor
            clips, _ = clap_clips(extractor, items, params.sample_rate, [])
            enc = processor(audio=clips, sampling_rate=int(extractor.sampling_rate), return_tensors="pt")
            return {"input_features": enc["input_features"]}

        return forward_baseline(self, method="get_audio_features", encode=encode,
                                decode=lambda raw, items, kwargs, params: _unit_features(raw),
                                note="ClapProcessor(audio=...), unit length")


class ClapEmbedText(_ClapBase):
    """``embed-text``: one unit vector per text, in the space shared with audio."""

    name = "embed-text"
    kind = "feature-extraction"
    torch_class = "ClapModel"
    entry = "get_text_features"
    output_names: ClassVar[tuple[str, ...]] = ("text_embeds",)

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Params:
        """``embed-text`` takes no parameters."""

    def as_items(self, inputs: Any) -> list[Any]:
        return [inputs] if isinstance(inputs, str) else super().as_items(inputs)

    def example_inputs(self) -> list[Any]:
        return ["a dog barking", "rain on a window"]

    def preprocess(self, inputs: Sequence[Any], params: Any) -> Prepared:
        notes: list[str] = []
        return Prepared(inputs=self.text_inputs(check_texts(inputs), notes), count=len(inputs), notes=notes)

    def postprocess(self, raw: Any, prepared: Prepared, params: Any) -> list[Any]:
        return list(raw.float().cpu().numpy())


@register_bench_profile(ClapEmbedText)
class ClapEmbedTextBench(BenchProfile[ClapEmbedText]):
    """Plain baseline: ``ClapModel.get_text_features``."""

    def plain_baseline(self) -> Baseline:
        """``ClapModel.get_text_features`` on ``ClapProcessor(text=...)``, scaled to unit length like ours."""

        def encode(processor: Any, items: list[Any], kwargs: dict[str, Any], params: Any) -> dict[str, Any]:
            enc = processor(text=list(items), return_tensors="pt", padding=True, truncation=True,
                            max_length=min(processor.tokenizer.model_max_length, 512))
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

        return forward_baseline(self, method="get_text_features", encode=encode,
                                decode=lambda raw, items, kwargs, params: _unit_features(raw),
                                note="ClapProcessor(text=..., padding, truncation), unit length")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClapClassifyParams(ZeroShotParams, AudioParams):
    """Parameters of ``classify``: ``labels``, ``template`` and ``sample_rate``."""

    def __post_init__(self) -> None:
        ZeroShotParams.__post_init__(self)
        AudioParams.__post_init__(self)


class ClapClassify(ZeroShotClassify):
    """``classify``: zero-shot audio classification; scores over each clip's labels sum to 1.

    An item is a clip or ``{"audio": clip, "labels": [...]}``.
    """

    kind = "zero-shot-audio-classification"
    torch_class = "ClapModel"
    media_key = "audio"
    logits_name = "logits_per_audio"
    output_names: ClassVar[tuple[str, ...]] = ("logits_per_audio",)
    default_template = "This is a sound of {}."
    Params: ClassVar[type] = ClapClassifyParams

    def as_items(self, inputs: Any) -> list[Any]:
        if isinstance(inputs, dict) and "audio" in inputs:
            return [inputs]
        return audio_as_items(inputs)

    def example_inputs(self) -> list[Any]:
        rate = int(self.processor.feature_extractor.sampling_rate)
        return [{"audio": _tone(rate, 1.0, 440.0), "labels": ["a tone", "speech", "rain"]}]

    def media_inputs(
        self, media: Sequence[Any], notes: list[str], params: Any
    ) -> tuple[dict[str, Any], dict[str, float]]:
        features, seconds = clap_audio_features(self.processor.feature_extractor, media, params.sample_rate, notes)
        return {"input_features": features}, {"audio_seconds": seconds}


@register_bench_profile(ClapClassify)
class ClapClassifyBench(ZeroShotBench[ClapClassify]):
    """transformers' zero-shot audio classification pipeline, on clips cut as ours are."""

    def plain_media(self, media: Sequence[Any], params: Any) -> list[Any]:
        # The zero-shot audio pipeline takes mono arrays at the extractor's rate; they are cut
        # to the window ours hears, because its own cut of a longer clip is a random crop.
        clips, _ = clap_clips(self.handler.processor.feature_extractor, media, params.sample_rate, [])
        return clips


class ClapFamily(Family):
    name = "clap"
    description = "CLAP audio-text models: audio and text embeddings, zero-shot audio classification"
    model_types = ("clap",)
    synthetic_class = "ClapModel"
    checkpoints = {
        CLAP: Checkpoint(model_id=CLAP, config=_htsat_unfused, build_processor=_processor,
                         processor_source="GPT-2 byte-level BPE with RoBERTa special tokens"),
    }
    default_checkpoint = CLAP
    tasks = {"embed-audio": ClapEmbedAudio, "embed-text": ClapEmbedText, "classify": ClapClassify}
    default_task = "classify"
