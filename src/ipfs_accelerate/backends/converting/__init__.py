"""What the backends that convert a model (ONNX Runtime, OpenVINO) share.

* :mod:`.backend`: :class:`ConvertingBackend`, the load pipeline (plan, fp32 export
  through the cache, derived int8/fp16 exports, accuracy gate, open, read back) with a
  hook per step that differs between runtimes;
* :mod:`.direct`: the export route (optimum or a direct conversion) and the direct
  conversion's wrapper module;
* :mod:`.export_cache`: the on-disk cache of exports;
* :mod:`.accuracy`: the int8 accuracy gate.
"""

from __future__ import annotations

from .backend import ConvertingBackend, Derivation, OpenedModel, cache_details

__all__ = ["ConvertingBackend", "Derivation", "OpenedModel", "cache_details"]
