"""The ipfs-accelerate command: output, JSON, and one-line errors with a non-zero code."""

from __future__ import annotations

import json

from ipfs_accelerate.cli import main


def test_families_json(capsys):
    assert main(["families", "--json"]) == 0
    names = {f["name"] for f in json.loads(capsys.readouterr().out)}
    assert {"bert", "gpt2", "t5"} <= names


def test_doctor_prints_backends(capsys):
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "backends:" in out and "torch" in out


def test_run_json_on_a_synthetic_model(capsys, cache_dir, monkeypatch):
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE", str(cache_dir))
    code = main(["run", "prajjwal1/bert-tiny", "--task", "fill-mask", "--weights", "synthetic",
                 "--backend", "torch", "--input", "hello [MASK]", "--param", "top_k=2", "--json"])
    assert code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["provenance"]["weights"] == "synthetic" and len(doc["outputs"][0][0]) == 2


def test_errors_are_one_line_with_exit_code_2(capsys, cache_dir, monkeypatch):
    monkeypatch.setenv("IPFS_ACCELERATE_CACHE", str(cache_dir))
    code = main(["run", "facebook/opt-125m", "--input", "hi"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: ModelNotAvailable:") and err.count("\n") == 1
    code = main(["run", "prajjwal1/bert-tiny", "--weights", "synthetic", "--backend", "torch",
                 "--input", "x", "--param", "top_p=2"])
    assert code == 2 and "InvalidInput" in capsys.readouterr().err
