"""The one exception tree of ipfs_accelerate.

Every error the library raises on purpose derives from :class:`AccelerateError`,
so callers can catch the whole family with one ``except`` clause::

    AccelerateError
    ├── ModelNotAvailable     the weights cannot be found or fetched (names the options)
    ├── UnsupportedTask       the family does not offer the task, or no family matches
    ├── BackendUnavailable    a backend is not installed, cannot run here, or failed to load
    ├── InvalidInput          bad input or parameters; raised before any work is done
    ├── OutOfMemory           the device ran out of memory, even after the retries
    ├── Overloaded            the request queue is full (the server maps it to HTTP 429)
    └── StoreError            the content-addressed model store failed (bad CID, missing data)
        └── IntegrityError    bytes do not hash to their CID (tampered, truncated, a wrong peer)

``InvalidInput`` also derives from :class:`ValueError` and ``ModelNotAvailable`` from
:class:`LookupError`, so code written against the builtin exceptions keeps working.
:func:`is_out_of_memory` says which foreign exceptions mean memory ran out (what the
endpoint's batch splitting and the batch probe react to).
"""

from __future__ import annotations

__all__ = [
    "AccelerateError",
    "BackendUnavailable",
    "IntegrityError",
    "InvalidInput",
    "ModelNotAvailable",
    "OutOfMemory",
    "Overloaded",
    "StoreError",
    "UnsupportedTask",
    "is_out_of_memory",
]


class AccelerateError(Exception):
    """Base class of every error ipfs_accelerate raises on purpose."""


class ModelNotAvailable(AccelerateError, LookupError):
    """The model's weights cannot be found locally, in a cache, in a package or on a hub."""


class UnsupportedTask(AccelerateError, ValueError):
    """The task is not offered by the model's family, or no family knows the model."""


class BackendUnavailable(AccelerateError):
    """A backend is missing, cannot run this model here, or failed while loading it.

    Attributes:
        extra: the pip extra that installs the backend, when it is merely not installed.
    """

    def __init__(self, message: str, *, extra: str | None = None) -> None:
        super().__init__(message)
        self.extra = extra


class InvalidInput(AccelerateError, ValueError):
    """The caller's input or parameters are invalid; nothing was run."""


class OutOfMemory(AccelerateError, MemoryError):
    """The device ran out of memory and the batch could not be split further."""


class Overloaded(AccelerateError):
    """The request queue is full; retry later."""


class StoreError(AccelerateError):
    """The content-addressed store could not store, find or verify an object."""


class IntegrityError(StoreError):
    """Bytes read or fetched do not hash to the CID that names them; nothing of them is used.

    Attributes:
        cid: the CID whose block failed (as a string), when one is known.
        path: the file of the model the block belongs to, when one is known.
    """

    def __init__(self, message: str, *, cid: str | None = None, path: str | None = None) -> None:
        super().__init__(message)
        self.cid = cid
        self.path = path


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` says memory ran out: ``MemoryError`` or torch's CUDA out-of-memory error."""
    if isinstance(exc, MemoryError):
        return True
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(exc, torch.cuda.OutOfMemoryError)
