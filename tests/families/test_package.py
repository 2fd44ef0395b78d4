"""``ipfs_accelerate.families`` is both the package of family modules and the call that lists them."""

from __future__ import annotations

import importlib

import ipfs_accelerate as ia
from ipfs_accelerate.families import REGISTRY


def test_the_package_lists_every_registered_family_when_called():
    assert sorted(info.name for info in ia.families()) == sorted(REGISTRY)


def test_family_modules_import_under_the_package_name():
    import ipfs_accelerate.families.whisper as whisper  # the form a function named families would break

    assert whisper is importlib.import_module("ipfs_accelerate.families.whisper")
    assert callable(ia.families) and ia.families is importlib.import_module("ipfs_accelerate.families")
