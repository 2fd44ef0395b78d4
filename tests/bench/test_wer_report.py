"""Tiny bench runs with expected texts: WER in the JSON and Markdown, and the preparation phase.

A tiny Whisper transcribes the handler's espeak-ng bench speech (its references are the
spoken text); a tiny GPT-2 gets the case's own inputs and references, which extend the
model's own output by three words, so that its WER is a known fraction. Expected WERs are
computed here from the same model's outputs on the same inputs. Timings are never asserted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from ipfs_accelerate.bench.quality import normalize_text, word_error_rate
from ipfs_accelerate.bench.report import JSON_NAME, MARKDOWN_NAME, validate, write_report
from ipfs_accelerate.bench.runner import run_scenario
from ipfs_accelerate.bench.scenario import Case, Scenario
from ipfs_accelerate.families.bench_profile import bench_profile
from tests.fixtures.models import TINY

WHISPER = "openai/whisper-tiny.en"
PROMPT = "Once upon a time"
WHISPER_PARAMS = {"max_new_tokens": 12}
GPT2_PARAMS = {"max_new_tokens": 4}
QUICK = {"min_runs": 1, "min_seconds": 0.0, "warmup_runs": 0, "backend": "torch", "weights": "synthetic"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _section(text: str, name: str) -> str:
    return text.split(f"## {name}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def said(load_tiny) -> str:
    """What the tiny GPT-2 generates for the prompt (greedy: the same in the bench run)."""
    out = load_tiny("gpt2")([PROMPT], **GPT2_PARAMS).outputs[0]
    assert isinstance(out, str) and normalize_text(out)
    return out


@pytest.fixture(scope="module")
def speech_report(tmp_path_factory, cache_dir) -> tuple[Path, dict]:
    """Whisper on its own bench speech; no baselines (the plain pipeline takes half a minute here)."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install -y espeak-ng)")
    scenario = Scenario(name="wer-speech", baselines=False, cases=(
        Case(model_id=WHISPER, config_overrides=TINY[WHISPER], params=WHISPER_PARAMS, **QUICK),))
    out = tmp_path_factory.mktemp("wer-speech")
    files = write_report(run_scenario(scenario, cache_dir=cache_dir), out)
    return out, json.loads(files.json.read_text())


@pytest.fixture(scope="module")
def text_report(tmp_path_factory, cache_dir, said) -> tuple[Path, dict]:
    """GPT-2 with the case's own references, and its plain baseline on the same inputs."""
    reference = f"{said} and three more"
    scenario = Scenario(name="wer-text", baselines=True, cases=(
        Case(model_id="gpt2", config_overrides=TINY["gpt2"], params=GPT2_PARAMS,
             inputs=lambda handler, n: [PROMPT] * n, references=lambda handler, n: [reference] * n, **QUICK),))
    out = tmp_path_factory.mktemp("wer-text")
    files = write_report(run_scenario(scenario, cache_dir=cache_dir), out)
    return out, json.loads(files.json.read_text())


def test_speech_wer_is_against_the_spoken_text(speech_report, load_tiny):
    out, doc = speech_report
    assert validate(doc) == []
    whisper = load_tiny(WHISPER)
    (clip,) = bench_profile(whisper.handler).inputs(1)
    (spoken,) = bench_profile(whisper.handler).references(1)
    heard = whisper([clip], **WHISPER_PARAMS).outputs[0].text
    (m,) = doc["cases"][0]["measurements"]
    assert m["wer"] == pytest.approx(word_error_rate(spoken, heard))
    audio = _section((out / MARKDOWN_NAME).read_text(), "Audio")
    assert "| WER vs spoken text | Baselines' WER |" in audio
    row = next(line for line in audio.splitlines() if WHISPER in line)
    assert f"| {m['wer']:.3f} |" in row


def test_case_references_give_a_known_wer(text_report, said):
    _, doc = text_report
    assert validate(doc) == []
    words = len(normalize_text(said).split())
    (m,) = doc["cases"][0]["measurements"]
    # Ours is the reference less its last three words: three deletions.
    assert m["wer"] == pytest.approx(3 / (words + 3))


def test_the_baseline_on_the_same_inputs_gets_a_wer(text_report, said):
    _, doc = text_report
    (baseline,) = [b for b in doc["baselines"] if b["status"] == "ok"]
    (m,) = baseline["measurements"]
    assert isinstance(m["wer"], float) and 0.0 <= m["wer"]
    # The plain generate baseline decodes greedily too: the same text, the same WER.
    agreement = doc["comparisons"][0]["agreement"]
    if agreement["value"] == 1.0:
        assert m["wer"] == pytest.approx(doc["cases"][0]["measurements"][0]["wer"])


def test_wer_columns_where_a_section_has_wers(text_report):
    out, doc = text_report
    text = (out / MARKDOWN_NAME).read_text()
    generation = _section(text, "Text generation")
    assert "WER vs expected text" in generation and "(transformers generate)" in generation
    assert f"| {doc['cases'][0]['measurements'][0]['wer']:.3f} |" in generation
    assert "| WER |" in _section(text, "Baselines")
    # No case of this run is multimodal: that table keeps its usual columns.
    assert "WER" not in _section(text, "Multimodal")


def test_preparation_is_reported_apart_and_counted_in_the_budget(text_report):
    out, doc = text_report
    prep = doc["preparation"]
    (weights,) = prep["weights"]
    assert weights["model_id"] == "gpt2" and weights["status"] == "ok" and weights["resolved"] == "synthetic"
    assert weights["family"] == "gpt2"
    assert prep["seconds"] >= prep["weights_s"] >= 0
    text = (out / MARKDOWN_NAME).read_text()
    assert f"({prep['seconds']:.0f} s of preparation first" in text.split("## Machine", 1)[0]
    assert doc["duration_s"] >= prep["seconds"]  # the budget's clock covers the preparation
    assert "`gpt2`" in _section(text, "Preparation")


def test_preparation_builds_missing_synthetic_weights_once(tmp_path):
    case = Case(model_id="gpt2", config_overrides={**TINY["gpt2"], "n_layer": 1}, params={"max_new_tokens": 2},
                **QUICK)
    scenario = Scenario(name="prep", cases=(case,), baselines=False, budget_s=60.0)
    first = run_scenario(scenario, cache_dir=tmp_path)
    second = run_scenario(scenario, cache_dir=tmp_path)
    assert first.preparation is not None and second.preparation is not None
    assert [w.built for w in first.preparation.weights] == [True]
    assert [w.built for w in second.preparation.weights] == [False]  # found in the cache
    assert first.cases[0].status == "ok"
    files = write_report(second, tmp_path / "report")
    assert validate(json.loads((tmp_path / "report" / JSON_NAME).read_text())) == []
    assert "| cached |" in _section(files.markdown.read_text(), "Preparation")


def test_a_model_that_cannot_be_prepared_fails_its_case_with_the_reason(tmp_path):
    case = Case(model_id=str(tmp_path / "missing-model"), family="gpt2", backend="torch", min_runs=1,
                min_seconds=0.0)
    run = run_scenario(Scenario(name="missing", cases=(case,), baselines=False), cache_dir=tmp_path)
    assert run.preparation is not None
    (prepared,) = run.preparation.weights
    assert prepared.status == "failed" and prepared.reason
    assert run.cases[0].status == "failed"
