"""The engine's modules import each other at the top, never inside a function (a lazy import
there would hide a cycle), and the engine never imports the layers built on it: the server,
the command line or the benchmark."""

from __future__ import annotations

import ast
from pathlib import Path

import ipfs_accelerate.engine

ENGINE = Path(ipfs_accelerate.engine.__file__).parent


def _nested_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for inner in ast.walk(node):
                if isinstance(inner, ast.ImportFrom) and inner.level == 1:
                    found.append(f"{path.name}:{inner.lineno} from .{inner.module} import ...")
    return found


def test_engine_modules_import_each_other_at_the_top():
    assert [line for path in sorted(ENGINE.glob("*.py")) for line in _nested_imports(path)] == []


def test_engine_never_imports_the_edges():
    offenders = []
    for path in sorted(ENGINE.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("server", "cli", "bench"):
                offenders.append(f"{path.name}:{node.lineno}")
    assert offenders == []
