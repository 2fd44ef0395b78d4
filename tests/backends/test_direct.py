"""Shared helpers of the exporting backends."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from ipfs_accelerate.backends.converting.direct import patched


def test_patched_swaps_attributes_and_puts_them_back_after_an_error():
    owner = SimpleNamespace(function="original", mapping={"sdpa": "mask"})
    original_mapping = owner.mapping
    with pytest.raises(RuntimeError, match="export failed"), patched(
            (owner, "function", "replacement"), (owner, "mapping", {"sdpa": "traceable"})):
        assert owner.function == "replacement" and owner.mapping["sdpa"] == "traceable"
        raise RuntimeError("export failed")
    assert owner.function == "original" and owner.mapping is original_mapping


def test_patched_refuses_a_missing_attribute_before_changing_anything():
    owner = SimpleNamespace(present=1)
    with pytest.raises(AttributeError), patched((owner, "present", 2), (owner, "absent", 3)):
        pass
    assert owner.present == 1 and not hasattr(owner, "absent")
