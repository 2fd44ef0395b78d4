"""Log lines: third-party output turned into log records, muting a library's loggers for the
length of one call, and an error in one line.

A library call of ours prints nothing unless logging asks for it. The libraries we drive do
print: progress bars (tqdm, rich), Python warnings, their own log handlers, and C++ code that
writes straight to the process's stderr (qnnpack's "incorrectly ignores reduce_range", ONNX
Runtime's and OpenVINO's native logs). :func:`library_output_logged` catches all of them at
the file-descriptor level for the length of a call and hands them to the
``ipfs_accelerate.libraries`` logger at INFO, one record per line: silent by default, shown by
the CLI's ``-v``. ``load()`` runs under it. Model calls, which may run in several threads at
once, run under the lighter :func:`library_records_demoted` (log records and warnings only).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

__all__ = [
    "LIBRARY_LOGGER",
    "captured_library_output",
    "library_output_logged",
    "library_records_demoted",
    "one_line",
    "quiet_loggers",
]

LIBRARY_LOGGER = "ipfs_accelerate.libraries"
_F = TypeVar("_F", bound=Callable[..., Any])
# stdout/stderr are process-wide: concurrent captures share one redirection, the first opens it
# and the last one out restores the descriptors and logs what was caught.
_capture_lock = threading.Lock()
_capture_depth = 0
_capture_state: dict[str, Any] = {}


@contextlib.contextmanager
def captured_library_output() -> Iterator[None]:
    """Send everything written to stdout/stderr (file descriptors 1 and 2, so C++ output too)
    and every Python warning raised in the block to the ``ipfs_accelerate.libraries`` logger.

    Re-entrant and shared between threads: nested or concurrent blocks join the outermost one.
    """
    global _capture_depth
    with _capture_lock:
        if _capture_depth == 0:
            _capture_state.update(_start_capture())
        _capture_depth += 1
    try:
        yield
    finally:
        with _capture_lock:
            _capture_depth -= 1
            if _capture_depth == 0:
                _finish_capture(_capture_state)
                _capture_state.clear()


def library_output_logged(func: _F) -> _F:
    """Decorate a public entry point so third-party output during it becomes log records."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with captured_library_output():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


def _start_capture() -> dict[str, Any]:
    _flush_python_streams()
    sink = tempfile.TemporaryFile(mode="w+b")
    saved: dict[int, int] = {}
    for fd in (1, 2):
        try:
            saved[fd] = os.dup(fd)
            os.dup2(sink.fileno(), fd)
        except OSError:  # no such descriptor (a daemon with closed stdio): nothing to catch there
            saved.pop(fd, None)
    record = warnings.showwarning

    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        logging.getLogger(LIBRARY_LOGGER).info("%s: %s (%s:%d)", category.__name__, message, filename, lineno)

    warnings.showwarning = show
    return {"sink": sink, "saved": saved, "showwarning": record, "handlers": _route_handlers(saved)}


# Handlers that speak for the application keep writing to the real terminal during a capture:
# ours (fallback warnings must stay visible), the root logger's (which the CLI configures) and a
# server's. Records of other libraries that reach them are demoted to the libraries logger.
_OWN_LOGGERS = ("ipfs_accelerate", "uvicorn")


def _route_handlers(saved: dict[int, int]) -> list[tuple[logging.StreamHandler[Any], Any, logging.Filter]]:
    targets = {2: sys.__stderr__, 1: sys.__stdout__}
    streams: dict[int, Any] = {}
    routed: list[tuple[logging.StreamHandler[Any], Any, logging.Filter]] = []
    loggers = [logging.getLogger()] + [
        logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict)
        if name.split(".")[0] in _OWN_LOGGERS
    ]
    for logger in loggers:
        for handler in logger.handlers:
            if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
                continue
            fd = next((n for n, std in ((2, sys.stderr), (1, sys.stdout), (2, targets[2]), (1, targets[1]))
                       if handler.stream is std and n in saved), None)
            if fd is None:
                continue
            if fd not in streams:
                streams[fd] = os.fdopen(os.dup(saved[fd]), "w", buffering=1, encoding="utf-8", errors="replace")
            demote = _DemoteForeign()
            handler.addFilter(demote)
            routed.append((handler, handler.setStream(streams[fd]), demote))
    return routed


class _DemoteForeign(logging.Filter):
    """Let our records through; send other libraries' records to the libraries logger at INFO."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.split(".")[0] in _OWN_LOGGERS:
            return True
        logging.getLogger(LIBRARY_LOGGER).info("%s: %s", record.name, record.getMessage())
        return False


def _finish_capture(state: dict[str, Any]) -> None:
    _flush_python_streams()
    opened = set()
    for handler, previous, demote in state["handlers"]:
        handler.removeFilter(demote)
        opened.add(handler.setStream(previous))
    for stream in opened:
        with contextlib.suppress(Exception):
            stream.close()
    for fd, copy in state["saved"].items():
        os.dup2(copy, fd)
        os.close(copy)
    warnings.showwarning = state["showwarning"]
    sink = state["sink"]
    sink.seek(0)
    text = sink.read().decode("utf-8", errors="replace")
    sink.close()
    logger = logging.getLogger(LIBRARY_LOGGER)
    # Progress bars redraw with carriage returns: keep each line's last state only.
    for raw in text.splitlines():
        line = raw.rsplit("\r", 1)[-1].rstrip()
        if line.strip():
            logger.info("%s", line)


# Model calls: which threads are inside one (a depth per thread), and the handlers and the
# warnings hook that consult it, installed once.
_in_call = threading.local()
_install_lock = threading.Lock()
_installed: dict[str, Any] = {"loggers_seen": -1}


class _DemoteInCall(logging.Filter):
    """Inside a model call in this thread, send other libraries' records to the libraries
    logger at INFO; everywhere else, let every record through as it was."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not getattr(_in_call, "depth", 0) or record.name.split(".")[0] in _OWN_LOGGERS:
            return True
        logging.getLogger(LIBRARY_LOGGER).info("%s: %s", record.name, record.getMessage())
        return False


_DEMOTE_IN_CALL = _DemoteInCall()


def _show_warning_outside_calls(original: Any) -> Any:
    def show(message: Warning | str, category: type[Warning], filename: str, lineno: int,
             file: Any = None, line: str | None = None) -> None:
        if getattr(_in_call, "depth", 0):
            logging.getLogger(LIBRARY_LOGGER).info("%s: %s (%s:%d)", category.__name__, message, filename, lineno)
        else:
            original(message, category, filename, lineno, file, line)

    show.ipfs_accelerate_hook = True  # type: ignore[attr-defined]
    return show


def _install_call_demotion() -> None:
    """Put the filter on every stream handler of the root logger and of the libraries' loggers
    (transformers has its own), and the warnings hook in place: again when loggers were added
    or the hook was replaced since the last look."""
    loggers = logging.Logger.manager.loggerDict
    hooked = getattr(warnings.showwarning, "ipfs_accelerate_hook", False)
    if _installed["loggers_seen"] == len(loggers) and hooked:
        return
    with _install_lock:
        if not getattr(warnings.showwarning, "ipfs_accelerate_hook", False):
            warnings.showwarning = _show_warning_outside_calls(warnings.showwarning)
        for logger in [logging.getLogger(), *(v for v in list(loggers.values()) if isinstance(v, logging.Logger))]:
            for handler in logger.handlers:
                if isinstance(handler, logging.StreamHandler) and _DEMOTE_IN_CALL not in handler.filters:
                    handler.addFilter(_DEMOTE_IN_CALL)
        _installed["loggers_seen"] = len(loggers)


@contextlib.contextmanager
def library_records_demoted() -> Iterator[None]:
    """For the length of a model call in this thread: other libraries' log records and Python
    warnings become INFO records of the ``ipfs_accelerate.libraries`` logger.

    The per-call counterpart of :func:`captured_library_output` (which ``load()`` uses): no file
    descriptors are touched, so calls may run in several threads beside a server's own output;
    what native code writes straight to stderr during a call is not caught. A handler or logger
    added while a call runs is filtered from the next call on.
    """
    _install_call_demotion()
    depth = getattr(_in_call, "depth", 0)
    _in_call.depth = depth + 1
    try:
        yield
    finally:
        _in_call.depth = depth


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
