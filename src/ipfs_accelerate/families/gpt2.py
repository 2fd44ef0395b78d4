"""GPT-2: ``generate`` with the shared controls, batching (left padding) and streaming."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._generation import CausalLMGenerate
from ._vocab import gpt2_tokenizer
from .base import Checkpoint, Family

__all__ = ["GPT2Family"]


def _gpt2() -> Any:
    from transformers import GPT2Config

    return GPT2Config()  # the defaults are the published gpt2 (124M): 12 layers, 768, 12 heads


def _tokenizer(out_dir: Path) -> None:
    gpt2_tokenizer(out_dir, model_max_length=1024)


class GPT2Family(Family):
    name = "gpt2"
    description = "GPT-2 decoder-only language models: text generation"
    model_types = ("gpt2",)
    synthetic_class = "GPT2LMHeadModel"
    checkpoints = {
        "gpt2": Checkpoint(model_id="gpt2", config=_gpt2, build_processor=_tokenizer,
                           processor_source="GPT-2 byte-level BPE"),
        "openai-community/gpt2": Checkpoint(model_id="openai-community/gpt2", config=_gpt2,
                                            build_processor=_tokenizer, processor_source="GPT-2 byte-level BPE"),
    }
    default_checkpoint = "gpt2"
    tasks = {"generate": CausalLMGenerate}
    default_task = "generate"
