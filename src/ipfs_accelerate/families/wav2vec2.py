"""wav2vec2 CTC models: ``transcribe`` any length of audio by chunking with stride.

Long audio is cut into windows of ``chunk_s`` seconds that overlap by ``stride_s`` on each
side; the logits of the overlapping edges are dropped before the CTC decode, so words at
the seams are neither lost nor duplicated (the scheme of transformers' ASR pipeline).
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from .._exceptions import InvalidInput
from ..media.audio import audio_seconds
from ._audio import AudioParams, Transcription, audio_as_items, decode_audio_items, pipeline_transcriptions
from .base import Checkpoint, Family, Prepared, TaskHandler
from .bench_profile import BenchProfile, register_bench_profile

__all__ = ["Wav2Vec2Family"]

# facebook/wav2vec2-base-960h's character vocabulary (its vocab.json), a published fact.
BASE_960H_VOCAB = ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L",
                   "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"]


def _base_960h() -> Any:
    from transformers import Wav2Vec2Config

    return Wav2Vec2Config()  # the defaults are facebook/wav2vec2-base-960h (vocab 32)


def _tiny_random() -> Any:
    from transformers import Wav2Vec2Config

    # patrickvonplaten/wav2vec2-tiny-random: a test checkpoint with a tiny encoder. Its exact
    # config could not be read offline here; these values follow transformers' own tiny
    # wav2vec2 test configuration (hidden 16, 2 layers, 2 heads, 3 conv layers).
    return Wav2Vec2Config(vocab_size=32, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=20, conv_dim=(32, 32, 32), conv_stride=(4, 4, 4),
                          conv_kernel=(8, 8, 8), num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
                          do_stable_layer_norm=True, feat_extract_norm="layer")


def _processor(out_dir: Path) -> None:
    import tempfile

    from transformers import Wav2Vec2CTCTokenizer, Wav2Vec2FeatureExtractor, Wav2Vec2Processor

    with tempfile.TemporaryDirectory() as tmp:
        vocab_file = Path(tmp) / "vocab.json"
        vocab_file.write_text(json.dumps({c: i for i, c in enumerate(BASE_960H_VOCAB)}))
        tokenizer = Wav2Vec2CTCTokenizer(str(vocab_file), unk_token="<unk>", pad_token="<pad>",
                                         word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0,
                                         do_normalize=True, return_attention_mask=False)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(out_dir)


@dataclasses.dataclass(frozen=True, kw_only=True)
class CTCParams(AudioParams):
    """Parameters of CTC ``transcribe``.

    Attributes:
        chunk_s: window length for long audio, in seconds.
        stride_s: overlap on each side of a window, in seconds (default: chunk_s / 6).
        word_timestamps: return each word's start and end (seconds), from the CTC frames
            its characters were emitted in.
    """

    chunk_s: float = 20.0
    stride_s: float | None = None
    word_timestamps: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.chunk_s, (int, float)) or not math.isfinite(self.chunk_s) or self.chunk_s <= 1:
            raise InvalidInput(f"chunk_s must be a number of seconds > 1; got {self.chunk_s!r}")
        if self.stride_s is not None and (
            not isinstance(self.stride_s, (int, float)) or not 0 <= self.stride_s < self.chunk_s / 2
        ):
            raise InvalidInput(f"stride_s must be in [0, chunk_s/2); got {self.stride_s!r}")
        if not isinstance(self.word_timestamps, bool):
            raise InvalidInput("word_timestamps must be True or False")


def shortest_input(kernels: Sequence[int], strides: Sequence[int]) -> int:
    """The fewest samples the convolutional feature encoder turns into one frame (400 for wav2vec2-base)."""
    samples = 1
    for kernel, stride in reversed(list(zip(kernels, strides, strict=True))):
        samples = (samples - 1) * stride + kernel
    return samples


@dataclasses.dataclass(frozen=True)
class _Window:
    item: int
    begin: int  # the window's first sample in its item's audio
    samples: int
    drop_left: int
    drop_right: int


class CTCTranscribe(TaskHandler):
    """``transcribe``: speech to text with a CTC head, any length, batched."""

    name = "transcribe"
    kind = "ctc"
    torch_class = "AutoModelForCTC"
    Params: ClassVar[type] = CTCParams
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        from transformers import AutoProcessor

        self.processor = AutoProcessor.from_pretrained(weights.path, local_files_only=True)
        self.rate = int(self.processor.feature_extractor.sampling_rate)
        self.shortest = shortest_input(config.conv_kernel, config.conv_stride)

    def as_items(self, inputs: Any) -> list[Any]:
        return audio_as_items(inputs)

    def example_inputs(self) -> list[Any]:
        t = np.arange(self.rate, dtype=np.float32) / self.rate
        return [(0.3 * np.sin(2 * np.pi * 220 * t), self.rate), (0.3 * np.sin(2 * np.pi * 330 * t[:8000]), self.rate)]

    def preprocess(self, inputs: Sequence[Any], params: CTCParams) -> Prepared:
        audios = decode_audio_items(inputs, sampling_rate=self.rate, sample_rate=params.sample_rate)
        chunk = int(params.chunk_s * self.rate)
        stride = int((params.stride_s if params.stride_s is not None else params.chunk_s / 6) * self.rate)
        step = chunk - 2 * stride
        pieces: list[np.ndarray] = []
        windows: list[_Window] = []
        notes: list[str] = []
        for index, audio in enumerate(audios):
            if len(audio) < self.shortest:
                # The convolutions' window is longer than the audio: it would have no frame at all.
                notes.append(f"audio #{index} is {len(audio)} sample{'' if len(audio) == 1 else 's'}, shorter than the model's shortest input of "
                             f"{self.shortest} ({1000 * self.shortest / self.rate:g} ms): padded with silence")
                audio = np.pad(audio, (0, self.shortest - len(audio)))
            if len(audio) > chunk:
                notes.append(f"audio #{index} ({len(audio) / self.rate:.1f} s) transcribed in "
                             f"{params.chunk_s:g} s windows with {stride / self.rate:.1f} s stride")
            start = 0
            while True:
                left = 0 if start == 0 else stride
                begin = start - left
                end = min(begin + chunk, len(audio))
                last = end >= len(audio)
                right = 0 if last else stride
                pieces.append(audio[begin:end])
                windows.append(_Window(item=index, begin=begin, samples=end - begin, drop_left=left, drop_right=right))
                if last:
                    break
                start = begin + left + step
        features = self.processor.feature_extractor(
            pieces, sampling_rate=self.rate, padding=True, return_tensors="pt",
        )
        inputs_ = {"input_values": features["input_values"]}
        if "attention_mask" in features:
            inputs_["attention_mask"] = features["attention_mask"]
        return Prepared(inputs=inputs_, count=len(audios), notes=notes, extra={"windows": windows},
                        figures={"audio_seconds": sum(audio_seconds(a, self.rate) for a in audios)})

    def postprocess(self, raw: Any, prepared: Prepared, params: CTCParams) -> list[Any]:
        logits = raw.float().cpu().numpy()
        padded = prepared.inputs["input_values"].shape[1]
        ratio = logits.shape[1] / padded  # logit frames per input sample
        per_item: dict[int, list[np.ndarray]] = {}
        frame_seconds: dict[int, list[np.ndarray]] = {}  # when each kept frame starts
        for row, window in enumerate(prepared.extra["windows"]):
            frames = math.ceil(window.samples * ratio)
            lo = round(window.drop_left * ratio)
            hi = frames - round(window.drop_right * ratio)
            per_item.setdefault(window.item, []).append(logits[row, lo:hi].argmax(-1))
            frame_seconds.setdefault(window.item, []).append((window.begin + np.arange(lo, hi) / ratio) / self.rate)
        seconds_per_frame = 1.0 / (ratio * self.rate)
        results = []
        for i in range(prepared.count):
            ids = np.concatenate(per_item[i]).tolist()
            if not params.word_timestamps:
                results.append(Transcription(text=self.processor.tokenizer.decode(ids, skip_special_tokens=True)))
                continue
            # Offsets index the kept frames of all windows, concatenated; each frame's start
            # comes from its window's place in the audio (frame counts do not add up exactly
            # across windows). Offsets count frames only with the special tokens kept
            # (skipping them first drops the blanks and shifts every offset; the speech
            # pipeline decodes CTC so too); they are taken out of the words afterwards.
            starts = np.concatenate(frame_seconds[i])
            ends = np.append(starts[1:], starts[-1] + seconds_per_frame)
            tokenizer = self.processor.tokenizer
            decoded = tokenizer.decode(ids, skip_special_tokens=False, output_word_offsets=True)
            special = [s for s in tokenizer.all_special_tokens if s]
            words = []
            for offset in decoded.word_offsets:
                word = str(offset["word"])
                for token in special:
                    word = word.replace(token, "")
                if word.strip():
                    words.append({"word": word.strip(), "start": round(float(starts[offset["start_offset"]]), 2),
                                  "end": round(float(ends[offset["end_offset"] - 1]), 2)})
            results.append(Transcription(text=tokenizer.decode(ids, skip_special_tokens=True), words=tuple(words)))
        return results


@register_bench_profile(CTCTranscribe)
class CTCTranscribeBench(BenchProfile[CTCTranscribe]):
    """The speech pipeline's transcripts as ours (``Transcription``), for agreement."""

    def plain_outputs(self, outputs: Sequence[Any]) -> list[Any]:
        return list(pipeline_transcriptions(outputs))


class Wav2Vec2Family(Family):
    name = "wav2vec2"
    description = "wav2vec2 CTC speech recognition: speech to text, any length (chunked with stride)"
    model_types = ("wav2vec2",)
    synthetic_class = "Wav2Vec2ForCTC"
    checkpoints = {
        "facebook/wav2vec2-base-960h": Checkpoint(
            model_id="facebook/wav2vec2-base-960h", config=_base_960h, build_processor=_processor,
            processor_source="wav2vec2-base-960h character vocabulary (written down)",
        ),
        "patrickvonplaten/wav2vec2-tiny-random": Checkpoint(
            model_id="patrickvonplaten/wav2vec2-tiny-random", config=_tiny_random, build_processor=_processor,
            processor_source="wav2vec2-base-960h character vocabulary (written down)",
        ),
    }
    default_checkpoint = "facebook/wav2vec2-base-960h"
    tasks = {"transcribe": CTCTranscribe}
    default_task = "transcribe"
