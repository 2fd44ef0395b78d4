"""The decoder rewrite against the exported graph it rewrites, run by ONNX Runtime itself."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.onnxruntime")

import numpy as np
import onnx
import onnxruntime as ort

from ipfs_accelerate.backends.onnxruntime import OnnxRuntimeBackend
from ipfs_accelerate.backends.onnxruntime.attention import shrink_decoder


def _export(spec: Any, cache: Path) -> Path:
    runtime = OnnxRuntimeBackend().load(spec, device="cpu", precision="fp32", cache_dir=cache)
    return Path(runtime.details["export_dir"]) / "model.onnx"


def _session(model: Any) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _decode(session: ort.InferenceSession, ids: np.ndarray, mask: np.ndarray, steps: int) -> tuple[list[Any], list[Any]]:
    """Prefill a left-padded batch, then ``steps`` greedy steps; every step's logits and caches."""
    names = [i.name for i in session.get_inputs()]
    caches = [n for n in names if n.startswith("past_key_values.")]
    shape = next(i.shape for i in session.get_inputs() if i.name == caches[0])
    past = {n: np.zeros((ids.shape[0], shape[1], 0, shape[3]), np.float32) for n in caches}
    logits, presents = [], []
    step_ids = ids
    for _ in range(steps + 1):
        feed = {"input_ids": step_ids, "attention_mask": mask, **past}
        if "position_ids" in names:
            positions = np.maximum(mask.cumsum(-1) - 1, 0)
            feed["position_ids"] = positions[:, -step_ids.shape[1]:]
        out = session.run(None, feed)
        logits.append(out[0])
        presents.append(out[1:])
        past = dict(zip(caches, out[1:], strict=True))
        step_ids = out[0][:, -1:].argmax(-1).astype(np.int64)
        mask = np.concatenate([mask, np.ones((mask.shape[0], 1), np.int64)], axis=1)
    return logits, presents


@pytest.mark.parametrize("name", ["gpt2", "opt"])
def test_fused_decoder_computes_what_the_export_computes(name: str, tiny_spec: Any, export_cache: Path) -> None:
    """Every layer fused; a left-padded batch decodes to the same logits and caches (real positions)."""
    spec = tiny_spec(name)
    path = _export(spec, export_cache)
    original = onnx.load(str(path))
    rewritten = onnx.load(str(path))
    counts = shrink_decoder(rewritten)
    config = json.loads((spec.model_dir / "config.json").read_text())
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    assert counts["MultiHeadAttention"] == layers
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count("MultiHeadAttention") == layers and "Softmax" not in ops
    assert len(rewritten.graph.node) < len(original.graph.node)
    # Each layer read the batch size, the new tokens and the cache length from its own
    # tensors; now the graph reads each once and the layers' mask and shape nodes are shared.
    assert counts["shared symbolic shape reads"] > 0 and counts["identical nodes merged"] > 0
    assert ops.count("Shape") < [n.op_type for n in original.graph.node].count("Shape")
    assert ops.count("Max") == 1  # the attention bias (the mask) is computed once, not per layer

    rng = np.random.default_rng(0)
    ids = rng.integers(3, 90, (2, 7)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, :3] = 0  # the second row is left-padded
    expected, expected_caches = _decode(_session(original), ids, mask, steps=3)
    got, got_caches = _decode(_session(rewritten), ids, mask, steps=3)
    real = mask.astype(bool)
    for step, (a, b) in enumerate(zip(expected, got, strict=True)):
        rows = real if step == 0 else np.ones(a.shape[:2], bool)
        np.testing.assert_allclose(b[rows], a[rows], atol=1e-4, rtol=1e-4)
    for a, b in zip(expected_caches[-1], got_caches[-1], strict=True):
        keep = np.concatenate([real, np.ones((2, a.shape[2] - real.shape[1]), bool)], axis=1)
        np.testing.assert_allclose(b.transpose(0, 2, 1, 3)[keep], a.transpose(0, 2, 1, 3)[keep], atol=1e-4, rtol=1e-4)


def test_a_graph_without_a_kv_cache_gets_no_attention_node(tiny_spec: Any, export_cache: Path) -> None:
    model = onnx.load(str(_export(tiny_spec("bert"), export_cache)))
    assert shrink_decoder(model)["MultiHeadAttention"] == 0
    assert "MultiHeadAttention" not in {n.op_type for n in model.graph.node}


def _run(model: Any, feed: dict[str, np.ndarray]) -> list[Any]:
    return _session(model).run(None, feed)


def test_shape_reads_are_shared_by_symbol_only() -> None:
    """Reads of one symbolic dimension from two tensors become one; another symbol's stays."""
    from onnx import TensorProto, helper

    def reshaped(x: str, axis: int) -> list[Any]:
        """``Reshape(x, [x.shape[axis], -1])``, the way exports spell it."""
        return [
            helper.make_node("Shape", [x], [f"{x}_shape"]),
            helper.make_node("Gather", [f"{x}_shape", f"axis{axis}"], [f"{x}_dim"]),
            helper.make_node("Unsqueeze", [f"{x}_dim", "zero"], [f"{x}_dim1"]),
            helper.make_node("Concat", [f"{x}_dim1", "minus_one"], [f"{x}_target"], axis=0),
            helper.make_node("Reshape", [x, f"{x}_target"], [f"{x}_out"]),
        ]

    graph = helper.make_graph(
        [*reshaped("a", 0), *reshaped("b", 0), *reshaped("c", 1)], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 6]),
         helper.make_tensor_value_info("c", TensorProto.FLOAT, [2, "length"])],
        [helper.make_tensor_value_info(f"{x}_out", TensorProto.FLOAT, None) for x in "abc"],
        [helper.make_tensor(f"axis{i}", TensorProto.INT64, [], [i]) for i in (0, 1)]
        + [helper.make_tensor("zero", TensorProto.INT64, [1], [0]),
           helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(0)
    feed = {"a": rng.random((3, 4), np.float32), "b": rng.random((3, 6), np.float32), "c": rng.random((2, 5), np.float32)}
    expected = _run(model, feed)
    counts = shrink_decoder(model)
    assert counts["shared symbolic shape reads"] == 1  # b's batch reads a's; c's length is another symbol
    ops = [n.op_type for n in model.graph.node]
    assert ops.count("Shape") == 2 and ops.count("Concat") == 2 and ops.count("Reshape") == 3
    for got, want in zip(_run(model, feed), expected, strict=True):
        np.testing.assert_array_equal(got, want)


def test_a_graph_with_subgraphs_keeps_its_names() -> None:
    """A subgraph reads outer tensors by name: no read is redirected and no node merged."""
    from onnx import TensorProto, helper

    def branch(name: str) -> Any:
        return helper.make_graph([helper.make_node("Identity", ["b_dim"], [f"{name}_out"])], name, [],
                                 [helper.make_tensor_value_info(f"{name}_out", TensorProto.INT64, [])])

    nodes = [
        helper.make_node("Shape", ["a"], ["a_shape"]),
        helper.make_node("Gather", ["a_shape", "axis0"], ["a_dim"]),
        helper.make_node("Shape", ["b"], ["b_shape"]),
        helper.make_node("Gather", ["b_shape", "axis0"], ["b_dim"]),
        helper.make_node("Add", ["a_dim", "b_dim"], ["total"]),
        helper.make_node("If", ["flag"], ["chosen"], then_branch=branch("then"), else_branch=branch("else")),
    ]
    graph = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["batch", 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, ["batch", 6]),
         helper.make_tensor_value_info("flag", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info(name, TensorProto.INT64, []) for name in ("total", "chosen")],
        [helper.make_tensor("axis0", TensorProto.INT64, [], [0])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    counts = shrink_decoder(model)
    assert counts["shared symbolic shape reads"] == 0 and counts["identical nodes merged"] == 0
    feed = {"a": np.zeros((3, 4), np.float32), "b": np.zeros((3, 6), np.float32), "flag": np.array(True)}
    assert [int(v) for v in _run(model, feed)] == [6, 3]
