"""The backend seam: a backend turns (model files, kind, precision, device) into a runtime.

A backend never names a family: it receives a :class:`ModelSpec` that says what kind of
model the files hold (an optimum/transformers task name such as ``"text-generation"``)
and which transformers class loads them in PyTorch. A family never names a backend: it
calls the :class:`Runtime`'s ``model`` the way it would call a transformers model.
"""

from __future__ import annotations

import abc
import dataclasses
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from ..store.weights import ResolvedWeights

__all__ = ["Backend", "BackendProbe", "ForwardRewrite", "ModelSpec", "Runtime", "module_exists"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ForwardRewrite:
    """A family's own forward for its architecture, converted in place of transformers'.

    Backends that convert a model (ONNX Runtime, OpenVINO) convert the rewrite instead of
    the transformers model when a spec carries one; the PyTorch backend runs transformers'
    forward as it is. A rewrite takes the same tensor inputs as the forward it replaces and
    returns the spec's outputs; the family says where they may differ (an unpadded encoder
    returns zeros at padded positions, which its pooling never reads).

    Attributes:
        name: what the rewrite is, with a version (``"unpadded-bert-encoder/1"``): it
            enters the export cache key and the runtime's details.
        build: takes the loaded fp32 transformers model and returns the torch module to
            convert (sharing the model's weights).
    """

    name: str
    build: Callable[[Any], Any]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """What a family asks a backend to load.

    Attributes:
        weights: the resolved model directory (HF layout) with its provenance.
        kind: the model kind as optimum/transformers name tasks: ``"feature-extraction"``,
            ``"fill-mask"``, ``"text-generation"``, ``"text2text-generation"``,
            ``"automatic-speech-recognition"``, ``"zero-shot-image-classification"`` …
        torch_class: the transformers class that loads the files in PyTorch
            (``"AutoModelForCausalLM"``, ``"ClapModel"`` …).
        generates: the family calls ``model.generate`` (needs a KV cache).
        fp16_safe: the architecture keeps its accuracy in fp16 (T5 does not).
        example_inputs: builds a small batch of model inputs (for exports, warm-up and
            accuracy gates); keys are the forward's keyword arguments.
        output_names: the output attributes the family reads, for backends that convert
            a model directly and must name its outputs.
        entry: a method of the transformers model to call instead of ``forward``
            (``"get_text_features"`` …); its tensor result is returned under
            ``output_names[0]``.
        forward_rewrite: the family's own forward for the backends that convert a model
            (see :class:`ForwardRewrite`); never together with ``entry``.
    """

    weights: ResolvedWeights
    kind: str
    torch_class: str
    generates: bool = False
    fp16_safe: bool = True
    example_inputs: Callable[[], Mapping[str, Any]] | None = None
    output_names: tuple[str, ...] = ()
    entry: str | None = None
    forward_rewrite: ForwardRewrite | None = None

    def __post_init__(self) -> None:
        if self.entry and self.forward_rewrite:
            raise ValueError("a ModelSpec takes an entry method or a forward rewrite, not both")

    @property
    def model_dir(self) -> Path:
        """The directory that holds config.json and the weights."""
        return self.weights.path


@dataclasses.dataclass(kw_only=True)
class Runtime:
    """A loaded model, ready to run, and the facts read back from what executes it.

    Attributes:
        backend: the backend's name.
        device: the device that really executes the model, as read back from the runtime.
        precision: the precision that really runs.
        model: called like a transformers model: ``model(**inputs)`` returns an object
            with the output attributes, and ``model.generate(...)`` works for generators.
        details: backend facts (execution providers, OpenVINO execution devices …).
        load_s: seconds the load took.
        prepare: turns a dict of torch tensors into what ``model`` takes (moves them to the
            device, casts floating inputs to the model's dtype).
        host_threads: torch's intra-op threads for the host-side work around the model (input
            tensors, ``generate()``'s loop) while it runs; None leaves torch as it is. A
            backend that computes in its own thread pool sets 1: torch's OpenMP workers spin
            after every small op and take the cores that pool needs (measured:
            docs/backends.md, "Host threads").
        lock: held while the model runs, so one loaded model runs one call at a time
            (a batch, or a stream's whole generation): stateful runtimes such as OpenVINO's
            decoder infer requests and the KV caches a wrapper keeps cannot serve two
            threads at once.
        decoder_step: one pass of a generator's decoder without the model wrapper's per-call
            bookkeeping: ``decoder_step(inputs, past)`` takes host torch tensors named as the
            decoder's inputs (``input_ids`` and ``attention_mask``/``position_ids`` for a
            decoder-only model; ``input_ids``, ``encoder_hidden_states``,
            ``encoder_attention_mask`` for an encoder-decoder) and the cache the previous step
            returned (None on the first step: an empty cache), and returns the last position's
            logits as an fp32 host tensor with the new cache. The cache is opaque to the
            caller (a runtime that keeps it inside itself returns a marker). None where the
            runtime offers none (greedy loops call ``model``).
    """

    backend: str
    device: str
    precision: str
    model: Any
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    load_s: float = 0.0
    prepare: Callable[[Mapping[str, Any]], dict[str, Any]] = dict
    host_threads: int | None = None
    decoder_step: Callable[[Mapping[str, Any], Any], tuple[Any, Any]] | None = None
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False, compare=False)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BackendProbe:
    """Whether a backend works on this machine, and on what.

    Attributes:
        name: the backend's name.
        available: it imports and can run a model here.
        version: the library's version, when installed.
        devices: the devices it can use here (``"cpu"``, ``"cuda:0"``, ``"GPU"`` …).
        reason: why it is unavailable, or an empty string.
        extra: the pip extra that installs it.
        details: anything else worth reporting (execution providers, device names …).
    """

    name: str
    available: bool
    version: str | None = None
    devices: tuple[str, ...] = ()
    reason: str = ""
    extra: str = ""
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)


class Backend(abc.ABC):
    """One way of running models. Subclasses live one per file and register by name."""

    name: ClassVar[str]
    extra: ClassVar[str]

    @abc.abstractmethod
    def probe(self) -> BackendProbe:
        """Report whether the backend works here; must not raise."""

    @abc.abstractmethod
    def unsupported(self, *, device: str, precision: str) -> str | None:
        """Why this device/precision pair cannot run here, or None when it can."""

    @abc.abstractmethod
    def load(self, spec: ModelSpec, *, device: str, precision: str, cache_dir: Path) -> Runtime:
        """Load the model for running.

        Raises:
            BackendUnavailable: the backend cannot run this model here.
            OutOfMemory: the device ran out of memory while loading.
        """


def module_exists(name: str) -> bool:
    """Whether ``name`` can be imported, without importing it (False when a parent is missing)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False
