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
