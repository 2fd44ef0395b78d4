"""The OpenVINO backend against PyTorch fp32, on tiny models of every handled family.

OpenVINO exports take seconds each on a small CPU, so the families whose route is already
covered by a faster test (a second decoder-only LM, a second direct conversion …) and the
vision-language models are marked slow.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from ipfs_accelerate._exceptions import BackendUnavailable
from ipfs_accelerate.backends import get_backend
from ipfs_accelerate.backends.converting import accuracy
from ipfs_accelerate.backends.openvino import OpenVINOBackend
from ipfs_accelerate.backends.openvino import backend as openvino_backend
from ipfs_accelerate.backends.openvino.model import native_bf16
from tests.backends._tiny import (
    check_unpadded_bert_export,
    cosine_to_reference,
    decoder_step_lengths,
    greedy,
    min_cosine,
    outputs_of,
)

pytest.importorskip("openvino")
pytest.importorskip("optimum.intel")

INSTALL = "pip install 'ipfs-accelerate[openvino]'"
slow = pytest.mark.slow

FORWARD = {
    "bert": "optimum:OVModelForFeatureExtraction",
    "wav2vec2": "optimum:OVModelForCTC",
    "clip": "optimum:OVModelForZeroShotImageClassification",
    "clip-text": "direct:openvino.convert_model",
    "videomae": "direct:openvino.convert_model",  # optimum-intel does not support the architecture
}
FORWARD_SLOW = {
    "bert-mlm": "optimum:OVModelForMaskedLM",
    "clip-image": "direct:openvino.convert_model",
    "clap-text": "direct:openvino.convert_model",
    "clap-audio": "direct:openvino.convert_model",
    "xclip": "direct:openvino.convert_model",
}
GENERATORS = {
    "gpt2": "optimum:OVModelForCausalLM",
    "t5": "optimum:OVModelForSeq2SeqLM",
    "whisper": "optimum:OVModelForSpeechSeq2Seq",
}
GENERATORS_SLOW = {
    "opt": "optimum:OVModelForCausalLM",
    "llama": "optimum:OVModelForCausalLM",
    "llava": "optimum:OVModelForVisualCausalLM",
    "llava-next": "optimum:OVModelForVisualCausalLM",
    "llava-next-stacked": "optimum:OVModelForVisualCausalLM",
}


def _params(fast: dict[str, str], slow_ones: dict[str, str]) -> list[Any]:
    return [*fast, *(pytest.param(name, marks=slow) for name in slow_ones)]


@pytest.fixture(scope="module")
def backend() -> OpenVINOBackend:
    return OpenVINOBackend()


def _load(backend: OpenVINOBackend, spec: Any, cache: Path, precision: str = "fp32") -> Any:
    return backend.load(spec, device="cpu", precision=precision, cache_dir=cache)


def _constant_types(export_dir: Path) -> set[str]:
    """The element types of the weight constants in an export's IR files."""
    import openvino as ov

    core = ov.Core()
    types: set[str] = set()
    for xml in export_dir.glob("*.xml"):
        for op in core.read_model(xml).get_ops():
            if op.get_type_name() == "Constant" and op.get_output_partial_shape(0).rank.get_length() >= 2:
                types.add(op.get_output_element_type(0).get_type_name())
    return types


@pytest.mark.parametrize("name", _params(FORWARD, FORWARD_SLOW))
def test_fp32_matches_torch(name: str, backend: OpenVINOBackend, tiny_spec: Any, torch_runtime: Any,
                            export_cache: Path) -> None:
    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache)
    assert runtime.backend == "openvino" and runtime.precision == "fp32"
    assert runtime.device == "cpu" and runtime.details["execution_devices"] == ["CPU"]
    assert runtime.details["inference_precision"] == "f32"
    assert runtime.details["export_route"] == (FORWARD | FORWARD_SLOW)[name]
    reference = outputs_of(torch_runtime(spec), spec)
    mask = spec.example_inputs().get("attention_mask")
    assert min_cosine(reference, outputs_of(runtime, spec), mask) >= 0.999


def test_forward_rewrite_is_converted_in_place_of_transformers(backend: OpenVINOBackend, tiny_spec: Any,
                                                               torch_runtime: Any, export_cache: Path) -> None:
    check_unpadded_bert_export(lambda spec: _load(backend, spec, export_cache), tiny_spec, torch_runtime,
                               "direct:openvino.convert_model")


def test_runtimes_keep_torch_to_one_host_thread(backend: OpenVINOBackend, tiny_spec: Any, export_cache: Path) -> None:
    assert _load(backend, tiny_spec("bert"), export_cache).host_threads == 1


def test_fp32_is_not_silently_compressed(backend: OpenVINOBackend, tiny_spec: Any, export_cache: Path) -> None:
    """openvino.save_model compresses to FP16 by default; the fp32 export must not be."""
    for name in ("bert", "clip-text"):  # optimum's export and a direct conversion
        runtime = _load(backend, tiny_spec(name), export_cache)
        types = _constant_types(Path(runtime.details["export_dir"]))
        assert "f32" in types and "f16" not in types


def test_direct_model_takes_other_batch_and_sequence_sizes(backend: OpenVINOBackend, tiny_spec: Any,
                                                           torch_runtime: Any, export_cache: Path) -> None:
    spec = tiny_spec("clip-text")
    runtime = _load(backend, spec, export_cache)
    other = {k: v[:2, :4] for k, v in spec.example_inputs().items()}
    reference = outputs_of(torch_runtime(spec), spec, other)
    assert min_cosine(reference, outputs_of(runtime, spec, other)) >= 0.999


@pytest.mark.parametrize("name", _params(GENERATORS, GENERATORS_SLOW))
def test_generate_matches_torch_with_kv_cache(name: str, backend: OpenVINOBackend, tiny_spec: Any,
                                              torch_runtime: Any, export_cache: Path) -> None:
    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache)
    assert runtime.details["export_route"] == (GENERATORS | GENERATORS_SLOW)[name]
    assert runtime.details["kv_cache_precision"] in ("f32", None)  # None: the KV cache is not a device state
    tokens, lengths = decoder_step_lengths(runtime, spec)
    assert tokens == greedy(torch_runtime(spec), spec)
    assert lengths[-7:] == [1] * 7  # one new token per step: the KV cache is used


@pytest.mark.parametrize("name", ["t5", "whisper"])
def test_decoder_step_gives_the_models_logits(name: str, backend: OpenVINOBackend, tiny_spec: Any,
                                              export_cache: Path) -> None:
    """Runtime.decoder_step, straight on the stateful decoder's request, against the model's
    own forward pass: the same tokens fed for four steps give the same logits."""
    import torch

    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache)
    assert runtime.decoder_step is not None
    model, inputs = runtime.model, runtime.prepare(spec.example_inputs())
    with torch.inference_mode():
        encoded = model.get_encoder()(**inputs)
        mask = inputs.get("attention_mask")
        rows = next(iter(inputs.values())).shape[0]
        ids = torch.full((rows, 1), model.config.decoder_start_token_id, dtype=torch.long)
        steps, expected, past = [ids], [], None
        for _ in range(4):
            out = model(encoder_outputs=encoded, attention_mask=mask, decoder_input_ids=steps[-1],
                        past_key_values=past, use_cache=True)
            expected.append(out.logits[:, -1, :].float().clone())
            past = out.past_key_values
            steps.append(expected[-1].argmax(-1, keepdim=True))
        fixed = {"encoder_hidden_states": encoded[0]} | ({"encoder_attention_mask": mask} if mask is not None else {})
        cache = None  # the first step must empty the request's state, which the loop above filled
        for index, expect in enumerate(expected):
            got, cache = runtime.decoder_step({**fixed, "input_ids": steps[index]}, cache)
            assert got.dtype == torch.float32 and got.shape == expect.shape
            torch.testing.assert_close(got, expect, rtol=1e-5, atol=1e-5)


def test_causal_step_gives_the_models_logits_and_keeps_one_cache_per_loop(
        backend: OpenVINOBackend, tiny_spec: Any, export_cache: Path) -> None:
    """Runtime.decoder_step of a stateful causal LM against optimum's forward pass: the same
    tokens give the same logits, and two loops interleaved on one model keep their own
    caches (each generation has its own infer request)."""
    import torch

    spec = tiny_spec("gpt2")
    runtime = _load(backend, spec, export_cache)
    assert runtime.decoder_step is not None
    model = runtime.model
    prompts = [torch.tensor([[5, 9, 13, 2]]), torch.tensor([[7, 3]])]
    expected: list[list[Any]] = []
    fed: list[list[Any]] = []
    with torch.inference_mode():
        for ids in prompts:
            mask, past, steps, logits = torch.ones_like(ids), None, [ids], []
            for _ in range(4):
                out = model(input_ids=steps[-1], attention_mask=mask, past_key_values=past, use_cache=True)
                logits.append(out.logits[:, -1, :].float().clone())
                past = out.past_key_values
                steps.append(logits[-1].argmax(-1, keepdim=True))
                mask = torch.cat([mask, mask.new_ones((1, 1))], dim=-1)
            expected.append(logits)
            fed.append(steps)
        caches: list[Any] = [None, None]
        for index in range(4):
            for which in (0, 1):  # interleaved: one loop's steps between the other's
                ids = fed[which][index]
                length = sum(int(t.shape[1]) for t in fed[which][:index + 1])
                mask = torch.ones((1, length), dtype=torch.long)
                positions = torch.arange(length - ids.shape[1], length)[None]
                got, caches[which] = runtime.decoder_step(
                    {"input_ids": ids, "attention_mask": mask, "position_ids": positions}, caches[which])
                assert got.dtype == torch.float32 and got.shape == expected[which][index].shape
                torch.testing.assert_close(got, expected[which][index], rtol=1e-5, atol=1e-5)
    assert caches[0] is not caches[1]


def test_speech_seq2seq_uses_whisper_generate(backend: OpenVINOBackend, tiny_spec: Any, export_cache: Path) -> None:
    """language / task / return_timestamps come from transformers' own Whisper generate."""
    from transformers.models.whisper.generation_whisper import WhisperGenerationMixin

    runtime = _load(backend, tiny_spec("whisper"), export_cache)
    assert type(runtime.model).generate is WhisperGenerationMixin.generate


@pytest.mark.parametrize("options", [
    {"language": "fr", "task": "translate"},
    {"language": "en", "task": "transcribe", "return_timestamps": True},
])
def test_speech_seq2seq_language_task_timestamps(options: dict[str, Any], backend: OpenVINOBackend, tiny_spec: Any,
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


@pytest.mark.parametrize("name", ["bert", "clip-text", "gpt2"])
def test_int8_close_to_torch_and_gated(name: str, backend: OpenVINOBackend, tiny_spec: Any, torch_runtime: Any,
                                       export_cache: Path) -> None:
    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache, "int8")
    assert runtime.precision == "int8" and runtime.details["int8_gate_cosine"] >= 0.99
    assert "i8" in _constant_types(Path(runtime.details["export_dir"]))  # the weights really are 8-bit (symmetric)
    assert runtime.details["weights"] == "int8 (nncf INT8_SYM, per channel)"
    assert cosine_to_reference(torch_runtime(spec), runtime, spec) >= 0.99


@pytest.mark.parametrize("name", ["gpt2", "opt"])
def test_int8_decoders_run_every_matrix_product_on_int8_weights(name: str, backend: OpenVINOBackend, tiny_spec: Any,
                                                                export_cache: Path) -> None:
    """Read back from the compiled graph: the output layer too (OPT's tied embedding weight
    also feeds a shape read, which made the CPU plugin decompress it to f32 when compiling)."""
    runtime = _load(backend, tiny_spec(name), export_cache, "int8")
    precisions = runtime.details["matmul_precisions"]
    assert set(precisions) == {"i8"} and precisions["i8"] > 0, precisions
    assert runtime.details.get("shape_reads_moved", 0) == (1 if name == "opt" else 0)


def test_shape_reads_move_to_the_compressed_constant() -> None:
    """A weight decompressed in the graph feeds a MatMul, a Gather and a ShapeOf: afterwards
    the ShapeOf reads the int8 constant, the lookup and the shape are unchanged, and the
    compiled product keeps its int8 weights (before: f32)."""
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    from ipfs_accelerate.backends.openvino.model import matmul_precisions
    from ipfs_accelerate.backends.openvino.quantize import shape_reads_to_compressed_weights

    def build() -> Any:
        rng = np.random.default_rng(0)
        weight = ops.constant(rng.integers(-127, 127, (64, 32)).astype(np.int8))
        scale = ops.constant((rng.random((64, 1)) * 0.01).astype(np.float16))
        decompressed = ops.convert(ops.multiply(ops.convert(weight, np.float16), scale), np.float32)
        x = ops.parameter([1, 32], np.float32, name="x")
        ids = ops.parameter([3], np.int64, name="ids")
        return ov.Model([ops.matmul(x, decompressed, False, True).output(0),
                         ops.gather(decompressed, ids, 0).output(0),
                         ops.shape_of(decompressed).output(0)], [x, ids])

    feed = {"x": np.random.default_rng(1).standard_normal((1, 32)).astype(np.float32),
            "ids": np.array([0, 5, 63])}
    core = ov.Core()
    config = {"INFERENCE_PRECISION_HINT": "f32"}
    before = core.compile_model(build(), "CPU", config)
    model = build()
    assert shape_reads_to_compressed_weights(model) == 1
    shape_of = next(op for op in model.get_ordered_ops() if op.get_type_name() == "ShapeOf")
    assert shape_of.input_value(0).get_node().get_type_name() == "Constant"
    assert shape_reads_to_compressed_weights(model) == 0  # nothing left to move
    after = core.compile_model(model, "CPU", config)
    (product_before, *rest_before), (product_after, *rest_after) = before(feed).values(), after(feed).values()
    for expected, got in zip(rest_before, rest_after, strict=True):  # the lookup and the shape: exact
        np.testing.assert_array_equal(got, expected)
    # The product now runs the plugin's int8 kernel (8-bit activations): close, not equal.
    cosine = float((product_before * product_after).sum()
                   / np.linalg.norm(product_before) / np.linalg.norm(product_after))
    assert cosine > 0.999
    assert set(matmul_precisions(after)) == {"i8"}
    assert "i8" not in matmul_precisions(before)


def test_int8_gate_refuses_below_threshold(backend: OpenVINOBackend, tiny_spec: Any, export_cache: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """A real int8 export measured against fp32: at threshold 1.0 nothing short of exact passes."""
    monkeypatch.setattr(accuracy, "INT8_MIN_COSINE", 1.0)
    with pytest.raises(BackendUnavailable, match=r"accuracy gate: cosine 0\.9\d+ < 1\.0"):
        _load(backend, tiny_spec("bert"), export_cache, "int8")


def test_fp16_stores_fp16_weights_and_reports_what_computes(backend: OpenVINOBackend, tiny_spec: Any,
                                                            torch_runtime: Any, export_cache: Path) -> None:
    import openvino as ov

    spec = tiny_spec("bert")
    runtime = _load(backend, spec, export_cache, "fp16")
    assert runtime.precision == "fp16" and runtime.details["weights"] == "f16"
    assert "f16" in _constant_types(Path(runtime.details["export_dir"]))
    native = "FP16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")
    assert runtime.details["inference_precision"] == ("f16" if native else "f32")
    mask = spec.example_inputs().get("attention_mask")
    assert min_cosine(outputs_of(torch_runtime(spec), spec), outputs_of(runtime, spec), mask) >= 0.99


def test_unsupported_pairs(backend: OpenVINOBackend) -> None:
    assert backend.unsupported(device="cpu", precision="fp32") is None
    assert backend.unsupported(device="cpu", precision="int8") is None
    assert backend.unsupported(device="cpu", precision="fp16") is None
    assert "not an OpenVINO device" in backend.unsupported(device="cuda", precision="fp32")
    assert "not an OpenVINO device" in backend.unsupported(device="cuda:0", precision="fp16")
    import openvino as ov

    if native_bf16(ov.Core(), "CPU"):
        assert backend.unsupported(device="cpu", precision="bf16") is None
    else:
        assert "does not compute bf16 natively" in backend.unsupported(device="cpu", precision="bf16")
    assert "offers fp32, fp16, bf16 and int8, not fp8" in backend.unsupported(device="cpu", precision="fp8")
    if not any(d.startswith("NPU") for d in ov.Core().available_devices):
        assert "no device 'NPU'" in backend.unsupported(device="NPU", precision="fp32")


def test_cuda_load_is_refused(backend: OpenVINOBackend, tiny_spec: Any, export_cache: Path) -> None:
    with pytest.raises(BackendUnavailable, match="not an OpenVINO device"):
        backend.load(tiny_spec("bert"), device="cuda", precision="fp32", cache_dir=export_cache)


def test_registry_and_probe() -> None:
    backend = get_backend("openvino")
    assert isinstance(backend, OpenVINOBackend)
    probe = backend.probe()
    assert probe.available and probe.version and "cpu" in probe.devices
    assert probe.details["device_names"]["CPU"]  # FULL_DEVICE_NAME


def test_not_installed(monkeypatch: pytest.MonkeyPatch, tiny_spec: Any, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # `import openvino` now fails
    backend = OpenVINOBackend()
    probe = backend.probe()
    assert not probe.available and INSTALL in probe.reason and probe.extra == "openvino"
    assert INSTALL in backend.unsupported(device="cpu", precision="fp32")
    with pytest.raises(BackendUnavailable) as caught:
        backend.load(tiny_spec("bert"), device="cpu", precision="fp32", cache_dir=tmp_path)
    assert caught.value.extra == "openvino" and INSTALL in str(caught.value)


class _Capabilities:
    """A stand-in for ``ov.Core`` that reports a device's optimization capabilities only."""

    def __init__(self, capabilities: list[str]) -> None:
        self.capabilities = capabilities

    def get_property(self, device: str, name: str) -> list[str]:
        assert name == "OPTIMIZATION_CAPABILITIES"
        return self.capabilities


def test_native_bf16_reads_the_device_capabilities() -> None:
    import openvino as ov

    assert native_bf16(_Capabilities(["BF16", "FP32", "FP16", "INT8"]), "CPU")
    assert not native_bf16(_Capabilities(["WINOGRAD", "FP32", "FP16", "INT8", "BIN"]), "CPU")  # an AVX2 CPU
    flags = open("/proc/cpuinfo").read().split() if sys.platform == "linux" else []
    if flags:
        assert native_bf16(ov.Core(), "CPU") == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_bf16_is_refused_on_a_cpu_without_native_bf16(backend: OpenVINOBackend, tiny_spec: Any,
                                                      export_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Simulated through the capability check: OpenVINO would run a bf16 hint in f32 there."""
    monkeypatch.setattr(openvino_backend, "native_bf16", lambda core, device: False)
    reason = backend.unsupported(device="cpu", precision="bf16")
    assert reason is not None and "does not compute bf16 natively" in reason and "use fp16" in reason
    with pytest.raises(BackendUnavailable, match="does not compute bf16 natively"):
        _load(backend, tiny_spec("gpt2"), export_cache, "bf16")


def _needs_native_bf16() -> None:
    import openvino as ov

    if not native_bf16(ov.Core(), "CPU"):
        pytest.skip("this CPU has no native bf16 (AVX512-BF16 or AMX)")


@pytest.mark.parametrize("name", ["bert", "gpt2"])
def test_bf16_computes_in_bf16_and_is_gated(name: str, backend: OpenVINOBackend, tiny_spec: Any,
                                            torch_runtime: Any, export_cache: Path) -> None:
    _needs_native_bf16()
    spec = tiny_spec(name)
    runtime = _load(backend, spec, export_cache, "bf16")
    details = runtime.details
    assert runtime.precision == "bf16" and details["bf16_gate_cosine"] >= 0.99 and details["gate_device"] == "CPU"
    # Read back from the compiled model: bf16 inference, and every matrix multiply in bf16.
    assert details["inference_precision"] == "bf16"
    assert set(details["matmul_precisions"]) == {"bf16"} and sum(details["matmul_precisions"].values()) >= 2
    # The entry links the fp32 export's IR (no second copy on disk).
    fp32 = _load(backend, spec, export_cache)
    assert fp32.details["matmul_precisions"].keys() == {"f32"}
    for xml in Path(fp32.details["export_dir"]).glob("*.xml"):
        assert (Path(details["export_dir"]) / xml.name).samefile(xml)
    assert cosine_to_reference(torch_runtime(spec), runtime, spec) >= 0.99


def test_bf16_gate_refuses_below_threshold(backend: OpenVINOBackend, tiny_spec: Any, export_cache: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The bf16 entry's measured cosine (below 1: bf16 rounds) against a threshold of 1.0."""
    _needs_native_bf16()
    monkeypatch.setattr(accuracy, "INT8_MIN_COSINE", 1.0)
    with pytest.raises(BackendUnavailable, match=r"OpenVINO bf16 export failed the accuracy gate: cosine 0\.9\d+ < 1\.0"):
        _load(backend, tiny_spec("gpt2"), export_cache, "bf16")
