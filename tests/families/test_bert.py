"""BERT: embed (mean / CLS pooling) and fill-mask on a tiny synthetic model."""

from __future__ import annotations

import numpy as np
import pytest

import ipfs_accelerate as ia
from tests.fixtures.models import cosine

BERT = "prajjwal1/bert-tiny"


def test_embed_shapes_and_provenance(load_tiny):
    ep = load_tiny(BERT, "embed")
    res = ep(["first sentence", "a second, longer sentence here"])
    assert len(res.outputs) == 2
    assert all(v.shape == (32,) and v.dtype == np.float32 for v in res.outputs)
    p = res.provenance
    assert (p.family, p.task, p.backend, p.device, p.precision) == ("bert", "embed", "torch", "cpu", "fp32")
    assert p.weights == "synthetic" and p.source == f"synthetic:{BERT}"
    assert p.batch_size == 2
    assert {"preprocess_s", "inference_s", "postprocess_s", "total_s", "items_per_s"} <= set(res.timings)


def test_pooling_choices_differ_and_normalize(load_tiny):
    ep = load_tiny(BERT, "embed")
    mean = ep("some text", pooling="mean").outputs[0]
    cls = ep("some text", pooling="cls").outputs[0]
    assert not np.allclose(mean, cls)
    unit = ep("some text", pooling="mean", normalize=True).outputs[0]
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
    assert cosine(unit, mean) == pytest.approx(1.0, abs=1e-6)


def test_batch_equals_one_by_one(load_tiny):
    ep = load_tiny(BERT, "embed")
    texts = ["short", "a considerably longer sentence with many more tokens in it"]
    batch = ep(texts).outputs
    for text, vec in zip(texts, batch, strict=True):
        np.testing.assert_allclose(ep(text).outputs[0], vec, atol=1e-5)


def test_fill_mask_returns_top_k_per_mask(load_tiny):
    ep = load_tiny(BERT, "fill-mask")
    res = ep(["Paris is the [MASK] of [MASK].", "one [MASK] here"], top_k=3)
    first, second = res.outputs
    assert len(first) == 2 and len(second) == 1
    for candidates in (*first, *second):
        assert len(candidates) == 3
        scores = [c["score"] for c in candidates]
        assert scores == sorted(scores, reverse=True) and all(0 < s <= 1 for s in scores)
        assert all(isinstance(c["token"], str) and isinstance(c["token_id"], int) for c in candidates)


def test_fill_mask_without_mask_is_invalid(load_tiny):
    ep = load_tiny(BERT, "fill-mask")
    with pytest.raises(ia.InvalidInput, match=r"no \[MASK\] token"):
        ep("nothing to fill")
    with pytest.raises(ia.InvalidInput, match="top_k"):
        ep("a [MASK]", top_k=0)


@pytest.mark.parametrize("precision", ["bf16", "int8"])
def test_low_precision_stays_close_to_fp32(load_tiny, precision):
    texts = ["the quick brown fox", "jumps over the lazy dog", "numbers 1 2 3"]
    ref = load_tiny(BERT, "embed")(texts).outputs
    # bert-tiny at full size: int8 dynamic quantization needs real layer widths to be meaningful.
    low = load_tiny(BERT, "embed", precision=precision)
    res = low(texts)
    assert res.provenance.precision == precision
    for a, b in zip(ref, res.outputs, strict=True):
        assert cosine(a, b) >= 0.99
