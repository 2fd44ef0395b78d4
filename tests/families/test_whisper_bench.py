"""Whisper benchmark hooks: faster-whisper references on the real tiny.en, espeak-ng bench speech."""

from __future__ import annotations

import importlib
import shutil

import pytest

from ipfs_accelerate.bench.quality import word_error_rate
from ipfs_accelerate.families._audio import Transcription
from ipfs_accelerate.families.bench_profile import bench_profile
from ipfs_accelerate.media.audio import load_audio

TINY_EN = "openai/whisper-tiny.en"


@pytest.fixture(scope="module")
def tiny_whisper(load_tiny):
    return load_tiny(TINY_EN)


def test_faster_whisper_baselines_transcribe_speech(real_whisper, speech_wav):
    pytest.importorskip("faster_whisper")
    path, text = speech_wav
    handler = real_whisper.handler
    baselines = bench_profile(handler).reference_baselines()
    assert [b.precision for b in baselines] == ["int8", "fp32"]
    assert all(b.library == "faster-whisper" for b in baselines)
    params = handler.parse_params(bench_profile(handler).params())
    for baseline in baselines:
        run = baseline.load("cpu")
        result = run([str(path)], params)
        assert len(result.outputs) == 1
        out = result.outputs[0]
        assert isinstance(out, Transcription)
        assert word_error_rate(text, out.text) <= 0.25, (baseline.name, out.text)
        assert result.figures["audio_seconds"] == pytest.approx(load_audio(str(path), sampling_rate=16000).size / 16000)
        assert result.figures["new_tokens"] > 0


def test_baselines_are_empty_for_synthetic_weights(tiny_whisper):
    assert tiny_whisper.handler.weights.source.startswith("synthetic:")
    assert bench_profile(tiny_whisper.handler).reference_baselines() == []


def test_bench_inputs_are_real_speech_in_one_window(tiny_whisper):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    handler = tiny_whisper.handler
    items = bench_profile(handler).inputs(2)
    assert len(items) == 2 and items == bench_profile(handler).inputs(2)  # stable per n
    references = bench_profile(handler).references(2)
    assert references is not None and len(references) == 2 and all(len(r.split()) > 40 for r in references)
    for item in items:
        seconds = load_audio(item, sampling_rate=16000).size / 16000
        assert 20.0 < seconds <= 30.0
    # The task itself accepts them.
    prepared = handler.preprocess(items, handler.parse_params({}))
    assert prepared.count == 2 and not prepared.extra["long"]


def test_bench_inputs_fall_back_without_espeak(tiny_whisper, monkeypatch):
    # Not ``import ipfs_accelerate.families.whisper as …``: ``ipfs_accelerate.families`` is
    # also the package's function of that name, which the dotted form would resolve through.
    whisper = importlib.import_module("ipfs_accelerate.families.whisper")

    monkeypatch.setattr(whisper.shutil, "which", lambda name: None)
    handler = tiny_whisper.handler
    assert len(bench_profile(handler).inputs(3)) == 3
    assert bench_profile(handler).references(3) is None
