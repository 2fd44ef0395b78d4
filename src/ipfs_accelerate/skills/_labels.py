"""Zero-shot classification against caller-given labels, shared by the contrastive families."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from .._exceptions import InvalidInput

__all__ = ["LabelParams", "label_scores"]


@dataclasses.dataclass(frozen=True, kw_only=True)
class LabelParams:
    """The labels to score against, and the prompt template each label is put in.

    Attributes:
        labels: distinct, non-empty class names.
        template: a format string with one ``{}`` for the label.
    """

    labels: tuple[str, ...] = ()
    template: str = "{}"

    def __post_init__(self) -> None:
        labels = self.labels
        if isinstance(labels, str) or not isinstance(labels, (list, tuple)):
            raise InvalidInput("labels must be a list of strings")
        if not all(isinstance(x, str) and x.strip() for x in labels):
            raise InvalidInput("every label must be a non-empty string")
        if len(set(labels)) != len(labels):
            raise InvalidInput("labels must be distinct")
        object.__setattr__(self, "labels", tuple(labels))
        if not isinstance(self.template, str) or self.template.count("{}") != 1:
            raise InvalidInput("template must contain exactly one '{}' for the label")


def label_scores(logits: Any, labels: Sequence[str]) -> list[list[dict[str, Any]]]:
    """Softmax each row of (items × labels) logits into label/score pairs, best first."""
    import torch

    probs = torch.softmax(logits.float().cpu(), dim=-1)
    out = []
    for row in probs.tolist():
        pairs = sorted(zip(labels, row, strict=True), key=lambda p: -p[1])
        out.append([{"label": label, "score": float(score)} for label, score in pairs])
    return out
