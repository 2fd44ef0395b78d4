"""How the bench compares our outputs with a baseline's."""

from __future__ import annotations

import numpy as np
import pytest

from ipfs_accelerate.bench.runner import agreement
from ipfs_accelerate.skills._audio import Transcription


def test_transcripts_compare_as_texts_with_word_error_rate():
    res = agreement([Transcription(text="the cat sat"), Transcription(text="a dog")],
                    [Transcription(text="the cat sat"), Transcription(text="a frog")])
    assert res["metric"] == "exact_match" and res["value"] == 0.5
    assert res["wer_vs_baseline"] == pytest.approx(0.25)


def test_vectors_compare_by_cosine():
    a = [np.array([1.0, 0.0]), np.array([0.0, 1.0])]
    b = [np.array([1.0, 0.0]), np.array([1.0, 1.0])]
    res = agreement(a, b)
    assert res["metric"] == "cosine" and res["min"] == pytest.approx(2 ** -0.5)


def test_mismatched_lengths_have_no_agreement():
    assert agreement(["a"], ["a", "b"]) is None
