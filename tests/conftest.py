"""Shared test set-up: offline hubs, one cache per session, tiny models built once."""

from __future__ import annotations

import importlib.util
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    name
    for name in ("tests.fixtures.models", "tests.fixtures.audio", "tests.fixtures.vision")
    if importlib.util.find_spec(name) is not None
]
