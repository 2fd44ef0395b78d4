"""The ONNX Runtime backend against PyTorch fp32, on tiny models of every handled family."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from ipfs_accelerate._exceptions import BackendUnavailable
from ipfs_accelerate.backends import get_backend
from ipfs_accelerate.backends.converting import accuracy
from ipfs_accelerate.backends.onnxruntime import OnnxRuntimeBackend
from ipfs_accelerate.backends.onnxruntime.quantize import WEIGHT_FORMATS, quant_flavour, weight_format_name
from tests.backends._tiny import (
    check_unpadded_bert_export,
    cosine_to_reference,
    decoder_step_lengths,
    greedy,
    min_cosine,
    outputs_of,
    unpadded_bert,
)

pytest.importorskip("onnxruntime")
pytest.importorskip("optimum.onnxruntime")

INSTALL = "pip install 'ipfs-accelerate[onnxruntime]'"

# model → how it is exported (optimum's class, or a direct torch.onnx.export and why)
FORWARD = {
    "bert": "optimum:ORTModelForFeatureExtraction",
    "bert-mlm": "optimum:ORTModelForMaskedLM",
    "wav2vec2": "optimum:ORTModelForCTC",
    "clip-text": "direct:torch.onnx.export",
    "clip-image": "direct:torch.onnx.export",
    "clip": "optimum:ORTModelForZeroShotImageClassification",
    "clap-text": "direct:torch.onnx.export",
    "clap-audio": "direct:torch.onnx.export",
    "xclip": "direct:torch.onnx.export",  # no optimum class for zero-shot video classification
    "videomae": "direct:torch.onnx.export",  # optimum-onnx does not support the architecture
}
GENERATORS = {
    "gpt2": "optimum:ORTModelForCausalLM",
    "opt": "optimum:ORTModelForCausalLM",
    "llama": "optimum:ORTModelForCausalLM",
    "t5": "optimum:ORTModelForSeq2SeqLM",
    "whisper": "optimum:ORTModelForSpeechSeq2Seq",
}


@pytest.fixture(scope="module")
def backend() -> OnnxRuntimeBackend:
    return OnnxRuntimeBackend()


def _load(backend: OnnxRuntimeBackend, spec: Any, cache: Path, precision: str = "fp32") -> Any:
    return backend.load(spec, device="cpu", precision=precision, cache_dir=cache)


@pytest.mark.parametrize("name", list(FORWARD))
def test_fp32_matches_torch(name: str, backend: OnnxRuntimeBackend, tiny_spec: Any, torch_runtime: Any,
                            export_cache: Path) -> None:
    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache)
    assert runtime.backend == "onnxruntime" and runtime.precision == "fp32"
    assert runtime.device == "cpu"
    assert runtime.details["providers"] == ["CPUExecutionProvider"]
    assert runtime.details["export_route"] == FORWARD[name]
    if FORWARD[name].startswith("direct"):
        assert runtime.details["direct_conversion_reason"]
    reference = outputs_of(torch_runtime(spec), spec)
    mask = spec.example_inputs().get("attention_mask")
    assert min_cosine(reference, outputs_of(runtime, spec), mask) >= 0.999


def test_direct_graph_takes_other_batch_and_sequence_sizes(backend: OnnxRuntimeBackend, tiny_spec: Any,
                                                           torch_runtime: Any, export_cache: Path) -> None:
    """The direct export keeps batch and sequence dynamic (text and video batches apart)."""
    import torch

    spec = tiny_spec("xclip")
    runtime = _load(backend, spec, export_cache)
    other = dict(spec.example_inputs())
    other["input_ids"], other["attention_mask"] = other["input_ids"][:2, :5], other["attention_mask"][:2, :5]
    other["pixel_values"] = torch.cat([other["pixel_values"]] * 2)[:3]
    reference = outputs_of(torch_runtime(spec), spec, other)
    assert min_cosine(reference, outputs_of(runtime, spec, other)) >= 0.999


@pytest.mark.parametrize("name", list(GENERATORS))
def test_generate_matches_torch_with_kv_cache(name: str, backend: OnnxRuntimeBackend, tiny_spec: Any,
                                              torch_runtime: Any, export_cache: Path) -> None:
    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache)
    assert runtime.details["export_route"] == GENERATORS[name]
    tokens, lengths = decoder_step_lengths(runtime, spec)
    assert tokens == greedy(torch_runtime(spec), spec)
    # The KV cache is used: every step after the prompt feeds one new token only.
    assert lengths[-7:] == [1] * 7


def test_speech_seq2seq_uses_whisper_generate(backend: OnnxRuntimeBackend, tiny_spec: Any, export_cache: Path) -> None:
    """language / task / return_timestamps come from transformers' own Whisper generate."""
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

    runtime = _load(backend, tiny_spec("whisper"), export_cache)
    assert isinstance(runtime.model, WhisperGenerationMixin)
    assert type(runtime.model).generate is WhisperGenerationMixin.generate


@pytest.mark.parametrize("options", [
    {"language": "fr", "task": "translate"},
    {"language": "en", "task": "transcribe", "return_timestamps": True},
])
def test_speech_seq2seq_language_task_timestamps(options: dict[str, Any], backend: OnnxRuntimeBackend, tiny_spec: Any,
                                                 torch_runtime: Any, export_cache: Path) -> None:
    import torch

    spec = tiny_spec("whisper")
    tokens = []
    for runtime in (torch_runtime(spec), _load(backend, spec, export_cache)):
        with torch.no_grad():
            out = runtime.model.generate(**runtime.prepare(spec.example_inputs()), max_new_tokens=6, do_sample=False,
                                         **options)
        tokens.append((out["sequences"] if isinstance(out, dict) else out).tolist())
    assert tokens[0] == tokens[1]


@pytest.mark.parametrize("name", ["bert", "wav2vec2", "clip-text", "gpt2", "t5", "whisper", "llava"])
def test_int8_close_to_torch_and_gated(name: str, backend: OnnxRuntimeBackend, tiny_spec: Any, torch_runtime: Any,
                                       export_cache: Path) -> None:
    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache, "int8")
    assert runtime.precision == "int8"
    assert runtime.details["int8_gate_cosine"] >= 0.99
    assert "per-channel" in runtime.details["quantization"]
    assert cosine_to_reference(torch_runtime(spec), runtime, spec) >= 0.99


def test_int8_keeps_the_down_projections_in_fp32_when_all_int8_fails(
        backend: OnnxRuntimeBackend, tiny_spec: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The second attempt excludes exactly the [wide, narrow] weights: one per layer here.

    Its own cache: the shared one may hold an int8 export whose first attempt passed.
    """
    export_cache = tmp_path
    import json

    import onnx

    from ipfs_accelerate.backends.onnxruntime.quantize import expanding_reductions

    spec = tiny_spec("bert")
    config = json.loads((spec.model_dir / "config.json").read_text())
    fp32 = _load(backend, spec, export_cache)
    names = expanding_reductions(Path(fp32.details["export_dir"]) / "model.onnx")
    assert len(names) == config["num_hidden_layers"] and all("output/dense" in n for n in names)
    # Threshold 1.0: every attempt fails, and both are recorded with their cosines.
    monkeypatch.setattr(accuracy, "INT8_MIN_COSINE", 1.0)
    with pytest.raises(BackendUnavailable, match="accuracy gate"):
        _load(backend, spec, export_cache, "int8")
    monkeypatch.undo()
    runtime = _load(backend, spec, export_cache, "int8")
    attempts = runtime.details["int8_attempts"]
    formats = WEIGHT_FORMATS[quant_flavour()]
    assert [a.split(":")[0] for a in attempts] == [
        f"{weight_format_name(*weight_format)}, {how}" for weight_format in formats
        for how in ("every MatMul with constant weights in int8", f"{len(names)} down-projection MatMuls kept in fp32")]
    assert "kept in fp32" in runtime.details["quantization"]
    graph = onnx.load(str(Path(runtime.details["export_dir"]) / "model.onnx")).graph
    float_matmuls = {n.name for n in graph.node if n.op_type == "MatMul"}
    assert set(names) <= float_matmuls  # still float MatMuls; the others became MatMulInteger
    integer = [n for n in graph.node if n.op_type == "MatMulInteger"]
    assert integer
    # The last format's weights are what stayed in the cache.
    weight_type = getattr(onnx.TensorProto, {"QInt8": "INT8", "QUInt8": "UINT8"}[formats[-1][0]])
    weights = {init.name: init for init in graph.initializer}
    assert all(weights[n.input[1]].data_type == weight_type for n in integer)


def test_int8_weights_on_avx2_are_7_bit_int8_first(backend: OnnxRuntimeBackend, tiny_spec: Any, export_cache: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Without VNNI the first format is int8 in a 7-bit range: VPMADDUBSW's pairwise 16-bit sums
    cannot saturate, and the uint8 × int8 kernel is the fast one (uint8 weights come second)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from ipfs_accelerate.backends.onnxruntime import quantize

    monkeypatch.setattr(quantize, "quant_flavour", lambda: "avx2")
    runtime = _load(backend, tiny_spec("gpt2"), export_cache, "int8")
    assert runtime.details["int8_attempts"][0].startswith("int8 weights (7-bit range), every MatMul")
    assert runtime.details["quantization"].startswith("dynamic, per-channel weights, avx2 kernels, int8 weights (7-bit range)")
    graph = onnx.load(str(Path(runtime.details["export_dir"]) / "model.onnx")).graph
    weights = {init.name: init for init in graph.initializer}
    integer = [n for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert integer
    for node in integer:
        values = numpy_helper.to_array(weights[node.input[1]])
        # Symmetric 7-bit: |w| ≤ 64, so a pair of uint8 × int8 products stays under 2¹⁵.
        assert values.dtype == np.int8 and np.abs(values.astype(np.int16)).max() <= 64, node.name


def test_int8_quantizes_constant_weights_only_and_fuses_decoders(backend: OnnxRuntimeBackend, tiny_spec: Any,
                                                                  export_cache: Path) -> None:
    """Attention's activation × activation products stay float (no re-quantized KV cache),
    every int8 product has a constant weight, a decoder-only architecture the optimizer knows
    is fused first (GPT-2: GELU and residual layer norms) while one outside it is not, and
    both get one MultiHeadAttention node per layer."""
    import onnx

    for name, fused in (("gpt2", True), ("opt", False)):
        runtime = _load(backend, tiny_spec(name), export_cache, "int8")
        graph = onnx.load(str(Path(runtime.details["export_dir"]) / "model.onnx")).graph
        constants = {init.name for init in graph.initializer}
        integer = [n for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
        assert integer, name
        assert all(n.input[1] in constants for n in integer), name
        ops = [n.op_type for n in graph.node]
        assert ("SkipLayerNormalization" in ops) == fused, name
        assert ("SkipLayerNormalization" in runtime.details["fusion"]) == fused, name
        layers = sum(1 for i in graph.input if i.name.endswith(".key"))
        assert ops.count("MultiHeadAttention") == layers and "Softmax" not in ops, name
        assert f"cached attention: {layers} MultiHeadAttention" in runtime.details["fusion"], name
        assert not (Path(runtime.details["export_dir"]) / "fused-fp32").exists()


def test_a_failed_rewrite_is_reported_and_the_graph_before_it_kept(backend: OnnxRuntimeBackend, tiny_spec: Any,
                                                                    export_cache: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    import onnx
    from onnxruntime.transformers import optimizer

    from ipfs_accelerate.backends.onnxruntime import attention
    from ipfs_accelerate.backends.onnxruntime.quantize import fused_sources

    spec = tiny_spec("gpt2")
    fp32_dir = Path(_load(backend, spec, export_cache).details["export_dir"])
    layers = sum(1 for i in onnx.load(str(fp32_dir / "model.onnx"), load_external_data=False).graph.input
                 if i.name.endswith(".key"))

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("no rewrite for this graph\nsecond line")

    # The optimizer fails: the attention rewrite still runs, on the exported graph.
    monkeypatch.setattr(optimizer, "optimize_model", broken)
    sources, how = fused_sources(spec, fp32_dir, ["model.onnx"], tmp_path)
    assert sources == {"model.onnx": tmp_path / "fused-fp32" / "model.onnx"}
    optimizer_part, attention_part = how.split("; ")
    assert optimizer_part == ("onnxruntime.transformers.optimizer(model_type='gpt2'): "
                              "model.onnx left unfused (RuntimeError: no rewrite for this graph)")
    assert attention_part.startswith(f"cached attention: {layers} MultiHeadAttention, ")
    assert [n.op_type for n in onnx.load(str(sources["model.onnx"])).graph.node].count("MultiHeadAttention") == layers
    # Both fail: the exported graph is quantized as it is.
    monkeypatch.setattr(attention, "shrink_decoder", broken)
    (tmp_path / "again").mkdir()
    sources, how = fused_sources(spec, fp32_dir, ["model.onnx"], tmp_path / "again")
    assert sources == {"model.onnx": fp32_dir / "model.onnx"}
    assert how.endswith("; cached attention: model.onnx left as it is (RuntimeError: no rewrite for this graph)")


def test_forward_rewrite_is_converted_in_place_of_transformers(backend: OnnxRuntimeBackend, tiny_spec: Any,
                                                               torch_runtime: Any, export_cache: Path) -> None:
    check_unpadded_bert_export(lambda spec: _load(backend, spec, export_cache), tiny_spec, torch_runtime,
                               "direct:torch.onnx.export")


def test_runtimes_keep_torch_to_one_host_thread(backend: OnnxRuntimeBackend, tiny_spec: Any,
                                                export_cache: Path) -> None:
    assert _load(backend, tiny_spec("bert"), export_cache).host_threads == 1


def test_int8_gate_refuses_below_threshold(backend: OnnxRuntimeBackend, tiny_spec: Any, export_cache: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A real int8 export measured against fp32: at threshold 1.0 nothing short of exact passes."""
    monkeypatch.setattr(accuracy, "INT8_MIN_COSINE", 1.0)
    with pytest.raises(BackendUnavailable, match=r"accuracy gate: cosine 0\.9\d+ < 1\.0"):
        _load(backend, tiny_spec("bert"), export_cache, "int8")


def test_fp16_conversion_keeps_fp32_inputs_and_outputs(tiny_spec: Any, torch_runtime: Any, export_cache: Path,
                                                       tmp_path: Path) -> None:
    """The fp16 graphs (served on CUDA only) checked on the CPU provider, which can run them."""
    import torch

    from ipfs_accelerate.backends.converting import direct
    from ipfs_accelerate.backends.onnxruntime.export import KINDS, convert_fp16
    from ipfs_accelerate.backends.onnxruntime.model import open_export

    for name in ("bert", "t5"):
        spec = tiny_spec(name)
        fp32 = OnnxRuntimeBackend().load(spec, device="cpu", precision="fp32", cache_dir=export_cache)
        target = tmp_path / name
        target.mkdir()
        convert_fp16(Path(fp32.details["export_dir"]), target)
        plan = direct.plan_export(spec, kinds=KINDS, exporter="onnx", backend="onnxruntime")
        model = open_export(plan, target, ["CPUExecutionProvider"], None)
        inputs = spec.example_inputs()
        with torch.no_grad():
            if spec.generates:
                ref = accuracy.gate_outputs(torch_runtime(spec).model, inputs, output_names=(), generates=True)
                got = accuracy.gate_outputs(model, inputs, output_names=(), generates=True)
                assert len(model.generate(**inputs, max_new_tokens=4, do_sample=False)[0]) >= 2
            else:
                ref = outputs_of(torch_runtime(spec), spec)
                got = {"last_hidden_state": model(**inputs).last_hidden_state.float()}
        assert min_cosine(ref, got, inputs.get("attention_mask")) >= 0.99


def test_unsupported_pairs(backend: OnnxRuntimeBackend) -> None:
    assert backend.unsupported(device="cpu", precision="fp32") is None
    assert backend.unsupported(device="cpu", precision="int8") is None
    assert "CUDAExecutionProvider" in backend.unsupported(device="cpu", precision="fp16")
    assert "bf16" in backend.unsupported(device="cpu", precision="bf16")
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        assert "onnxruntime-gpu" in backend.unsupported(device="cuda", precision="fp32")


def test_fp16_on_cpu_is_refused(backend: OnnxRuntimeBackend, tiny_spec: Any, export_cache: Path) -> None:
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        _load(backend, tiny_spec("bert"), export_cache, "fp16")


@pytest.mark.parametrize("name", ["llava", "llava-next", "llava-next-stacked"])
def test_vision_language_generation_matches_torch_with_kv_cache(name: str, backend: OnnxRuntimeBackend,
                                                                 tiny_spec: Any, torch_runtime: Any,
                                                                 export_cache: Path) -> None:
    """Two graphs (vision tower, language step) in transformers' own class and generate()."""
    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache)
    assert runtime.details["export_route"].startswith("direct:torch.onnx.export(vision tower + language model")
    assert "optimum-onnx 0.1.0 has no ONNX export" in runtime.details["direct_conversion_reason"]
    assert runtime.details["providers"] == ["CPUExecutionProvider"]
    language = runtime.model.model.language_model
    original = language.forward
    fed: list[tuple[int, int]] = []

    def spy(*args: Any, **kwargs: Any) -> Any:
        cache = kwargs.get("past_key_values")
        fed.append((int(kwargs["inputs_embeds"].shape[1]), cache.get_seq_length() if cache is not None else 0))
        return original(*args, **kwargs)

    vars(language)["forward"] = spy
    try:
        tokens = greedy(runtime, spec)
    finally:
        del vars(language)["forward"]
    assert tokens == greedy(torch_runtime(spec), spec)
    prompt = fed[0][0]
    # The KV cache is used: after the prompt, one new position per step on a growing cache.
    assert fed[1:] == [(1, prompt + step) for step in range(len(fed) - 1)] and len(fed) == 8


def test_vision_language_generation_refuses_cuda() -> None:
    from ipfs_accelerate.backends.onnxruntime.export import export_plan

    class Spec:
        kind = "image-text-to-text"

    with pytest.raises(BackendUnavailable, match="CPU provider only"):
        export_plan(Spec(), "cuda:0")  # type: ignore[arg-type]


def test_registry_and_probe() -> None:
    backend = get_backend("onnxruntime")
    assert isinstance(backend, OnnxRuntimeBackend)
    probe = backend.probe()
    assert probe.available and probe.version and "cpu" in probe.devices
    assert "CPUExecutionProvider" in probe.details["providers"]


def test_not_installed(monkeypatch: pytest.MonkeyPatch, tiny_spec: Any, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # `import onnxruntime` now fails
    backend = OnnxRuntimeBackend()
    probe = backend.probe()
    assert not probe.available and INSTALL in probe.reason and probe.extra == "onnxruntime"
    assert INSTALL in backend.unsupported(device="cpu", precision="fp32")
    with pytest.raises(BackendUnavailable) as caught:
        backend.load(tiny_spec("bert"), device="cpu", precision="fp32", cache_dir=tmp_path)
    assert caught.value.extra == "onnxruntime" and INSTALL in str(caught.value)


def test_int8_of_the_unpadded_forward_quantizes_every_projection(backend: OnnxRuntimeBackend, tiny_spec: Any,
                                                                 torch_runtime: Any, export_cache: Path) -> None:
    """Packed rows are 3-D: a 2-D product would export as Gemm, which dynamic quantization skips."""
    import json

    import onnx

    spec = tiny_spec("bert", forward_rewrite=unpadded_bert())
    runtime = _load(backend, spec, export_cache, "int8")
    assert runtime.precision == "int8" and runtime.details["int8_gate_cosine"] >= 0.99
    graph = onnx.load(str(Path(runtime.details["export_dir"]) / "model.onnx")).graph
    layers = json.loads((spec.model_dir / "config.json").read_text())["num_hidden_layers"]
    assert not [n.name for n in graph.node if n.op_type == "Gemm"]
    integer = [n for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    # Per layer: the fused query/key/value, the attention output, the feed-forward up (and
    # the down-projection unless the gate needed it in fp32).
    assert len(integer) >= 3 * layers
    mask = spec.example_inputs()["attention_mask"]
    assert min_cosine(outputs_of(torch_runtime(spec), spec), outputs_of(runtime, spec), mask) >= 0.99


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_causal_decoder_step_gives_the_models_logits(precision: str, backend: OnnxRuntimeBackend, tiny_spec: Any,
                                                     export_cache: Path) -> None:
    """Runtime.decoder_step, straight on the session, against optimum's forward on a
    left-padded batch for four steps; the cache it returns is the only state, so two loops
    interleaved on one runtime each get their own logits."""
    import torch

    spec = tiny_spec("gpt2")
    runtime = _load(backend, spec, export_cache, precision)
    assert runtime.decoder_step is not None
    model, inputs = runtime.model, runtime.prepare(spec.example_inputs())
    ids, mask = inputs["input_ids"], inputs["attention_mask"]
    positions = (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)
    feeds, expected, past = [], [], None
    with torch.inference_mode():
        step_ids = ids
        for _ in range(4):
            feeds.append({"input_ids": step_ids, "attention_mask": mask, "position_ids": positions})
            out = model(**feeds[-1], past_key_values=past, use_cache=True)
            expected.append(out.logits[:, -1, :].float().clone())
            past = out.past_key_values
            step_ids = expected[-1].argmax(-1, keepdim=True)
            mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=-1)
            positions = positions[:, -1:] + 1
        first, second = None, None
        for feed, expect in zip(feeds, expected, strict=True):
            got, first = runtime.decoder_step(feed, first)
            again, second = runtime.decoder_step(feed, second)
            assert got.dtype == torch.float32 and got.shape == expect.shape
            torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(again, got, rtol=0, atol=0)
    assert _load(backend, tiny_spec("bert"), export_cache).decoder_step is None  # not a generator
