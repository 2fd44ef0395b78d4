"""Summary statistics of timing samples, as frozen values (after optimum-benchmark's ``Latency``)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any

from .._exceptions import InvalidInput

__all__ = ["Latency", "percentile"]


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
