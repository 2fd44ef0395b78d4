"""Shared by the vision families (CLIP, X-CLIP, VideoMAE, LLaVA, LLaVA-Next).

* configs: processor builders read back the config that was saved, so a processor
  matches the model (tiny test configs included);
* inputs: images and videos through :mod:`ipfs_accelerate.media`, so every way an input
  can be wrong is an :class:`~ipfs_accelerate._exceptions.InvalidInput` naming the item;
* zero-shot classification: labels, prompt templates and per-item probabilities;
* a substitute tokenizer for language models whose vocabulary no package ships: the real
  GPT-2 byte-level BPE, cut to fit the model's vocabulary, with the checkpoint's special
  tokens (the image token above all) at the ids its config names.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .._exceptions import InvalidInput
from .._logs import quiet_loggers
from ..generation import GenerationParams, context_window
from ._generation import CausalLMGenerate
from ._zero_shot import ZeroShotBench, ZeroShotParams, check_media_items
from ._zero_shot import ZeroShotClassify as _ZeroShotBase
from .base import Prepared, TaskHandler
from .bench_profile import BenchProfile, register_bench_profile

__all__ = [
    "CHANNELS_LAST",
    "ImageTextGenerate",
    "ImageTextGenerateBench",
    "ZeroShotBench",
    "ZeroShotClassify",
    "ZeroShotParams",
    "check_media_items",
    "is_frame",
    "load_clips",
    "load_item_images",
    "load_processor",
    "sample_image",
    "sample_video",
    "saved_config",
    "substitute_lm_tokenizer",
    "video_as_items",
]

# Every image and frame reaches a processor as RGB, channels last (media.image). Said
# explicitly because transformers otherwise guesses from the array's shape, and reads an
# image 1 or 3 pixels high (shape (3, W, 3)) as channels first: a crash or a wrong picture.
CHANNELS_LAST: dict[str, Any] = {"input_data_format": "channels_last"}

# --------------------------------------------------------------------------- configs


def saved_config(out_dir: Path) -> Any | None:
    """The config that synthetic weights were saved with in ``out_dir`` (None if absent).

    Processor builders read it so that the image size, patch size and special-token ids
    of the processor match the model, tiny test configs included.
    """
    if not (Path(out_dir) / "config.json").is_file():
        return None
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(out_dir, local_files_only=True)


def load_processor(path: Path) -> Any:
    """``AutoProcessor`` for a local folder: the fast tokenizer and the PIL image processor.

    With ``use_fast`` unset, transformers keeps the slow (PIL-based) image processor that
    was saved and loads the fast tokenizer; ``use_fast=False`` would make the tokenizer slow
    too. Its log line announcing that choice is silenced: the choice is deliberate (the fast
    image processors need torchvision, which must not be installed here).
    """
    from transformers import AutoProcessor

    # Both places that may announce the choice (per processor class or via AutoImageProcessor).
    with quiet_loggers("transformers.processing_utils", "transformers.models.auto.image_processing_auto"):
        return AutoProcessor.from_pretrained(path, local_files_only=True)


# --------------------------------------------------------------------------- inputs


def is_frame(value: Any) -> bool:
    """True for one decoded picture: a PIL image or an ``(H, W)`` / ``(H, W, C)`` array."""
    from PIL import Image

    return isinstance(value, Image.Image) or (isinstance(value, np.ndarray) and value.ndim in (2, 3))


def load_item_images(sources: Sequence[Any], *, what: str) -> list[Any]:
    """Load the images of one caller item as RGB PIL images; errors name ``what``.

    Raises:
        InvalidInput: an image is missing, corrupt, truncated, empty (0×0) or of an
            unsupported type (media/image.py says which).
    """
    from ..media.image import load_image

    images = []
    for index, source in enumerate(sources):
        try:
            images.append(load_image(source))
        except InvalidInput as exc:
            label = what if len(sources) == 1 else f"{what}, image {index}"
            raise InvalidInput(f"{label}: {exc}") from exc
    return images


def video_as_items(inputs: Any) -> list[Any]:
    """Split the caller's input into videos.

    One video is a path, video bytes, a ``(T, H, W[, C])`` array, or a list of frames.
    A list whose first element is a frame (a PIL image or an ``(H, W[, C])`` array) is
    therefore one video; any other list is a list of videos.
    """
    if isinstance(inputs, (list, tuple)):
        if inputs and is_frame(inputs[0]):
            return [inputs]
        return list(inputs)
    return [inputs]


def load_clips(sources: Sequence[Any], *, num_frames: int, notes: list[str]) -> list[Any]:
    """Sample ``num_frames`` frames uniformly from each video; errors name the video.

    Raises:
        InvalidInput: a video is missing, not a video, has no frames, or is a frame list
            of mixed sizes (media/video.py says which).
    """
    from ..media.video import load_video_frames

    clips = []
    for index, source in enumerate(sources):
        try:
            clip = load_video_frames(source, num_frames=num_frames)
        except InvalidInput as exc:
            raise InvalidInput(f"video #{index}: {exc}") from exc
        if clip.repeated:
            notes.append(f"video #{index} has {clip.total_frames} frame(s), fewer than the model's "
                         f"{num_frames}: frames were repeated")
        clips.append(clip)
    return clips


def sample_image(width: int, height: int, phase: int = 0) -> Any:
    """A deterministic RGB test picture (colour ramps), for example and warm-up inputs."""
    from PIL import Image

    xs = np.linspace(0, 255, width, dtype=np.float32)[None, :].repeat(height, axis=0)
    ys = np.linspace(0, 255, height, dtype=np.float32)[:, None].repeat(width, axis=1)
    blue = np.full((height, width), (96 + 40 * phase) % 256, dtype=np.float32)
    return Image.fromarray(np.stack([xs, ys, blue], axis=-1).round().astype(np.uint8))


def sample_video(num_frames: int, width: int = 64, height: int = 48) -> list[Any]:
    """A deterministic list of frames whose colour changes over time."""
    return [sample_image(width, height, phase=t) for t in range(num_frames)]


# --------------------------------------------------------------------------- zero-shot


class ZeroShotClassify(_ZeroShotBase):
    """Zero-shot ``classify`` for image and video media (the processor loaded quietly)."""

    def load_processor(self, path: Path) -> Any:
        return load_processor(path)


# --------------------------------------------------------------------------- tokenizers

# GPT-2's regular tokens: 256 bytes and 50000 merges; id 50256 is <|endoftext|>.
_GPT2_REGULAR = 50256


def substitute_lm_tokenizer(
    *,
    vocab_size: int,
    specials: Mapping[str, int | None],
    eos: str,
    extra_special: Sequence[str] = (),
    chat_template: str,
    model_max_length: int,
) -> tuple[Any, str]:
    """Build a tokenizer for a language model whose own vocabulary is unavailable.

    The real GPT-2 byte-level BPE (from :func:`._vocab.gpt2_tokenizer`) is cut to its
    first ``n`` ids, where ``n`` leaves room below the lowest fixed special id and the
    model's vocabulary size; GPT-2's ids are merge ranks, so the first ``n`` ids with the
    first ``n - 256`` merges are a complete tokenizer. Special tokens take the ids given
    (the image token must sit at the config's ``image_token_index``), or, for None, the
    next ids after the BPE. Every other id below ``vocab_size`` holds a placeholder
    ``<|unusedN|>`` that no text encodes to: a random model that picks one shows it instead
    of decoding to nothing, and the vocabulary has no gaps.

    Args:
        vocab_size: the language model's vocabulary size; every id must be below it.
        specials: special token -> fixed id, or None for "next free id".
        eos: the end-of-sequence token (one of ``specials``), also used for padding.
        extra_special: further ``specials`` to register as additional special tokens.
        chat_template: the Jinja chat template to store with the tokenizer.
        model_max_length: the longest sequence the model takes.

    Returns:
        ``(tokenizer, source)``: a ``PreTrainedTokenizerFast`` (not saved yet) and where
        its vocabulary comes from, in words.
    """
    from transformers import GPT2TokenizerFast

    from ._vocab import gpt2_tokenizer

    fixed = [i for i in specials.values() if i is not None]
    floating = [t for t, i in specials.items() if i is None]
    ceiling = min([vocab_size, *fixed])
    base = min(_GPT2_REGULAR, ceiling - len(floating))
    with tempfile.TemporaryDirectory() as tmp:
        source = gpt2_tokenizer(Path(tmp))
        vocab = json.loads((Path(tmp) / "vocab.json").read_text())
        merges = (Path(tmp) / "merges.txt").read_text().splitlines()[1:]
    regular = sorted((i, t) for t, i in vocab.items() if i < _GPT2_REGULAR)
    if base < 257 or len(regular) < base:
        # A trained fallback vocabulary is smaller than GPT-2's; it is used whole then.
        base = min(base, len(regular))
    kept = {t: i for i, t in regular[:base]}
    kept_merges = [m for m in merges if "".join(m.split(" ")) in kept][: max(0, base - 256)]
    ids = dict(zip(floating, range(base, base + len(floating)), strict=True))
    ids.update({t: i for t, i in specials.items() if i is not None})
    if max(ids.values()) >= vocab_size or len(set(ids.values())) != len(ids):
        raise ValueError(f"special token ids {ids} do not fit a vocabulary of {vocab_size}")
    kept.update(ids)
    used = set(kept.values())
    kept.update({f"<|unused{i}|>": i for i in range(vocab_size) if i not in used})
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(kept, ensure_ascii=False))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(kept_merges) + "\n")
        tok = GPT2TokenizerFast(
            vocab_file=str(Path(tmp) / "vocab.json"), merges_file=str(Path(tmp) / "merges.txt"),
            bos_token=eos, eos_token=eos, unk_token=eos, pad_token=eos,
            additional_special_tokens=[t for t in specials if t != eos] + list(extra_special),
            model_max_length=model_max_length,
        )
    # ONNX Runtime's generate breaks on token_type_ids; the models take neither.
    tok.model_input_names = ["input_ids", "attention_mask"]
    tok.chat_template = chat_template
    words = f"{source}, cut to {base} ids, with the checkpoint's special tokens at {ids}"
    return tok, words


# --------------------------------------------------------------------------- image + text -> text


#: A generic chat template for checkpoints that ship none (a plain local folder).
_FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}{{ message['role'] | upper }}: "
    "{% for c in message['content'] if c['type'] == 'image' %}<image>\n{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}\n"
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


class ImageTextGenerate(CausalLMGenerate):
    """``generate``: text from one or more images and a prompt, through the chat template.

    An item is ``{"prompt": str, "images": [image, ...]}`` (``"image"`` for one), or a
    ``(prompt, image)`` / ``(prompt, [images])`` tuple; an image is anything
    :func:`~ipfs_accelerate.media.image.load_image` takes. The images are placed before
    the prompt in one user turn. Generation uses the shared controls of :mod:`ipfs_accelerate.generation`
    (greedy or seeded sampling, stop strings, streaming); the timings split
    preprocessing (images, template, tokens) from generation, with tokens/s. ``truncate``
    does not apply: cutting a prompt would cut its image tokens, so an over-long prompt is
    refused (InvalidInput) either way.
    """

    chat_images = True

    name = "generate"
    kind = "image-text-to-text"

    def __init__(self, weights: Any, config: Any) -> None:
        TaskHandler.__init__(self, weights, config)  # the processor brings the tokenizer
        self.processor = load_processor(weights.path)
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.model_input_names = ["input_ids", "attention_mask"]
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.template_note = None
        if not getattr(self.processor, "chat_template", None):
            self.processor.chat_template = _FALLBACK_CHAT_TEMPLATE
            self.template_note = "the checkpoint has no chat template: a generic USER/ASSISTANT one was used"
        self.image_token = getattr(self.processor, "image_token", "<image>")
        self.text_config = config.get_text_config()

    def as_items(self, inputs: Any) -> list[Any]:
        if isinstance(inputs, (Mapping, str)) or _is_pair(inputs):
            return [inputs]
        return super().as_items(inputs)

    def item_length(self, item: Any) -> int:
        try:
            prompt, _ = _prompt_and_images(item, 0)
        except InvalidInput:
            return 0
        return len(prompt)

    def example_inputs(self) -> list[Any]:
        return [
            {"prompt": "Describe the image.", "images": [sample_image(64, 48)]},
            {"prompt": "What differs between these two pictures?",
             "images": [sample_image(64, 48), sample_image(40, 56, phase=1)]},
        ]

    def preprocess(self, inputs: Sequence[Any], params: GenerationParams) -> Prepared:
        if not inputs:
            raise InvalidInput("empty batch: pass at least one prompt with images")
        texts: list[str] = []
        images: list[Any] = []
        for index, item in enumerate(inputs):
            prompt, sources = _prompt_and_images(item, index)
            if self.image_token in prompt:
                raise InvalidInput(
                    f"prompt #{index} contains the image token {self.image_token!r}; pass images in 'images' "
                    "and the chat template places them"
                )
            images += load_item_images(sources, what=f"prompt #{index}")
            content = [{"type": "image"} for _ in sources] + [{"type": "text", "text": prompt}]
            texts.append(self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False))
        self.tokenizer.padding_side = "left"  # decoder-only: every row continues from the right
        encoded = self.processor(text=texts, images=images, padding=True, return_tensors="pt", **CHANNELS_LAST)
        model_inputs = {k: v for k, v in encoded.items()
                        if k in ("input_ids", "attention_mask", "pixel_values", "image_sizes")}
        prompt_len = int(model_inputs["input_ids"].shape[1])
        window = context_window(self.text_config) or 10**9
        if prompt_len >= window:
            # Image tokens cannot be cut without breaking the image: refuse whatever truncate says.
            raise InvalidInput(
                f"the prompt with its images takes {prompt_len} tokens, more than the model's window of "
                f"{window}; use fewer images or a shorter prompt"
            )
        notes = [self.template_note] if self.template_note else []
        max_new = min(params.max_new_tokens, window - prompt_len)
        if max_new < params.max_new_tokens:
            notes.append(f"max_new_tokens capped from {params.max_new_tokens} to {max_new}: the context window "
                         f"is {window} tokens and the prompt with its images takes {prompt_len}")
        return Prepared(
            inputs=model_inputs, count=len(texts), notes=notes, figures={"images": float(len(images))},
            extra={"prompt_len": prompt_len, "max_new_tokens": max_new,
                   "prompt_tokens": int(model_inputs["attention_mask"].sum())},
        )

    @property
    def lm_config(self) -> Any:
        return self.text_config


@register_bench_profile(ImageTextGenerate)
class ImageTextGenerateBench(BenchProfile[ImageTextGenerate]):
    """The plain baseline of image-text-to-text takes chat conversations, for the processor's chat template."""

    def plain_calls(self, items: Sequence[Any], params: Any) -> list[tuple[list[Any], dict[str, Any]]]:
        """One user turn per item, its images (decoded as ours are) before the prompt, for the
        processor's chat template: what transformers' image-text-to-text examples pass."""
        conversations = []
        for index, item in enumerate(items):
            prompt, sources = _prompt_and_images(item, index)
            images = load_item_images(sources, what=f"prompt #{index}")
            content = [{"type": "image", "image": image} for image in images] + [{"type": "text", "text": prompt}]
            conversations.append([{"role": "user", "content": content}])
        return [(conversations, {})]


def _is_pair(value: Any) -> bool:
    return isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str)


def _prompt_and_images(item: Any, index: int) -> tuple[str, list[Any]]:
    """One generation item as (prompt, image sources)."""
    if isinstance(item, Mapping):
        unknown = sorted(set(item) - {"prompt", "images", "image"})
        if unknown or "prompt" not in item or ("images" in item) == ("image" in item):
            raise InvalidInput(
                f"item #{index}: a dict item takes 'prompt' and one of 'images' (a list) or 'image'; "
                f"got keys {sorted(item)}"
            )
        prompt = item["prompt"]
        sources = item["images"] if "images" in item else [item["image"]]
    elif _is_pair(item):
        prompt, sources = item
    else:
        raise InvalidInput(
            f"item #{index} must be {{'prompt': str, 'images': [...]}} or a (prompt, image) tuple; "
            f"got {type(item).__name__}"
        )
    if not isinstance(prompt, str) or not prompt.strip():
        raise InvalidInput(f"item #{index}: the prompt must be a non-empty string; got {prompt!r}")
    if not isinstance(sources, (list, tuple)):
        sources = [sources]
    if not sources:
        raise InvalidInput(f"item #{index}: no images given; this task needs at least one image per prompt")
    return prompt, list(sources)
