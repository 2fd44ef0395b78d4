"""Summary statistics of timing samples, as frozen values (after optimum-benchmark's ``Latency``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .._exceptions import InvalidInput

__all__ = ["Latency", "PairedRatios", "percentile"]


def percentile(sorted_samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100) of already-sorted samples, interpolated linearly.

    The same definition as ``numpy.percentile``'s default (``method="linear"``).
    """
    if not sorted_samples:
        raise InvalidInput("percentile of no samples")
    if not 0.0 <= q <= 100.0:
        raise InvalidInput(f"q must be in [0, 100]; got {q!r}")
    position = (len(sorted_samples) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_samples) - 1)
    fraction = position - low
    return float(sorted_samples[low] + (sorted_samples[high] - sorted_samples[low]) * fraction)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Latency:
    """Seconds per call over a set of timed runs.

    Attributes:
        count: how many samples.
        mean: their mean.
        stdev: their sample standard deviation (0 for one sample).
        min: the fastest.
        max: the slowest.
        p50: the median.
        p90: the 90th percentile.
        p99: the 99th percentile (with few samples this is close to ``max``).
        samples: every sample, in the order taken.
    """

    count: int
    mean: float
    stdev: float
    min: float
    max: float
    p50: float
    p90: float
    p99: float
    samples: tuple[float, ...] = ()

    @classmethod
    def from_samples(cls, samples: Sequence[float]) -> Latency:
        """Summarise samples (seconds).

        Raises:
            InvalidInput: no samples, or a sample that is negative or not finite.
        """
        values = [float(s) for s in samples]
        if not values:
            raise InvalidInput("a latency needs at least one sample")
        if any(not math.isfinite(v) or v < 0 for v in values):
            raise InvalidInput("latency samples must be finite and non-negative")
        ordered = sorted(values)
        n = len(values)
        mean = math.fsum(values) / n
        stdev = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
        return cls(
            count=n, mean=mean, stdev=stdev, min=ordered[0], max=ordered[-1],
            p50=percentile(ordered, 50), p90=percentile(ordered, 90), p99=percentile(ordered, 99),
            samples=tuple(values),
        )

    @property
    def relative_stdev(self) -> float:
        """``stdev / mean``: how stable the figure is (0 when the mean is 0)."""
        return self.stdev / self.mean if self.mean > 0 else 0.0

    def to_dict(self, *, samples: bool = True) -> dict[str, Any]:
        """A JSON-ready dictionary (seconds)."""
        out = dataclasses.asdict(self)
        out["samples"] = list(self.samples) if samples else []
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class PairedRatios:
    """Our rate ÷ a baseline's, round by round, the two timed back to back in each round.

    Two figures measured minutes apart on a shared machine compare two states of that
    machine as much as two programs; a round that times both sides one after the other
    (the order alternating, so that neither always runs first) sees nearly the same
    state on both, and the spread of the rounds' ratios says how much the state moved.

    Attributes:
        ratios: each round's ``ours / theirs``, in the order taken.
        ours: our rate in each round.
        theirs: the baseline's rate in each round.
        median: the median ratio (the figure a target reads).
        min: the smallest ratio.
        max: the largest ratio.
    """

    ratios: tuple[float, ...]
    ours: tuple[float, ...]
    theirs: tuple[float, ...]
    median: float
    min: float
    max: float

    @classmethod
    def from_rates(cls, ours: Sequence[float], theirs: Sequence[float]) -> PairedRatios:
        """The rounds' ratios from each round's two rates (higher is better).

        Raises:
            InvalidInput: no rounds, unequal counts, or a rate that is not finite and positive.
        """
        mine, others = [float(r) for r in ours], [float(r) for r in theirs]
        if not mine or len(mine) != len(others):
            raise InvalidInput(f"paired ratios need rounds with two rates each; got {len(mine)} and {len(others)}")
        if any(not math.isfinite(r) or r <= 0 for r in (*mine, *others)):
            raise InvalidInput("paired rates must be finite and positive")
        ratios = [a / b for a, b in zip(mine, others, strict=True)]
        ordered = sorted(ratios)
        return cls(ratios=tuple(ratios), ours=tuple(mine), theirs=tuple(others), median=percentile(ordered, 50),
                   min=ordered[0], max=ordered[-1])

    @property
    def spread(self) -> float:
        """The largest ÷ the smallest round ratio (1.0: every round alike)."""
        return self.max / self.min
