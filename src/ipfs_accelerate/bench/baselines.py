"""Baselines measured beside our figures, on the same inputs, in the same run.

Two kinds:

* **plain**: what a user would write with transformers alone, in fp32 PyTorch. A task that
  needs its own declares it in its bench profile (``BenchProfile.plain_baseline``: no pipeline for its kind, or
  a model-specific projection or pooling); otherwise it is chosen from the task's ``kind``
  (never from the family): ``model.generate`` for text generation (decoder-only and
  encoder-decoder), ``generate`` on the processor's chat template for image-text-to-text,
  the model's forward with masked mean pooling for feature extraction of texts, and
  ``transformers.pipeline(kind, model=dir)`` for every other kind, called as the task's
  profile's ``plain_calls`` say, its outputs brought to the task's structure by ``plain_outputs``.
* **reference**: library-specific references a family declares with
  ``BenchProfile.reference_baselines()`` (sentence-transformers ``encode``, faster-whisper …).

Every baseline is a :class:`~ipfs_accelerate.families.base.Baseline`: ``load(device)`` returns
``run(items, params) -> BaselineRun``.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..families.base import Baseline, BaselineRun, TaskHandler
from ..families.bench_profile import BenchProfile, bench_profile

__all__ = ["all_baselines", "library_version", "plain_baseline", "score_agreement"]

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
    """The plain transformers fp32 baseline: the task's own (its bench profile's), or the one for
    its kind of model."""
    profile = bench_profile(handler)
    own = profile.plain_baseline()
    if own is not None:
        return own
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
    if kind == "image-text-to-text":
        return Baseline(name="transformers generate", library="transformers",
                        load=lambda device: _image_text_generate(model_dir, device, profile),
                        note="AutoModelForImageTextToText.generate on AutoProcessor.apply_chat_template "
                             "(images in the chat), greedy, fp32")
    if kind == "feature-extraction":
        if not all(isinstance(x, str) for x in handler.example_inputs()):
            return Baseline(name="transformers forward", library="transformers",
                            load=lambda device: _not_text(handler), note="texts only")
        return Baseline(name="transformers forward", library="transformers",
                        load=lambda device: _mean_pooled(model_dir, device),
                        note="AutoModel forward + masked mean pooling, fp32")
    task = _PIPELINE_TASKS.get(kind, kind)
    return Baseline(name=f"transformers pipeline({task!r})", library="transformers",
                    load=lambda device: _pipeline(task, model_dir, device, profile),
                    note=f"transformers.pipeline({task!r}), fp32")


def all_baselines(handler: TaskHandler) -> list[tuple[str, Baseline]]:
    """``[("plain", baseline), ("reference", baseline) …]`` for the handler."""
    out: list[tuple[str, Baseline]] = [("plain", plain_baseline(handler))]
    out += [("reference", b) for b in bench_profile(handler).reference_baselines()]
    return out


def _not_text(handler: TaskHandler) -> Run:
    raise TypeError(
        f"the plain feature-extraction baseline embeds texts; {handler.name!r} takes "
        f"{type(handler.example_inputs()[0]).__name__}: the task can declare its own "
        "(BenchProfile.plain_baseline)"
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
    from ..generation import split_generated

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
                f"{type(items[0]).__name__}: the task can declare its own (BenchProfile.plain_baseline)"
            )
        enc = tok(list(items), return_tensors="pt", padding=True, truncation=True).to(device)
        with torch.inference_mode():
            hidden = model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            vectors = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return BaselineRun(outputs=list(vectors.float().cpu().numpy()))

    return run


def _image_text_generate(model_dir: Path, device: str, profile: BenchProfile[Any]) -> Run:
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(model_dir, local_files_only=True)
    tok = processor.tokenizer
    tok.padding_side = "left"  # decoder-only: every row continues from the right
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = AutoModelForImageTextToText.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    model.eval().to(device)

    def run(items: Sequence[Any], params: Any) -> BaselineRun:
        texts: list[str] = []
        count = 0
        for conversations, kwargs in profile.plain_calls(items, params):
            enc = processor.apply_chat_template(conversations, add_generation_prompt=True, tokenize=True,
                                                return_dict=True, return_tensors="pt", padding=True, **kwargs)
            enc = enc.to(device)
            with torch.inference_mode():
                out = model.generate(**enc, **_gen_kwargs(params, tok))
            new_texts, new = _count_and_decode(out[:, enc["input_ids"].shape[1]:].cpu(), tok, _eos(model, tok))
            texts += new_texts
            count += new
        return BaselineRun(outputs=texts, figures={"new_tokens": float(count)})

    return run


def _pipeline(task: str, model_dir: Path, device: str, profile: BenchProfile[Any]) -> Run:
    import torch
    from transformers import pipeline

    make: Any = pipeline  # the task is only known at run time
    pipe = make(task, model=str(model_dir), device=device, dtype=torch.float32)

    def run(items: Sequence[Any], params: Any) -> BaselineRun:
        outputs: list[Any] = []
        for inputs, kwargs in profile.plain_calls(items, params):
            inputs = [_pipeline_audio(x) for x in inputs]
            outputs += list(pipe(inputs, batch_size=len(inputs), **kwargs))
        if len(outputs) != len(items):
            raise RuntimeError(f"pipeline({task!r}) gave {len(outputs)} outputs for {len(items)} items")
        return BaselineRun(outputs=profile.plain_outputs(outputs))

    return run


def _pipeline_audio(item: Any) -> Any:
    """Audio as ``(samples, rate)`` or ``{"array", "sampling_rate"}`` becomes what pipelines take."""
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        return {"raw": np.asarray(item[0], dtype=np.float32), "sampling_rate": int(item[1])}
    if isinstance(item, dict) and "array" in item and "sampling_rate" in item:
        return {"raw": np.asarray(item["array"], dtype=np.float32), "sampling_rate": int(item["sampling_rate"])}
    return item


def score_agreement(ours: Sequence[Any], theirs: Sequence[Any]) -> dict[str, Any] | None:
    """Agreement of scored candidates (zero-shot labels, fill-mask tokens); None for other outputs.

    An output is a list of ``{"label" | "token_id", "score"}`` dicts sorted by score, or a
    list of such lists (one per mask). Per item, the scores are compared as vectors over
    the union of candidates (a candidate one side does not list scores 0): their cosine
    (``min``, ``mean``), the largest absolute score difference, and whether the top
    candidates are the same (``top1_match``: the share of lists whose first candidate agrees).

    Args:
        ours: our outputs, one per item.
        theirs: the baseline's outputs for the same items.

    Returns:
        ``{"metric": "cosine", "min", "mean", "max_abs_diff", "top1_match"}``, or None when
        the outputs are not scored candidates or their shapes differ.
    """
    if not ours or len(ours) != len(theirs):
        return None
    pairs = []
    for o, t in zip(ours, theirs, strict=True):
        x_lists, y_lists = _candidate_lists(o), _candidate_lists(t)
        if x_lists is None or y_lists is None or len(x_lists) != len(y_lists):
            return None
        pairs.append((x_lists, y_lists))
    cosines: list[float] = []
    diffs: list[float] = []
    top: list[bool] = []
    for x_lists, y_lists in pairs:
        x_all: list[float] = []
        y_all: list[float] = []
        for x, y in zip(x_lists, y_lists, strict=True):
            keys = list(dict.fromkeys([*x, *y]))
            x_all += [x.get(k, 0.0) for k in keys]
            y_all += [y.get(k, 0.0) for k in keys]
            top.append(bool(x) and bool(y) and next(iter(x)) == next(iter(y)))
        xv, yv = np.asarray(x_all, dtype=np.float64), np.asarray(y_all, dtype=np.float64)
        # No epsilon in the denominator: fill-mask scores over a large vocabulary are ~1e-5,
        # so their norms are small enough for any fixed epsilon to bias the cosine.
        norms = float(np.linalg.norm(xv) * np.linalg.norm(yv))
        cosines.append(min(1.0, float(xv @ yv) / norms) if norms > 0 else float(np.array_equal(xv, yv)))
        diffs.append(float(np.max(np.abs(xv - yv))) if xv.size else 0.0)
    return {"metric": "cosine", "min": min(cosines), "mean": float(np.mean(cosines)),
            "max_abs_diff": max(diffs), "top1_match": sum(top) / len(top) if top else 0.0}


def _candidate_lists(output: Any) -> list[dict[Any, float]] | None:
    """An output as candidate -> score maps in the output's order (best first), or None."""
    if not isinstance(output, (list, tuple)) or not output:
        return None
    if all(isinstance(x, (list, tuple)) for x in output):
        lists = [_candidates(x) for x in output]
        return None if any(c is None for c in lists) else [c for c in lists if c is not None]
    one = _candidates(output)
    return None if one is None else [one]


def _candidates(entries: Any) -> dict[Any, float] | None:
    out: dict[Any, float] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "score" not in entry:
            return None
        key = entry.get("label", entry.get("token_id"))
        if key is None:
            return None
        out[key] = float(entry["score"])
    return out
