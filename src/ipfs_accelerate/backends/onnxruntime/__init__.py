"""The ONNX Runtime backend (install: ``pip install 'ipfs-accelerate[onnxruntime]'``).

* :mod:`.backend`: :class:`OnnxRuntimeBackend`, the hooks of the converting pipeline;
* :mod:`.export`: export routes, the fp32 export and the fp16 copy;
* :mod:`.quantize`: dynamic int8 with its accuracy gate;
* :mod:`.attention`: the decoder rewrite (one attention node per layer) before int8;
* :mod:`.vlm`: image-text generators, which optimum-onnx cannot export;
* :mod:`.model`: opening an export (ORTModel classes, plain graphs, the decoder step).

Importing this package imports neither onnxruntime nor optimum.
"""

from __future__ import annotations

from .backend import OnnxRuntimeBackend
from .model import OrtGraphModel

__all__ = ["OnnxRuntimeBackend", "OrtGraphModel"]
