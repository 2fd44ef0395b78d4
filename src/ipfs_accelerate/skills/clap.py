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

from .._exceptions import InvalidInput
from ..backends.base import Runtime
from ..media.audio import audio_seconds
from ._audio import AudioParams, audio_as_items, decode_audio_items
from ._labels import LabelParams, label_scores
from ._text import check_texts, tokenize
from ._vocab import roberta_tokenizer
from .base import Checkpoint, Prepared, Skill, TaskHandler

__all__ = ["ClapSkill"]

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


class _ClapBase(TaskHandler):
    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(weights.path, local_files_only=True)
        self.extractor = self.processor.feature_extractor
        self.rate = int(self.extractor.sampling_rate)
        self.window = int(self.extractor.nb_max_samples)

    def audio_features(self, items: Sequence[Any], sample_rate: int | None, notes: list[str]) -> tuple[Any, float]:
        audios = decode_audio_items(items, sampling_rate=self.rate, sample_rate=sample_rate)
        seconds = sum(audio_seconds(a, self.rate) for a in audios)
        clipped = []
        for index, audio in enumerate(audios):
            if len(audio) > self.window:
                start = (len(audio) - self.window) // 2
                notes.append(f"audio #{index} is {len(audio) / self.rate:.1f} s; the model hears "
                             f"{start / self.rate:.1f}–{(start + self.window) / self.rate:.1f} s (its middle 10 s)")
                audio = audio[start : start + self.window]
            clipped.append(audio)
        feats = self.extractor(clipped, sampling_rate=self.rate, truncation="rand_trunc", padding="repeatpad",
                               return_tensors="pt")
        return feats["input_features"], seconds

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
        features, seconds = self.audio_features(inputs, params.sample_rate, notes)
        return Prepared(inputs={"input_features": features}, count=len(inputs), notes=notes,
                        figures={"audio_seconds": seconds})

    def forward(self, runtime: Runtime, prepared: Prepared, params: Any) -> Any:
        import torch

        with torch.inference_mode():
            return runtime.model(**runtime.prepare(prepared.inputs)).audio_embeds

    def postprocess(self, raw: Any, prepared: Prepared, params: Any) -> list[Any]:
        return list(raw.float().cpu().numpy())


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

    def forward(self, runtime: Runtime, prepared: Prepared, params: Any) -> Any:
        import torch

        with torch.inference_mode():
            return runtime.model(**runtime.prepare(prepared.inputs)).text_embeds

    def postprocess(self, raw: Any, prepared: Prepared, params: Any) -> list[Any]:
        return list(raw.float().cpu().numpy())


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClapClassifyParams(AudioParams, LabelParams):
    """Parameters of ``classify``: ``labels``, ``template`` and ``sample_rate``."""

    template: str = "This is a sound of {}."

    def __post_init__(self) -> None:
        AudioParams.__post_init__(self)
        LabelParams.__post_init__(self)


class ClapClassify(_ClapBase):
    """``classify``: zero-shot audio classification; scores over the labels sum to 1."""

    name = "classify"
    kind = "zero-shot-audio-classification"
    torch_class = "ClapModel"
    output_names: ClassVar[tuple[str, ...]] = ("logits_per_audio",)
    Params: ClassVar[type] = ClapClassifyParams

    def as_items(self, inputs: Any) -> list[Any]:
        return audio_as_items(inputs)

    def example_inputs(self) -> list[Any]:
        return [_tone(self.rate, 1.0, 440.0)]

    def parse_params(self, params: Any) -> Any:
        # Warm-up and exports need labels; callers must give their own.
        return super().parse_params(params)

    def warmup_params(self) -> Any:
        return self.parse_params({"labels": ["a tone", "speech"]})

    def model_spec(self) -> Any:
        spec = super().model_spec()
        warm = self.warmup_params()
        return dataclasses.replace(spec, example_inputs=lambda: self.preprocess(self.example_inputs(), warm).inputs)

    def preprocess(self, inputs: Sequence[Any], params: ClapClassifyParams) -> Prepared:
        if not params.labels:
            raise InvalidInput("classify needs labels=[...]: the classes to score the audio against")
        notes: list[str] = []
        features, seconds = self.audio_features(inputs, params.sample_rate, notes)
        prompts = [params.template.format(label) for label in params.labels]
        return Prepared(inputs={**self.text_inputs(prompts, notes), "input_features": features},
                        count=len(inputs), notes=notes, figures={"audio_seconds": seconds})

    def forward(self, runtime: Runtime, prepared: Prepared, params: Any) -> Any:
        import torch

        with torch.inference_mode():
            return runtime.model(**runtime.prepare(prepared.inputs)).logits_per_audio

    def postprocess(self, raw: Any, prepared: Prepared, params: ClapClassifyParams) -> list[Any]:
        return label_scores(raw, params.labels)


class ClapSkill(Skill):
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
