"""CUDA: runs only where a CUDA device really works; skips cleanly elsewhere."""

from __future__ import annotations

import pytest

from ipfs_accelerate.backends.pytorch import cuda_works
from tests.fixtures.models import cosine

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not cuda_works()[0], reason=f"no working CUDA device: {cuda_works()[1]}"),
]


def test_fp16_embeddings_match_cpu_fp32(load_tiny):
    texts = ["a sentence on the GPU", "and another one"]
    ref = load_tiny("prajjwal1/bert-tiny", "embed", device="cpu")(texts).outputs
    res = load_tiny("prajjwal1/bert-tiny", "embed", device="cuda", precision="fp16")(texts)
    assert res.provenance.device.startswith("cuda") and res.provenance.precision == "fp16"
    for a, b in zip(ref, res.outputs, strict=True):
        assert cosine(a, b) >= 0.99


def test_auto_precision_on_cuda(load_tiny):
    res = load_tiny("gpt2", device="auto")("hello", max_new_tokens=4)
    assert res.provenance.device.startswith("cuda")
    assert res.provenance.precision in ("fp16", "bf16")


def test_t5_avoids_fp16_on_cuda(load_tiny):
    res = load_tiny("google/t5-efficient-tiny", device="cuda")("translate: hi", max_new_tokens=4)
    assert res.provenance.precision in ("bf16", "fp32")
