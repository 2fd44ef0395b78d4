"""Text embedding with mean or CLS pooling, shared by the encoder families."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any, ClassVar

from .._exceptions import InvalidInput
from ..backends.base import ForwardRewrite
from ._text import check_texts, tokenize
from ._unpadded import UNPADDED_BERT, unpadded_bert_encoder, unpadded_bert_supported
from .base import Prepared, TaskHandler

__all__ = ["EmbedParams", "TextEmbed", "sentence_transformers_pooling"]

POOLINGS = ("mean", "cls")


@dataclasses.dataclass(frozen=True, kw_only=True)
class EmbedParams:
    """Parameters of ``embed``.

    Attributes:
        pooling: ``"mean"`` over non-padding tokens, ``"cls"`` (the first token), or
            None for the model's own default.
        normalize: scale each vector to unit length; None for the model's default.
        truncate: cut texts longer than the window (reported); False raises.
    """

    pooling: str | None = None
    normalize: bool | None = None
    truncate: bool = True

    def __post_init__(self) -> None:
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise InvalidInput(f"pooling must be one of {', '.join(POOLINGS)}; got {self.pooling!r}")
        if self.normalize is not None and not isinstance(self.normalize, bool):
            raise InvalidInput("normalize must be True or False")
        if not isinstance(self.truncate, bool):
            raise InvalidInput("truncate must be True or False")


def sentence_transformers_pooling(model_dir: Any) -> tuple[str, bool]:
    """The pooling and normalisation a sentence-transformers folder declares (mean, True if none)."""
    pooling, normalize = "mean", True
    modules = model_dir / "modules.json"
    if modules.is_file():
        entries = json.loads(modules.read_text())
        normalize = any(e.get("type", "").endswith("Normalize") for e in entries)
        for entry in entries:
            if entry.get("type", "").endswith("Pooling"):
                cfg = json.loads((model_dir / entry.get("path", "") / "config.json").read_text())
                if cfg.get("pooling_mode_cls_token"):
                    pooling = "cls"
    return pooling, normalize


class TextEmbed(TaskHandler):
    """``embed``: one vector per text, as rows of a float32 matrix."""

    name = "embed"
    pads_to_longest = True
    kind = "feature-extraction"
    torch_class = "AutoModel"
    Params: ClassVar[type] = EmbedParams
    output_names: ClassVar[tuple[str, ...]] = ("last_hidden_state",)
    default_pooling: ClassVar[str] = "mean"
    default_normalize: ClassVar[bool] = False

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(weights.path, local_files_only=True)
        self.max_length = min(
            self.tokenizer.model_max_length or 512, getattr(config, "max_position_embeddings", 512) or 512
        )
        self.pooling, self.normalize = self.defaults()

    def defaults(self) -> tuple[str, bool]:
        """The model's default pooling and normalisation."""
        return self.default_pooling, self.default_normalize

    def as_items(self, inputs: Any) -> list[Any]:
        return [inputs] if isinstance(inputs, str) else super().as_items(inputs)

    def example_inputs(self) -> list[Any]:
        return ["A short sentence.", "Another, somewhat longer sentence for the warm-up."]

    def forward_rewrite(self) -> ForwardRewrite | None:
        # The poolings read real positions only, so a converted BERT skips the padding's
        # projections (see _unpadded; the saving is measured in docs/families.md).
        if unpadded_bert_supported(self.config):
            return ForwardRewrite(name=UNPADDED_BERT, build=unpadded_bert_encoder)
        return None

    def preprocess(self, inputs: Sequence[Any], params: EmbedParams) -> Prepared:
        texts = check_texts(inputs)
        notes: list[str] = []
        self.tokenizer.padding_side = "right"
        encoded = tokenize(self.tokenizer, texts, max_length=self.max_length, truncate=params.truncate, notes=notes)
        return Prepared(inputs=encoded, count=len(texts), notes=notes,
                        extra={"attention_mask": encoded["attention_mask"]})

    def postprocess(self, raw: Any, prepared: Prepared, params: EmbedParams) -> list[Any]:
        import torch

        hidden = raw.float().cpu()
        pooling = params.pooling or self.pooling
        normalize = self.normalize if params.normalize is None else params.normalize
        if pooling == "cls":
            vectors = hidden[:, 0]
        else:
            mask = prepared.extra["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        if normalize:
            vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
        return list(vectors.numpy())
