"""Parameter counts read from safetensors headers, and the fp32 size exports estimate from them."""

from __future__ import annotations

import pytest

from ipfs_accelerate.backends.converting.direct import fp32_weight_bytes
from ipfs_accelerate.store.weights import parameter_counts

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")


def test_counts_every_tensor_and_the_matmul_weights_outside_embeddings(tmp_path):
    safetensors_torch.save_file({
        "model.embed_tokens.weight": torch.zeros(10, 4),
        "model.layer.dense.weight": torch.zeros(4, 3),
        "model.layer.dense.bias": torch.zeros(3),
    }, str(tmp_path / "model.safetensors"))
    safetensors_torch.save_file({"lm_head.weight": torch.zeros(3, 5, dtype=torch.float16)},
                                str(tmp_path / "model-2.safetensors"))
    assert parameter_counts(tmp_path) == (40 + 12 + 3 + 15, 12 + 15)
    # fp32 bytes are four per parameter whatever the stored dtype (the fp16 head included).
    assert fp32_weight_bytes(tmp_path) == 4 * (40 + 12 + 3 + 15)


def test_a_folder_without_safetensors_counts_nothing(tmp_path):
    assert parameter_counts(tmp_path) == (0, 0)
    (tmp_path / "pytorch_model.bin").write_bytes(b"\0" * 64)
    (tmp_path / "config.json").write_text('{"torch_dtype": "float16"}')
    assert fp32_weight_bytes(tmp_path) == 128  # pickled fp16 weights: twice their file size
