"""CLIP: ``embed-image``, ``embed-text`` and zero-shot image ``classify``.

The tokenizer is the real OpenAI CLIP BPE (vendored, see ``_clip_vocab``), so token ids
equal the real checkpoint's; the image processor is the PIL-based ``CLIPImageProcessor``.
``embed-image`` and ``embed-text`` call ``get_image_features`` / ``get_text_features``
through the task's ``entry``, so every backend runs the same method.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from .._exceptions import InvalidInput
from ._clip_vocab import build_clip_tokenizer
from ._plain import forward_baseline
from ._text import check_texts, tokenize
from ._vision import (
    CHANNELS_LAST,
    ZeroShotBench,
    ZeroShotClassify,
    load_item_images,
    load_processor,
    sample_image,
    saved_config,
)
from .base import Baseline, Checkpoint, Family, Prepared, TaskHandler
from .bench_profile import BenchProfile, register_bench_profile

__all__ = ["CLIPFamily"]


def _vit_b32() -> Any:
    from transformers import CLIPConfig

    # CLIPConfig()'s defaults are openai/clip-vit-base-patch32: ViT-B/32 at 224 px (12
    # layers, 768 wide, 12 heads), text 12 layers × 512, 8 heads, 77 positions, 49408
    # tokens, projection 512.
    return CLIPConfig()


def _vit_b16() -> Any:
    from transformers import CLIPConfig

    # openai/clip-vit-base-patch16: the same as ViT-B/32 but with 16-pixel patches.
    return CLIPConfig(vision_config={"patch_size": 16})


def _processor(out_dir: Path) -> None:
    from transformers import CLIPImageProcessor, CLIPProcessor, CLIPTokenizerFast

    config = saved_config(out_dir)
    size = config.vision_config.image_size if config is not None else 224
    build_clip_tokenizer(out_dir, with_image_processor=False)
    tokenizer = CLIPTokenizerFast.from_pretrained(out_dir, local_files_only=True)
    # CLIPImageProcessor's defaults are OpenAI's (bicubic shortest-edge resize, centre
    # crop, OpenAI mean/std); only the size follows the config, for tiny test models.
    images = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out_dir)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ImageEmbedParams:
    """Parameters of ``embed-image``.

    Attributes:
        normalize: scale each vector to unit length (CLIP compares by cosine).
    """

    normalize: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.normalize, bool):
            raise InvalidInput("normalize must be True or False")


@dataclasses.dataclass(frozen=True, kw_only=True)
class TextEmbedParams:
    """Parameters of ``embed-text``.

    Attributes:
        normalize: scale each vector to unit length (CLIP compares by cosine).
        truncate: cut texts longer than CLIP's 77 tokens (reported); False raises.
    """

    normalize: bool = True
    truncate: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.normalize, bool):
            raise InvalidInput("normalize must be True or False")
        if not isinstance(self.truncate, bool):
            raise InvalidInput("truncate must be True or False")


def _vectors(raw: Any, normalize: bool) -> list[Any]:
    import torch

    vectors = raw.float().cpu()
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
    return list(vectors.numpy())


def _load_images(items: Sequence[Any]) -> list[Any]:
    return [load_item_images([item], what=f"image #{i}")[0] for i, item in enumerate(items)]


def _features_baseline(profile: BenchProfile[Any], method: str, encode: Any, what: str) -> Baseline:
    """``CLIPModel.<method>`` on the processor's output: what CLIP's model card shows for embeddings."""
    def decode(raw: Any, inputs: list[Any], kwargs: dict[str, Any], params: Any) -> list[Any]:
        # transformers 4.x returns the projected tensor; newer versions wrap it in an output.
        tensor = raw if hasattr(raw, "float") else raw.pooler_output
        return _vectors(tensor, params.normalize)

    return forward_baseline(profile, method=method, encode=encode, decode=decode, processor=load_processor,
                            note=f"CLIPProcessor({what}), unit length when normalize")


class _CLIPTask(TaskHandler):
    torch_class = "CLIPModel"

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        self.processor = load_processor(weights.path)
        self.tokenizer = self.processor.tokenizer


class EmbedImage(_CLIPTask):
    """``embed-image``: one vector per image, in CLIP's joint image-text space."""

    name = "embed-image"
    kind = "feature-extraction"
    Params: ClassVar[type] = ImageEmbedParams
    entry: ClassVar[str | None] = "get_image_features"
    output_names: ClassVar[tuple[str, ...]] = ("image_embeds",)

    def item_length(self, item: Any) -> int:
        return 0  # every image is resized to one size

    def example_inputs(self) -> list[Any]:
        return [sample_image(64, 48), sample_image(40, 56, phase=1)]

    def preprocess(self, inputs: Sequence[Any], params: ImageEmbedParams) -> Prepared:
        if not inputs:
            raise InvalidInput("empty batch: pass at least one image")
        images = _load_images(inputs)
        pixels = self.processor.image_processor(images=images, return_tensors="pt", **CHANNELS_LAST)["pixel_values"]
        return Prepared(inputs={"pixel_values": pixels}, count=len(images))

    def postprocess(self, raw: Any, prepared: Prepared, params: ImageEmbedParams) -> list[Any]:
        return _vectors(raw, params.normalize)


@register_bench_profile(EmbedImage)
class EmbedImageBench(BenchProfile[EmbedImage]):
    """Plain baseline: ``CLIPModel.get_image_features`` on the processor's pixels."""

    def plain_baseline(self) -> Baseline:
        def encode(processor: Any, items: list[Any], kwargs: dict[str, Any], params: Any) -> dict[str, Any]:
            return {"pixel_values": processor(images=_load_images(items), return_tensors="pt")["pixel_values"]}

        return _features_baseline(self, "get_image_features", encode, "images=...")


class EmbedText(_CLIPTask):
    """``embed-text``: one vector per text, in CLIP's joint image-text space."""

    name = "embed-text"
    kind = "feature-extraction"
    Params: ClassVar[type] = TextEmbedParams
    entry: ClassVar[str | None] = "get_text_features"
    output_names: ClassVar[tuple[str, ...]] = ("text_embeds",)

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        self.max_length = min(self.tokenizer.model_max_length or 77, config.text_config.max_position_embeddings)

    def as_items(self, inputs: Any) -> list[Any]:
        return [inputs] if isinstance(inputs, str) else super().as_items(inputs)

    def example_inputs(self) -> list[Any]:
        return ["a photo of a cat", "a diagram of a machine learning model"]

    def preprocess(self, inputs: Sequence[Any], params: TextEmbedParams) -> Prepared:
        texts = check_texts(inputs)
        notes: list[str] = []
        self.tokenizer.padding_side = "right"  # CLIP pools at the end-of-text token, found by id
        encoded = tokenize(self.tokenizer, texts, max_length=self.max_length, truncate=params.truncate, notes=notes)
        # Exactly get_text_features' arguments, so the entry converts to every backend.
        inputs_ = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        return Prepared(inputs=inputs_, count=len(texts), notes=notes)

    def postprocess(self, raw: Any, prepared: Prepared, params: TextEmbedParams) -> list[Any]:
        return _vectors(raw, params.normalize)


@register_bench_profile(EmbedText)
class EmbedTextBench(BenchProfile[EmbedText]):
    """Plain baseline: ``CLIPModel.get_text_features`` on the processor's tokens."""

    def plain_baseline(self) -> Baseline:
        max_length = self.handler.max_length

        def encode(processor: Any, items: list[Any], kwargs: dict[str, Any], params: Any) -> dict[str, Any]:
            enc = processor(text=list(items), return_tensors="pt", padding=True, truncation=True,
                            max_length=max_length)
            return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}

        return _features_baseline(self, "get_text_features", encode, "text=..., padding, truncation")


class ClassifyImage(ZeroShotClassify):
    """``classify``: zero-shot image classification against the given labels.

    Each output is a list of ``{"label", "score"}`` sorted by score; the scores are a
    softmax over that image's labels (they sum to 1).
    """

    kind = "zero-shot-image-classification"
    torch_class = "CLIPModel"
    media_key = "image"
    logits_name = "logits_per_image"
    output_names: ClassVar[tuple[str, ...]] = ("logits_per_image",)
    default_template = "a photo of a {}."

    def example_inputs(self) -> list[Any]:
        labels = ["a cat", "a dog", "a colour gradient"]
        return [{"image": sample_image(64, 48), "labels": labels},
                {"image": sample_image(40, 56, phase=1), "labels": labels}]

    def media_inputs(self, media: Sequence[Any], notes: list[str], params: Any) -> tuple[dict[str, Any], dict[str, float]]:
        pixels = self.processor.image_processor(images=_load_images(media), return_tensors="pt",
                                                **CHANNELS_LAST)["pixel_values"]
        return {"pixel_values": pixels}, {}


@register_bench_profile(ClassifyImage)
class ClassifyImageBench(ZeroShotBench[ClassifyImage]):
    """transformers' zero-shot image classification pipeline, on images decoded as ours are."""

    def plain_media(self, media: Sequence[Any], params: Any) -> list[Any]:
        # The zero-shot image pipeline takes PIL images (or paths, URLs): decode as ours does.
        return _load_images(media)


_SOURCE = "the real OpenAI CLIP BPE (vendored); CLIPImageProcessor"


class CLIPFamily(Family):
    name = "clip"
    description = "CLIP image-text models: image and text embeddings, zero-shot image classification"
    model_types = ("clip",)
    synthetic_class = "CLIPModel"
    checkpoints = {
        "openai/clip-vit-base-patch32": Checkpoint(
            model_id="openai/clip-vit-base-patch32", config=_vit_b32, build_processor=_processor,
            processor_source=_SOURCE,
        ),
        "openai/clip-vit-base-patch16": Checkpoint(
            model_id="openai/clip-vit-base-patch16", config=_vit_b16, build_processor=_processor,
            processor_source=_SOURCE,
        ),
    }
    default_checkpoint = "openai/clip-vit-base-patch32"
    tasks = {"classify": ClassifyImage, "embed-image": EmbedImage, "embed-text": EmbedText}
    default_task = "classify"
