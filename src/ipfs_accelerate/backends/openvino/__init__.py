"""The OpenVINO backend (install: ``pip install 'ipfs-accelerate[openvino]'``).

* :mod:`.backend`: :class:`OpenVINOBackend`, the hooks of the converting pipeline;
* :mod:`.export`: export routes, the fp32 IR and the fp16 copy;
* :mod:`.quantize`: nncf int8 weight compression with its accuracy gate;
* :mod:`.model`: compiling an export (compile properties, OVModel classes, plain
  compiled models, the stateful decoder's step).

Importing this package imports neither openvino nor optimum-intel.
"""

from __future__ import annotations

from .backend import OpenVINOBackend
from .model import OVGraphModel

__all__ = ["OVGraphModel", "OpenVINOBackend"]
