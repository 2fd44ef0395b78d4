"""Backends, one module or package each, found by name through :data:`REGISTRY`.

Adding a backend is one new module or package plus one line here (see docs/backends.md):

* ``pytorch.py``: the reference backend, no export;
* ``onnxruntime/``, ``openvino/``: backends that convert the model first, on the shared
  pipeline of ``converting/`` (:class:`.converting.ConvertingBackend`);
* ``base.py``: the seam (:class:`Backend`, :class:`ModelSpec`, :class:`Runtime`).

A backend module imports its library only when used, and raises
:class:`BackendUnavailable` with its pip extra when that library is missing.
"""

from __future__ import annotations

import importlib

from .._exceptions import BackendUnavailable
from .base import Backend, BackendProbe, ModelSpec, Runtime

__all__ = ["REGISTRY", "Backend", "BackendProbe", "ModelSpec", "Runtime", "get_backend", "probe_all"]

# name -> "module:Class" (a module or package of this one); imported lazily, so a missing
# library costs nothing.
REGISTRY: dict[str, str] = {
    "torch": "pytorch:TorchBackend",
    "openvino": "openvino:OpenVINOBackend",
    "onnxruntime": "onnxruntime:OnnxRuntimeBackend",
}

_instances: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    """The backend registered under ``name``.

    Raises:
        BackendUnavailable: no backend has that name.
    """
    if name not in REGISTRY:
        raise BackendUnavailable(f"unknown backend {name!r}; known: {', '.join(sorted(REGISTRY))}")
    if name not in _instances:
        module_name, cls_name = REGISTRY[name].split(":")
        module = importlib.import_module(f"{__name__}.{module_name}")
        _instances[name] = getattr(module, cls_name)()
    return _instances[name]


def probe_all() -> dict[str, BackendProbe]:
    """Probe every registered backend (never raises)."""
    probes = {}
    for name in REGISTRY:
        try:
            probes[name] = get_backend(name).probe()
        except Exception as exc:  # noqa: BLE001 - a probe must report, never raise
            probes[name] = BackendProbe(name=name, available=False, reason=f"probe failed: {type(exc).__name__}: {exc}")
    return probes
