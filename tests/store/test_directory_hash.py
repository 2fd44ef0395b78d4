"""directory_hash: the content hash of a model directory, kept on disk between processes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from ipfs_accelerate.store.weights import directory_hash


def _model_dir(root: Path) -> Path:
    model = root / "model"
    (model / "sub").mkdir(parents=True)
    (model / "config.json").write_text('{"model_type": "bert"}')
    (model / "sub" / "weights.safetensors").write_bytes(b"\x00\x01" * 1000)
    return model


def _expected(model: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in model.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(model)).encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_hash_covers_names_and_bytes(tmp_path):
    model = _model_dir(tmp_path)
    assert directory_hash(model) == _expected(model)
    (model / "config.json").write_text('{"model_type": "gpt2"}')
    assert directory_hash(model) == _expected(model)


def test_memo_on_disk_is_used_while_files_are_unchanged(tmp_path):
    model, memo_dir = _model_dir(tmp_path), tmp_path / "hashes"
    real = directory_hash(model, memo_dir=memo_dir)
    assert real == _expected(model)
    (memo,) = memo_dir.glob("*.json")
    saved = json.loads(memo.read_text())
    assert saved["sha256"] == real and saved["path"] == str(model)
    # The memo is what a later process reads: an altered digest comes back as long as the
    # files' names, sizes and times are unchanged (which shows that it was not recomputed) …
    memo.write_text(json.dumps(saved | {"sha256": "from-the-memo"}))
    assert directory_hash(model, memo_dir=memo_dir) == "from-the-memo"
    # … and a changed file makes it hash again and rewrite the memo.
    (model / "sub" / "weights.safetensors").write_bytes(b"\x02" * 10)
    assert directory_hash(model, memo_dir=memo_dir) == _expected(model) != real
    assert json.loads(memo.read_text())["sha256"] == _expected(model)


def test_an_unreadable_memo_is_ignored(tmp_path):
    model, memo_dir = _model_dir(tmp_path), tmp_path / "hashes"
    directory_hash(model, memo_dir=memo_dir)
    (memo,) = memo_dir.glob("*.json")
    memo.write_text("{not json")
    assert directory_hash(model, memo_dir=memo_dir) == _expected(model)
