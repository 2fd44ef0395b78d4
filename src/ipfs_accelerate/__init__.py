"""ipfs_accelerate: run HuggingFace model families on whatever hardware a machine has.

One API for every family and backend, and an honest account of what ran::

    import ipfs_accelerate as ia
    ep = ia.load("sentence-transformers/all-MiniLM-L6-v2", task="embed")
    res = ep(["first sentence", "second one"])
    res.outputs, res.provenance, res.timings
"""

from __future__ import annotations

from . import families  # the package of family modules; calling it lists them (see its docstring)
from ._exceptions import (
    AccelerateError,
    BackendUnavailable,
    IntegrityError,
    InvalidInput,
    ModelNotAvailable,
    OutOfMemory,
    Overloaded,
    StoreError,
    UnsupportedTask,
)
from ._info import FamilyInfo, doctor
from .engine.endpoint import Endpoint, LoadReport
from .engine.loader import load
from .engine.result import Fallback, Provenance, Result

__version__ = "0.1.0"

__all__ = [
    "AccelerateError",
    "BackendUnavailable",
    "Endpoint",
    "Fallback",
    "FamilyInfo",
    "IntegrityError",
    "InvalidInput",
    "LoadReport",
    "ModelNotAvailable",
    "OutOfMemory",
    "Overloaded",
    "Provenance",
    "Result",
    "StoreError",
    "UnsupportedTask",
    "__version__",
    "doctor",
    "families",
    "load",
]
