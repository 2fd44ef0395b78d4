"""CTranslate2 ``model.bin``: a weights format, read and converted into HuggingFace checkpoints.

CTranslate2 runs its ``model.bin`` directly, but PyTorch, OpenVINO and ONNX Runtime need a
HuggingFace checkpoint. This module reads the format (:func:`read_ct2_model`) and converts
a model folder into a checkpoint (:func:`convert_ct2`) that ``from_pretrained`` loads
offline. Which HF names the variables become is architecture knowledge: the caller passes
it as a :class:`Ct2Recipe` (the Whisper family has one), so this module knows no model.

``model.bin`` layout (binary version 6, little endian; names are u16-length-prefixed and
NUL-terminated)::

    u32 version | name spec_name | u32 revision | u32 n_variables
    n_variables x { name | u8 rank | u32 dims[rank] | u8 dtype | u32 n_bytes | bytes }
    u32 n_aliases
    n_aliases x { name alias | name target }

dtype codes: 0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16. Rank-0 variables are settings
(activation, num_heads, pre_norm …), not weights. int8/int16 weights carry a row-wise
``weight_scale`` and are dequantized to float32.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import re
import shutil
import struct
import tempfile
import uuid
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .._exceptions import ModelNotAvailable

__all__ = [
    "Ct2ConversionError",
    "Ct2Mapper",
    "Ct2Model",
    "Ct2Recipe",
    "Ct2Source",
    "Ct2Variable",
    "convert_ct2",
    "load_checked",
    "read_ct2_config",
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


class Ct2ConversionError(ModelNotAvailable):
    """The CTranslate2 model cannot be read or mapped onto its HF architecture.

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


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ct2Source:
    """A CTranslate2 model folder, read, as a recipe's ``build`` receives it.

    Attributes:
        folder: the CTranslate2 model folder.
        model_bin: its ``model.bin`` file.
        model: the parsed ``model.bin``.
        config: CTranslate2's ``config.json`` ({} when absent).
        mapper: maps the variables onto HF names and tracks what was consumed.
    """

    folder: pathlib.Path
    model_bin: pathlib.Path
    model: Ct2Model
    config: dict[str, Any]
    mapper: Ct2Mapper


@dataclasses.dataclass(frozen=True, kw_only=True)
class Ct2Recipe:
    """How one architecture's CTranslate2 model becomes a HuggingFace checkpoint.

    Attributes:
        architecture: what the model's spec name starts with (``"Whisper"``), checked first.
        needed_files: files besides ``model.bin`` that the folder must hold (``tokenizer.json`` …).
        files_written: files the saved checkpoint must hold, checked before it is published.
        build: ``build(source)`` maps the variables through ``source.mapper`` and returns
            the HF model with its weights loaded (see :func:`load_checked`) and the
            processor saved beside it. Raise :class:`Ct2ConversionError` on a model that
            does not fit the architecture.
    """

    architecture: str
    needed_files: tuple[str, ...] = ()
    files_written: tuple[str, ...] = ()
    build: Callable[[Ct2Source], tuple[Any, Any]]


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


def read_ct2_config(path: pathlib.Path) -> dict[str, Any]:
    """Read a CTranslate2 model's ``config.json`` (optional: {} when absent).

    Raises:
        Ct2ConversionError: the file exists but is not a JSON object.
    """
    if not path.is_file():
        return {}
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise Ct2ConversionError(f"cannot read {path}: {exc}") from exc
    if not isinstance(config, dict):
        raise Ct2ConversionError(f"{path} is not a JSON object")
    return config


def convert_ct2(ct2_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str], recipe: Ct2Recipe) -> pathlib.Path:
    """Convert a CTranslate2 model folder into a HuggingFace checkpoint folder.

    Reads ``model.bin`` and (when present) CTranslate2's ``config.json`` from ``ct2_dir``,
    lets ``recipe`` build the HF model and processor, and saves both (safetensors only) to
    ``out_dir``. The folder is assembled next to ``out_dir`` and renamed into place, so a
    crash never leaves a half-written checkpoint; an existing ``out_dir`` is replaced.

    Args:
        ct2_dir: the CTranslate2 model folder.
        out_dir: where to write the HF checkpoint.
        recipe: the architecture's mapping.

    Returns:
        ``out_dir`` as a Path.

    Raises:
        Ct2ConversionError: a file is missing or corrupt, the model is of another
            architecture, or the recipe cannot map it.
    """
    ct2_dir = pathlib.Path(ct2_dir)
    out_dir = pathlib.Path(out_dir)
    model_bin = ct2_dir / "model.bin"
    for needed in (model_bin, *(ct2_dir / name for name in recipe.needed_files)):
        if not needed.is_file():
            raise Ct2ConversionError(f"cannot convert {ct2_dir}: {needed.name} is missing")

    ct2 = read_ct2_model(model_bin)
    if not ct2.spec.startswith(recipe.architecture):
        raise Ct2ConversionError(f"{model_bin} holds a {ct2.spec!r} model, not {recipe.architecture}")
    ct2_config = read_ct2_config(ct2_dir / "config.json")
    model, processor = recipe.build(Ct2Source(folder=ct2_dir, model_bin=model_bin, model=ct2, config=ct2_config,
                                              mapper=Ct2Mapper(ct2, model_bin)))

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        model.save_pretrained(staging, safe_serialization=True)
        processor.save_pretrained(staging)
        missing = [name for name in recipe.files_written if not (staging / name).is_file()]
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


class Ct2Mapper:
    """Maps CTranslate2 variables onto HF ``state_dict`` keys, tracking what was consumed.

    An architecture's recipe calls these primitives with its own names; what it leaves
    unconsumed (:meth:`unconsumed`) has no place in the HF model.

    Attributes:
        model: the parsed ``model.bin``.
        path: the ``model.bin`` file, for messages.
    """

    def __init__(self, ct2: Ct2Model, path: pathlib.Path) -> None:
        self.model = ct2
        self.path = path
        self._consumed: set[str] = set()
        self._state: dict[str, np.ndarray] = {}

    def var(self, name: str) -> Ct2Variable:
        """The variable ``name``, marked consumed."""
        variable = self.model.variables.get(name)
        if variable is None:
            raise Ct2ConversionError(f"{self.path} lacks the variable {name}")
        self._consumed.add(name)
        return variable

    def setting(self, name: str) -> int:
        """The scalar setting ``name`` (a rank-0 variable), marked consumed."""
        variable = self.var(name)
        if variable.shape != ():
            raise Ct2ConversionError(f"{self.path}: {name} should be a scalar, has shape {variable.shape}")
        return int(variable.array)

    def weight(self, name: str) -> np.ndarray:
        """The weight ``name`` in float32 (dequantized with its ``weight_scale``), marked consumed."""
        scale_name = name.rsplit("/", 1)[0] + "/weight_scale"
        scale = self.var(scale_name) if scale_name in self.model.variables and name.endswith("/weight") else None
        return _to_float32(self.var(name), scale)

    def put(self, key: str, array: np.ndarray) -> None:
        """Record ``array`` (as contiguous float32) under the HF key ``key``, once."""
        if key in self._state:
            raise AssertionError(f"{key} mapped twice")  # a bug in the recipe, not bad input
        self._state[key] = np.ascontiguousarray(array, dtype=np.float32)

    def layers(self, prefix: str) -> int:
        """How many ``{prefix}/layer_i/`` blocks the model holds (numbered 0..n-1, checked)."""
        indices = {
            int(match.group(1)) for name in self.model.variables if (match := re.match(rf"^{prefix}/layer_(\d+)/", name))
        }
        if not indices or indices != set(range(len(indices))):
            raise Ct2ConversionError(f"{self.path}: {prefix} layers are missing or not numbered 0..n-1")
        return len(indices)

    def linear(self, ct2: str, hf: str, *, bias: bool = True) -> None:
        """Copy a linear layer (PyTorch's ``(out, in)`` layout on both sides)."""
        self.put(f"{hf}.weight", self.weight(f"{ct2}/weight"))
        if bias:
            self.put(f"{hf}.bias", self.weight(f"{ct2}/bias"))

    def norm(self, ct2: str, hf: str) -> None:
        """Copy a layer norm (CTranslate2's ``gamma``/``beta`` to ``weight``/``bias``)."""
        self.put(f"{hf}.weight", self.weight(f"{ct2}/gamma"))
        self.put(f"{hf}.bias", self.weight(f"{ct2}/beta"))

    def split_linear(self, ct2: str, hf_names: Iterable[str | None], *, no_bias: Iterable[str]) -> None:
        """Split a row-fused linear layer; parts named in ``no_bias`` must have zero bias."""
        names = list(hf_names)
        weight = self.weight(f"{ct2}/weight")
        bias = self.weight(f"{ct2}/bias")
        if weight.shape[0] % len(names) or bias.shape != (weight.shape[0],):
            raise Ct2ConversionError(
                f"{self.path}: {ct2} of shape {weight.shape} cannot be split into {len(names)} parts"
            )
        rows = weight.shape[0] // len(names)
        no_bias = set(no_bias)
        for part, hf in enumerate(names):
            assert hf is not None
            w = weight[part * rows : (part + 1) * rows]
            b = bias[part * rows : (part + 1) * rows]
            self.put(f"{hf}.weight", w)
            if hf in no_bias:
                # HF's k_proj has no bias; a nonzero one would be silently lost.
                if np.any(b != 0):
                    raise Ct2ConversionError(f"{self.path}: {ct2} has a nonzero bias for {hf}, which HF Whisper lacks")
            else:
                self.put(f"{hf}.bias", b)

    def unconsumed(self) -> list[str]:
        """The variables no call has read yet, sorted."""
        return sorted(set(self.model.variables) - self._consumed)

    def mapped(self) -> dict[str, np.ndarray]:
        """Every HF key recorded so far and its array."""
        return dict(self._state)


def load_checked(model: Any, state: dict[str, np.ndarray], path: pathlib.Path) -> None:
    """Load ``state`` into ``model`` (built on the meta device) after checking names and shapes match exactly.

    The output projection is re-tied to the input embeddings afterwards, as
    ``from_pretrained`` leaves a model whose config ties them.

    Raises:
        Ct2ConversionError: a parameter is not filled, a name is unknown, a shape differs,
            or the output projection does not end up tied.
    """
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
        raise Ct2ConversionError(f"{path} does not fit {type(model).__name__}: " + "; ".join(parts))
    tensors = {name: torch.from_numpy(array) for name, array in state.items()}
    model.load_state_dict(tensors, strict=True, assign=True)
    # assign=True gives the output projection its own Parameter object; re-tie it to the
    # embeddings so it is one tensor, as from_pretrained leaves it (and saved once).
    model.tie_weights()
    embed = model.get_input_embeddings().weight
    output = model.get_output_embeddings().weight
    if output is not embed and output.data_ptr() != embed.data_ptr():
        raise Ct2ConversionError("the output projection is not tied to the token embeddings")
    still_meta = [name for name, t in (*model.named_parameters(), *model.named_buffers()) if t.is_meta]
    if still_meta:
        raise Ct2ConversionError(f"HF parameters not filled: {still_meta[:10]}")


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
