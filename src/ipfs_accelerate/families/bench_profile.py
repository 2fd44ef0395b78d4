"""What the benchmark knows about a task, kept apart from what inference needs.

A task handler (:class:`~ipfs_accelerate.families.base.TaskHandler`) holds only what
running the model takes. What the benchmark adds (realistic inputs, the expected text of
those inputs, and how to run the same work with transformers alone or another library) is
a :class:`BenchProfile`, written beside the handler in its family module and registered
for it with :func:`register_bench_profile`. The benchmark finds it with
:func:`bench_profile`; a handler with none registered (nor for any class it derives from)
gets the default profile, which fits most tasks: a new family needs no profile at all.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

from .._exceptions import InvalidInput
from .base import Baseline, TaskHandler

__all__ = ["BenchProfile", "InputSet", "bench_profile", "register_bench_profile"]

H = TypeVar("H", bound=TaskHandler)
P = TypeVar("P", bound="type[BenchProfile[Any]]")

# Keyed by handler class; abstract handler classes (shared bases) register too.
_PROFILES: dict[type, type[BenchProfile[Any]]] = {}


@dataclasses.dataclass(frozen=True, kw_only=True)
class InputSet:
    """A named set of benchmark inputs that a profile offers (a target names the one it is stated on).

    Attributes:
        name: short and stable (``Case.input_set``, the report's input column).
        description: what the inputs are, in words (the report states it beside each figure).
        size: items in the set: a measurement at batch size ``b`` then times passes over
            all of them, ``b`` at a time (the last batch may be smaller). None: the set is
            built to the batch size, one batch per timed call.
    """

    name: str
    description: str
    size: int | None = None


DEFAULT_INPUT_SET = InputSet(name="examples", description="the task's example inputs, repeated to the batch size")


class BenchProfile(Generic[H]):
    """The benchmark's view of one task handler; the defaults fit most tasks.

    Args:
        handler: the task, bound to its model directory.
    """

    def __init__(self, handler: H) -> None:
        self.handler = handler

    def input_sets(self) -> tuple[InputSet, ...]:
        """The input sets :meth:`inputs` builds; the first is the default.

        The default is one set, the task's example inputs. Override it together with
        :meth:`inputs` where a target names its inputs (512 sentences of 12–20 words …).
        """
        return (DEFAULT_INPUT_SET,)

    def input_set(self, name: str | None = None) -> InputSet:
        """The input set called ``name`` (None: the default one).

        Raises:
            InvalidInput: the profile has no set of that name.
        """
        sets = self.input_sets()
        if name is None:
            return sets[0]
        for found in sets:
            if found.name == name:
                return found
        raise InvalidInput(f"{self.handler.name}: no benchmark input set {name!r}; "
                           f"known: {', '.join(s.name for s in sets)}")

    def inputs(self, n: int, input_set: str | None = None) -> list[Any]:
        """``n`` caller inputs for the benchmark; the default repeats ``handler.example_inputs()``.

        Override it to give the benchmark realistic, varied inputs (mixed lengths, a real
        audio clip …). Every call with the same ``n`` and set must return the same inputs.

        Args:
            n: how many.
            input_set: one of :meth:`input_sets` by name; None: the default.
        """
        self.input_set(input_set)
        examples = self.handler.example_inputs()
        return [examples[i % len(examples)] for i in range(n)]

    def params(self) -> dict[str, Any]:
        """Keyword parameters every benchmark call passes (a scenario's own params win).

        The default is none (the task's defaults). Override it for tasks that need a
        parameter to run at all (the labels of a zero-shot classifier …).
        """
        return {}

    def references(self, n: int) -> list[str] | None:
        """The expected output text of each ``inputs(n)`` item, or None (the default).

        Speech recognition returns the spoken text here so that the benchmark can report a
        word error rate for ours and for every baseline on the same inputs.
        """
        return None

    def plain_baseline(self) -> Baseline | None:
        """This task's own plain transformers fp32 baseline, or None (the default).

        With None the benchmark picks the plain baseline from the handler's ``kind``:
        ``generate`` for text generation, ``generate`` on the processor's chat template for
        image-text-to-text, masked mean pooling of texts for feature extraction,
        ``transformers.pipeline(kind)`` for the rest. Override it where that cannot be right:
        transformers has no pipeline for the kind (zero-shot video classification), or the
        task's output is not the kind's generic one (image, audio or video embeddings; a
        model-specific projection or pooling). Return what a user would write with
        transformers alone, in fp32 PyTorch, with outputs in this task's own structure. Same
        contract as :meth:`reference_baselines`: building it is cheap and imports nothing
        heavy; ``load(device)`` does the work.
        """
        return None

    def plain_calls(self, items: Sequence[Any], params: Any) -> list[tuple[list[Any], dict[str, Any]]]:
        """How the plain baseline hands ``items`` to transformers: one or more calls.

        Each call is ``(inputs, keyword arguments)``; the outputs of the calls, concatenated,
        are one per item, in order. For a ``transformers.pipeline(kind)`` baseline these are
        the pipeline's inputs and arguments (``candidate_labels=`` for zero-shot classifiers,
        one call per run of items with the same labels …); for image-text-to-text they are
        chat conversations with their images, for the processor's chat template. The
        default is one call with the items unchanged and no arguments.
        """
        return [(list(items), {})]

    def plain_outputs(self, outputs: Sequence[Any]) -> list[Any]:
        """A pipeline baseline's outputs in this task's own output structure (default: as they are).

        The benchmark compares them with ours for agreement, so they must have the same shape
        (``Transcription`` for transcripts, one list of candidates per mask …).
        """
        return list(outputs)

    def reference_baselines(self) -> list[Baseline]:
        """Library-specific references the benchmark compares with (none by default).

        The plain transformers fp32 baseline is chosen by the benchmark from ``kind`` (or
        given by :meth:`plain_baseline`). A profile adds here what the family's users would
        otherwise run instead, for example sentence-transformers ``encode`` for sentence
        embeddings or faster-whisper for Whisper. Contract: building the list must be cheap
        and must not import the library (do that in ``Baseline.load``); each ``run`` takes
        the same caller items and parsed params as ``preprocess`` and returns a
        :class:`~ipfs_accelerate.families.base.BaselineRun` with one output per item.
        """
        return []


def register_bench_profile(handler_class: type) -> Callable[[P], P]:
    """Class decorator: the decorated profile serves ``handler_class`` and the classes derived from it.

    A profile registered for a derived class wins over its base's.

    Args:
        handler_class: a :class:`~ipfs_accelerate.families.base.TaskHandler` subclass
            (abstract ones too: a shared base's profile serves every family built on it).
    """

    def register(profile_class: P) -> P:
        _PROFILES[handler_class] = profile_class
        return profile_class

    return register


def bench_profile(handler: TaskHandler) -> BenchProfile[Any]:
    """The benchmark profile of ``handler``: the one registered for its class, or the nearest
    class it derives from, else the default :class:`BenchProfile`."""
    for cls in type(handler).__mro__:
        profile_class = _PROFILES.get(cls)
        if profile_class is not None:
            return profile_class(handler)
    return BenchProfile(handler)
