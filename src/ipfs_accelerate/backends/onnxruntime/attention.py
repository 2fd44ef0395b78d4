"""Shrink a decoder's ONNX graph for ONNX Runtime: one attention node per layer.

A decoder step at batch 1 is a few dozen matrix products surrounded by hundreds of small
nodes, and ONNX Runtime spends some microseconds on every node whatever its size: a GPT-2
size int8 step runs 49 matrix products among ~660 nodes, and the nodes around the products
cost a third of its time (docs/backends.md, "Measurements behind the code"). An exported
attention layer with a KV cache is some 25 of those nodes (head split and merge, the cache concatenation, the scale computed from a shape, the
scores, the mask, softmax and its NaN guard).

:func:`shrink_decoder` rewrites, by structure only (no model family or node name is
matched):

* every self-attention over a KV cache, ``softmax(q·kᵀ·s + bias)·v`` where ``k`` and ``v``
  are ``Concat(past, new)`` graph outputs, into ``com.microsoft.MultiHeadAttention``, which
  splits heads, appends to the cache, and writes the same ``present`` outputs;
* every ``Gather``/``Slice`` of a ``Shape`` that reads static dimensions, into a constant
  (ONNX Runtime then folds what was computed from it, such as the attention scale);
* every ``Gather`` of a ``Shape`` that reads a symbolic dimension (the batch size, the new
  tokens, the cache length) into the first such read of the same symbol: every layer
  recomputes these from its own tensors (the mask from its key cache's length, the shape
  its projection's output is reshaped back to), and once they read one value the layers'
  copies are identical nodes;
* identical nodes (same operator, inputs and attributes) into one;

then drops the nodes nothing reads any more. Each rewrite keeps the graph's own
arithmetic: the scale factors stay the graph's tensors, the additive mask stays the graph's
mask. One difference, on rows the mask hides completely (padding queries): the exported
graph turns their NaN softmax into zeros, MultiHeadAttention is given the mask with ``-inf``
replaced by the lowest float and averages them instead; nothing reads those rows.
"""

from __future__ import annotations

import collections
from typing import Any

__all__ = ["shrink_decoder"]

# The most elements a constant read as an index or a slice bound has (a shape's rank at most).
_SMALL = 16
# The additive mask's floor: finite, so a fully masked row's softmax stays finite.
_FLOAT_MIN = "ipfs_accelerate/attention_mask_floor"


def shrink_decoder(model: Any) -> dict[str, int]:
    """Fuse cached self-attention, fold static and share symbolic shape reads of ``model``
    in place, then merge the nodes that became identical.

    Args:
        model: an ``onnx.ModelProto`` of a decoder with ``past`` inputs and ``present``
            outputs (in a graph without a KV cache only the shape reads are rewritten).
            A graph with subgraphs (If, Loop) keeps its symbolic shape reads and repeated
            nodes: a subgraph reads outer tensors by a name a rewrite would change.

    Returns:
        How many of each rewrite were made: ``{"MultiHeadAttention": n, "static shape
        reads": m, "shared symbolic shape reads": k, "identical nodes merged": j}`` (zeros
        when nothing matched; the graph is then unchanged).
    """
    from onnx import AttributeProto

    shapes, symbols = _inferred_shapes(model)
    folded = _fold_static_shape_reads(model, shapes)
    # Renaming a tensor cannot follow it into a subgraph (If, Loop) that reads it by name.
    renames = not any(a.type in (AttributeProto.GRAPH, AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute)
    shared = _share_symbolic_shape_reads(model, symbols) if renames else 0
    fused = _fuse_cached_attention(model, shapes)
    merged = 0
    if folded or shared or fused:
        _prune_and_sort(model)
        merged = _merge_identical_nodes(model) if renames else 0
        if merged:
            _prune_and_sort(model)
    return {"MultiHeadAttention": fused, "static shape reads": folded, "shared symbolic shape reads": shared,
            "identical nodes merged": merged}


def _inferred_shapes(model: Any) -> tuple[dict[str, list[int | None]], dict[str, list[str | None]]]:
    """By onnxruntime's symbolic shape inference, which knows its contrib ops (the fused
    layer norms a GPT-2 graph holds): tensor name → dims (None where symbolic), and tensor
    name → the symbolic dims' names (None where static or unknown), such as ``batch_size``
    or ``past_sequence_length + sequence_length``: two dims of one name hold one value."""
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(model, auto_merge=True, guess_output_rank=False)
    shapes: dict[str, list[int | None]] = {}
    symbols: dict[str, list[str | None]] = {}
    graph = inferred.graph
    for info in [*graph.value_info, *graph.input, *graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            shapes[info.name] = [d.dim_value if d.HasField("dim_value") else None for d in tensor.shape.dim]
            symbols[info.name] = [d.dim_param or None if d.HasField("dim_param") else None for d in tensor.shape.dim]
    for name, tensor in _constant_tensors(graph):
        shapes[name] = list(tensor.dims)
    return shapes, symbols


def _constant_tensors(graph: Any) -> list[tuple[str, Any]]:
    """(name, TensorProto) of every initializer and every ``Constant`` node's value."""
    tensors = [(init.name, init) for init in graph.initializer]
    tensors += [(node.output[0], node.attribute[0].t) for node in graph.node
                if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value"]
    return tensors


def _constants(graph: Any) -> dict[str, Any]:
    """Name → numpy value of the small initializers and Constant node outputs.

    Only indices and slice bounds are ever read (a handful of elements each); converting the
    weights too would copy the whole model, twice per rewrite.
    """
    import math

    from onnx import numpy_helper

    return {name: numpy_helper.to_array(t) for name, t in _constant_tensors(graph) if math.prod(t.dims) <= _SMALL}


def _attribute(node: Any, name: str, default: Any = None) -> Any:
    from onnx import helper

    for attribute in node.attribute:
        if attribute.name == name:
            return helper.get_attribute_value(attribute)
    return default


def _fold_static_shape_reads(model: Any, shapes: dict[str, list[int | None]]) -> int:
    """Replace ``Gather(Shape(x), i)`` and ``Slice(Shape(x), ...)`` that read only static
    dimensions of ``x`` by initializers; returns how many."""
    import numpy as np
    from onnx import numpy_helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = _constants(graph)
    folded = []
    for node in graph.node:
        if node.op_type not in ("Gather", "Slice"):
            continue
        shape_node = producer.get(node.input[0])
        if shape_node is None or shape_node.op_type != "Shape" or shape_node.attribute:
            continue
        dims = shapes.get(shape_node.input[0])
        args: list[Any] = [constants.get(name) if name else None for name in node.input[1:]]
        if dims is None or any(a is None for a, name in zip(args, node.input[1:], strict=True) if name):
            continue
        full = np.array([-1 if d is None else d for d in dims], dtype=np.int64)
        if node.op_type == "Gather":
            if _attribute(node, "axis", 0) != 0:
                continue
            value = full[args[0]]
        else:
            starts, ends = args[0], args[1]
            axes = args[2] if len(args) > 2 else None
            steps = args[3] if len(args) > 3 else None
            if starts.size != 1 or (axes is not None and int(axes.reshape(-1)[0]) != 0):
                continue
            step = 1 if steps is None else int(steps.reshape(-1)[0])
            value = full[slice(int(starts.reshape(-1)[0]), int(ends.reshape(-1)[0]), step)]
        if (np.asarray(value) < 0).any():
            continue  # a symbolic dimension: only the graph knows it at run time
        folded.append((node, numpy_helper.from_array(np.asarray(value, dtype=np.int64), node.output[0])))
    for node, init in folded:
        graph.node.remove(node)
        graph.initializer.append(init)
    return len(folded)


def _share_symbolic_shape_reads(model: Any, symbols: dict[str, list[str | None]]) -> int:
    """Point the readers of every ``Gather(Shape(x), i)`` that reads a symbolic dimension at the
    first read (in graph order) of the same symbol with an index of the same rank; returns how
    many reads were redirected.

    The first read in a topological order cannot depend on a later one's readers, so the
    graph stays acyclic. The nodes left unread are pruned afterwards.
    """
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    constants = _constants(graph)
    first: dict[tuple[str, int], str] = {}
    renamed: dict[str, str] = {}
    for node in graph.node:
        if node.op_type != "Gather" or len(node.input) != 2 or _attribute(node, "axis", 0) != 0:
            continue
        shape_node = producer.get(node.input[0])
        index = constants.get(node.input[1])
        if shape_node is None or shape_node.op_type != "Shape" or shape_node.attribute or index is None or index.size != 1:
            continue
        dims = symbols.get(shape_node.input[0])
        position = int(index.reshape(-1)[0])
        if dims is None or not -len(dims) <= position < len(dims) or dims[position] is None:
            continue
        key = (str(dims[position]), index.ndim)
        if key in first:
            renamed[node.output[0]] = first[key]
        else:
            first[key] = node.output[0]
    if renamed:
        outputs = {o.name for o in graph.output}
        for node in graph.node:
            node.input[:] = [renamed.get(name, name) if name not in outputs else name for name in node.input]
    return len(renamed)


# Operators whose outputs differ between two calls on the same inputs: never merged.
_NONDETERMINISTIC = frozenset({"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike", "Multinomial",
                               "Bernoulli", "Dropout"})


def _merge_identical_nodes(model: Any) -> int:
    """Replace each node that repeats an earlier one (same operator, inputs and attributes)
    by the earlier one's outputs; returns how many were merged. ``model``'s nodes must be in
    topological order, so a merge makes the nodes that read it repeats in turn."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    seen: dict[tuple[Any, ...], list[str]] = {}
    renamed: dict[str, str] = {}
    merged = 0
    for node in graph.node:
        node.input[:] = [renamed.get(name, name) for name in node.input]
        if node.op_type in _NONDETERMINISTIC or not node.output or any(out in outputs for out in node.output):
            continue
        key = (node.domain, node.op_type, tuple(node.input),
               tuple(sorted(a.SerializeToString(deterministic=True) for a in node.attribute)))
        earlier = seen.get(key)
        if earlier is None or len(earlier) != len(node.output):
            seen[key] = list(node.output)
            continue
        renamed.update((out, kept) for out, kept in zip(node.output, earlier, strict=True) if out)
        merged += 1
    return merged


def _fuse_cached_attention(model: Any, shapes: dict[str, list[int | None]]) -> int:
    """Replace each matched self-attention over a KV cache by MultiHeadAttention; returns how many."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    readers: dict[str, list[Any]] = collections.defaultdict(list)
    for node in graph.node:
        for name in node.input:
            readers[name].append(node)
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}

    def made_by(name: str, op_type: str) -> Any:
        node = producer.get(name)
        return node if node is not None and node.op_type == op_type else None

    def transpose(name: str, perm: list[int]) -> Any:
        node = made_by(name, "Transpose")
        return node if node is not None and list(_attribute(node, "perm", [])) == perm else None

    def cache_concat(name: str) -> Any:
        """The Concat(past, new) along the sequence axis that writes a ``present`` output."""
        node = made_by(name, "Concat")
        if node is None or len(node.input) != 2 or node.output[0] not in outputs or node.input[0] not in inputs:
            return None
        return node if _attribute(node, "axis") in (2, -2) else None

    def merged_heads(name: str, heads: int, size: int) -> str | None:
        """``x`` of ``Transpose(Reshape(x, [B, S, heads, size]), [0, 2, 1, 3])``, x being [B, S, heads·size]."""
        node = transpose(name, [0, 2, 1, 3])
        reshape = made_by(node.input[0], "Reshape") if node is not None else None
        if reshape is None:
            return None
        source, split = shapes.get(reshape.input[0]), shapes.get(reshape.output[0])
        if source is None or split is None or len(source) != 3 or len(split) != 4:
            return None
        if split[2:] != [heads, size] or source[2] != heads * size:
            return None
        return str(reshape.input[0])

    constants = _constants(graph)

    def reads_only(shape: Any, dims: set[int]) -> bool:
        """Whether everything that reads this Shape node takes one of ``dims`` by a Gather."""
        if shape.attribute:
            return False
        for node in readers[shape.output[0]]:
            index = constants.get(node.input[1]) if node.op_type == "Gather" and len(node.input) > 1 else None
            if index is None or _attribute(node, "axis", 0) != 0 or index.size != 1 or int(index.reshape(-1)[0]) not in dims:
                return False
        return True

    def scalar(name: str) -> bool:
        dims = shapes.get(name)
        return dims is not None and all(d == 1 for d in dims)

    def unscaled(name: str, factors: list[str]) -> str:
        """Step back over a Mul by a scalar, noting the factor."""
        node = made_by(name, "Mul")
        if node is None:
            return name
        for tensor, factor in ((node.input[0], node.input[1]), (node.input[1], node.input[0])):
            if scalar(factor) and not scalar(tensor):
                factors.append(factor)
                return str(tensor)
        return name

    replaced: list[Any] = []
    added: list[Any] = []
    for product in list(graph.node):
        if product.op_type != "MatMul":
            continue
        value_cache = cache_concat(product.input[1])
        if value_cache is None:
            continue
        weights = made_by(product.input[0], "Where")
        if weights is not None:  # softmax's NaN guard: Where(IsNaN(p), 0, p)
            guard = made_by(weights.input[0], "IsNaN")
            if guard is None or guard.input[0] != weights.input[2]:
                continue
            softmax = made_by(weights.input[2], "Softmax")
        else:
            softmax = made_by(product.input[0], "Softmax")
        if softmax is None or _attribute(softmax, "axis", -1) not in (-1, 3):
            continue
        bias = None
        scores = made_by(softmax.input[0], "MatMul")
        add = made_by(softmax.input[0], "Add")
        if add is not None:
            for a, b in ((add.input[0], add.input[1]), (add.input[1], add.input[0])):
                if made_by(a, "MatMul") is not None:
                    scores, bias = made_by(a, "MatMul"), b
                    break
        if scores is None:
            continue
        past_key = shapes.get(value_cache.input[0])
        if past_key is None or len(past_key) != 4 or not past_key[1] or not past_key[3]:
            continue
        heads, size = int(past_key[1]), int(past_key[3])
        factors: list[str] = []
        query_heads = unscaled(scores.input[0], factors)
        key_transposed = transpose(unscaled(scores.input[1], factors), [0, 1, 3, 2])
        key_cache = cache_concat(key_transposed.input[0]) if key_transposed is not None else None
        if key_cache is None:
            continue
        query = merged_heads(query_heads, heads, size)
        key = merged_heads(key_cache.input[1], heads, size)
        value = merged_heads(value_cache.input[1], heads, size)
        after = readers[product.output[0]]
        if query is None or key is None or value is None:
            continue
        if len(after) != 1 or transpose(after[0].output[0], [0, 2, 1, 3]) is None:
            continue
        merged = readers[after[0].output[0]]
        merge = [n for n in merged if n.op_type == "Reshape"]
        # Shape reads of the [B, S, heads, size] output that only take B or S (the merge's
        # target shape, in an unoptimized export) read the query's shape instead: it has them.
        batch_and_length = [n for n in merged if n.op_type == "Shape" and reads_only(n, {0, 1})]
        if len(merge) != 1 or len(merge) + len(batch_and_length) != len(merged):
            continue
        if shapes.get(merge[0].output[0], [None])[-1] != heads * size:
            continue
        if bias is not None:
            bias_dims = shapes.get(bias)
            if bias_dims is None or len(bias_dims) != 4 or bias_dims[1] not in (1, heads):
                continue
        base = product.name or product.output[0]
        for node in batch_and_length:
            node.input[0] = query
        for i, factor in enumerate(factors):
            scaled = f"{base}/query_scaled_{i}"
            added.append(helper.make_node("Mul", [query, factor], [scaled], name=scaled))
            query = scaled
        floored = ""
        if bias is not None:
            floored = f"{base}/attention_bias"
            added.append(helper.make_node("Max", [bias, _FLOAT_MIN], [floored], name=floored))
        added.append(helper.make_node(
            "MultiHeadAttention",
            [query, key, value, "", "", floored, key_cache.input[0], value_cache.input[0]],
            [merge[0].output[0], key_cache.output[0], value_cache.output[0]],
            name=f"{base}/MultiHeadAttention", domain="com.microsoft", num_heads=heads, scale=1.0,
        ))
        replaced += [value_cache, merge[0]]
        # Others that read the key cache (its length, for the mask) read a copy under another
        # name: MultiHeadAttention writes the present output, and those readers feed its bias.
        others = [n for n in readers[key_cache.output[0]] if n is not key_transposed]
        if others:
            copy = f"{key_cache.output[0]}/copy"
            for node in others:
                node.input[:] = [copy if name == key_cache.output[0] else name for name in node.input]
            key_cache.output[0] = copy
        else:
            replaced.append(key_cache)
    if not added:
        return 0
    for node in replaced:
        graph.node.remove(node)
    graph.node.extend(added)
    graph.initializer.append(numpy_helper.from_array(np.array(np.finfo(np.float32).min, dtype=np.float32), _FLOAT_MIN))
    if not any(opset.domain == "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return sum(1 for node in added if node.op_type == "MultiHeadAttention")


def _prune_and_sort(model: Any) -> None:
    """Drop nodes and initializers nothing reads, and order the nodes topologically."""
    graph = model.graph
    nodes = list(graph.node)
    outputs = {o.name for o in graph.output}
    while True:
        read = {name for node in nodes for name in node.input} | outputs
        alive = [node for node in nodes if any(out in read for out in node.output)]
        if len(alive) == len(nodes):
            break
        nodes = alive
    read = {name for node in nodes for name in node.input} | outputs
    kept = [init for init in graph.initializer if init.name in read]
    available = {i.name for i in graph.input} | {init.name for init in kept} | {""}
    ordered: list[Any] = []
    pending = nodes
    while pending:
        waiting = []
        for node in pending:
            if all(name in available for name in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ValueError(f"graph rewrite left {len(waiting)} nodes with unproduced inputs")
        pending = waiting
    del graph.node[:]
    graph.node.extend(ordered)
    del graph.initializer[:]
    graph.initializer.extend(kept)
