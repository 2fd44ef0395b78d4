"""The text generation tasks: ``generate`` for decoder-only and ``text2text`` for encoder-decoder models.

The loops and controls they run are the shared :mod:`ipfs_accelerate.generation`; these
handlers only turn prompts into model inputs (padding, truncation, capped lengths) and
choose the loop: the short greedy loop where it picks ``generate()``'s tokens, else
``generate`` itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from ..backends.base import Runtime
from ..generation import (
    GenerationOutput,
    GenerationParams,
    context_window,
    decode_sequences,
    generate,
    greedy_applies,
    greedy_ends,
    greedy_generate,
    greedy_seq2seq,
    stream_generate,
)
from ._text import check_texts, tokenize
from .base import Prepared, TaskHandler

__all__ = [
    "CausalLMGenerate",
    "Seq2SeqGenerate",
]


class _GenerateBase(TaskHandler):
    """Shared by the decoder-only and encoder-decoder text generators."""

    Params: ClassVar[type] = GenerationParams
    generates: ClassVar[bool] = True
    output_names: ClassVar[tuple[str, ...]] = ("logits",)

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(weights.path, local_files_only=True)
        self.tokenizer.model_input_names = ["input_ids", "attention_mask"]
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token

    def as_items(self, inputs: Any) -> list[Any]:
        return [inputs] if isinstance(inputs, str) else super().as_items(inputs)

    def example_inputs(self) -> list[Any]:
        return ["Hello, my name is", "The capital of France is"]

    def warmup_params(self) -> Any:
        return GenerationParams(max_new_tokens=2)

    def postprocess(self, raw: GenerationOutput, prepared: Prepared, params: Any) -> list[Any]:
        return list(raw.texts)

    def figures(self, raw: GenerationOutput, prepared: Prepared, params: Any, seconds: float) -> dict[str, float]:
        return {
            "new_tokens": float(raw.new_tokens),
            "prompt_tokens": float(prepared.extra["prompt_tokens"]),
            "time_to_first_token_s": raw.time_to_first_token_s,
        }


class CausalLMGenerate(_GenerateBase):
    """``generate`` for decoder-only models: left-padded batches, capped lengths."""

    name = "generate"
    kind = "text-generation"
    torch_class = "AutoModelForCausalLM"

    def preprocess(self, inputs: Sequence[Any], params: GenerationParams) -> Prepared:
        texts = check_texts(inputs, what="prompt")
        notes: list[str] = []
        window = context_window(self.config) or 10**9
        self.tokenizer.padding_side = "left"  # decoder-only models continue from the right
        self.tokenizer.truncation_side = "left"  # keep the end of an over-long prompt
        encoded = tokenize(self.tokenizer, texts, max_length=window - 1, truncate=params.truncate, notes=notes)
        prompt_len = int(encoded["input_ids"].shape[1])
        max_new = min(params.max_new_tokens, window - prompt_len)
        if max_new < params.max_new_tokens:
            notes.append(
                f"max_new_tokens capped from {params.max_new_tokens} to {max_new}: the context window "
                f"is {window} tokens and the prompt takes {prompt_len}"
            )
        prompt_tokens = int(encoded["attention_mask"].sum())
        return Prepared(inputs=encoded, count=len(texts), notes=notes,
                        extra={"prompt_len": prompt_len, "max_new_tokens": max_new, "prompt_tokens": prompt_tokens})

    @property
    def lm_config(self) -> Any:
        """The language model's config (the text part of a composite model)."""
        return self.config

    def forward(self, runtime: Runtime, prepared: Prepared, params: GenerationParams) -> GenerationOutput:
        if greedy_applies(runtime.model, prepared.inputs, params):
            return greedy_generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer,
                                   config=self.lm_config, max_new_tokens=prepared.extra["max_new_tokens"])
        return generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.lm_config,
                        max_new_tokens=prepared.extra["max_new_tokens"], prompt_len=prepared.extra["prompt_len"])

    def stream(self, runtime: Runtime, prepared: Prepared, params: GenerationParams) -> Iterator[str]:
        return stream_generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.lm_config,
                               max_new_tokens=prepared.extra["max_new_tokens"],
                               prompt_len=prepared.extra["prompt_len"], skip_prompt=True)


class Seq2SeqGenerate(_GenerateBase):
    """``text2text`` for encoder-decoder models."""

    name = "text2text"
    kind = "text2text-generation"
    torch_class = "AutoModelForSeq2SeqLM"
    fp16_safe = False  # T5-style models overflow in fp16; bf16 or fp32 instead

    def example_inputs(self) -> list[Any]:
        return ["translate English to German: The house is wonderful.", "summarize: It was a sunny day."]

    def preprocess(self, inputs: Sequence[Any], params: GenerationParams) -> Prepared:
        texts = check_texts(inputs, what="text")
        notes: list[str] = []
        window = min(self.tokenizer.model_max_length or 512, 4096)
        self.tokenizer.padding_side = "right"
        self.tokenizer.truncation_side = "right"
        encoded = tokenize(self.tokenizer, texts, max_length=window, truncate=params.truncate, notes=notes)
        max_new = min(params.max_new_tokens, window)
        if max_new < params.max_new_tokens:
            notes.append(f"max_new_tokens capped from {params.max_new_tokens} to {max_new} (decoder window {window})")
        return Prepared(inputs=encoded, count=len(texts), notes=notes,
                        extra={"max_new_tokens": max_new, "prompt_tokens": int(encoded["attention_mask"].sum())})

    def forward(self, runtime: Runtime, prepared: Prepared, params: GenerationParams) -> GenerationOutput:
        start = getattr(getattr(runtime.model, "generation_config", None), "decoder_start_token_id", None)
        if isinstance(start, int) and greedy_applies(runtime.model, prepared.inputs, params):
            started = time.perf_counter()
            eos, pad, stop = greedy_ends(params, self.tokenizer, self.config, prepared.extra["max_new_tokens"])
            sequences, ttft = greedy_seq2seq(runtime, prepared.inputs, decoder_prompt=[start], eos=eos, pad=pad,
                                             max_new_tokens=prepared.extra["max_new_tokens"], stop=stop,
                                             started=started)
            return decode_sequences(sequences, 1, self.tokenizer, params, eos, pad, ttft)
        # Encoder-decoder outputs start with the decoder start token, not the prompt.
        return generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.config,
                        max_new_tokens=prepared.extra["max_new_tokens"], prompt_len=1)

    def stream(self, runtime: Runtime, prepared: Prepared, params: GenerationParams) -> Iterator[str]:
        return stream_generate(runtime, prepared.inputs, params, tokenizer=self.tokenizer, config=self.config,
                               max_new_tokens=prepared.extra["max_new_tokens"], prompt_len=1, skip_prompt=False)
