"""The closed vocabularies of the public API, as ``Literal`` types used in signatures.

Each tuple beside a type lists its values at run time (for validation and CLI choices), derived
from the type so that the two cannot drift apart.
"""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "BACKEND_CHOICES",
    "DEVICE_CHOICES",
    "PRECISION_CHOICES",
    "WEIGHTS_CHOICES",
    "BackendChoice",
    "BackendName",
    "DeviceChoice",
    "Precision",
    "PrecisionChoice",
    "WeightsChoice",
    "WeightsKind",
    "backend_choice",
    "precision_choice",
]

BackendName = Literal["torch", "openvino", "onnxruntime"]
"""A backend that ran something (as provenance reports it)."""
BackendChoice = Literal["auto", "torch", "openvino", "onnxruntime"]
"""What a caller may ask for: one backend, or the automatic choice with its fallback chain."""

Precision = Literal["fp32", "fp16", "bf16", "int8"]
"""A precision that ran something."""
PrecisionChoice = Literal["auto", "fp32", "fp16", "bf16", "int8"]
"""What a caller may ask for."""

WeightsKind = Literal["pretrained", "synthetic"]
"""Where weights came from: trained weights, or random weights built from a published config."""
WeightsChoice = Literal["auto", "pretrained", "synthetic"]
"""What a caller may ask for (``auto``: real weights or a clear ``ModelNotAvailable``)."""

DeviceChoice = str
"""``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"``: a pattern rather than a closed set, so a str."""

BACKEND_CHOICES: tuple[str, ...] = get_args(BackendChoice)
PRECISION_CHOICES: tuple[str, ...] = get_args(PrecisionChoice)
WEIGHTS_CHOICES: tuple[str, ...] = get_args(WeightsChoice)
DEVICE_CHOICES: tuple[str, ...] = ("auto", "cpu", "cuda", "cuda:N")


def backend_choice(value: str) -> BackendChoice:
    """``value`` as a :data:`BackendChoice`, checked (for names read from registries or files).

    Raises:
        ValueError: ``value`` is not a backend choice.
    """
    if value not in BACKEND_CHOICES:
        raise ValueError(f"not a backend: {value!r}; one of {', '.join(BACKEND_CHOICES)}")
    return value  # type: ignore[return-value]  # checked against the Literal's values above


def precision_choice(value: str) -> PrecisionChoice:
    """``value`` as a :data:`PrecisionChoice`, checked.

    Raises:
        ValueError: ``value`` is not a precision choice.
    """
    if value not in PRECISION_CHOICES:
        raise ValueError(f"not a precision: {value!r}; one of {', '.join(PRECISION_CHOICES)}")
    return value  # type: ignore[return-value]  # checked against the Literal's values above
