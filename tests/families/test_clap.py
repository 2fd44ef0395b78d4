"""CLAP: audio and text embeddings and zero-shot classification on a tiny synthetic model."""

from __future__ import annotations

import numpy as np
import pytest

import ipfs_accelerate as ia

CLAP = "laion/clap-htsat-unfused"
RATE = 48000


def _tone(seconds: float, hz: float) -> tuple[np.ndarray, int]:
    t = np.arange(int(RATE * seconds), dtype=np.float32) / RATE
    return (0.3 * np.sin(2 * np.pi * hz * t)).astype(np.float32), RATE


def test_embeddings_share_one_space(load_tiny):
    audio = load_tiny(CLAP, "embed-audio")([_tone(1.0, 440), _tone(2.0, 880)])
    text = load_tiny(CLAP, "embed-text")(["a dog barking", "rain"])
    assert [v.shape for v in audio.outputs] == [(16,), (16,)]
    assert [v.shape for v in text.outputs] == [(16,), (16,)]
    for v in (*audio.outputs, *text.outputs):
        assert np.linalg.norm(v) == pytest.approx(1.0, abs=1e-4)
    assert audio.timings["audio_seconds"] == pytest.approx(3.0)


def test_long_audio_uses_the_middle_window_deterministically(load_tiny):
    ep = load_tiny(CLAP, "embed-audio")
    long_clip = _tone(14.0, 300)
    a = ep(long_clip)
    b = ep(long_clip)
    np.testing.assert_array_equal(a.outputs[0], b.outputs[0])
    assert any("2.0–12.0 s" in n for n in a.provenance.notes)


def test_classify_scores_are_probabilities_over_labels(load_tiny):
    ep = load_tiny(CLAP, "classify")
    labels = ["dog", "rain", "engine"]
    res = ep([_tone(1.0, 440), _tone(1.0, 100)], labels=labels)
    for scores in res.outputs:
        assert sorted(s["label"] for s in scores) == sorted(labels)
        assert sum(s["score"] for s in scores) == pytest.approx(1.0, abs=1e-5)
        assert [s["score"] for s in scores] == sorted((s["score"] for s in scores), reverse=True)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "has no labels"),
        ({"labels": "dog"}, "list of strings"),
        ({"labels": ["dog", ""]}, "non-empty"),
        ({"labels": ["dog", "dog"]}, "distinct"),
        ({"labels": ["dog"], "template": "no slot"}, "template"),
    ],
)
def test_classify_bad_labels(load_tiny, params, message):
    with pytest.raises(ia.InvalidInput, match=message):
        load_tiny(CLAP, "classify")(_tone(0.5, 440), **params)


def test_classify_with_labels_per_clip(load_tiny):
    ep = load_tiny(CLAP, "classify")
    res = ep([{"audio": _tone(0.5, 440), "labels": ["a", "b"]}, _tone(0.5, 220)], labels=["x", "y", "z"])
    assert [s["label"] for s in res.outputs[0]] in (["a", "b"], ["b", "a"])
    assert sorted(s["label"] for s in res.outputs[1]) == ["x", "y", "z"]
    assert sum(s["score"] for s in res.outputs[1]) == pytest.approx(1.0, abs=1e-5)


def test_classify_bad_audio(load_tiny):
    with pytest.raises(ia.InvalidInput, match="audio #1"):
        load_tiny(CLAP, "classify")([_tone(0.5, 440), b"RIFF....garbage"], labels=["a", "b"])
