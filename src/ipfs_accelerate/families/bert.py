"""BERT: ``embed`` (mean or CLS pooling) and ``fill-mask``."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from .._exceptions import InvalidInput
from ._embedding import TextEmbed
from ._text import check_texts, tokenize
from ._vocab import bert_uncased_tokenizer
from .base import Checkpoint, Family, Prepared, TaskHandler
from .bench_profile import BenchProfile, register_bench_profile

__all__ = ["BertFamily"]


def _bert_tiny() -> Any:
    from transformers import BertConfig

    # prajjwal1/bert-tiny as published: 2 layers, hidden 128, 2 heads, ffn 512.
    return BertConfig(vocab_size=30522, hidden_size=128, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=512, max_position_embeddings=512, type_vocab_size=2)


def _bert_base() -> Any:
    from transformers import BertConfig

    return BertConfig()  # the defaults are bert-base-uncased


def _tokenizer(out_dir: Path) -> None:
    bert_uncased_tokenizer(out_dir)


@dataclasses.dataclass(frozen=True, kw_only=True)
class FillMaskParams:
    """Parameters of ``fill-mask``.

    Attributes:
        top_k: how many candidates per mask.
        truncate: cut texts longer than the window (reported); False raises.
    """

    top_k: int = 5
    truncate: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or not 1 <= self.top_k <= 1000:
            raise InvalidInput(f"top_k must be an integer in [1, 1000]; got {self.top_k!r}")


class BertEmbed(TextEmbed):
    default_pooling = "mean"
    default_normalize = False


class FillMask(TaskHandler):
    """``fill-mask``: for each ``[MASK]`` in each text, the ``top_k`` most likely tokens."""

    name = "fill-mask"
    pads_to_longest = True
    kind = "fill-mask"
    torch_class = "AutoModelForMaskedLM"
    Params: ClassVar[type] = FillMaskParams
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(weights.path, local_files_only=True)
        self.max_length = min(self.tokenizer.model_max_length or 512, config.max_position_embeddings)

    def as_items(self, inputs: Any) -> list[Any]:
        return [inputs] if isinstance(inputs, str) else super().as_items(inputs)

    def example_inputs(self) -> list[Any]:
        mask = self.tokenizer.mask_token
        return [f"The capital of France is {mask}.", f"Paris is a {mask} city."]

    def preprocess(self, inputs: Sequence[Any], params: FillMaskParams) -> Prepared:
        texts = check_texts(inputs)
        mask = self.tokenizer.mask_token
        for index, text in enumerate(texts):
            if mask not in text:
                raise InvalidInput(f"text #{index} has no {mask} token to fill")
        notes: list[str] = []
        encoded = tokenize(self.tokenizer, texts, max_length=self.max_length, truncate=params.truncate, notes=notes)
        return Prepared(inputs=encoded, count=len(texts), notes=notes, extra={"input_ids": encoded["input_ids"]})

    def postprocess(self, raw: Any, prepared: Prepared, params: FillMaskParams) -> list[Any]:
        import torch

        logits = raw.float().cpu()
        input_ids = prepared.extra["input_ids"]
        mask_id = self.tokenizer.mask_token_id
        outputs: list[Any] = []
        for row in range(input_ids.shape[0]):
            positions = (input_ids[row] == mask_id).nonzero().flatten().tolist()
            per_mask = []
            for pos in positions:
                probs = torch.softmax(logits[row, pos], dim=-1)
                scores, ids = probs.topk(params.top_k)
                per_mask.append([
                    {"token": self.tokenizer.decode([int(i)]).strip(), "token_id": int(i), "score": float(s)}
                    for s, i in zip(scores.tolist(), ids.tolist(), strict=True)
                ])
            outputs.append(per_mask)
        return outputs


@register_bench_profile(FillMask)
class FillMaskBench(BenchProfile[FillMask]):
    """transformers' fill-mask pipeline with our ``top_k``, its candidates in our structure."""

    def plain_calls(self, items: Sequence[Any], params: FillMaskParams) -> list[tuple[list[Any], dict[str, Any]]]:
        return [(list(items), {"top_k": params.top_k})]

    def plain_outputs(self, outputs: Sequence[Any]) -> list[Any]:
        """The fill-mask pipeline's candidates as ours: a list per mask of ``{"token", "token_id", "score"}``.

        The pipeline gives a flat list for a text with one mask and a list per mask otherwise.
        """
        out = []
        for per_text in outputs:
            per_mask = [per_text] if per_text and isinstance(per_text[0], dict) else per_text
            out.append([[{"token": c["token_str"].strip(), "token_id": int(c["token"]), "score": float(c["score"])}
                         for c in candidates] for candidates in per_mask])
        return out


class BertFamily(Family):
    name = "bert"
    description = "BERT encoders: sentence vectors by mean or CLS pooling, and masked-token filling"
    model_types = ("bert",)
    synthetic_class = "BertForMaskedLM"
    checkpoints = {
        "prajjwal1/bert-tiny": Checkpoint(
            model_id="prajjwal1/bert-tiny", config=_bert_tiny, build_processor=_tokenizer,
            processor_source="bert-base-uncased WordPiece",
        ),
        "bert-base-uncased": Checkpoint(
            model_id="bert-base-uncased", config=_bert_base, build_processor=_tokenizer,
            processor_source="bert-base-uncased WordPiece",
        ),
    }
    default_checkpoint = "prajjwal1/bert-tiny"
    tasks = {"embed": BertEmbed, "fill-mask": FillMask}
    default_task = "embed"
