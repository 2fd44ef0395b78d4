"""LLaVA-Next: generate from two images in one prompt, on a tiny synthetic model."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import ipfs_accelerate as ia

NEXT = "ibm-granite/granite-vision-3.2-2b"


def test_two_images_in_one_prompt(load_tiny, test_images):
    ep = load_tiny(NEXT)
    item = {"prompt": "What differs between these pictures?", "images": test_images}
    res = ep(item, max_new_tokens=5)
    assert len(res.outputs) == 1 and isinstance(res.outputs[0], str)
    assert res.timings["images"] == 2 and 0 < res.timings["new_tokens"] <= 5 and res.timings["tokens_per_s"] > 0
    assert res.provenance.family == "llava-next"
    assert ep(item, max_new_tokens=5).outputs == res.outputs
    # The images are tiled at their own aspect ratios: one (size, tiles) per image.
    prepared = ep.handler.preprocess([item], ep.handler.parse_params({}))
    assert prepared.inputs["image_sizes"].tolist() == [[48, 64], [56, 40]]
    assert prepared.inputs["pixel_values"].shape[0] == 2


def test_mixed_batch_and_streaming(load_tiny, test_images, test_image):
    ep = load_tiny(NEXT)
    items = [{"prompt": "Compare.", "images": test_images}, ("Describe.", np.asarray(test_image))]
    batch = ep(items, max_new_tokens=4)
    assert len(batch.outputs) == 2 and batch.timings["images"] == 3
    assert batch.outputs[1] == ep(items[1], max_new_tokens=4).outputs[0]
    assert "".join(ep.stream(items[0], max_new_tokens=4)).strip() == batch.outputs[0].strip()


def test_granite_chat_template(load_tiny, test_image):
    handler = load_tiny(NEXT).handler
    prepared = handler.preprocess([("Hi", test_image)], handler.parse_params({}))
    text = handler.tokenizer.decode(prepared.inputs["input_ids"][0])
    assert text.startswith("<|user|>\n<image>") and text.endswith("Hi\n<|assistant|>\n")


def test_bad_images_are_invalid_input(load_tiny, test_image):
    ep = load_tiny(NEXT)
    with pytest.raises(ia.InvalidInput, match=r"prompt #0, image 1: image array is empty: 0x0"):
        ep({"prompt": "Compare.", "images": [test_image, np.zeros((0, 0, 3), dtype=np.uint8)]})
    with pytest.raises(ia.InvalidInput, match=r"prompt #1: .*not a recognised image format"):
        ep([("ok", test_image), ("bad", b"\x89PNG garbage")])
    with pytest.raises(ia.InvalidInput, match="unsupported image source"):
        ep(("bad", Image))
