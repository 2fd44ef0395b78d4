"""OPT and LLaMA-architecture decoders (the seed's "LLAMA" slot): ``generate``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._generation import CausalLMGenerate
from ._vocab import gpt2_tokenizer
from .base import Checkpoint, Family

__all__ = ["OPTFamily"]


def _opt_125m() -> Any:
    from transformers import OPTConfig

    return OPTConfig()  # the defaults are facebook/opt-125m: 12 layers, 768, 12 heads, vocab 50272


def _tokenizer(out_dir: Path) -> None:
    # OPT uses GPT-2's byte-level BPE with its own special tokens.
    gpt2_tokenizer(out_dir, model_max_length=2048, bos="</s>", eos="</s>", pad="<pad>")


class OPTFamily(Family):
    name = "opt"
    description = "OPT and LLaMA-architecture decoder-only language models: text generation"
    model_types = ("opt", "llama", "mistral", "qwen2")
    synthetic_class = "OPTForCausalLM"
    checkpoints = {
        "facebook/opt-125m": Checkpoint(model_id="facebook/opt-125m", config=_opt_125m,
                                        build_processor=_tokenizer, processor_source="GPT-2 byte-level BPE"),
    }
    default_checkpoint = "facebook/opt-125m"
    tasks = {"generate": CausalLMGenerate}
    default_task = "generate"
