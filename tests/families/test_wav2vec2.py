"""wav2vec2 CTC transcription on a tiny synthetic model: shapes, chunking, bad audio."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import ipfs_accelerate as ia

W2V = "facebook/wav2vec2-base-960h"
RATE = 16000


def _noise(seconds: float, seed: int = 0) -> np.ndarray:
    return (np.random.RandomState(seed).randn(int(RATE * seconds)) * 0.1).astype(np.float32)


def test_transcribe_returns_text_and_audio_figures(load_tiny):
    ep = load_tiny(W2V)
    res = ep([(_noise(1.0), RATE), (_noise(0.5, 1), RATE)])
    assert len(res.outputs) == 2 and all(isinstance(t.text, str) and t.segments == () for t in res.outputs)
    # only characters of the CTC vocabulary (letters, apostrophe, space) can come out
    allowed = set("ABCDEFGHIJKLMNOPQRSTUVWXYZ' ")
    assert all(set(t.text) <= allowed for t in res.outputs)
    assert res.timings["audio_seconds"] == pytest.approx(1.5)
    assert res.timings["realtime_factor"] > 0
    assert res.provenance.family == "wav2vec2" and res.provenance.weights == "synthetic"


def test_audio_shorter_than_the_convolutions_window_is_padded_with_silence(load_tiny):
    from ipfs_accelerate.families.wav2vec2 import shortest_input

    ep = load_tiny(W2V)
    config = ep.handler.config
    shortest = shortest_input(config.conv_kernel, config.conv_stride)
    assert shortest == 185  # the tiny config: kernels 10, 8, 8 with strides 5, 4, 4
    clip = _noise(100 / RATE)
    res = ep([(clip[:1], RATE), (clip, RATE)])
    assert [n for n in res.provenance.notes if "padded with silence" in n] == [
        f"audio #0 is 1 sample, shorter than the model's shortest input of {shortest} ({1000 * shortest / RATE:g} ms): "
        "padded with silence",
        f"audio #1 is 100 samples, shorter than the model's shortest input of {shortest} "
        f"({1000 * shortest / RATE:g} ms): padded with silence"]
    by_hand = ep((np.pad(clip, (0, shortest - len(clip))), RATE)).outputs[0]
    assert res.outputs[1] == by_hand


def test_long_audio_is_chunked_and_matches_unchunked(load_tiny):
    ep = load_tiny(W2V)
    audio = _noise(9.0, 2)
    whole = ep((audio, RATE), chunk_s=30).outputs[0].text
    chunked = ep((audio, RATE), chunk_s=3, stride_s=0.5)
    assert any("3 s windows" in n for n in chunked.provenance.notes)
    # Dropping the strided edges keeps the windows' logits aligned: the greedy CTC text of
    # the chunked run matches the whole-file run except near the seams.
    a, b = whole.replace(" ", ""), chunked.outputs[0].text.replace(" ", "")
    assert abs(len(a) - len(b)) <= 0.1 * max(len(a), 1)
    assert a[:20] == b[:20]


def test_resampling_and_stereo(load_tiny):
    ep = load_tiny(W2V)
    stereo44 = np.stack([_noise(0.5, 3)] * 2, axis=1)  # (n, 2) at 16 kHz, tagged as 32 kHz
    res = ep({"array": stereo44, "sampling_rate": 32000})
    assert res.timings["audio_seconds"] == pytest.approx(0.25, abs=0.01)


@pytest.mark.parametrize(
    ("item", "kwargs", "message"),
    [
        (np.zeros(0, dtype=np.float32), {"sample_rate": RATE}, "empty"),
        (np.array([0.1, np.nan, 0.2] * 100, dtype=np.float32), {"sample_rate": RATE}, "NaN"),
        (_noise(0.1), {}, "sample_rate is required"),
        (b"definitely not audio", {}, "audio #0"),
        ("/no/such/file.wav", {}, "not found"),
    ],
)
def test_bad_audio_is_invalid_input(load_tiny, item, kwargs, message):
    with pytest.raises(ia.InvalidInput, match=message):
        load_tiny(W2V)(item, **kwargs)


def test_bad_chunk_parameters(load_tiny):
    with pytest.raises(ia.InvalidInput, match="stride_s"):
        load_tiny(W2V)((_noise(0.2), RATE), chunk_s=4, stride_s=3)
    with pytest.raises(ia.InvalidInput, match="sample_rate must be a positive"):
        load_tiny(W2V)(_noise(0.2), sample_rate=0)


def test_word_timestamps_follow_the_ctc_frames(load_tiny):
    """Known CTC frames through the real postprocess: the words and their seconds."""
    import torch

    ep = load_tiny(W2V)
    handler = ep.handler
    params = handler.parse_params({"word_timestamps": True, "chunk_s": 30})
    prepared = handler.preprocess([(_noise(4.0, 3), RATE)], params)
    frames = handler.forward(ep.runtime, prepared, params).shape[1]
    vocab = handler.processor.tokenizer.get_vocab()
    per_second = frames / 4.0
    logits = torch.zeros(1, frames, len(vocab))
    logits[0, :, vocab["<pad>"]] = 1.0
    # "HI" from 0.5 s to 1.0 s, a delimiter, "YOU" from 2.0 s to 3.0 s.
    for char, start_s, end_s in (("H", 0.5, 0.75), ("I", 0.75, 1.0), ("|", 1.5, 1.6),
                                 ("Y", 2.0, 2.3), ("O", 2.3, 2.6), ("U", 2.6, 3.0)):
        logits[0, round(start_s * per_second):round(end_s * per_second), vocab[char]] = 2.0
    out = handler.postprocess(logits, prepared, params)[0]
    assert out.text == "HI YOU"
    assert [w["word"] for w in out.words] == ["HI", "YOU"]
    assert [(w["start"], w["end"]) for w in out.words] == [
        pytest.approx((0.5, 1.0), abs=1.5 / per_second), pytest.approx((2.0, 3.0), abs=1.5 / per_second)]
    assert all(isinstance(w["start"], float) for w in out.words)


def test_word_timestamps_of_windows_match_the_whole_recording(load_tiny):
    ep = load_tiny(W2V)
    audio = _noise(9.0, 2)
    whole = ep((audio, RATE), chunk_s=30, word_timestamps=True).outputs[0]
    chunked = ep((audio, RATE), chunk_s=3, stride_s=0.5, word_timestamps=True).outputs[0]
    assert whole.words and chunked.words
    assert whole.words[0]["start"] == pytest.approx(chunked.words[0]["start"], abs=0.05)
    assert whole.words[-1]["end"] == pytest.approx(chunked.words[-1]["end"], abs=0.1)
    assert ep((audio, RATE), chunk_s=30).outputs[0] == dataclasses.replace(whole, words=())
