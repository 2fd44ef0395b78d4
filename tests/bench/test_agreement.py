"""How the bench compares our outputs with a baseline's, and counts the work it measures."""

from __future__ import annotations

import numpy as np
import pytest

from ipfs_accelerate.bench.quality import agreement
from ipfs_accelerate.families._audio import Transcription


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


def _ranked(**scores: float) -> list[dict[str, float | str]]:
    return [{"label": k, "score": v} for k, v in sorted(scores.items(), key=lambda kv: -kv[1])]


def test_classifier_labels_compare_by_score_and_top_label():
    ours = [_ranked(cat=0.7, dog=0.2, car=0.1), _ranked(cat=0.4, dog=0.6)]
    # Same scores, the baseline's dicts in another key order (as transformers pipelines write them).
    theirs = [[{"score": c["score"], "label": c["label"]} for c in ours[0]], _ranked(cat=0.55, dog=0.45)]
    res = agreement(ours, theirs)
    assert res["metric"] == "cosine" and res["top1_match"] == 0.5
    assert res["max_abs_diff"] == pytest.approx(0.15)
    expected = (0.4 * 0.55 + 0.6 * 0.45) / (np.hypot(0.4, 0.6) * np.hypot(0.55, 0.45))
    assert res["min"] == pytest.approx(expected) and res["mean"] == pytest.approx((1 + expected) / 2)


def test_fill_mask_candidates_compare_per_mask_over_the_union_of_tokens():
    ours = [[[{"token_id": 5, "score": 2e-5}, {"token_id": 7, "score": 1e-5}]]]
    assert agreement(ours, ours) == {"metric": "cosine", "min": 1.0, "mean": 1.0, "max_abs_diff": 0.0,
                                     "top1_match": 1.0}
    theirs = [[[{"token_id": 5, "score": 2e-5}, {"token_id": 9, "score": 1e-5}]]]
    res = agreement(ours, theirs)  # token 7 and 9 each score 0 on the other side
    assert res["min"] == pytest.approx(0.8) and res["top1_match"] == 1.0


def test_scored_outputs_of_different_shapes_have_no_agreement():
    assert agreement([_ranked(a=1.0)], [[_ranked(a=1.0), _ranked(a=1.0)]]) is None
    assert agreement([_ranked(a=1.0)], ["a"]) is None


def test_encoder_work_counts_real_tokens_not_padding():
    import torch

    from ipfs_accelerate.bench.measure import encoder_tokens

    ids = torch.ones(2, 5, dtype=torch.long)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    assert encoder_tokens({"input_ids": ids, "attention_mask": mask}) == 8
    assert encoder_tokens({"input_ids": ids}) == 10  # no mask: every id is computed
    assert encoder_tokens({"pixel_values": torch.zeros(1, 3, 4, 4)}) == 0
