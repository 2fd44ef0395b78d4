"""Baselines measured beside our figures, on the same inputs, in the same run.

Two kinds:

* **plain**: what a user would write with transformers alone, in fp32 PyTorch, chosen from
  the task's ``kind`` (never from the family): ``model.generate`` for text generation
  (decoder-only and encoder-decoder), the model's forward with masked mean pooling for
  feature extraction, and ``transformers.pipeline(kind, model=dir)`` for every other kind.
* **reference**: library-specific references a family declares with
  ``TaskHandler.reference_baselines()`` (sentence-transformers ``encode``, faster-whisper …).

Every baseline is a :class:`~ipfs_accelerate.skills.base.Baseline`: ``load(device)`` returns
``run(items, params) -> BaselineRun``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from ..skills.base import Baseline, BaselineRun, TaskHandler

__all__ = ["all_baselines", "library_version", "plain_baseline"]

Run = Callable[[Sequence[Any], Any], BaselineRun]

# Model kinds (optimum's names) whose transformers pipeline task has another name.
_PIPELINE_TASKS = {"ctc": "automatic-speech-recognition"}


def library_version(name: str) -> str | None:
    """The installed version of a distribution, or None."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def plain_baseline(handler: TaskHandler) -> Baseline:
    """The plain transformers fp32 baseline for the handler's kind of model."""
    model_dir = handler.model_dir
    kind = handler.kind
    if kind == "text-generation":
        return Baseline(name="transformers generate", library="transformers",
                        load=lambda device: _causal_generate(model_dir, device),
                        note="AutoModelForCausalLM.generate, greedy, fp32")
    if kind == "text2text-generation":
        return Baseline(name="transformers generate", library="transformers",
                        load=lambda device: _seq2seq_generate(model_dir, device),
                        note="AutoModelForSeq2SeqLM.generate, greedy, fp32")
    if kind == "feature-extraction":
        if not all(isinstance(x, str) for x in handler.example_inputs()):
            return Baseline(name="transformers forward", library="transformers",
                            load=lambda device: _not_text(handler), note="texts only")
        return Baseline(name="transformers forward", library="transformers",
                        load=lambda device: _mean_pooled(model_dir, device),
                        note="AutoModel forward + masked mean pooling, fp32")
    task = _PIPELINE_TASKS.get(kind, kind)
    return Baseline(name=f"transformers pipeline({task!r})", library="transformers",
                    load=lambda device: _pipeline(task, model_dir, device, handler),
                    note=f"transformers.pipeline({task!r}), fp32")


def all_baselines(handler: TaskHandler) -> list[tuple[str, Baseline]]:
    """``[("plain", baseline), ("reference", baseline) …]`` for the handler."""
    out: list[tuple[str, Baseline]] = [("plain", plain_baseline(handler))]
    out += [("reference", b) for b in handler.reference_baselines()]
    return out


def _not_text(handler: TaskHandler) -> Run:
    raise TypeError(
        f"the plain feature-extraction baseline embeds texts; {handler.name!r} takes "
        f"{type(handler.example_inputs()[0]).__name__}: the family can declare a reference baseline "
        "(TaskHandler.reference_baselines)"
    )


def _tokenizer(model_dir: Path, *, side: str) -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    tok.padding_side = side
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _gen_kwargs(params: Any, tok: Any) -> dict[str, Any]:
    temperature = float(getattr(params, "temperature", 0.0) or 0.0)
    kwargs: dict[str, Any] = {
        "max_new_tokens": int(getattr(params, "max_new_tokens", 32)),
        "do_sample": temperature > 0,
        "pad_token_id": tok.pad_token_id,
    }
    if temperature > 0:
        kwargs["temperature"] = temperature
    else:
        kwargs.update(temperature=None, top_p=None, top_k=None)
    return kwargs


def _count_and_decode(new_ids: Any, tok: Any, eos: Any) -> tuple[list[str], int]:
    from ..skills._generation import split_generated

    texts, count = [], 0
    for row in new_ids.tolist():
        kept, generated = split_generated(row, eos=eos, pad=tok.pad_token_id)
        count += generated
        texts.append(tok.decode(kept, skip_special_tokens=True))
    return texts, count


def _eos(model: Any, tok: Any) -> Any:
    config = getattr(model, "generation_config", None)
    eos = getattr(config, "eos_token_id", None)
    return eos if eos is not None else tok.eos_token_id


def _causal_generate(model_dir: Path, device: str) -> Run:
    import torch
    from transformers import AutoModelForCausalLM

    tok = _tokenizer(model_dir, side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    model.eval().to(device)

    def run(items: Sequence[Any], params: Any) -> BaselineRun:
        enc = tok(list(items), return_tensors="pt", padding=True, return_token_type_ids=False).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, **_gen_kwargs(params, tok))
        texts, count = _count_and_decode(out[:, enc["input_ids"].shape[1]:].cpu(), tok, _eos(model, tok))
        return BaselineRun(outputs=texts, figures={"new_tokens": float(count)})

    return run


def _seq2seq_generate(model_dir: Path, device: str) -> Run:
    import torch
    from transformers import AutoModelForSeq2SeqLM

    tok = _tokenizer(model_dir, side="right")
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    model.eval().to(device)

    def run(items: Sequence[Any], params: Any) -> BaselineRun:
        enc = tok(list(items), return_tensors="pt", padding=True, truncation=True).to(device)
        with torch.inference_mode():
            out = model.generate(**enc, **_gen_kwargs(params, tok))
        # The decoder's output starts with its start token, which was not generated.
        texts, count = _count_and_decode(out[:, 1:].cpu(), tok, _eos(model, tok))
        return BaselineRun(outputs=texts, figures={"new_tokens": float(count)})

    return run


def _mean_pooled(model_dir: Path, device: str) -> Run:
    import torch
    from transformers import AutoModel

    tok = _tokenizer(model_dir, side="right")
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    model.eval().to(device)

    def run(items: Sequence[Any], params: Any) -> BaselineRun:
        if not all(isinstance(item, str) for item in items):
            raise TypeError(
                "the plain feature-extraction baseline embeds texts; these inputs are "
                f"{type(items[0]).__name__}: the family can declare a reference baseline "
                "(TaskHandler.reference_baselines)"
            )
        enc = tok(list(items), return_tensors="pt", padding=True, truncation=True).to(device)
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return BaselineRun(outputs=list(vectors.float().cpu().numpy()))

    return run


def _pipeline(task: str, model_dir: Path, device: str, handler: TaskHandler) -> Run:
    import torch
    from transformers import pipeline

    make: Any = pipeline  # the task is only known at run time
    pipe = make(task, model=str(model_dir), device=device, dtype=torch.float32)

    def run(items: Sequence[Any], params: Any) -> BaselineRun:
        inputs, kwargs = handler.pipeline_arguments(items, params)
        inputs = [_pipeline_audio(x) for x in inputs]
        outputs = pipe(inputs, batch_size=len(inputs), **kwargs)
        return BaselineRun(outputs=list(outputs))

    return run


def _pipeline_audio(item: Any) -> Any:
    """Audio as ``(samples, rate)`` or ``{"array", "sampling_rate"}`` becomes what pipelines take."""
    import numpy as np

    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        return {"raw": np.asarray(item[0], dtype=np.float32), "sampling_rate": int(item[1])}
    if isinstance(item, dict) and "array" in item and "sampling_rate" in item:
        return {"raw": np.asarray(item["array"], dtype=np.float32), "sampling_rate": int(item["sampling_rate"])}
    return item
