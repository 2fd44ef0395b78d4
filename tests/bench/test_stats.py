"""Latency summaries: percentiles as numpy computes them, and validation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import ipfs_accelerate as ia
from ipfs_accelerate.bench.stats import Latency, percentile


def test_matches_numpy():
    rng = np.random.default_rng(0)
    samples = list(rng.exponential(0.01, size=57))
    lat = Latency.from_samples(samples)
    assert lat.count == 57
    assert lat.p50 == pytest.approx(np.percentile(samples, 50))
    assert lat.p90 == pytest.approx(np.percentile(samples, 90))
    assert lat.p99 == pytest.approx(np.percentile(samples, 99))
    assert lat.mean == pytest.approx(np.mean(samples))
    assert lat.stdev == pytest.approx(np.std(samples, ddof=1))
    assert (lat.min, lat.max) == (min(samples), max(samples))
    assert lat.samples == tuple(samples)  # in the order taken
    assert lat.relative_stdev == pytest.approx(lat.stdev / lat.mean)


def test_one_sample():
    lat = Latency.from_samples([0.25])
    assert (lat.p50, lat.p90, lat.p99, lat.stdev, lat.count) == (0.25, 0.25, 0.25, 0.0, 1)


def test_is_frozen_and_serialisable():
    lat = Latency.from_samples([1.0, 2.0, 3.0])
    with pytest.raises(dataclasses.FrozenInstanceError):
        lat.p50 = 0.0  # type: ignore[misc]
    d = lat.to_dict()
    assert d["p50"] == 2.0 and d["samples"] == [1.0, 2.0, 3.0]
    assert lat.to_dict(samples=False)["samples"] == []


@pytest.mark.parametrize("samples", [[], [float("nan")], [-1.0], [float("inf")]])
def test_rejects_bad_samples(samples):
    with pytest.raises(ia.InvalidInput):
        Latency.from_samples(samples)


def test_percentile_bounds():
    assert percentile([1.0, 2.0], 0) == 1.0
    assert percentile([1.0, 2.0], 100) == 2.0
    assert percentile([1.0, 2.0], 25) == 1.25
    with pytest.raises(ia.InvalidInput):
        percentile([1.0], 101)


def test_paired_ratios_are_each_rounds_own():
    from ipfs_accelerate.bench.stats import PairedRatios

    paired = PairedRatios.from_rates([100.0, 90.0, 120.0, 80.0], [25.0, 30.0, 24.0, 20.0])
    assert paired.ratios == (4.0, 3.0, 5.0, 4.0)
    assert paired.median == 4.0 and paired.min == 3.0 and paired.max == 5.0
    assert paired.spread == pytest.approx(5.0 / 3.0)
    for ours, theirs in (([], []), ([1.0], [1.0, 2.0]), ([1.0], [0.0]), ([float("nan")], [1.0])):
        with pytest.raises(ia.InvalidInput):
            PairedRatios.from_rates(ours, theirs)
