"""The benchmark on tiny models writes a complete report: sections, JSON schema, PNG plots.

Timings are never asserted: only that every figure, label and note is there.
"""

from __future__ import annotations

import itertools
import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

import ipfs_accelerate as ia
from ipfs_accelerate.bench import cli as bench_cli
from ipfs_accelerate.bench.budget import BudgetClock
from ipfs_accelerate.bench.machine import READ_PROBE_MIB
from ipfs_accelerate.bench.report import JSON_NAME, MARKDOWN_NAME, SCHEMA, SECTIONS, validate, write_report
from ipfs_accelerate.bench.runner import run_scenario
from ipfs_accelerate.bench.scenario import Case, Scenario, load_scenario, scenario_from_dict, seed_suite
from tests.fixtures.models import TINY

MINILM = "sentence-transformers/all-MiniLM-L6-v2"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _tiny_scenario() -> dict:
    return {
        "name": "tiny",
        "min_runs": 2,
        "min_seconds": 0,
        "concurrency": 6,
        "concurrency_rounds": 2,
        "paired_rounds": 2,
        "cases": [
            {"model": MINILM, "backend": "torch", "precisions": ["fp32"], "batch_sizes": [1, 2],
             "weights": "synthetic", "config_overrides": TINY[MINILM]},
            # fp16 on a CPU: the torch backend refuses it and the engine falls back to fp32.
            {"model": "gpt2", "backend": "torch", "precision": "fp16", "device": "cpu", "batch_sizes": [1, 2],
             "weights": "synthetic", "config_overrides": TINY["gpt2"], "params": {"max_new_tokens": 3}},
        ],
    }


@pytest.fixture(scope="module")
def report_dir(tmp_path_factory, cache_dir) -> Path:
    """Run the CLI once on the tiny scenario (a YAML file) and return the report folder."""
    work = tmp_path_factory.mktemp("bench")
    scenario_file = work / "tiny.yaml"
    scenario_file.write_text(yaml.safe_dump(_tiny_scenario()))
    out = work / "report"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPFS_ACCELERATE_CACHE", str(cache_dir))
        code = bench_cli.main(["--scenario", str(scenario_file), "--out", str(out), "--quiet"])
    assert code == 0
    return out


def test_markdown_has_every_section_in_order(report_dir):
    text = (report_dir / MARKDOWN_NAME).read_text()
    headings = re.findall(r"^## (.+)$", text, flags=re.M)
    assert headings == list(SECTIONS)
    assert text.startswith("# ipfs_accelerate benchmark: tiny")
    # Tables that must hold rows in this run.
    for section, needle in (("Model status summary", "gpt2"), ("Text generation", "tokens/s"),
                            ("Embeddings and text encoders", "items/s"), ("Baselines", "transformers generate"),
                            ("Concurrency", "(median of 2 rounds, each timing both back to back: "),
                            ("Performance targets", "concurrent callers"),
                            ("Share of the machine's measured peaks", "GFLOP/s")):
        body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
        assert needle in body, section
    assert "Measured fp32 peak" in text and "memory bandwidth" in text
    read_line = next(line for line in text.splitlines() if line.startswith("- Read rate by buffer size"))
    assert re.findall(r"(\d+ [MG]iB) [\d.]+ GB/s", read_line) == ["32 MiB", "64 MiB", "128 MiB", "256 MiB", "1 GiB"]


def test_json_matches_the_schema(report_dir):
    doc = json.loads((report_dir / JSON_NAME).read_text())
    assert validate(doc) == []
    assert set(SCHEMA) <= set(doc)
    assert doc["machine"]["fp32_gflops"] > 0 and doc["machine"]["memory_bandwidth_gbs"] > 0
    read = doc["machine"]["read_gbs_by_mib"]
    assert [int(mib) for mib in read] == list(READ_PROBE_MIB) and all(gbs > 0 for gbs in read.values())
    assert doc["machine"]["libraries"]["torch"]
    cases = {c["case"]["model_id"]: c for c in doc["cases"]}
    for case in cases.values():
        assert [m["batch_size"] for m in case["measurements"]] == [1, 2]
        for m in case["measurements"]:
            assert m["runs"] >= 2 and m["latency"]["count"] == m["runs"] == len(m["latency"]["samples"])
            assert m["latency"]["p50"] <= m["latency"]["p99"]
        assert case["measurements"][0]["cold_first_call_s"] > 0
        assert case["load"]["total_s"] > 0
        # The backend's facts about what ran travel with each case (here torch's dtype and version).
        assert case["runtime"]["dtype"] == "float32" and case["runtime"]["torch"] == doc["machine"]["libraries"]["torch"]
    gen = cases["gpt2"]["measurements"][0]
    assert gen["throughput"]["unit"] == "tokens/s" and "time_to_first_token_s" in gen["figures"]
    assert "fraction_of_bandwidth_bound" in gen["efficiency"]
    emb = cases[MINILM]["measurements"][1]
    assert emb["throughput"]["unit"] == "items/s" and "fraction_of_fp32_peak" in emb["efficiency"]
    # Baselines on the same inputs: plain transformers for both, sentence-transformers for MiniLM.
    names = {(b["model_id"], b["name"]) for b in doc["baselines"] if b["status"] == "ok"}
    assert (MINILM, "transformers forward") in names and (MINILM, "sentence-transformers encode") in names
    assert ("gpt2", "transformers generate") in names
    emb_cos = [c for c in doc["comparisons"] if c["case_id"].startswith(MINILM) and c["agreement"]]
    assert emb_cos and all(c["agreement"]["metric"] == "cosine" and c["agreement"]["min"] > 0.999 for c in emb_cos)
    gen_cmp = [c for c in doc["comparisons"] if c["case_id"].startswith("gpt2")]
    assert gen_cmp and all(c["unit"] == "tokens/s" and c["ratio"] > 0 for c in gen_cmp)
    # Where a target compares with plain transformers (generation at batch 1), the two were
    # also timed back to back; nowhere else (batch 2; MiniLM's synthetic weights have no target).
    paired = {(c["case_id"].split(":")[0], c["batch_size"]): c["paired"] for c in doc["comparisons"]}
    assert paired[("gpt2", 2)] is None and paired[(MINILM, 1)] is None and paired[(MINILM, 2)] is None
    rounds = paired[("gpt2", 1)]
    assert len(rounds["ratios"]) == len(rounds["ours"]) == len(rounds["theirs"]) == 2
    assert rounds["ratios"] == [a / b for a, b in zip(rounds["ours"], rounds["theirs"], strict=True)]
    assert rounds["min"] <= rounds["median"] <= rounds["max"]
    two_times = next(t for t in doc["targets"] if t["name"].startswith("batch 1 ≥ 2×"))
    assert two_times["value"] == rounds["median"] and two_times["spread"] == rounds["max"] / rounds["min"]
    assert "median of 2 alternating rounds" in two_times["figure"]
    concurrency = doc["concurrency"]
    assert concurrency["status"] == "ok" and concurrency["callers"] == 6
    # Each round timed the batched callers and plain one by one back to back; the target
    # reads the median of the rounds' ratios, and its spread is theirs.
    both = concurrency["paired"]
    assert len(both["ours"]) == len(both["theirs"]) == concurrency["rounds"] == 2
    assert both["ratios"] == [a / b for a, b in zip(both["ours"], both["theirs"], strict=True)]
    assert concurrency["ratio_vs_plain"] == both["median"]
    callers_target = next(t for t in doc["targets"] if "concurrent callers" in t["name"])
    assert callers_target["value"] == both["median"] and callers_target["spread"] == both["max"] / both["min"]
    assert "median of 2 alternating rounds" in callers_target["figure"]


def test_plots_are_valid_pngs(report_dir):
    from PIL import Image

    doc = json.loads((report_dir / JSON_NAME).read_text())
    assert len(doc["files"]["plots"]) == 2
    for name in doc["files"]["plots"]:
        path = report_dir / name
        assert path.read_bytes()[:8] == PNG_MAGIC
        with Image.open(path) as image:
            image.verify()
        with Image.open(path) as image:
            assert image.size[0] > 100 and image.size[1] > 100
        assert f"]({name})" in (report_dir / MARKDOWN_NAME).read_text()


def test_synthetic_weights_are_marked(report_dir):
    doc = json.loads((report_dir / JSON_NAME).read_text())
    assert {c["weights"] for c in doc["cases"]} == {"synthetic"}
    text = (report_dir / MARKDOWN_NAME).read_text()
    status = text.split("## Model status summary\n", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in status.splitlines() if line.startswith("| ") and "`" in line]
    assert rows and all("synthetic" in row for row in rows)
    assert "**Synthetic weights**" in text


def test_fallback_is_in_the_notes(report_dir):
    doc = json.loads((report_dir / JSON_NAME).read_text())
    gen = next(c for c in doc["cases"] if c["case"]["model_id"] == "gpt2")
    assert gen["status"] == "fallback" and gen["precision"] == "fp32"
    assert gen["fallbacks"][0]["tried"] == "torch/cpu/fp16" and gen["fallbacks"][0]["reason"]
    notes = (report_dir / MARKDOWN_NAME).read_text().split("## Notes: fallbacks, failures, synthetic weights\n")[1]
    assert "**Fallback**" in notes and "torch/cpu/fp16" in notes and "emulated" in notes


def test_validate_reports_departures():
    assert any("missing" in e for e in validate({}))
    errors = validate({"schema_version": "1"})
    assert any("$.schema_version: expected int" in e for e in errors)


def test_time_budget_cuts_and_says_so(tmp_path, cache_dir):
    cases = [
        Case(model_id=MINILM, backend="torch", weights="synthetic", config_overrides=TINY[MINILM], min_runs=50,
             min_seconds=30.0, batch_sizes=(1,)),
        Case(model_id="gpt2", backend="torch", weights="synthetic", config_overrides=TINY["gpt2"],
             params={"max_new_tokens": 2}, priority=1),
    ]
    # 5 s are kept for writing the report: 6 s leaves about one second to measure.
    scenario = Scenario(name="budget", cases=tuple(cases), budget_s=6.0, baselines=False)
    run = run_scenario(scenario, cache_dir=cache_dir)
    files = write_report(run, tmp_path)
    statuses = [c.status for c in run.cases]
    assert statuses[1] == "skipped" or run.cases[0].measurements[0].cut
    text = files.markdown.read_text()
    cut = text.split("## What was cut\n", 1)[1].split("\n## ", 1)[0]
    assert "time budget" in cut
    assert validate(json.loads(files.json.read_text())) == []


def test_a_case_that_cannot_load_still_names_its_family_and_task(tmp_path, cache_dir):
    # No hub here: the real gpt2 weights are not available, and the case fails before it loads.
    scenario = Scenario(name="failing", cases=(Case(model_id="gpt2", backend="torch", weights="pretrained"),),
                        baselines=False, concurrency=0)
    run = run_scenario(scenario, cache_dir=cache_dir)
    (result,) = run.cases
    assert result.status == "failed" and "ModelNotAvailable" in result.reason
    assert (result.family, result.task) == ("gpt2", "generate")
    text = write_report(run, tmp_path).markdown.read_text()
    assert "| gpt2: `gpt2` | generate | torch |" in text


def test_a_cut_says_how_much_time_was_left_and_never_a_negative_figure():
    roomy = BudgetClock(1000.0)  # 30 s of it kept for the report
    assert not roomy.too_costly(100.0) and roomy.too_costly(300.0)
    assert re.fullmatch(r"predicted 300 s, more than a quarter of the 9(69|70) s left", roomy.cost_words(300.0))
    spent = BudgetClock(3.0)  # the 5 s reserve is more than the budget: nothing is left
    assert spent.remaining() < 0 and spent.too_costly(11.0)
    assert spent.cost_words(11.0) == "predicted 11 s, with no time left"


def test_scenario_files_and_suite(tmp_path):
    toml = tmp_path / "s.toml"
    toml.write_text(
        'name = "t"\nbudget_s = 60\nmin_runs = 4\n[[cases]]\nmodel = "gpt2"\nbackends = ["torch"]\n'
        'precisions = ["fp32", "int8"]\nbatch_sizes = [1, 8]\nweights = "synthetic"\n'
    )
    scenario = load_scenario(toml)
    assert [c.precision for c in scenario.cases] == ["fp32", "int8"]
    assert all(c.min_runs == 4 and c.batch_sizes == (1, 8) for c in scenario.cases)
    with pytest.raises(ia.InvalidInput, match="unknown key"):
        scenario_from_dict({"cases": [{"model": "gpt2", "batchsize": 1}]})
    with pytest.raises(ia.InvalidInput, match="config_overrides need"):
        scenario_from_dict({"cases": [{"model": "gpt2", "config_overrides": {"n_layer": 1}}]})
    assert scenario_from_dict({"cases": [{"model": "gpt2"}], "paired_rounds": 2}).paired_rounds == 2
    for key, bad in itertools.product(("paired_rounds", "concurrency", "concurrency_rounds"), (2.5, "four", -1, True)):
        with pytest.raises(ia.InvalidInput, match=f"{key} must be an integer"):  # refused, not truncated or read as 1
            scenario_from_dict({"cases": [{"model": "gpt2"}], key: bad})
    with pytest.raises(ia.InvalidInput, match="concurrency_rounds must be an integer ≥ 1"):
        scenario_from_dict({"cases": [{"model": "gpt2"}], "concurrency_rounds": 0})
    with pytest.raises(ia.InvalidInput, match="baselines must be true or false; got 'no'"):
        scenario_from_dict({"cases": [{"model": "gpt2"}], "baselines": "no"})  # a string is not read as true
    suite = seed_suite()
    from ipfs_accelerate.families import all_families

    families = {c.family for c in suite.cases}
    assert families == {s.name for s in all_families()}
    assert suite.budget_s and suite.concurrency == 64
    first = suite.ordered()[0]
    assert first.priority == 0 and first.precision == "fp32"
    assert all(c.strict for c in suite.cases)


def test_baselines_run_only_at_the_batch_sizes_ours_measured(cache_dir):
    """A batch size cut from our case is not measured for the baselines either."""
    case = Case(model_id=MINILM, backend="torch", weights="synthetic", config_overrides=TINY[MINILM], min_runs=2,
                min_seconds=0.0, batch_sizes=(1, 100_000))
    run = run_scenario(Scenario(name="cut", cases=(case,), budget_s=40.0, baselines=True), cache_dir=cache_dir)
    assert [m.batch_size for m in run.cases[0].measurements] == [1]
    assert any("batch 100000 not measured: predicted" in cut for cut in run.cuts)
    measured = [b for b in run.baselines if b.measurements]
    assert measured and all([m.batch_size for m in b.measurements] == [1] for b in measured)


def test_runtime_details_are_made_json_safe():
    from ipfs_accelerate.bench.results import json_safe

    details = {"path": Path("/tmp/x"), "cosine": float("nan"), "providers": ("CPUExecutionProvider",),
               "nested": {"n": np.int64(3), "ok": True}, "obj": object}
    safe = json_safe(details)
    assert safe["path"] == "/tmp/x" and safe["cosine"] is None and safe["providers"] == ["CPUExecutionProvider"]
    assert safe["nested"] == {"n": 3, "ok": True} and "object" in safe["obj"]
    json.dumps(safe, allow_nan=False)


def test_a_missed_target_never_rounds_up_to_its_requirement():
    from ipfs_accelerate.bench.report import _against

    assert _against(3.998, 4.0) == "3.998" and _against(0.99996, 1.0) == "0.99996"
    assert _against(4.08, 4.0) == "4.08" and _against(4.0, 4.0) == "4" and _against(2.7, None) == "2.7"
    assert _against(None, 4.0) == "–"


def test_history_dir_keeps_each_report_and_reads_the_earlier_ones(tmp_path, cache_dir, capsys):
    scenario = tmp_path / "one.yaml"
    scenario.write_text(yaml.safe_dump({
        "name": "history", "min_runs": 1, "min_seconds": 0, "paired_rounds": 0,
        "cases": [{"model": "gpt2", "backend": "torch", "precision": "fp32", "batch_sizes": [1], "warmup_runs": 0,
                   "weights": "synthetic", "config_overrides": TINY["gpt2"], "params": {"max_new_tokens": 2}}],
    }))
    kept = tmp_path / "history"
    kept.mkdir()
    (kept / "benchmark-broken.json").write_text("{not json")  # left out with a warning, not fatal
    values = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IPFS_ACCELERATE_CACHE", str(cache_dir))
        for run in range(2):
            args = ["--scenario", str(scenario), "--out", str(tmp_path / f"out{run}"), "--history-dir", str(kept),
                    "--quiet"]
            assert bench_cli.main(args) == 0
            doc = json.loads((tmp_path / f"out{run}" / JSON_NAME).read_text())
            target = next(t for t in doc["targets"] if t["name"].startswith("batch 1 ≥ 2× plain"))
            values.append((target["value"], target["history"]))
    assert "benchmark-broken.json: not a readable JSON report" in capsys.readouterr().err
    (first, first_history), (_, second_history) = values
    assert first_history == [] and second_history == [first]  # the second run reads the first's value
    assert len(list(kept.glob("benchmark-*.json"))) == 3  # both runs kept beside the broken file
    text = (tmp_path / "out1" / MARKDOWN_NAME).read_text()
    assert "over 2 reports" in text
    # A history folder that cannot be made stops the run before it starts (nothing written).
    (tmp_path / "a file").write_text("")
    args = ["--scenario", str(scenario), "--out", str(tmp_path / "out2"), "--history-dir",
            str(tmp_path / "a file" / "history"), "--quiet"]
    assert bench_cli.main(args) == 2
    assert "--history-dir" in capsys.readouterr().err and not (tmp_path / "out2").exists()
    # So does a report folder that cannot be written: checked before the run, not after its budget.
    args = ["--scenario", str(scenario), "--out", str(tmp_path / "a file" / "out"), "--history-dir", str(kept),
            "--quiet"]
    assert bench_cli.main(args) == 2
    err = capsys.readouterr().err
    assert f"--out {tmp_path / 'a file' / 'out'}: cannot write the report there (NotADirectoryError" in err
    assert len(list(kept.glob("benchmark-*.json"))) == 3  # nothing ran, nothing was kept


@pytest.mark.parametrize(("flags", "message"), [
    (["--min-runs", "0"], "min_runs must be an integer ≥ 1; got 0"),
    (["--concurrency", "-1"], "concurrency must be an integer ≥ 0; got -1"),
    (["--min-seconds", "-1"], "min_seconds must be ≥ 0; got -1.0"),
])
def test_flags_out_of_range_are_refused_not_replaced_by_defaults(tmp_path, capsys, flags, message):
    args = ["--model", "gpt2", "--weights", "synthetic", "--out", str(tmp_path / "out"), "--quiet", *flags]
    assert bench_cli.main(args) == 2
    assert capsys.readouterr().err.strip() == f"error: InvalidInput: {message}"
    assert not (tmp_path / "out").exists()
