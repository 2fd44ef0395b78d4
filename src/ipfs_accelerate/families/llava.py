"""LLaVA: ``generate`` text from one or more images and a prompt, through the chat template.

The default checkpoint is the smallest public LLaVA: llava-hf/llava-interleave-qwen-0.5b-hf
(Qwen1.5-0.5B-Chat language model + SigLIP-so400m vision tower, about 0.9 B parameters,
trained for several images per prompt). ``LlavaConfig()``'s defaults are the 7 B
llava-1.5, which does not fit the benchmark machine as synthetic weights.

No package ships Qwen's vocabulary, so a synthetic model's tokenizer is the real GPT-2
byte-level BPE with the checkpoint's special tokens at the ids its config names (see
``_vision.substitute_lm_tokenizer``); its ids differ from the real Qwen tokenizer's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._vision import ImageTextGenerate, saved_config, substitute_lm_tokenizer
from .base import Checkpoint, Family

__all__ = ["LlavaFamily", "llava_image_processor"]

# ChatML with the images of a turn first, as the checkpoint's chat_template.json does.
_CHATML = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' }}"
    "{% for c in message['content'] if c['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}"
    "{{ '<|im_end|>\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

# OpenAI CLIP's normalisation, for CLIP vision towers (SigLIP uses 0.5 / 0.5).
_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def _interleave_qwen_05b() -> Any:
    from transformers import LlavaConfig

    # llava-hf/llava-interleave-qwen-0.5b-hf, config.json at commit 187fe5eb (the hub's
    # blame view; the same values as the mlx-community 8-bit copy): text = Qwen1.5-0.5B-Chat,
    # vision = SigLIP-so400m-patch14-384 without its pooling head. The file stops before the
    # value of vision_feature_select_strategy in the view we could read; "full" is what the
    # 7 B sibling (llava-interleave-qwen-7b-hf) states and what a SigLIP tower (no class
    # token) needs, so it is written here as "full".
    return LlavaConfig(
        text_config={
            "model_type": "qwen2", "vocab_size": 152000, "hidden_size": 1024, "intermediate_size": 2816,
            "num_hidden_layers": 24, "num_attention_heads": 16, "num_key_value_heads": 16,
            "max_position_embeddings": 32768, "max_window_layers": 21, "rope_theta": 1000000.0,
            "sliding_window": 32768, "use_sliding_window": False, "tie_word_embeddings": True,
            "bos_token_id": 151643, "eos_token_id": 151645,
        },
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
            "num_hidden_layers": 26, "num_attention_heads": 16, "patch_size": 14, "image_size": 384,
            "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06, "vision_use_head": False,
        },
        image_token_index=151646,
        projector_hidden_act="gelu",
        vision_feature_layer=-1,
        vision_feature_select_strategy="full",
    )


def llava_image_processor(config: Any, *, anyres: bool = False) -> Any:
    """The PIL-based image processor that matches the vision tower of ``config``.

    SigLIP towers (llava-interleave, granite-vision) take a square resize with mean/std
    0.5; CLIP towers (llava-1.5, llava-v1.6) a shortest-edge resize and centre crop with
    OpenAI's mean/std. ``anyres`` gives LLaVA-Next's tiling processor.
    """
    from PIL import Image
    from transformers import LlavaNextImageProcessor, SiglipImageProcessor

    vision = config.vision_config
    size = int(vision.image_size)
    siglip = vision.model_type.startswith("siglip")
    mean, std = ([0.5] * 3, [0.5] * 3) if siglip else (_CLIP_MEAN, _CLIP_STD)
    if anyres:
        return LlavaNextImageProcessor(
            size={"shortest_edge": size}, crop_size={"height": size, "width": size},
            image_grid_pinpoints=[list(p) for p in config.image_grid_pinpoints],
            resample=Image.Resampling.BICUBIC, image_mean=mean, image_std=std, do_pad=True,
        )
    if siglip:
        return SiglipImageProcessor(size={"height": size, "width": size}, resample=Image.Resampling.BICUBIC,
                                    image_mean=mean, image_std=std)
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                              image_mean=mean, image_std=std)


def processor_kwargs(config: Any) -> dict[str, Any]:
    """LlavaProcessor/LlavaNextProcessor settings that make the image-token count match.

    A CLIP tower adds a class token that the "default" strategy drops again, so the
    processor must count it (``num_additional_image_tokens=1``); SigLIP has none.
    """
    clip_tower = config.vision_config.model_type == "clip_vision_model"
    return {
        "patch_size": int(config.vision_config.patch_size),
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
        "num_additional_image_tokens": 1 if clip_tower else 0,
    }


def _interleave_processor(out_dir: Path) -> None:
    from transformers import LlavaProcessor

    config = saved_config(out_dir) or _interleave_qwen_05b()
    text = config.text_config
    # Qwen's layout: <|endoftext|> is bos, <|im_start|> the next id, <|im_end|> eos; the
    # image token at the config's image_token_index.
    specials = {"<|endoftext|>": text.bos_token_id, "<|im_start|>": text.bos_token_id + 1,
                "<|im_end|>": text.eos_token_id, "<image>": config.image_token_index}
    tokenizer, _ = substitute_lm_tokenizer(
        vocab_size=text.vocab_size, specials=specials, eos="<|im_end|>", chat_template=_CHATML,
        model_max_length=text.max_position_embeddings,
    )
    processor = LlavaProcessor(image_processor=llava_image_processor(config), tokenizer=tokenizer,
                               chat_template=_CHATML, **processor_kwargs(config))
    processor.save_pretrained(out_dir)


class LlavaGenerate(ImageTextGenerate):
    torch_class = "LlavaForConditionalGeneration"


class LlavaFamily(Family):
    name = "llava"
    description = "LLaVA vision-language models: text from images and a prompt (several images per prompt)"
    model_types = ("llava",)
    synthetic_class = "LlavaForConditionalGeneration"
    checkpoints = {
        "llava-hf/llava-interleave-qwen-0.5b-hf": Checkpoint(
            model_id="llava-hf/llava-interleave-qwen-0.5b-hf", config=_interleave_qwen_05b,
            build_processor=_interleave_processor,
            processor_source="GPT-2 byte-level BPE standing in for Qwen's vocabulary (ids differ), "
                             "with Qwen's special-token ids; SiglipImageProcessor (384 px, mean/std 0.5)",
        ),
    }
    default_checkpoint = "llava-hf/llava-interleave-qwen-0.5b-hf"
    tasks = {"generate": LlavaGenerate}
    default_task = "generate"
