"""LLaVA-Next (LLaVA-1.6): ``generate`` from several images and a prompt, through the chat template.

LLaVA-Next tiles each image at the best of its ``image_grid_pinpoints`` resolutions
("any-res"), so one prompt can hold several images of different shapes. The default
checkpoint is the smallest public ``llava_next`` one we found, IBM's granite-vision-3.2-2b
(Granite-3.1-2B language model + SigLIP-so400m tower, about 3 B parameters); the llava-hf
LLaVA-1.6 checkpoints start at 7 B, too big for the benchmark machine as synthetic weights.

No package ships Granite's or Vicuna's vocabulary, so a synthetic model's tokenizer is the
real GPT-2 byte-level BPE cut to the model's vocabulary, with the image token at the id its
config names (see ``_vision.substitute_lm_tokenizer``); other ids differ from the real ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ._vision import ImageTextGenerate, saved_config, substitute_lm_tokenizer
from .base import Checkpoint, Family
from .llava import llava_image_processor, processor_kwargs

__all__ = ["LlavaNextFamily"]

# Granite's chat format, as the transformers Granite Vision page shows it:
# "<|user|>\n...\n<|assistant|>\n...<|end_of_text|>"; the images of a turn come first.
_GRANITE_CHAT = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' }}"
    "{% for c in message['content'] if c['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] + '\n' }}{% endfor %}"
    "{% if message['role'] == 'assistant' %}{{ '<|end_of_text|>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}"
)

# Vicuna-1.5's "USER: ... ASSISTANT:" format that llava-v1.6-vicuna was trained with.
_VICUNA_CHAT = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ 'USER: ' }}{% else %}"
    "{{ 'ASSISTANT: ' }}{% endif %}"
    "{% for c in message['content'] if c['type'] == 'image' %}{{ '<image>\n' }}{% endfor %}"
    "{% for c in message['content'] if c['type'] == 'text' %}{{ c['text'] }}{% endfor %}"
    "{% if message['role'] == 'user' %}{{ ' ' }}{% else %}{{ '</s>' }}{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
)


def _granite_vision_2b() -> Any:
    from transformers import LlavaNextConfig

    # ibm-granite/granite-vision-3.2-2b (model_type llava_next). Sources and how sure:
    # - image_token_index 49155, vision_feature_layer [-24, -20, -12, -1], the SigLIP tower
    #   (27 layers, 1152 wide, ffn 4304, 16 heads, patch 14, 384 px) and the text width 2048:
    #   config.json excerpts quoted in public test suites that parse the checkpoint.
    # - Granite-3.1-2B text model: 40 layers, 32 heads / 8 kv heads, embedding_multiplier 12,
    #   residual_multiplier 0.22, logits_scaling 8: a public GGUF conversion's model card.
    # - NOT verified against config.json (from memory of Granite-3.1-2B): vocab 49156 (49155
    #   + the image token), ffn 8192, attention_multiplier 1/64, rope_theta 5e6, 131072
    #   positions, and image_grid_pinpoints = every grid of 384-px tiles with at most 10 tiles.
    pinpoints = [[384 * rows, 384 * cols] for rows in range(1, 11) for cols in range(1, 11) if rows * cols <= 10]
    return LlavaNextConfig(
        text_config={
            "model_type": "granite", "vocab_size": 49156, "hidden_size": 2048, "intermediate_size": 8192,
            "num_hidden_layers": 40, "num_attention_heads": 32, "num_key_value_heads": 8,
            "max_position_embeddings": 131072, "rope_theta": 5000000.0, "rms_norm_eps": 1e-05,
            "embedding_multiplier": 12.0, "residual_multiplier": 0.22, "logits_scaling": 8.0,
            "attention_multiplier": 0.015625, "tie_word_embeddings": True,
            "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0,
        },
        vision_config={
            "model_type": "siglip_vision_model", "hidden_size": 1152, "intermediate_size": 4304,
            "num_hidden_layers": 27, "num_attention_heads": 16, "patch_size": 14, "image_size": 384,
            "hidden_act": "gelu_pytorch_tanh", "layer_norm_eps": 1e-06,
        },
        image_token_index=49155,
        image_grid_pinpoints=pinpoints,
        vision_feature_layer=[-24, -20, -12, -1],
        vision_feature_select_strategy="full",
        projector_hidden_act="gelu",
        use_image_newline_parameter=True,
        tie_word_embeddings=True,
    )


def _vicuna_7b() -> Any:
    from transformers import LlavaNextConfig

    # llava-hf/llava-v1.6-vicuna-7b-hf, config.json at commit 78d9aecd (verified): Vicuna-7B
    # v1.5 (LlamaConfig's defaults are Llama-2-7B's sizes) + CLIP ViT-L/14 at 336 px.
    # 7 B parameters: as synthetic fp32 weights it needs ~28 GB, more than a small test machine has.
    return LlavaNextConfig(
        text_config={"model_type": "llama", "vocab_size": 32064, "max_position_embeddings": 4096,
                     "pad_token_id": 0, "rms_norm_eps": 1e-05},
        vision_config={"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                       "num_hidden_layers": 24, "num_attention_heads": 16, "patch_size": 14, "image_size": 336,
                       "projection_dim": 768},
        image_token_index=32000,
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]],
        vision_feature_layer=-2,
        vision_feature_select_strategy="default",
        projector_hidden_act="gelu",
        use_image_newline_parameter=True,
    )


def _save_processor(out_dir: Path, config: Any, tokenizer: Any, chat_template: str) -> None:
    from transformers import LlavaNextProcessor

    processor = LlavaNextProcessor(image_processor=llava_image_processor(config, anyres=True), tokenizer=tokenizer,
                                   chat_template=chat_template, **processor_kwargs(config))
    processor.save_pretrained(out_dir)


def _granite_processor(out_dir: Path) -> None:
    config = saved_config(out_dir) or _granite_vision_2b()
    text = config.text_config
    # Granite's own specials sit at ids 0.. where GPT-2 keeps its bytes, so they follow the
    # BPE instead; only the image token must sit where the config says.
    specials = {"<|end_of_text|>": None, "<|system|>": None, "<|user|>": None, "<|assistant|>": None,
                "<image>": config.image_token_index}
    tokenizer, _ = substitute_lm_tokenizer(
        vocab_size=text.vocab_size, specials=specials, eos="<|end_of_text|>", chat_template=_GRANITE_CHAT,
        model_max_length=text.max_position_embeddings,
    )
    _save_processor(out_dir, config, tokenizer, _GRANITE_CHAT)


def _vicuna_processor(out_dir: Path) -> None:
    config = saved_config(out_dir) or _vicuna_7b()
    text = config.text_config
    specials = {"</s>": None, "<image>": config.image_token_index}
    tokenizer, _ = substitute_lm_tokenizer(
        vocab_size=text.vocab_size, specials=specials, eos="</s>", chat_template=_VICUNA_CHAT,
        model_max_length=text.max_position_embeddings,
    )
    _save_processor(out_dir, config, tokenizer, _VICUNA_CHAT)


class LlavaNextGenerate(ImageTextGenerate):
    torch_class = "LlavaNextForConditionalGeneration"


_SOURCE = "GPT-2 byte-level BPE standing in for the checkpoint's vocabulary (ids differ), image token at the config's id"


class LlavaNextFamily(Family):
    name = "llava-next"
    description = "LLaVA-Next (1.6) vision-language models: text from several images and a prompt, any-res tiling"
    model_types = ("llava_next",)
    synthetic_class = "LlavaNextForConditionalGeneration"
    checkpoints = {
        "ibm-granite/granite-vision-3.2-2b": Checkpoint(
            model_id="ibm-granite/granite-vision-3.2-2b", config=_granite_vision_2b,
            build_processor=_granite_processor,
            processor_source=_SOURCE + "; LlavaNextImageProcessor (384 px tiles, mean/std 0.5)",
        ),
        "llava-hf/llava-v1.6-vicuna-7b-hf": Checkpoint(
            model_id="llava-hf/llava-v1.6-vicuna-7b-hf", config=_vicuna_7b, build_processor=_vicuna_processor,
            processor_source=_SOURCE + "; LlavaNextImageProcessor (336 px tiles, OpenAI CLIP mean/std)",
        ),
    }
    default_checkpoint = "ibm-granite/granite-vision-3.2-2b"
    tasks = {"generate": LlavaNextGenerate}
    default_task = "generate"
