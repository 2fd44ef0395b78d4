"""Results and their provenance: what ran, where, in what precision, on which weights."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .._types import WeightsKind

__all__ = ["Fallback", "Provenance", "Result", "to_jsonable"]



@dataclasses.dataclass(frozen=True, kw_only=True)
class Fallback:
    """One step of a fallback chain: what was tried, and why it was given up.

    Attributes:
        stage: what fell back: ``"backend"``, ``"precision"``, ``"device"`` or ``"batch"``.
        tried: the choice that failed, e.g. ``"openvino/int8"``.
        reason: why it failed, in one line.
        next: what was tried instead.
    """

    stage: str
    tried: str
    reason: str
    next: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Provenance:
    """What produced a result. Every field is read back from what really ran.

    Attributes:
        model_id: the checkpoint name the caller asked for.
        family: the family that ran it.
        task: the task that ran.
        backend: ``"torch"``, ``"openvino"`` or ``"onnxruntime"``.
        device: the device that executed the model, as the runtime reports it
            (``"cpu"``, ``"cuda:0"``, ``"CPU"`` for OpenVINO …).
        precision: ``"fp32"``, ``"fp16"``, ``"bf16"`` or ``"int8"``.
        batch_size: how many inputs ran together in this call.
        weights: ``"pretrained"`` for real trained weights, ``"synthetic"`` for random
            weights built from the checkpoint's published configuration.
        source: where the weights came from (a directory, ``hf-cache:ID``, ``package:NAME``,
            ``ipfs:CID``, ``synthetic:ID``).
        fallbacks: every choice that was tried first and given up, in order.
        notes: other facts the caller should know (truncated inputs, capped lengths …).
        runtime: backend-specific facts read from the runtime (providers, devices …).
        replica: the serving replica that ran the call (Ray Serve's replica id); None
            in a single process.
        node: the machine (host name or Ray node id) that ran the call; None when
            not recorded.
    """

    model_id: str
    family: str
    task: str
    backend: str
    device: str
    precision: str
    batch_size: int
    weights: WeightsKind
    source: str
    fallbacks: tuple[Fallback, ...] = ()
    notes: tuple[str, ...] = ()
    runtime: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    replica: str | None = None
    node: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of every field."""
        return to_jsonable(dataclasses.asdict(self))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Result:
    """The answer to one call of an endpoint.

    Attributes:
        outputs: one entry per input, in input order; the task decides the type
            (an embedding matrix row, a string, a list of label scores …).
        provenance: what produced the outputs.
        timings: seconds spent per stage (``preprocess_s``, ``inference_s``,
            ``postprocess_s``, ``total_s``) and task figures (``tokens_per_s`` …).
    """

    outputs: Sequence[Any]
    provenance: Provenance
    timings: Mapping[str, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary (numpy arrays become lists)."""
        return {
            "outputs": to_jsonable(self.outputs),
            "provenance": self.provenance.to_dict(),
            "timings": to_jsonable(dict(self.timings)),
        }

    def to_json(self, **kwargs: Any) -> str:
        """The result as a JSON document; keyword arguments go to :func:`json.dumps`."""
        return json.dumps(self.to_dict(), **kwargs)


def to_jsonable(value: Any) -> Any:
    """Turn numpy arrays and scalars, tuples and dataclasses into JSON-ready values."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # torch tensors
        return value.tolist()
    return value
