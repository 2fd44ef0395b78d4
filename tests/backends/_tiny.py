"""Recipes of tiny models for the export-backend tests, and the comparisons they use.

Each model is built from a transformers config with a few small layers and random (seeded)
weights; inputs are built by hand, so no tokenizer or processor is needed.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from typing import Any


def _small(**extra: Any) -> dict[str, Any]:
    return {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64} | extra


def _ids(batch: int, length: int, *, vocab: int = 100, pad_from: int | None = None, left: bool = False) -> dict[str, Any]:
    """Token ids with an attention mask; the last item padded (right, or left for generation)."""
    import torch

    gen = torch.Generator().manual_seed(1234 + batch * 31 + length)
    ids = torch.randint(3, vocab, (batch, length), generator=gen)
    mask = torch.ones_like(ids)
    if pad_from is not None:
        if left:
            mask[-1, : length - pad_from] = 0
            ids[-1, : length - pad_from] = 1
        else:
            mask[-1, pad_from:] = 0
            ids[-1, pad_from:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def _randn(*shape: int, seed: int = 7) -> Any:
    import torch

    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@dataclasses.dataclass(frozen=True)
class Tiny:
    """A tiny model's recipe: how to build it and what a family would ask for."""

    build: Callable[[], Any]
    kind: str
    torch_class: str
    inputs: Callable[[], Mapping[str, Any]]
    generates: bool = False
    fp16_safe: bool = True
    output_names: tuple[str, ...] = ()
    entry: str | None = None
    weights_of: str | None = None  # reuse another recipe's directory (one model, several entry points)


def _build_bert() -> Any:
    import transformers as T

    return T.BertModel(T.BertConfig(vocab_size=100, max_position_embeddings=64, **_small()))


def _build_bert_mlm() -> Any:
    import transformers as T

    return T.BertForMaskedLM(T.BertConfig(vocab_size=100, max_position_embeddings=64, **_small()))


def _build_gpt2() -> Any:
    import transformers as T

    return T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_positions=64, n_embd=32, n_layer=2, n_head=2,
                                          bos_token_id=2, eos_token_id=2))


def _build_opt() -> Any:
    import transformers as T

    return T.OPTForCausalLM(T.OPTConfig(vocab_size=100, max_position_embeddings=64, hidden_size=32,
                                        num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,
                                        word_embed_proj_dim=32, pad_token_id=1, bos_token_id=2, eos_token_id=2))


def _build_llama() -> Any:
    import transformers as T

    return T.LlamaForCausalLM(T.LlamaConfig(vocab_size=100, max_position_embeddings=64, num_key_value_heads=1,
                                            pad_token_id=1, bos_token_id=2, eos_token_id=2, **_small()))


def _build_t5() -> Any:
    import transformers as T

    return T.T5ForConditionalGeneration(T.T5Config(vocab_size=100, d_model=32, d_ff=64, d_kv=16, num_layers=2,
                                                   num_heads=2, decoder_start_token_id=0, pad_token_id=0,
                                                   eos_token_id=1))


def _build_whisper() -> Any:
    import transformers as T

    # Whisper always reads 30 s of audio: 3000 mel frames, so 1500 encoder positions.
    model = T.WhisperForConditionalGeneration(T.WhisperConfig(
        vocab_size=120, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=64, decoder_start_token_id=100,
        eos_token_id=101, pad_token_id=101, bos_token_id=101, begin_suppress_tokens=None, suppress_tokens=None,
    ))
    # The special tokens Whisper's generate needs for language, task and timestamps
    # (timestamp tokens are the ids after no_timestamps_token_id).
    config = model.generation_config
    config.lang_to_id, config.task_to_id = {"<|en|>": 102, "<|fr|>": 103}, {"transcribe": 104, "translate": 105}
    config.no_timestamps_token_id, config.is_multilingual, config.max_initial_timestamp_index = 106, True, 5
    config._from_model_config = False  # else loading rebuilds it from the model config
    return model


def _build_wav2vec2() -> Any:
    import transformers as T

    return T.Wav2Vec2ForCTC(T.Wav2Vec2Config(
        vocab_size=32, conv_dim=(32, 32), conv_stride=(5, 4), conv_kernel=(10, 8), num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, **_small(),
    ))


def _build_clip() -> Any:
    import transformers as T

    return T.CLIPModel(T.CLIPConfig(
        text_config=_small(vocab_size=100, max_position_embeddings=32),
        vision_config=_small(image_size=32, patch_size=8), projection_dim=16,
    ))


def _build_clap() -> Any:
    import transformers as T

    return T.ClapModel(T.ClapConfig(
        text_config=_small(vocab_size=100, max_position_embeddings=40),
        audio_config={"spec_size": 256, "num_mel_bins": 64, "patch_size": 4, "window_size": 8, "hidden_size": 32,
                      "patch_embeds_hidden_size": 16, "depths": [1, 1], "num_attention_heads": [2, 2]},
        projection_dim=16,
    ))


def _build_xclip() -> Any:
    import transformers as T

    return T.XCLIPModel(T.XCLIPConfig(
        text_config=_small(vocab_size=100, max_position_embeddings=32),
        vision_config=_small(image_size=32, patch_size=8, num_frames=4, mit_hidden_size=32,
                             mit_intermediate_size=64, mit_num_hidden_layers=1, mit_num_attention_heads=2),
        projection_dim=32, prompt_layers=1, prompt_attention_heads=2, prompt_num_attention_heads=2,
    ))


def _build_videomae() -> Any:
    import transformers as T

    return T.VideoMAEModel(T.VideoMAEConfig(image_size=32, patch_size=8, num_frames=4, tubelet_size=2, **_small()))


_VISION = {"model_type": "clip_vision_model", "image_size": 32, "patch_size": 8, "projection_dim": 16} | _small()
_TEXT = {"model_type": "llama", "vocab_size": 200, "max_position_embeddings": 128, "num_key_value_heads": 2,
         "pad_token_id": 1, "bos_token_id": 2, "eos_token_id": 3} | _small()
IMAGE_TOKEN = 150


def _build_llava() -> Any:
    import transformers as T

    # image_seq_length = the 16 patches of a 32×32 image: optimum-intel compares it with the
    # count of image tokens to tell expanded prompts from legacy ones.
    return T.LlavaForConditionalGeneration(T.LlavaConfig(
        vision_config=_VISION, text_config=_TEXT, image_token_index=IMAGE_TOKEN, vision_feature_layer=-1,
        vision_feature_select_strategy="default", image_seq_length=16,
    ))


def _build_llava_next(vision_feature_layer: int | list[int] = -1) -> Any:
    import transformers as T

    return T.LlavaNextForConditionalGeneration(T.LlavaNextConfig(
        vision_config=_VISION, text_config=_TEXT, image_token_index=IMAGE_TOKEN,
        vision_feature_layer=vision_feature_layer,
        image_seq_length=16, image_grid_pinpoints=[[32, 32], [32, 64], [64, 32]],
    ))


def _build_llava_next_stacked() -> Any:
    # Several vision layers concatenated before the projector (as granite-vision does):
    # optimum-intel's exporter needs a fix for the list.
    return _build_llava_next([-2, -1])


def _llava_inputs() -> dict[str, Any]:
    import torch

    text = torch.randint(4, 100, (1, 5), generator=torch.Generator().manual_seed(5))
    ids = torch.cat([torch.tensor([[2]]), torch.full((1, 16), IMAGE_TOKEN), text], 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": _randn(1, 3, 32, 32)}


def _llava_next_inputs() -> dict[str, Any]:
    import torch

    # One 32×32 image: the base view plus one 32×32 tile of the best grid (2 views); its
    # features are 16 + 16 tokens plus one image-newline token per row of the tile (4).
    pixel_values, sizes, n_image_tokens = _randn(1, 2, 3, 32, 32), torch.tensor([[32, 32]]), 36
    text = torch.randint(4, 100, (1, 5), generator=torch.Generator().manual_seed(5))
    ids = torch.cat([torch.tensor([[2]]), torch.full((1, n_image_tokens), IMAGE_TOKEN), text], 1)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "pixel_values": pixel_values,
            "image_sizes": sizes}


RECIPES: dict[str, Tiny] = {
    "bert": Tiny(_build_bert, "feature-extraction", "AutoModel", lambda: _ids(2, 12, pad_from=8),
                 output_names=("last_hidden_state",)),
    "bert-mlm": Tiny(_build_bert_mlm, "fill-mask", "AutoModelForMaskedLM", lambda: _ids(2, 12, pad_from=8),
                     output_names=("logits",)),
    "gpt2": Tiny(_build_gpt2, "text-generation", "AutoModelForCausalLM",
                 lambda: _ids(2, 10, pad_from=6, left=True), generates=True),
    "opt": Tiny(_build_opt, "text-generation", "AutoModelForCausalLM",
                lambda: _ids(2, 10, pad_from=6, left=True), generates=True),
    "llama": Tiny(_build_llama, "text-generation", "AutoModelForCausalLM",
                  lambda: _ids(2, 10, pad_from=6, left=True), generates=True),
    "t5": Tiny(_build_t5, "text2text-generation", "AutoModelForSeq2SeqLM", lambda: _ids(2, 10, pad_from=6),
               generates=True, fp16_safe=False),
    "whisper": Tiny(_build_whisper, "automatic-speech-recognition", "AutoModelForSpeechSeq2Seq",
                    lambda: {"input_features": _randn(2, 80, 3000)}, generates=True),
    "wav2vec2": Tiny(_build_wav2vec2, "ctc", "AutoModelForCTC", lambda: {"input_values": _randn(2, 4000)},
                     output_names=("logits",)),
    "clip-text": Tiny(_build_clip, "zero-shot-image-classification", "CLIPModel", lambda: _ids(3, 7, pad_from=5),
                      output_names=("text_embeds",), entry="get_text_features"),
    "clip-image": Tiny(_build_clip, "zero-shot-image-classification", "CLIPModel",
                       lambda: {"pixel_values": _randn(2, 3, 32, 32)}, output_names=("image_embeds",),
                       entry="get_image_features", weights_of="clip-text"),
    "clip": Tiny(_build_clip, "zero-shot-image-classification", "CLIPModel",
                 lambda: _ids(3, 7, pad_from=5) | {"pixel_values": _randn(2, 3, 32, 32)},
                 output_names=("logits_per_image", "text_embeds", "image_embeds"), weights_of="clip-text"),
    "clap-text": Tiny(_build_clap, "zero-shot-audio-classification", "ClapModel", lambda: _ids(2, 9, pad_from=6),
                      output_names=("text_embeds",), entry="get_text_features"),
    "clap-audio": Tiny(_build_clap, "zero-shot-audio-classification", "ClapModel",
                       lambda: {"input_features": _randn(2, 1, 1001, 64)}, output_names=("audio_embeds",),
                       entry="get_audio_features", weights_of="clap-text"),
    "xclip": Tiny(_build_xclip, "zero-shot-video-classification", "XCLIPModel",
                  lambda: _ids(3, 7, pad_from=5) | {"pixel_values": _randn(2, 4, 3, 32, 32)},
                  output_names=("logits_per_video", "text_embeds", "video_embeds")),
    "videomae": Tiny(_build_videomae, "feature-extraction", "VideoMAEModel",
                     lambda: {"pixel_values": _randn(2, 4, 3, 32, 32)}, output_names=("last_hidden_state",)),
    "llava": Tiny(_build_llava, "image-text-to-text", "LlavaForConditionalGeneration", _llava_inputs,
                  generates=True),
    "llava-next": Tiny(_build_llava_next, "image-text-to-text", "LlavaNextForConditionalGeneration",
                       _llava_next_inputs, generates=True),
    "llava-next-stacked": Tiny(_build_llava_next_stacked, "image-text-to-text", "LlavaNextForConditionalGeneration",
                               _llava_next_inputs, generates=True),
}


def outputs_of(runtime: Any, spec: Any, inputs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run a runtime on the spec's example inputs; the named outputs as float tensors."""
    import torch

    prepared = runtime.prepare(dict(inputs if inputs is not None else spec.example_inputs()))
    with torch.no_grad():
        out = runtime.model(**prepared)
    names = spec.output_names or ("logits",)
    return {name: torch.as_tensor(getattr(out, name)).float() for name in names}


def min_cosine(reference: Mapping[str, Any], candidate: Mapping[str, Any], mask: Any = None) -> float:
    """The worst per-item cosine over the named outputs (padded positions left out)."""
    import torch

    worst = 1.0
    for name, ref in reference.items():
        cand = candidate[name]
        assert tuple(cand.shape) == tuple(ref.shape), f"{name}: {tuple(cand.shape)} != {tuple(ref.shape)}"
        if mask is not None and ref.dim() >= 2 and tuple(ref.shape[:2]) == tuple(mask.shape):
            weight = mask.to(ref.dtype).reshape(*mask.shape, *([1] * (ref.dim() - 2)))
            ref, cand = ref * weight, cand * weight
        a, b = ref.reshape(ref.shape[0], -1).double(), cand.reshape(cand.shape[0], -1).double()
        worst = min(worst, float(torch.nn.functional.cosine_similarity(a, b, dim=1).min()))
    return worst


def cosine_to_reference(reference: Any, runtime: Any, spec: Any) -> float:
    """The worst cosine of ``runtime`` against ``reference`` on the spec's example inputs: the
    first generated token's logits for a generator, else the named outputs (padding left out)."""
    if spec.generates:
        return min_cosine(first_step_logits(reference, spec), first_step_logits(runtime, spec))
    mask = spec.example_inputs().get("attention_mask")
    return min_cosine(outputs_of(reference, spec), outputs_of(runtime, spec), mask)


def greedy(runtime: Any, spec: Any, max_new_tokens: int = 8) -> list[list[int]]:
    """Greedy tokens from ``generate`` (no early stop, so every backend makes the same count)."""
    import torch

    inputs = runtime.prepare(dict(spec.example_inputs()))
    with torch.no_grad():
        out = runtime.model.generate(**inputs, max_new_tokens=max_new_tokens, min_new_tokens=max_new_tokens,
                                     do_sample=False)
    return out.tolist()


def first_step_logits(runtime: Any, spec: Any) -> dict[str, Any]:
    """The logits of the first generated token, as ``generate`` computes them."""
    import torch

    inputs = runtime.prepare(dict(spec.example_inputs()))
    with torch.no_grad():
        out = runtime.model.generate(**inputs, max_new_tokens=1, min_new_tokens=1, do_sample=False,
                                     output_logits=True, return_dict_in_generate=True)
    return {"first_step_logits": out.logits[0].float()}


def decoder_step_lengths(runtime: Any, spec: Any) -> tuple[list[list[int]], list[int]]:
    """Greedy tokens, and how many tokens the decoder was fed at each step.

    With a KV cache every step after the first feeds one new token; without one each step
    would re-run the whole sequence. The decoder part of an encoder-decoder is watched
    (its parent may pass the whole sequence and cut it itself).
    """
    model = runtime.model
    target = getattr(model, "decoder", None)
    if target is None or not callable(getattr(target, "forward", None)):
        target = model
    original = target.forward
    lengths: list[int] = []

    @functools.wraps(original)  # generate() checks its keyword arguments against forward's signature
    def spy(*args: Any, **kwargs: Any) -> Any:
        ids = kwargs.get("decoder_input_ids", kwargs.get("input_ids"))
        if ids is None and args:
            ids = args[0]
        if ids is not None:
            lengths.append(int(ids.shape[-1]))
        return original(*args, **kwargs)

    vars(target)["forward"] = spy  # bypasses nn.Module.__setattr__ on wrappers that skip its __init__
    try:
        tokens = greedy(runtime, spec)
    finally:
        del vars(target)["forward"]
    return tokens, lengths


def ragged_ids(lengths: tuple[int, ...], *, vocab: int = 100) -> dict[str, Any]:
    """Right-padded token ids whose rows hold ``lengths`` real tokens (the longest sets the width)."""
    import torch

    width = max(lengths)
    ids = torch.randint(3, vocab, (len(lengths), width), generator=torch.Generator().manual_seed(99))
    mask = (torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]).to(torch.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def unpadded_bert() -> Any:
    """The sentence-embedding families' forward rewrite, as a family puts it on its spec."""
    from ipfs_accelerate.backends.base import ForwardRewrite
    from ipfs_accelerate.families._unpadded import UNPADDED_BERT, unpadded_bert_encoder

    return ForwardRewrite(name=UNPADDED_BERT, build=unpadded_bert_encoder)


def assert_unpadded_matches(reference: Any, candidate: Any, mask: Any, *, atol: float) -> None:
    """Real positions equal the reference's within ``atol``; padded positions are zero."""
    real = mask.bool()
    assert tuple(candidate.shape) == tuple(reference.shape)
    assert float((candidate - reference)[real].abs().max()) <= atol
    assert not candidate[~real].any()


def check_unpadded_bert_export(load: Callable[[Any], Any], tiny_spec: Any, torch_runtime: Any, route: str) -> None:
    """A backend converts the unpadded BERT forward as its own export (``route``, the rewrite
    named in the reason, another cache entry than plain BERT's) and gives transformers'
    outputs on the real positions of a batch unlike the traced example (zeros elsewhere)."""
    spec = tiny_spec("bert", forward_rewrite=unpadded_bert())
    runtime = load(spec)
    assert runtime.details["export_route"] == route
    assert spec.forward_rewrite.name in runtime.details["direct_conversion_reason"]
    assert runtime.details["export_dir"] != load(tiny_spec("bert")).details["export_dir"]
    inputs = ragged_ids((12, 7, 3, 1))  # another batch size and width than the traced example
    reference = outputs_of(torch_runtime(spec), spec, inputs)["last_hidden_state"]
    candidate = outputs_of(runtime, spec, inputs)["last_hidden_state"]
    assert_unpadded_matches(reference, candidate, inputs["attention_mask"], atol=1e-4)
