"""The public vocabularies: one Literal type each, with run-time values derived from it."""

from __future__ import annotations

import inspect
import typing

import pytest

import ipfs_accelerate as ia
from ipfs_accelerate import _types
from ipfs_accelerate.engine.options import BACKENDS, PRECISIONS, WEIGHTS


def test_runtime_choices_are_the_literals_values():
    assert BACKENDS == typing.get_args(_types.BackendChoice) == ("auto", *typing.get_args(_types.BackendName))
    assert PRECISIONS == ("auto", *typing.get_args(_types.Precision))
    assert WEIGHTS == ("auto", *typing.get_args(_types.WeightsKind))


def test_load_signature_uses_the_literals():
    hints = typing.get_type_hints(inspect.unwrap(ia.load))
    assert hints["backend"] == _types.BackendChoice
    assert hints["precision"] == _types.PrecisionChoice
    assert hints["weights"] == _types.WeightsChoice


def test_narrowing_checks_the_value():
    assert _types.backend_choice("openvino") == "openvino"
    assert _types.precision_choice("int8") == "int8"
    with pytest.raises(ValueError, match="not a backend: 'tensorrt'"):
        _types.backend_choice("tensorrt")
    with pytest.raises(ValueError, match="not a precision: 'fp8'"):
        _types.precision_choice("fp8")
