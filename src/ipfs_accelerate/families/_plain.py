"""Plain transformers baselines that a task's bench profile declares itself (``BenchProfile.plain_baseline``).

For tasks whose plain baseline the benchmark cannot pick from ``kind`` alone: the model's
transformers class in fp32 PyTorch, its processor, and one call of a model method per
``BenchProfile.plain_calls`` group, as a user would write it. The task says how its items
become model inputs (``encode``) and how the model's output becomes its own outputs
(``decode``), so that the benchmark compares like with like.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from .base import Baseline, BaselineRun
from .bench_profile import BenchProfile

__all__ = ["forward_baseline"]

#: ``encode(processor, inputs, kwargs, params)``: model keyword arguments for one plain call.
Encode = Callable[[Any, list[Any], dict[str, Any], Any], Mapping[str, Any]]
#: ``decode(raw, inputs, kwargs, params)``: one output per input of the call.
Decode = Callable[[Any, list[Any], dict[str, Any], Any], list[Any]]


def _auto_processor(path: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(path, local_files_only=True)


def forward_baseline(
    profile: BenchProfile[Any],
    *,
    encode: Encode,
    decode: Decode,
    method: str | None = None,
    processor: Callable[[Path], Any] = _auto_processor,
    note: str,
) -> Baseline:
    """A plain baseline: ``<torch_class>.from_pretrained`` in fp32 and one model call per plain call.

    Args:
        profile: the task's bench profile: its handler's ``torch_class`` (a transformers class
            name) and model folder, and its ``plain_calls``, are used.
        encode: turns the inputs of one plain call into model keyword arguments (CPU tensors).
        decode: turns the model's output into one output per input, in the task's structure.
        method: the model method to call (``"get_image_features"`` …); None calls the model.
        processor: loads the folder's processor (``AutoProcessor`` by default).
        note: one line for the report: what runs.

    Returns:
        The baseline, named "transformers forward", fp32.
    """
    model_dir = profile.handler.model_dir
    class_name = profile.handler.torch_class

    def load(device: str) -> Callable[[Sequence[Any], Any], BaselineRun]:
        import torch
        import transformers

        proc = processor(model_dir)
        model_class = getattr(transformers, class_name)
        model = model_class.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
        model.eval().to(device)
        call = getattr(model, method) if method else model

        def run(items: Sequence[Any], params: Any) -> BaselineRun:
            outputs: list[Any] = []
            for inputs, kwargs in profile.plain_calls(items, params):
                model_inputs = encode(proc, inputs, kwargs, params)
                with torch.inference_mode():
                    raw = call(**{k: v.to(device) if hasattr(v, "to") else v for k, v in model_inputs.items()})
                outputs += decode(raw, inputs, kwargs, params)
            if len(outputs) != len(items):
                raise RuntimeError(f"the plain baseline gave {len(outputs)} outputs for {len(items)} items")
            return BaselineRun(outputs=outputs)

        return run

    what = f"{class_name}.{method}" if method else f"{class_name} forward"
    return Baseline(name="transformers forward", library="transformers", load=load, note=f"{what}, fp32; {note}")
