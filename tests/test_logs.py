"""Muting a library's log lines for one call."""

from __future__ import annotations

import logging

import pytest

from ipfs_accelerate._logs import quiet_loggers


def test_quiet_loggers_mutes_below_error_and_restores_levels(caplog):
    chatty, other = logging.getLogger("test.chatty"), logging.getLogger("test.other")
    chatty.setLevel(logging.INFO)
    caplog.set_level(logging.INFO)
    with pytest.raises(RuntimeError), quiet_loggers("test.chatty"):
        chatty.warning("muted")
        chatty.error("still shown")
        other.info("not named, still shown")
        raise RuntimeError("the call failed")
    assert [r.getMessage() for r in caplog.records] == ["still shown", "not named, still shown"]
    assert chatty.level == logging.INFO  # restored, the error notwithstanding


def test_captured_library_output_turns_native_writes_and_warnings_into_records(caplog):
    import os
    import warnings

    from ipfs_accelerate._logs import LIBRARY_LOGGER, captured_library_output

    caplog.set_level(logging.INFO, logger=LIBRARY_LOGGER)
    with captured_library_output():
        os.write(2, b"a native library line\n")
        os.write(1, b"progress 10%\rprogress 100%\n")
        warnings.warn("a library's deprecation note", UserWarning, stacklevel=1)
        with captured_library_output():  # nested blocks join the outer one
            os.write(2, b"nested line\n")
    messages = [r.getMessage() for r in caplog.records if r.name == LIBRARY_LOGGER]
    assert "a native library line" in messages
    assert "progress 100%" in messages  # a redrawn bar keeps its last state only
    assert "nested line" in messages
    assert any("UserWarning: a library's deprecation note" in m for m in messages)


_LOAD_TINY_INT8 = """
import logging, sys
if sys.argv[1] == "verbose":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
import ipfs_accelerate as ia
ep = ia.load("prajjwal1/bert-tiny", task="embed", weights="synthetic", backend="torch", precision="int8",
             cache_dir=sys.argv[2])
assert ep(["hello"]).provenance.precision == "int8"
"""


def _run(script: str, mode: str, cache: object) -> tuple[str, str]:
    import os
    import subprocess
    import sys

    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", script, mode, str(cache)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, done.stderr


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_load_prints_nothing_unless_logging_asks(mode, tmp_path_factory):
    """A torch int8 load makes torch warn (quantize_per_channel) and transformers print; by default
    none of it reaches the terminal, with logging at INFO it comes as ipfs_accelerate.libraries records."""
    stdout, stderr = _run(_LOAD_TINY_INT8, mode, tmp_path_factory.getbasetemp() / "quiet-load-cache")
    if mode == "quiet":
        assert (stdout, stderr) == ("", "")
    else:
        lines = stderr.splitlines()
        assert any(line.startswith("ipfs_accelerate.libraries: UserWarning") and "quantize_per_channel" in line
                   for line in lines), stderr[-2000:]


_CALL_WHISPER = """
import logging, sys
import numpy as np
if sys.argv[1] == "verbose":
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
import ipfs_accelerate as ia
ep = ia.load("openai/whisper-tiny.en", weights="synthetic", backend="torch", precision="fp32", cache_dir=sys.argv[2])
clip = (np.zeros(16000, dtype=np.float32), 16000)
ep(clip, timestamps=True, max_new_tokens=4)
"".join(ep.stream(clip, max_new_tokens=4))
"""


@pytest.mark.parametrize("mode", ["quiet", "verbose"])
def test_model_calls_print_nothing_unless_logging_asks(mode, tmp_path_factory):
    """transformers warns from Whisper's generate() (forced_decoder_ids, the attention mask) on every
    call: by default nothing reaches the terminal, with logging at INFO the lines come as records."""
    stdout, stderr = _run(_CALL_WHISPER, mode, tmp_path_factory.getbasetemp() / "quiet-call-cache")
    if mode == "quiet":
        assert (stdout, stderr) == ("", "")
    else:
        assert any(line.startswith("ipfs_accelerate.libraries: transformers") and "forced_decoder_ids" in line
                   for line in stderr.splitlines()), stderr[-2000:]


def test_library_records_are_demoted_only_inside_a_call_in_that_thread(caplog):
    import io
    import threading
    import warnings

    from ipfs_accelerate._logs import LIBRARY_LOGGER, library_records_demoted

    sink = io.StringIO()
    handler = logging.StreamHandler(sink)
    library, ours = logging.getLogger("somelibrary"), logging.getLogger("ipfs_accelerate.test")
    library.addHandler(handler)
    ours.addHandler(handler)
    caplog.set_level(logging.INFO, logger=LIBRARY_LOGGER)
    try:
        library.warning("before")
        with library_records_demoted():
            logging.getLogger("somelibrary.module").warning("inside")
            ours.warning("ours inside")
            warnings.warn("a library's note", UserWarning, stacklevel=1)
            other = threading.Thread(target=lambda: library.warning("another thread"))
            other.start()
            other.join()
        library.warning("after")
    finally:
        library.removeHandler(handler)
        ours.removeHandler(handler)
    assert sink.getvalue().splitlines() == ["before", "ours inside", "another thread", "after"]
    demoted = [r.getMessage() for r in caplog.records if r.name == LIBRARY_LOGGER]
    assert "somelibrary.module: inside" in demoted
    assert any("UserWarning: a library's note" in m for m in demoted)
