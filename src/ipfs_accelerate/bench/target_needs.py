"""What the performance targets read from a run, per task kind (:data:`TARGET_NEEDS`).

Apart from :mod:`.targets` (which checks the targets against a run's results) so that the
seed suite (:mod:`.scenario`) can schedule what the targets need without importing the
results it has not produced yet.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

__all__ = [
    "EMBEDDING_BATCH",
    "EMBEDDING_INPUT_SET",
    "GENERATION_BATCH",
    "GENERATION_SCALED_BATCH",
    "SPEECH_BATCH",
    "TARGET_NEEDS",
    "WER_MARGIN",
    "TargetNeeds",
]

# The batch sizes the targets are stated at (the figures were measured at these).
EMBEDDING_BATCH = 32
GENERATION_BATCH = 1
GENERATION_SCALED_BATCH = 8
SPEECH_BATCH = 1
EMBEDDING_INPUT_SET = "uniform"
"""512 sentences of 12–20 words (the sentence-embeddings bench profile's ``uniform`` set)."""
WER_MARGIN = 0.02
"""How much worse than the fp32 reference baseline's word error rate ours may be."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class TargetNeeds:
    """What the targets of one task kind read from a run.

    Attributes:
        kind: the task kind (``TaskHandler.kind``).
        batch_sizes: the batch sizes the targets compare at.
        precisions: the precisions whose figures the targets use (fp32, and int8 where a
            target is about lower-precision weights or may be reached through them).
        input_type: the Python type name of the inputs the targets apply to (``"str"``
            for texts), or None for any; the suite cannot see input types before a model
            loads, so it schedules every case of the kind and the runner's cost
            prediction drops a batch size that would not fit.
        weights: ``"pretrained"`` where the targets are stated for real weights (a cosine
            to a reference library, a word error rate), or None for any weights.
        input_set: the bench profile's input set the targets are stated on (``InputSet.name``),
            or None for the profile's default set; figures on other sets are reported as
            labelled rows, never as the target's.
        replaces: ``(newer, older)`` pairs of precisions where, on a CPU, ``newer`` stands
            in for ``older``: it is measured only on a backend that offers both there, and
            in place of ``older`` (bf16 for fp16 in generation: the same weight bytes, with
            native arithmetic on AMX/AVX512-BF16 CPUs, where f16 arithmetic is slower).
        versus_plain: the batch sizes at which a target compares ours with the plain
            baseline; there the runner also times the two in alternating rounds
            (``Scenario.paired_rounds``), whose median ratio the target reads.
        versus_reference: the same for the reference baselines (faster-whisper for speech):
            the batch sizes at which a target compares ours with each of them.
    """

    kind: str
    batch_sizes: tuple[int, ...]
    precisions: tuple[str, ...]
    input_type: str | None = None
    weights: str | None = None
    input_set: str | None = None
    replaces: tuple[tuple[str, str], ...] = ()
    versus_plain: tuple[int, ...] = ()
    versus_reference: tuple[int, ...] = ()

    def paired_roles(self, batch_size: int) -> tuple[str, ...]:
        """The baseline roles (``"plain"``, ``"reference"``) a target compares ours with at
        ``batch_size``: those the runner times back to back with ours."""
        return tuple(role for role, sizes in (("plain", self.versus_plain), ("reference", self.versus_reference))
                     if batch_size in sizes)

    def on_cpu(self, offered: Sequence[str]) -> list[str]:
        """Of the precisions a backend ``offered`` on a CPU, those the suite measures
        (:attr:`replaces` applied), in their order."""
        kept = list(offered)
        for newer, older in self.replaces:
            if newer in kept:
                kept.remove(older if older in kept else newer)
        return kept

    def applies(self, *, weights: str | None, input_type: str | None = None) -> bool:
        """Whether these targets read a model with these weights (and inputs, when known)."""
        if self.weights is not None and weights != self.weights:
            return False
        return self.input_type is None or input_type is None or input_type == self.input_type


TARGET_NEEDS: Mapping[str, TargetNeeds] = {
    needs.kind: needs for needs in (
        # bf16 for embeddings: on a CPU with AMX or AVX512-BF16 it is the fastest way to the
        # target at cosine ≥ 0.99 (a backend that does not offer it is not scheduled).
        TargetNeeds(kind="feature-extraction", batch_sizes=(EMBEDDING_BATCH,), precisions=("fp32", "bf16", "int8"),
                    input_type="str", weights="pretrained", input_set=EMBEDDING_INPUT_SET,
                    versus_plain=(EMBEDDING_BATCH,)),
        # fp16 and bf16: batch-1 decode is bound by the weight bytes, which 16-bit weights
        # halve even where the arithmetic stays f32 (OpenVINO on a CPU without fp16 units).
        # On a CPU with native bf16, bf16 replaces fp16: it runs on AMX where f16 does not
        # (OpenVINO GPT-2 batch 1: 86 against 68 tokens/s, docs/benchmark.md), and torch,
        # which offers no fp16 on a CPU, is not measured in bf16 (no faster than fp32 there).
        TargetNeeds(kind="text-generation", batch_sizes=(GENERATION_BATCH, GENERATION_SCALED_BATCH),
                    precisions=("fp32", "fp16", "bf16", "int8"), replaces=(("bf16", "fp16"),),
                    versus_plain=(GENERATION_BATCH,)),
        TargetNeeds(kind="automatic-speech-recognition", batch_sizes=(SPEECH_BATCH,), precisions=("fp32", "int8"),
                    weights="pretrained", versus_reference=(SPEECH_BATCH,)),
    )
}
"""Per task kind, what its targets need measured; kinds without targets are absent."""
