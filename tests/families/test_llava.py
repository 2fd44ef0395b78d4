"""LLaVA: generate from images and a prompt through the chat template, on a tiny synthetic model."""

from __future__ import annotations

import pytest

import ipfs_accelerate as ia
from tests.fixtures.vision import gradient_image

LLAVA = "llava-hf/llava-interleave-qwen-0.5b-hf"


def test_generate_is_deterministic_and_timed(load_tiny, test_image):
    ep = load_tiny(LLAVA)
    items = [{"prompt": "Describe the image.", "images": [test_image]}, ("What is this?", test_image)]
    a = ep(items, max_new_tokens=5)
    b = ep(items, max_new_tokens=5)
    assert a.outputs == b.outputs and all(isinstance(t, str) for t in a.outputs)
    t = a.timings
    assert 0 < t["new_tokens"] <= 10 and t["tokens_per_s"] > 0 and t["time_to_first_token_s"] > 0
    assert t["preprocess_s"] > 0 and t["inference_s"] > 0 and t["images"] == 2
    p = a.provenance
    assert (p.family, p.task, p.weights) == ("llava", "generate", "synthetic")


def test_batch_equals_prompts_one_by_one(load_tiny, test_images):
    ep = load_tiny(LLAVA)
    items = [("Describe the image.", test_images[0]), ("A longer question about this picture?", test_images[1])]
    batch = ep(items, max_new_tokens=5).outputs
    assert batch == [ep(item, max_new_tokens=5).outputs[0] for item in items]


def test_chat_template_places_the_images(load_tiny):
    handler = load_tiny(LLAVA).handler
    prepared = handler.preprocess([{"prompt": "Hi", "images": [gradient_image(32, 32)] * 2}],
                                  handler.parse_params({}))
    text = handler.tokenizer.decode(prepared.inputs["input_ids"][0])
    assert text.startswith("<|im_start|>user\n<image>") and text.endswith("Hi<|im_end|>\n<|im_start|>assistant\n")
    image_id = handler.config.image_token_index
    # 32 px / 8 px patches = 16 features per image (SigLIP has no class token): 2 images.
    assert int((prepared.inputs["input_ids"] == image_id).sum()) == 2 * 16
    assert tuple(prepared.inputs["pixel_values"].shape) == (2, 3, 32, 32)


def test_streaming_and_the_shared_controls(load_tiny, test_image):
    ep = load_tiny(LLAVA)
    item = ("Describe the image.", test_image)
    full = ep(item, max_new_tokens=6).outputs[0]
    assert "".join(ep.stream(item, max_new_tokens=6)).strip() == full.strip()
    kw = {"max_new_tokens": 6, "temperature": 1.5, "top_k": 50}
    assert ep(item, seed=3, **kw).outputs == ep(item, seed=3, **kw).outputs
    with pytest.raises(ia.InvalidInput, match="top_p"):
        ep(item, top_p=2.0)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("just a prompt", "must be .*'prompt'"),
        ({"prompt": "hi"}, "takes 'prompt' and one of 'images'"),
        ({"prompt": "", "images": [b"x"]}, "the prompt must be a non-empty string"),
        ({"prompt": "hi", "images": []}, "no images given"),
        ({"prompt": "see <image>", "image": b"x"}, "contains the image token"),
        (("hi", b"not an image"), r"prompt #0: image data is not a recognised image format"),
        (("hi", [gradient_image(8, 8), b""]), r"prompt #0, image 1: image data is empty"),
    ],
)
def test_bad_items_are_invalid_input(load_tiny, item, message):
    with pytest.raises(ia.InvalidInput, match=message):
        load_tiny(LLAVA)(item)


def test_images_one_or_three_pixels_high_are_read_channels_last(load_tiny):
    from PIL import Image

    ep = load_tiny(LLAVA)
    params = ep.parse_params({"max_new_tokens": 2})
    colour = (200, 30, 90)
    pixels = [ep.handler.preprocess([("What is this?", Image.new("RGB", size, colour))], params).inputs["pixel_values"]
              for size in [(1, 1), (40, 3), (32, 32)]]  # (width, height)
    for values in pixels[:-1]:  # one colour at any size resizes to the same pixels
        assert values.shape == pixels[-1].shape and float((values - pixels[-1]).abs().max()) < 1e-6
    assert ep(("What is this?", Image.new("RGB", (1, 1), colour)), max_new_tokens=2).outputs[0]
