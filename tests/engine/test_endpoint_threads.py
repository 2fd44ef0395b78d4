"""The host-thread limit an endpoint applies around a runtime's forward pass."""

from __future__ import annotations

import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.engine.endpoint import torch_threads

torch = pytest.importorskip("torch")


def test_torch_threads_limits_the_block_and_restores():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with torch_threads(1):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with torch_threads(None):
            assert torch.get_num_threads() == 2
        with torch_threads(4):  # a limit above the current count changes nothing
            assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError), torch_threads(1):
            raise RuntimeError("boom")
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("backend", ["onnxruntime", "torch"])
def test_forward_runs_with_the_runtime_host_threads(cache_dir, backend):
    pytest.importorskip("onnxruntime") if backend == "onnxruntime" else None
    ep = ia.load("prajjwal1/bert-tiny", task="embed", backend=backend, weights="synthetic", cache_dir=cache_dir)
    seen = []
    forward = ep.handler.forward

    def recording_forward(runtime, prepared, params):
        seen.append(torch.get_num_threads())
        return forward(runtime, prepared, params)

    ep.handler.forward = recording_forward
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        ep(["a sentence"])
        assert seen == [1 if backend == "onnxruntime" else 2]
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
