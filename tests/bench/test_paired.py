"""Ours and a baseline timed back to back in alternating rounds (``measure.measure_paired``).

The calls advance a clock of the test's own instead of taking time, so every rate and
ratio is known exactly and nothing depends on how busy the machine is.
"""

from __future__ import annotations

import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.bench.measure import measure_paired, rates_of


class _Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _calls(clock: _Clock, log: list[str], ours_s: list[float], theirs_s: list[float]):
    """Ours emits 10 tokens per call and theirs 10; each call takes its next duration."""
    def ours() -> dict[str, float]:
        log.append("ours")
        clock.now += ours_s.pop(0)
        return {"items": 1.0, "new_tokens": 10.0}

    def theirs() -> dict[str, float]:
        log.append("theirs")
        clock.now += theirs_s.pop(0)
        return {"items": 1.0, "new_tokens": 10.0}

    return ours, theirs


def test_rounds_alternate_and_each_ratio_is_its_own_rounds():
    clock, log = _Clock(), []
    # The machine slows down round by round: both sides alike within a round.
    ours, theirs = _calls(clock, log, [0.1, 0.2, 0.3, 0.4], [0.5, 1.0, 1.5, 2.0])
    paired = measure_paired(ours, theirs, unit="tokens/s", rounds=4, device="cpu", batch_size=1, clock=clock)
    assert log == ["ours", "theirs", "theirs", "ours", "ours", "theirs", "theirs", "ours"]
    assert paired.ours == pytest.approx((100.0, 50.0, 100 / 3, 25.0))
    assert paired.theirs == pytest.approx((20.0, 10.0, 20 / 3, 5.0))
    # Apart, the first ours (100 tokens/s) against the last theirs (5) would read 20×.
    assert paired.ratios == pytest.approx((5.0, 5.0, 5.0, 5.0)) and paired.spread == pytest.approx(1.0)


def test_the_faster_side_repeats_its_call_in_its_turn():
    clock, log = _Clock(), []
    ours, theirs = _calls(clock, log, [0.1] * 6, [0.3, 0.6])
    paired = measure_paired(ours, theirs, unit="tokens/s", rounds=2, device="cpu", batch_size=1,
                            repeats=(3, 1), clock=clock)
    assert log == ["ours"] * 3 + ["theirs"] * 2 + ["ours"] * 3
    assert paired.ours == pytest.approx((100.0, 100.0)) and paired.theirs == pytest.approx((100 / 3, 50 / 3))
    assert paired.ratios == pytest.approx((3.0, 6.0)) and paired.median == pytest.approx(4.5)


def test_the_baseline_gets_the_inputs_own_figures():
    """A baseline reports no audio seconds: ours lend theirs, so both have a realtime factor."""
    clock = _Clock()

    def ours() -> dict[str, float]:
        clock.now += 1.0
        return {"items": 1.0, "audio_seconds": 30.0}

    def theirs() -> dict[str, float]:
        clock.now += 3.0
        return {"items": 1.0}

    paired = measure_paired(ours, theirs, unit="x realtime", rounds=1, device="cpu", batch_size=1,
                            extra_figures={"audio_seconds": 30.0}, clock=clock)
    assert paired.ours == (30.0,) and paired.theirs == (10.0,) and paired.ratios == (3.0,)


def test_bad_settings_and_missing_figures_are_clear_errors():
    clock = _Clock()

    def call() -> dict[str, float]:
        clock.now += 1.0
        return {"items": 2.0}

    with pytest.raises(ia.InvalidInput, match="rounds must be a positive integer"):
        measure_paired(call, call, unit="items/s", rounds=0, device="cpu", batch_size=2, clock=clock)
    with pytest.raises(ia.InvalidInput, match="repeats must be two positive integers"):
        measure_paired(call, call, unit="items/s", rounds=1, device="cpu", batch_size=2, repeats=(1, 0), clock=clock)
    with pytest.raises(ia.InvalidInput, match="reported no tokens/s"):
        measure_paired(call, call, unit="tokens/s", rounds=1, device="cpu", batch_size=2, clock=clock)


def test_rates_of_summed_figures():
    assert rates_of({"items": 8.0, "new_tokens": 40.0}, 2.0) == {"items/s": 4.0, "tokens/s": 20.0}
    assert rates_of({"items": 1.0, "new_tokens": 0.0, "frames": 0.0}, 1.0) == {"items/s": 1.0}
    assert rates_of({"items": 1.0, "audio_seconds": 30.0}, 0.0) == {"items/s": 0.0, "x realtime": 0.0}


@pytest.mark.usefixtures("one_torch_thread")
def test_the_runner_pairs_ours_with_each_baseline_a_target_reads(monkeypatch, cache_dir):
    """Where a target reads a reference baseline (faster-whisper for speech), the rounds run
    against it; here the embedding needs are pointed at the tiny MiniLM's reference baseline
    (sentence-transformers) at batch 2, so a real run shows which comparisons get rounds."""
    import dataclasses

    from ipfs_accelerate.bench.runner import run_scenario
    from ipfs_accelerate.bench.scenario import Case, Scenario
    from ipfs_accelerate.bench.target_needs import TARGET_NEEDS
    from tests.fixtures.models import TINY

    minilm = "sentence-transformers/all-MiniLM-L6-v2"
    needs = TARGET_NEEDS["feature-extraction"]
    monkeypatch.setitem(TARGET_NEEDS, "feature-extraction", dataclasses.replace(  # type: ignore[index]
        needs, weights=None, input_set=None, versus_plain=(), versus_reference=(2,)))
    case = Case(model_id=minilm, backend="torch", precision="fp32", batch_sizes=(1, 2), weights="synthetic",
                config_overrides=TINY[minilm], min_runs=1, min_seconds=0.0, warmup_runs=0)
    run = run_scenario(Scenario(name="pairs", paired_rounds=2, cases=(case,)), cache_dir=cache_dir)
    rounds = {(c.role, c.batch_size): c.paired for c in run.comparisons}
    assert set(rounds) == {("plain", 1), ("plain", 2), ("reference", 1), ("reference", 2)}
    paired = rounds.pop(("reference", 2))
    assert paired is not None and len(paired.ratios) == 2 and paired.min <= paired.median <= paired.max
    assert all(value is None for value in rounds.values())  # no target reads them: no rounds
