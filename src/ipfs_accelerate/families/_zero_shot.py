"""Zero-shot classification against caller-given labels, shared by the contrastive families.

An item is the media itself or ``{media_key: media, "labels": [...]}``; the labels of a
batch are encoded once, as their union, and each item's scores are a softmax over its own
labels' columns of the model's similarity logits, so they sum to 1 over its labels.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from .._exceptions import InvalidInput
from ._plain import forward_baseline
from ._text import tokenize
from .base import Baseline, Prepared, TaskHandler
from .bench_profile import BenchProfile, register_bench_profile

__all__ = ["ZeroShotBench", "ZeroShotClassify", "ZeroShotParams", "check_labels", "check_media_items", "ranked"]


def check_media_items(items: Sequence[Any], *, key: str) -> tuple[list[Any], list[tuple[str, ...] | None]]:
    """Split items into media and per-item labels.

    An item is the media itself, or ``{key: media, "labels": [...]}`` to classify it
    against its own labels.
    """
    if not items:
        raise InvalidInput(f"empty batch: pass at least one {key}")
    media: list[Any] = []
    labels: list[tuple[str, ...] | None] = []
    for index, item in enumerate(items):
        if isinstance(item, Mapping):
            unknown = sorted(set(item) - {key, "labels"})
            if unknown or key not in item:
                raise InvalidInput(
                    f"{key} #{index}: a dict item takes the keys {key!r} and 'labels'; got {sorted(item)}"
                )
            media.append(item[key])
            labels.append(check_labels(item.get("labels"), where=f"{key} #{index}") if "labels" in item else None)
        else:
            media.append(item)
            labels.append(None)
    return media, labels


def check_labels(labels: Any, *, where: str = "labels") -> tuple[str, ...]:
    """A non-empty list of distinct, non-empty strings."""
    if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
        raise InvalidInput(f"{where}: labels must be a list of strings; got {type(labels).__name__}")
    if not labels:
        raise InvalidInput(f"{where}: labels is empty; pass at least one label")
    for index, label in enumerate(labels):
        if not isinstance(label, str) or not label.strip():
            raise InvalidInput(f"{where}: label #{index} must be a non-empty string; got {label!r}")
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise InvalidInput(f"{where}: labels must be distinct; repeated: {', '.join(map(repr, duplicates))}")
    return tuple(labels)


def ranked(labels: Sequence[str], scores: Sequence[float]) -> list[dict[str, Any]]:
    """``[{"label", "score"}]`` sorted by score, highest first: the output of one item."""
    pairs = sorted(zip(labels, scores, strict=True), key=lambda pair: -pair[1])
    return [{"label": label, "score": float(score)} for label, score in pairs]


@dataclasses.dataclass(frozen=True, kw_only=True)
class ZeroShotParams:
    """Parameters of zero-shot ``classify``.

    Attributes:
        labels: the candidate labels (distinct, non-empty strings). Needed unless every
            item carries its own ``labels``; an item's own labels win.
        template: the prompt each label is put into, with ``{}`` where the label goes;
            None for the family's default (CLIP: ``"a photo of a {}."``).
    """

    labels: tuple[str, ...] | None = None
    template: str | None = None

    def __post_init__(self) -> None:
        if self.labels is not None:
            object.__setattr__(self, "labels", check_labels(self.labels))
        if self.template is not None and (not isinstance(self.template, str) or "{}" not in self.template):
            raise InvalidInput(f"template must be a string with {{}} where the label goes; got {self.template!r}")


class ZeroShotClassify(TaskHandler):
    """``classify``: probabilities of each item over its candidate labels.

    The labels of a whole batch are encoded once, as their union; each item's scores are a
    softmax over its own labels' columns of the model's similarity logits. Subclasses set
    ``media_key``, ``logits_name`` (also as ``output_names``) and ``default_template`` and
    turn media into pixels.
    """

    name = "classify"
    Params: ClassVar[type] = ZeroShotParams
    media_key: ClassVar[str]
    logits_name: ClassVar[str]
    default_template: ClassVar[str]

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        self.processor = self.load_processor(weights.path)
        self.tokenizer = self.processor.tokenizer
        self.max_length = min(self.tokenizer.model_max_length or 77,
                              config.text_config.max_position_embeddings)

    def item_length(self, item: Any) -> int:
        return 0  # media are resized to one size: nothing to gain from sorting

    def load_processor(self, path: Path) -> Any:
        """The folder's processor (tokenizer plus the media's feature extractor)."""
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, local_files_only=True)

    @abc.abstractmethod
    def media_inputs(
        self, media: Sequence[Any], notes: list[str], params: Any
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """Turn the batch's media into model inputs and figures (frames …); notes get caveats."""

    def item_labels(self, inputs: Sequence[Any], params: ZeroShotParams) -> tuple[list[Any], list[tuple[str, ...]]]:
        """The media of each item and the labels it is classified against (its own, or ``params.labels``)."""
        media, own_labels = check_media_items(inputs, key=self.media_key)
        per_item: list[tuple[str, ...]] = []
        for index, labels in enumerate(own_labels):
            if labels is None:
                if params.labels is None:
                    raise InvalidInput(
                        f"{self.media_key} #{index} has no labels: pass labels=[...] or give the item as "
                        f"{{'{self.media_key}': ..., 'labels': [...]}}"
                    )
                labels = params.labels
            per_item.append(labels)
        return media, per_item

    def preprocess(self, inputs: Sequence[Any], params: ZeroShotParams) -> Prepared:
        media, per_item = self.item_labels(inputs, params)
        notes: list[str] = []
        pixels, figures = self.media_inputs(media, notes, params)
        union = list(dict.fromkeys(label for labels in per_item for label in labels))
        template = params.template or self.default_template
        prompts = [template.replace("{}", label) for label in union]
        text_notes: list[str] = []
        # Right padding: CLIP-style text towers pool at the first end-of-text id, which is
        # also the pad id; a left pad would be taken for it.
        self.tokenizer.padding_side = "right"
        encoded = tokenize(self.tokenizer, prompts, max_length=self.max_length, truncate=True, notes=text_notes)
        # tokenize() names inputs; here the texts are label prompts.
        notes += [n.replace("input #", "label prompt #") for n in text_notes]
        column = {label: i for i, label in enumerate(union)}
        model_inputs = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"], **pixels}
        return Prepared(
            inputs=model_inputs, count=len(media), notes=notes, figures=figures,
            extra={"labels": per_item, "columns": [[column[label] for label in labels] for labels in per_item]},
        )

    def postprocess(self, raw: Any, prepared: Prepared, params: ZeroShotParams) -> list[Any]:
        import torch

        logits = raw.float().cpu()
        outputs = []
        for row, (labels, columns) in enumerate(zip(prepared.extra["labels"], prepared.extra["columns"], strict=True)):
            outputs.append(ranked(labels, torch.softmax(logits[row, columns], dim=-1).tolist()))
        return outputs


Z = TypeVar("Z", bound=ZeroShotClassify)


@register_bench_profile(ZeroShotClassify)
class ZeroShotBench(BenchProfile[Z]):
    """The benchmark's plain baseline of a zero-shot task: transformers' zero-shot pipeline of
    its kind, given the same labels and prompt template as ours."""

    def plain_media(self, media: Sequence[Any], params: Any) -> list[Any]:
        """The media as a transformers user passes them (decoded once, as ours decodes them)."""
        return list(media)

    def plain_calls(self, items: Sequence[Any], params: Any) -> list[tuple[list[Any], dict[str, Any]]]:
        """One call per run of consecutive items with the same labels (transformers' zero-shot
        pipelines take one ``candidate_labels`` per call), with our prompt template."""
        media, per_item = self.handler.item_labels(items, params)
        template = params.template or self.handler.default_template
        calls: list[tuple[list[Any], dict[str, Any]]] = []
        start = 0
        for end in range(1, len(media) + 1):
            if end == len(media) or per_item[end] != per_item[start]:
                calls.append((self.plain_media(media[start:end], params),
                              {"candidate_labels": list(per_item[start]), "hypothesis_template": template}))
                start = end
        return calls

    def forward_plain_baseline(self, media_processor: str) -> Baseline:
        """A plain baseline for kinds transformers has no pipeline for: the processor and the model's forward.

        The label prompts go through the processor's tokenizer (padded) and the media through
        its ``media_processor`` attribute (``"image_processor"`` …), called directly: a
        processor's combined ``__call__`` does not route every media kind in every
        transformers version. Each item's scores are the softmax of the model's
        ``logits_name`` row, as the pipelines of the other zero-shot kinds compute them.
        """
        logits_name = self.handler.logits_name

        def encode(processor: Any, media: list[Any], kwargs: dict[str, Any], params: Any) -> dict[str, Any]:
            prompts = [kwargs["hypothesis_template"].replace("{}", label) for label in kwargs["candidate_labels"]]
            text = processor.tokenizer(prompts, padding=True, return_tensors="pt")
            pixels = getattr(processor, media_processor)(media, return_tensors="pt")
            return {"input_ids": text["input_ids"], "attention_mask": text["attention_mask"], **pixels}

        def decode(raw: Any, media: list[Any], kwargs: dict[str, Any], params: Any) -> list[Any]:
            probs = getattr(raw, logits_name).float().softmax(dim=-1).cpu().tolist()
            return [ranked(kwargs["candidate_labels"], row) for row in probs]

        return forward_baseline(self, encode=encode, decode=decode,
                                note=f"label prompts through the tokenizer, media through the {media_processor}, "
                                     f"softmax of {logits_name}")


