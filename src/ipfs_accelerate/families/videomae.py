"""VideoMAE: ``embed-video``, one vector per video (the mean of the encoder's tokens).

Frames are sampled uniformly over the whole video (PyAV, or a list of frames) by
``media/video.py``; the model takes ``num_frames`` of them (16 for videomae-base).
``res.timings`` carries ``frames`` (frames fed to the model) and ``ms_per_frame``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

from .._exceptions import InvalidInput
from ._plain import forward_baseline
from ._vision import CHANNELS_LAST, load_clips, sample_video, saved_config, video_as_items
from .base import Baseline, Checkpoint, Family, Prepared, TaskHandler
from .bench_profile import BenchProfile, register_bench_profile
from .xclip import video_image_processor

__all__ = ["VideoMAEFamily"]


def _videomae_base() -> Any:
    from transformers import VideoMAEConfig

    # VideoMAEConfig()'s defaults are MCG-NJU/videomae-base: ViT-B (12 layers, 768 wide,
    # 12 heads) over 16 frames at 224 px, 16-pixel patches, tubelets of 2 frames.
    return VideoMAEConfig()


def _processor(out_dir: Path) -> None:
    config = saved_config(out_dir)
    size = config.image_size if config is not None else 224
    # MCG-NJU's preprocessor_config.json: shortest edge 224, centre crop 224, ImageNet
    # mean/std, bilinear; the same settings X-CLIP publishes.
    video_image_processor(size).save_pretrained(out_dir)


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoEmbedParams:
    """Parameters of ``embed-video``.

    Attributes:
        normalize: scale each vector to unit length.
    """

    normalize: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.normalize, bool):
            raise InvalidInput("normalize must be True or False")


class EmbedVideo(TaskHandler):
    """``embed-video``: one float32 vector per video.

    An input is one video (a path, video bytes, a ``(T, H, W, C)`` array or a list of
    frames) or a list of videos.
    """

    name = "embed-video"
    kind = "feature-extraction"
    torch_class = "VideoMAEModel"
    Params: ClassVar[type] = VideoEmbedParams
    output_names: ClassVar[tuple[str, ...]] = ("last_hidden_state",)

    def __init__(self, weights: Any, config: Any) -> None:
        super().__init__(weights, config)
        self.processor = _image_processor(weights.path)
        self.num_frames = int(config.num_frames)

    def as_items(self, inputs: Any) -> list[Any]:
        return video_as_items(inputs)

    def item_length(self, item: Any) -> int:
        return 0  # every video becomes num_frames frames of one size

    def example_inputs(self) -> list[Any]:
        return [sample_video(self.num_frames), sample_video(max(1, self.num_frames // 2), 40, 56)]

    def preprocess(self, inputs: Sequence[Any], params: VideoEmbedParams) -> Prepared:
        if not inputs:
            raise InvalidInput("empty batch: pass at least one video")
        notes: list[str] = []
        clips = load_clips(inputs, num_frames=self.num_frames, notes=notes)
        pixels = self.processor([list(c.frames) for c in clips], return_tensors="pt", **CHANNELS_LAST)["pixel_values"]
        return Prepared(inputs={"pixel_values": pixels}, count=len(clips), notes=notes,
                        figures={"frames": float(sum(len(c) for c in clips))})

    def postprocess(self, raw: Any, prepared: Prepared, params: VideoEmbedParams) -> list[Any]:
        return _pooled(raw, params.normalize)


@register_bench_profile(EmbedVideo)
class EmbedVideoBench(BenchProfile[EmbedVideo]):
    """Plain baseline: ``VideoMAEModel``, mean-pooled as ours."""

    def plain_baseline(self) -> Baseline:
        """``VideoMAEModel`` on ``VideoMAEImageProcessor(frames)``, the mean of ``last_hidden_state``.

        Frames are sampled as ours are (a user samples ``num_frames`` before the processor).
        """
        num_frames = self.handler.num_frames

        def encode(processor: Any, items: list[Any], kwargs: dict[str, Any], params: Any) -> dict[str, Any]:
            clips = load_clips(items, num_frames=num_frames, notes=[])
            return {"pixel_values": processor([list(c.frames) for c in clips], return_tensors="pt")["pixel_values"]}

        return forward_baseline(
            self, encode=encode, processor=_image_processor,
            decode=lambda raw, items, kwargs, params: _pooled(raw.last_hidden_state, params.normalize),
            note="VideoMAEImageProcessor(frames), mean of last_hidden_state over tokens",
        )


def _image_processor(path: Path) -> Any:
    from transformers import AutoImageProcessor

    # use_fast=False: the fast processors need torchvision (never installed here).
    return AutoImageProcessor.from_pretrained(path, local_files_only=True, use_fast=False)


def _pooled(hidden: Any, normalize: bool) -> list[Any]:
    import torch

    # VideoMAE has no class token; its video classifier averages the tokens too.
    vectors = hidden.float().cpu().mean(dim=1)
    if normalize:
        vectors = torch.nn.functional.normalize(vectors, p=2, dim=1)
    return list(vectors.numpy())


class VideoMAEFamily(Family):
    name = "videomae"
    description = "VideoMAE video encoders: one embedding per video"
    model_types = ("videomae",)
    synthetic_class = "VideoMAEForPreTraining"
    checkpoints = {
        "MCG-NJU/videomae-base": Checkpoint(
            model_id="MCG-NJU/videomae-base", config=_videomae_base, build_processor=_processor,
            processor_source="VideoMAEImageProcessor with the published settings (no tokenizer)",
        ),
    }
    default_checkpoint = "MCG-NJU/videomae-base"
    tasks = {"embed-video": EmbedVideo}
    default_task = "embed-video"
