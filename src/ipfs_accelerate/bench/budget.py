"""The run's time budget: a clock, the share one measurement may take, and cost predictions.

The budget covers the whole run, preparation included. Breadth comes first: a measurement
predicted to take more than a quarter of what is left is not run (the report lists it), and
each measurement's seconds shrink to fit an equal share of what is left.
"""

from __future__ import annotations

import time

__all__ = ["BudgetClock", "predicted_seconds"]

# Kept back from the budget for the report, and so that a last long call ends near the budget.
_RESERVE_FRACTION = 0.03
_RESERVE_MIN_S = 5.0
# The most of the time left one measurement may be predicted to take.
_COSTLY_SHARE = 0.25


class BudgetClock:
    """The run's time budget, started when the clock is made.

    Args:
        budget_s: the whole run's seconds; None: unbounded (nothing is ever cut).
    """

    def __init__(self, budget_s: float | None) -> None:
        self.budget_s = budget_s
        self.started = time.perf_counter()

    @property
    def elapsed(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.started

    def remaining(self) -> float:
        """Seconds left, less a reserve for the report (infinite without a budget)."""
        if self.budget_s is None:
            return float("inf")
        reserve = max(_RESERVE_MIN_S, _RESERVE_FRACTION * self.budget_s)
        return self.budget_s - reserve - self.elapsed

    def allowance(self, units_left: int) -> float:
        """Seconds one remaining measurement may take (loads and warm-ups included)."""
        return self.remaining() / max(units_left, 1)

    def too_costly(self, predicted_s: float) -> bool:
        """Whether one measurement would eat too much of the budget left (breadth comes first)."""
        return self.budget_s is not None and predicted_s > _COSTLY_SHARE * self.remaining()

    def cost_words(self, predicted_s: float) -> str:
        """Why :meth:`too_costly` held, in words for the report's list of cuts: "predicted 19 s,
        more than a quarter of the 68 s left", or "… with no time left" once the budget is spent."""
        left = self.remaining()
        return (f"predicted {predicted_s:.0f} s, more than a quarter of the {left:.0f} s left" if left >= 1
                else f"predicted {predicted_s:.0f} s, with no time left")

    def limits(self, *, min_seconds: float, max_seconds: float | None,
               units_left: int) -> tuple[float, float, tuple[str, ...]]:
        """A measurement's ``(min_seconds, cap, cuts)`` once the budget has its say.

        Args:
            min_seconds: the seconds the case asks for.
            max_seconds: the case's own cap (None: none).
            units_left: measurements still to run, this one included.
        """
        cut: list[str] = []
        seconds = float(min_seconds)
        cap = float(max_seconds) if max_seconds is not None else float("inf")
        if self.budget_s is not None:
            allowance = self.allowance(units_left)
            if allowance * 0.5 < seconds:
                seconds = max(0.0, allowance * 0.5)
                cut.append(f"min_seconds {min_seconds:g} → {seconds:.2f} (time budget)")
            cap = min(cap, max(allowance, seconds))
        return seconds, cap, tuple(cut)


def predicted_seconds(p50: float, *, measured_batch: int, batch_size: int, calls: int) -> float:
    """Seconds ``calls`` calls at ``batch_size`` need at least, from the median of a measured batch.

    Assumes time grows linearly with the batch (an upper bound: batching amortises).
    """
    return p50 * batch_size / max(measured_batch, 1) * calls
