"""X-CLIP: zero-shot video ``classify`` against the given labels.

Frames are sampled uniformly over the whole video (PyAV, or a list of frames) by
``media/video.py``; the model takes ``vision_config.num_frames`` of them (8 for
xclip-base-patch32). ``res.timings`` carries ``frames`` (frames fed to the model) and
``ms_per_frame``. X-CLIP and VideoMAE share the product's video slot but are separate
architectures with separate tasks, so each has its own module; the video input handling
they share lives in ``_vision.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from ._clip_vocab import build_clip_tokenizer
from ._vision import (
    CHANNELS_LAST,
    ZeroShotBench,
    ZeroShotClassify,
    load_clips,
    sample_video,
    saved_config,
    video_as_items,
)
from .base import Baseline, Checkpoint, Family
from .bench_profile import register_bench_profile

__all__ = ["XCLIPFamily", "video_image_processor"]

# microsoft/xclip-base-patch32's preprocessor_config.json: VideoMAE-style processing with
# ImageNet mean/std, bilinear resize of the shortest edge to 224, centre crop 224.
_IMAGENET_MEAN = [0.485, 0.456, 0.406]
_IMAGENET_STD = [0.229, 0.224, 0.225]


def _xclip_base_patch32() -> Any:
    from transformers import XCLIPConfig

    # XCLIPConfig()'s defaults are microsoft/xclip-base-patch32: ViT-B/32 over 8 frames
    # at 224 px, CLIP's text encoder (77 tokens, 49408 BPE), projection 512, a 1-layer MIT
    # and a 2-layer video-conditioned prompt generator.
    return XCLIPConfig()


def video_image_processor(size: int) -> Any:
    """The PIL-based VideoMAE image processor with the published X-CLIP/VideoMAE settings."""
    from PIL import Image
    from transformers import VideoMAEImageProcessor

    return VideoMAEImageProcessor(
        size={"shortest_edge": size}, crop_size={"height": size, "width": size},
        resample=Image.Resampling.BILINEAR, image_mean=_IMAGENET_MEAN, image_std=_IMAGENET_STD,
    )


def _processor(out_dir: Path) -> None:
    from transformers import CLIPTokenizerFast, XCLIPProcessor

    config = saved_config(out_dir)
    size = config.vision_config.image_size if config is not None else 224
    # X-CLIP's text side is CLIP's: the same BPE vocabulary, so the real one is used.
    build_clip_tokenizer(out_dir, with_image_processor=False)
    tokenizer = CLIPTokenizerFast.from_pretrained(out_dir, local_files_only=True)
    XCLIPProcessor(image_processor=video_image_processor(size), tokenizer=tokenizer).save_pretrained(out_dir)


class ClassifyVideo(ZeroShotClassify):
    """``classify``: zero-shot video classification against the given labels.

    An input is one video (a path, video bytes, a ``(T, H, W, C)`` array or a list of
    frames) or a list of videos; ``{"video": ..., "labels": [...]}`` gives a video its own
    labels. Each output is a list of ``{"label", "score"}`` sorted by score, the scores a
    softmax over that video's labels.
    """

    kind = "zero-shot-video-classification"
    torch_class = "XCLIPModel"
    media_key = "video"
    logits_name = "logits_per_video"
    output_names: ClassVar[tuple[str, ...]] = ("logits_per_video",)
    # X-CLIP's video-conditioned prompt generator was trained on bare class names.
    default_template = "{}"

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        self.num_frames = int(config.vision_config.num_frames)

    def as_items(self, inputs: Any) -> list[Any]:
        return video_as_items(inputs)

    def example_inputs(self) -> list[Any]:
        labels = ["playing sports", "eating spaghetti", "a colour test pattern"]
        return [{"video": sample_video(self.num_frames), "labels": labels}]

    def media_inputs(self, media: Sequence[Any], notes: list[str], params: Any) -> tuple[dict[str, Any], dict[str, float]]:
        clips = load_clips(media, num_frames=self.num_frames, notes=notes)
        pixels = self.processor.image_processor([list(c.frames) for c in clips], return_tensors="pt", **CHANNELS_LAST)
        return {"pixel_values": pixels["pixel_values"]}, {"frames": float(sum(len(c) for c in clips))}


@register_bench_profile(ClassifyVideo)
class ClassifyVideoBench(ZeroShotBench[ClassifyVideo]):
    """Plain baseline: ``XCLIPModel``'s forward (transformers has no zero-shot video pipeline)."""

    def plain_media(self, media: Sequence[Any], params: Any) -> list[Any]:
        # Frame sampling is not the processor's job: a user samples num_frames frames first.
        return [list(c.frames) for c in load_clips(media, num_frames=self.handler.num_frames, notes=[])]

    def plain_baseline(self) -> Baseline:
        """``XCLIPModel`` on the label prompts (CLIP tokenizer) and frames (VideoMAE processor),
        softmax of ``logits_per_video``: transformers has no zero-shot video classification pipeline."""
        return self.forward_plain_baseline("image_processor")


class XCLIPFamily(Family):
    name = "xclip"
    description = "X-CLIP video-text models: zero-shot video classification"
    model_types = ("xclip",)
    synthetic_class = "XCLIPModel"
    checkpoints = {
        "microsoft/xclip-base-patch32": Checkpoint(
            model_id="microsoft/xclip-base-patch32", config=_xclip_base_patch32, build_processor=_processor,
            processor_source="the real OpenAI CLIP BPE (vendored); VideoMAEImageProcessor",
        ),
    }
    default_checkpoint = "microsoft/xclip-base-patch32"
    tasks = {"classify": ClassifyVideo}
    default_task = "classify"
