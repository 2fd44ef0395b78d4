"""Progress while a benchmark runs: a rich progress bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import os
import sys
import time
from typing import Any, TextIO

__all__ = ["Progress"]


class Progress:
    """Reports steps of a run on stderr.

    Args:
        total: the number of steps expected (it may grow with :meth:`add`).
        enabled: False prints nothing (tests, ``--quiet``).
        stream: where to write; stderr by default.
        rich: use a rich progress bar; None decides by whether ``stream`` is a terminal
            and rich is installed.
    """

    def __init__(self, total: int = 0, *, enabled: bool = True, stream: TextIO | None = None,
                 rich: bool | None = None) -> None:
        self.total = total
        self.done = 0
        self.enabled = enabled
        self.stream = stream or _own_stderr()
        self.started = time.perf_counter()
        self._bar: Any = None
        self._task: Any = None
        if rich is None:
            rich = bool(getattr(self.stream, "isatty", lambda: False)())
        if enabled and rich:
            try:
                from rich.console import Console
                from rich.progress import (
                    BarColumn,
                    MofNCompleteColumn,
                    TextColumn,
                    TimeElapsedColumn,
                )
                from rich.progress import Progress as RichProgress
            except ImportError:
                rich = False
            else:
                self._bar = RichProgress(
                    TextColumn("[bold]bench[/bold]"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TextColumn("{task.description}"), console=Console(file=self.stream), transient=False,
                    # Redrawn once a second, not rich's ten: the redraw thread runs beside the
                    # measurements and takes CPU time from the model on a small machine.
                    refresh_per_second=1,
                )

    def __enter__(self) -> Progress:
        if self._bar is not None:
            self._bar.start()
            self._task = self._bar.add_task("starting", total=max(self.total, 1))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()

    def add(self, steps: int) -> None:
        """Expect ``steps`` more steps."""
        self.total += steps
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, total=max(self.total, 1))

    def step(self, message: str, *, advance: int = 1) -> None:
        """One step is done; ``message`` says what it measured."""
        self.done += advance
        if not self.enabled:
            return
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=advance, description=message[:80])
            self._bar.console.print(f"  {message}", highlight=False)
            return
        elapsed = time.perf_counter() - self.started
        print(f"[{self.done}/{self.total} {elapsed:6.1f}s] {message}", file=self.stream, flush=True)

    def log(self, message: str) -> None:
        """A line that is not a step (a note, a fallback)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(f"  {message}", highlight=False)
        else:
            print(f"  {message}", file=self.stream, flush=True)


def _own_stderr() -> TextIO:
    """A stream on a copy of the stderr descriptor: model loads redirect descriptor 2 to catch
    libraries' output (``_logs.captured_library_output``), and the bar must keep drawing then."""
    try:
        return os.fdopen(os.dup(sys.stderr.fileno()), "w", buffering=1, encoding="utf-8", errors="replace")
    except (OSError, ValueError, AttributeError):  # no descriptor behind sys.stderr (captured, embedded)
        return sys.stderr

