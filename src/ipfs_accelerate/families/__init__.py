"""Model families, one module each, found by name through :data:`REGISTRY`.

Adding a family is one new module plus one line here. Nothing outside this package
names a family.

This package is also what ``ipfs_accelerate.families`` is, and calling it lists the families
(``ia.families()`` → :func:`ipfs_accelerate._info.families`): a function of that name bound on the
top-level package would hide the subpackage from ``import ipfs_accelerate.families.whisper as w``.
"""

from __future__ import annotations

import importlib
import json
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING

from .._exceptions import UnsupportedTask
from .base import Checkpoint, Family, Prepared, TaskHandler

if TYPE_CHECKING:
    from .._info import FamilyInfo

__all__ = [
    "REGISTRY",
    "Checkpoint",
    "Family",
    "Prepared",
    "TaskHandler",
    "all_families",
    "find_family",
    "get_family",
]

# family name -> "module:Class"
# Order matters where two families share a model_type: the more specific one comes first.
REGISTRY: dict[str, str] = {
    "sentence-embeddings": "sentence_embeddings:SentenceEmbeddingsFamily",
    "bert": "bert:BertFamily",
    "gpt2": "gpt2:GPT2Family",
    "opt": "opt:OPTFamily",
    "t5": "t5:T5Family",
    "clip": "clip:CLIPFamily",
    "xclip": "xclip:XCLIPFamily",
    "videomae": "videomae:VideoMAEFamily",
    "llava": "llava:LlavaFamily",
    "llava-next": "llava_next:LlavaNextFamily",
    "whisper": "whisper:WhisperFamily",
    "wav2vec2": "wav2vec2:Wav2Vec2Family",
    "clap": "clap:ClapFamily",
}

_instances: dict[str, Family] = {}


def get_family(name: str) -> Family:
    """The family registered under ``name``.

    Raises:
        UnsupportedTask: no family has that name.
    """
    if name not in REGISTRY:
        raise UnsupportedTask(f"unknown family {name!r}; known: {', '.join(sorted(REGISTRY))}")
    if name not in _instances:
        module_name, cls_name = REGISTRY[name].split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        _instances[name] = getattr(module, cls_name)()
    return _instances[name]


def all_families() -> list[Family]:
    """Every registered family, in registry order."""
    return [get_family(name) for name in REGISTRY]


def find_family(model_id: str) -> Family:
    """The family that knows ``model_id``: by checkpoint name, else by config model_type.

    Raises:
        UnsupportedTask: no family knows the model.
    """
    for model_family in all_families():
        if model_id in model_family.checkpoints:
            return model_family
    config_dir = _config_dir(model_id)
    model_type = _model_type(config_dir) if config_dir is not None else None
    if config_dir is not None:
        for model_family in all_families():
            if model_family.claims(config_dir, model_type):
                return model_family
    raise UnsupportedTask(
        f"no family knows {model_id!r}"
        + (f" (config model_type {model_type!r})" if model_type else "")
        + f"; pass family= one of {', '.join(REGISTRY)}"
    )


def _config_dir(model_id: str) -> Path | None:
    """The folder holding the model's config.json: a local directory or the HF cache."""
    local = Path(model_id).expanduser()
    if local.is_dir():
        return local
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(model_id, "config.json")
    except Exception:  # noqa: BLE001 - an invalid hub id simply is not cached
        return None
    return Path(cached).parent if isinstance(cached, str) else None


def _model_type(config_dir: Path) -> str | None:
    try:
        value = json.loads((config_dir / "config.json").read_text()).get("model_type")
    except (OSError, ValueError):
        return None
    return str(value) if value else None


class _FamiliesPackage(types.ModuleType):
    """This package, callable: ``ipfs_accelerate.families()`` lists every family."""

    def __call__(self) -> list[FamilyInfo]:
        from .._info import families

        return families()


sys.modules[__name__].__class__ = _FamiliesPackage
