"""The backends package's layout rules: one registry, lazy libraries, public names across modules."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import ipfs_accelerate.backends as backends_pkg
from ipfs_accelerate.backends import REGISTRY, Backend
from ipfs_accelerate.backends.converting import ConvertingBackend

PACKAGE = Path(backends_pkg.__file__).parent
SOURCES = sorted(PACKAGE.rglob("*.py"))


def _registered_class(name: str) -> type:
    module_name, cls_name = REGISTRY[name].split(":")
    cls: type = getattr(importlib.import_module(f"{backends_pkg.__name__}.{module_name}"), cls_name)
    return cls


def test_every_registered_backend_is_a_backend_named_as_registered() -> None:
    for name in REGISTRY:
        cls = _registered_class(name)
        assert issubclass(cls, Backend) and cls.name == name, name
    # The backends that export a model share the converting pipeline; torch runs the files as they are.
    assert {n for n in REGISTRY if issubclass(_registered_class(n), ConvertingBackend)} == {"onnxruntime", "openvino"}


def test_importing_the_backends_imports_none_of_their_libraries() -> None:
    """A missing library must cost nothing until its backend is used."""
    code = (
        "import sys\n"
        "import ipfs_accelerate.backends.onnxruntime, ipfs_accelerate.backends.openvino, ipfs_accelerate.backends.pytorch\n"
        "print(','.join(m for m in ('torch', 'onnxruntime', 'openvino', 'optimum', 'onnx', 'nncf', 'transformers')"
        " if m in sys.modules))\n"
    )
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert loaded.stdout.strip() == ""


def test_no_private_name_is_imported_across_modules() -> None:
    """``from .x import _y`` is refused; package-private modules (``_exceptions``) are fine."""
    offenders = []
    for path in SOURCES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("ipfs_accelerate")):
                offenders += [f"{path.relative_to(PACKAGE)}: {a.name}" for a in node.names if a.name.startswith("_")]
    assert offenders == []


def test_every_module_lists_its_public_names_in_all() -> None:
    """Each module says what it offers (ruff's RUF022 keeps the lists sorted)."""
    for path in SOURCES:
        module_name = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts).removesuffix(".__init__")
        module = importlib.import_module(f"ipfs_accelerate.{module_name}")
        names = getattr(module, "__all__", None)
        assert names is not None, module_name
        assert all(hasattr(module, n) for n in names), module_name
