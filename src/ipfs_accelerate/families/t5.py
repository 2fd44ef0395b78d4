"""T5 encoder-decoders: ``text2text`` with the shared generation controls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._generation import Seq2SeqGenerate
from ._vocab import t5_tokenizer
from .base import Checkpoint, Family

__all__ = ["T5Family"]


def _t5_efficient_tiny() -> Any:
    from transformers import T5Config

    # google/t5-efficient-tiny as published: d_model 256, d_ff 1024, d_kv 64, 4+4 layers, 4 heads.
    return T5Config(vocab_size=32128, d_model=256, d_ff=1024, d_kv=64, num_layers=4, num_decoder_layers=4,
                    num_heads=4, feed_forward_proj="relu", decoder_start_token_id=0, pad_token_id=0,
                    eos_token_id=1, tie_word_embeddings=True)


def _tokenizer(out_dir: Path) -> None:
    t5_tokenizer(out_dir)


class T5Family(Family):
    name = "t5"
    description = "T5 encoder-decoders: text-to-text generation (translate, summarize …)"
    model_types = ("t5", "mt5")
    synthetic_class = "T5ForConditionalGeneration"
    checkpoints = {
        "google/t5-efficient-tiny": Checkpoint(
            model_id="google/t5-efficient-tiny", config=_t5_efficient_tiny, build_processor=_tokenizer,
            processor_source="bert-base-uncased WordPiece with T5 special ids",
        ),
    }
    default_checkpoint = "google/t5-efficient-tiny"
    tasks = {"text2text": Seq2SeqGenerate}
    default_task = "text2text"
