"""The HTTP benchmark's pieces that need no server (the run itself is measured, not tested)."""

from __future__ import annotations

import asyncio

from ipfs_accelerate.bench.http import HttpBenchResult, LoadFigures, minilm_folder, sentences
from ipfs_accelerate.bench.stats import Latency


def test_sentences_are_deterministic_and_distinct() -> None:
    first = sentences(200)
    assert first == sentences(200)
    assert len(set(first)) > 150
    assert all(6 <= len(s.split()) <= 20 for s in first)


def test_report_names_every_side_and_the_target_ratios() -> None:
    def side(name: str, rps: float) -> LoadFigures:
        return LoadFigures(name=name, requests=10, errors=0, seconds=1.0, requests_per_s=rps,
                           latency=Latency.from_samples([0.01, 0.02, 0.03]))

    missing = LoadFigures(name="infinity-emb", requests=0, errors=0, seconds=0.0, requests_per_s=0.0, latency=None,
                          note="not measured")
    result = HttpBenchResult(clients=4, requests=10, in_process=side("in", 200.0), http=side("http", 180.0),
                             infinity=missing, whisper_stream=None)
    text = result.to_markdown()
    assert "| http | 180.0 |" in text and "not measured" in text
    assert abs(result.http_vs_in_process - 0.9) < 1e-9 and result.http_vs_infinity is None
    assert result.to_dict()["infinity"]["latency"] is None


def test_the_real_minilm_folder_is_found() -> None:
    folder = minilm_folder()
    assert folder is not None and (folder / "model.safetensors").is_file()


def testdrive_load_counts_answers_and_errors() -> None:
    from ipfs_accelerate.bench.http import drive_load

    async def call(text: str) -> bool:
        await asyncio.sleep(0)
        return not text.startswith("bad")

    figures = asyncio.run(drive_load(call, ["ok"] * 30 + ["bad"] * 5, 8, "t", ""))
    assert figures.requests == 30 and figures.errors == 5 and figures.latency is not None


def test_bad_counts_and_an_unwritable_json_path_are_refused_before_anything_runs(tmp_path, capsys) -> None:
    import pytest

    import ipfs_accelerate as ia
    from ipfs_accelerate.bench.http import run_http_bench
    from ipfs_accelerate.cli import main

    for kwargs, message in [({"clients": 0}, "clients must be an integer ≥ 1; got 0"),
                            ({"requests": -1}, "requests must be an integer ≥ 1; got -1")]:
        with pytest.raises(ia.InvalidInput, match=f"^{message}$"):
            run_http_bench(**kwargs)  # type: ignore[arg-type]
    (tmp_path / "a file").write_text("")
    assert main(["bench-http", "--json", str(tmp_path / "a file" / "figures.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: InvalidInput: --json {tmp_path / 'a file'}: cannot write "
                                              "figures.json there")
