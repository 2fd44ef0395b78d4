"""The package's layering: the store and the generation machinery know no family, and no
module imports another's private names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ipfs_accelerate
from ipfs_accelerate._exceptions import InvalidInput
from ipfs_accelerate.families.base import Prepared, TaskHandler

PACKAGE = Path(ipfs_accelerate.__file__).parent


def _imports(path: Path) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from module import name`` in the file, relative dots kept."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found += [(module, alias.name) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [(alias.name, "") for alias in node.names]
    return found


@pytest.mark.parametrize("package", ["store", "generation"])
def test_store_and_generation_never_import_families(package):
    offenders = [
        f"{path.relative_to(PACKAGE)}: from {module} import {name}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for module, name in _imports(path)
        if "families" in module.split(".") or name == "families"
    ]
    assert offenders == []


@pytest.mark.parametrize("package", ["families", "generation", "store"])
def test_no_private_name_is_imported_across_modules(package):
    offenders = [
        f"{path.relative_to(PACKAGE)}: from {module} import {name}"
        for path in sorted((PACKAGE / package).rglob("*.py"))
        for module, name in _imports(path)
        if name.startswith("_") and name != "__future__"
    ]
    assert offenders == []


class _NoOutputs(TaskHandler):
    name = "no-outputs"
    kind = "feature-extraction"
    torch_class = "AutoModel"
    Params = dict

    def example_inputs(self) -> list[object]:
        return []

    def preprocess(self, inputs, params) -> Prepared:
        raise InvalidInput("unused")

    def postprocess(self, raw, prepared, params) -> list[object]:
        return []


def test_default_forward_needs_declared_outputs():
    handler = _NoOutputs.__new__(_NoOutputs)  # forward fails before it touches weights or a model
    with pytest.raises(NotImplementedError, match="'no-outputs' declares no output_names: it must override forward"):
        handler.forward(None, Prepared(inputs={}, count=0), None)  # type: ignore[arg-type]
