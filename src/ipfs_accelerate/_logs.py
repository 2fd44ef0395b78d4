"""Log lines: muting a library's for the length of one call, and an error in one line."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

__all__ = ["one_line", "quiet_loggers"]


@contextlib.contextmanager
def quiet_loggers(*names: str) -> Iterator[None]:
    """Raise the named loggers to ERROR for the block, then restore their levels.

    For a library's INFO/WARNING lines that say nothing useful about what we asked of it
    (a deliberate choice announced, a lookup it is bound to fail); its errors still show.
    """
    loggers = [logging.getLogger(name) for name in names]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def one_line(exc: BaseException) -> str:
    """``Type: first line of the message`` (at most 300 characters), for a reason recorded
    in a report or in provenance, where a multi-line library message would break the table."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}".rstrip(": ")
