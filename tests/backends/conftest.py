"""Session fixtures of the export-backend tests: tiny models built once, one shared cache.

The tiny models (see ``_tiny.py``) are saved with ``save_pretrained`` and wrapped in
:class:`ResolvedWeights`; the backends' export caches share one directory per session, so
each model is exported once whatever the number of tests that load it.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.backends._tiny import RECIPES

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny models are saved (one directory per session)."""
    return tmp_path_factory.mktemp("tiny-models")


@pytest.fixture(scope="session")
def export_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The cache directory every backend test shares, so each model is exported once."""
    return tmp_path_factory.mktemp("export-cache")


@pytest.fixture(scope="session")
def tiny_spec(tiny_root: Path) -> Callable[..., Any]:
    """``tiny_spec(name, **changes)`` → a ModelSpec of the named tiny model (built on first use)."""
    import torch

    from ipfs_accelerate.backends.base import ModelSpec
    from ipfs_accelerate.store.weights import ResolvedWeights

    built: dict[str, Path] = {}

    def directory(name: str) -> Path:
        recipe = RECIPES[name]
        owner = recipe.weights_of or name
        if owner not in built:
            path = tiny_root / owner
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                model = RECIPES[owner].build()
            model.save_pretrained(path, safe_serialization=True)
            built[owner] = path
        return built[owner]

    def make(name: str, **changes: Any) -> Any:
        recipe = RECIPES[name]
        weights = ResolvedWeights(path=directory(name), model_id=f"tiny-{name}", weights="synthetic", source="test")
        spec = ModelSpec(
            weights=weights, kind=recipe.kind, torch_class=recipe.torch_class, generates=recipe.generates,
            fp16_safe=recipe.fp16_safe, example_inputs=recipe.inputs, output_names=recipe.output_names,
            entry=recipe.entry,
        )
        return dataclasses.replace(spec, **changes) if changes else spec

    return make


@pytest.fixture(scope="session")
def torch_runtime(export_cache: Path) -> Callable[[Any], Any]:
    """The PyTorch fp32 runtime of a spec: the reference every backend is compared with."""
    from ipfs_accelerate.backends.pytorch import TorchBackend

    loaded: dict[Any, Any] = {}

    def load(spec: Any) -> Any:
        key = (spec.model_dir, spec.entry, spec.torch_class)
        if key not in loaded:
            loaded[key] = TorchBackend().load(spec, device="cpu", precision="fp32", cache_dir=export_cache)
        return loaded[key]

    return load
