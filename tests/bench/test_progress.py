"""The benchmark's progress display: a rich bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import io

from ipfs_accelerate.bench.progress import Progress


def test_rich_bar_prints_each_step_and_redraws_at_most_once_a_second():
    out = io.StringIO()
    with Progress(total=2, stream=out, rich=True) as progress:
        progress.step("gpt2 batch 1: 60 tokens/s")
        progress.log("a note")
        progress.step("gpt2 batch 8: 150 tokens/s")
    text = out.getvalue()
    assert "gpt2 batch 1: 60 tokens/s" in text and "a note" in text and "2/2" in text
    # The redraw thread runs beside the measurements: once a second, not rich's default ten.
    assert progress._bar.live.refresh_per_second == 1


def test_plain_lines_without_a_terminal_and_nothing_when_quiet():
    out = io.StringIO()
    with Progress(total=2, stream=out) as progress:  # a StringIO is not a terminal
        progress.step("first")
        progress.add(1)
        progress.step("second")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("[1/2") and lines[0].endswith("first") and lines[1].startswith("[2/3")
    quiet = io.StringIO()
    with Progress(total=1, stream=quiet, enabled=False) as progress:
        progress.step("hidden")
    assert quiet.getvalue() == ""
