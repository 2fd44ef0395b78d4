"""CLIP: zero-shot classify, image and text embeddings, on a tiny synthetic model."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import ipfs_accelerate as ia
from ipfs_accelerate.families._clip_vocab import CLIP_BPE_PATH
from tests.fixtures.clip_simple_tokenizer import SimpleTokenizer
from tests.fixtures.models import cosine
from tests.fixtures.vision import gradient_image

CLIP = "openai/clip-vit-base-patch32"
LABELS = ["a cat", "a dog", "a car"]


def png_bytes(image: Image.Image, **save: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", **save)
    return buffer.getvalue()


def test_classify_scores_are_probabilities_over_the_labels(load_tiny, test_images):
    ep = load_tiny(CLIP, "classify")
    res = ep(test_images, labels=LABELS)
    assert len(res.outputs) == 2
    for ranked in res.outputs:
        assert [r["label"] for r in ranked] != [] and {r["label"] for r in ranked} == set(LABELS)
        scores = [r["score"] for r in ranked]
        assert scores == sorted(scores, reverse=True)
        assert all(0.0 <= s <= 1.0 for s in scores)
        assert sum(scores) == pytest.approx(1.0, abs=1e-5)
    p = res.provenance
    assert (p.family, p.task, p.backend, p.weights) == ("clip", "classify", "torch", "synthetic")
    assert res.timings["items"] == 2 and res.timings["items_per_s"] > 0


def test_classify_batch_equals_one_by_one_and_per_item_labels(load_tiny, test_images):
    ep = load_tiny(CLIP, "classify")
    batch = ep(test_images, labels=LABELS).outputs
    for image, ranked in zip(test_images, batch, strict=True):
        single = ep(image, labels=LABELS).outputs[0]
        assert [r["label"] for r in single] == [r["label"] for r in ranked]
        np.testing.assert_allclose([r["score"] for r in single], [r["score"] for r in ranked], atol=1e-5)
    # An item's own labels win over labels=; scores are over that item's labels only.
    mixed = ep([{"image": test_images[0], "labels": ["x", "y"]}, test_images[1]], labels=LABELS).outputs
    assert {r["label"] for r in mixed[0]} == {"x", "y"}
    assert sum(r["score"] for r in mixed[0]) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(sorted(r["score"] for r in mixed[1]), sorted(r["score"] for r in batch[1]), atol=1e-5)


def test_template_changes_the_prompts(load_tiny, test_image):
    ep = load_tiny(CLIP, "classify")
    plain = ep(test_image, labels=LABELS, template="{}").outputs[0]
    photo = ep(test_image, labels=LABELS).outputs[0]
    assert [r["score"] for r in plain] != [r["score"] for r in photo]


def test_tokenizer_ids_equal_the_real_clip_through_the_endpoint(load_tiny):
    tokenizer = load_tiny(CLIP, "classify").handler.tokenizer
    reference = SimpleTokenizer(str(CLIP_BPE_PATH))
    for text in ["a photo of a cat", "Hello, World!! It's 2024.", "naïve café — über"]:
        assert tokenizer(text)["input_ids"] == [49406, *reference.encode(text), 49407]


def test_embeddings_share_one_space_and_are_unit_length(load_tiny, test_images):
    images = load_tiny(CLIP, "embed-image")(test_images)
    texts = load_tiny(CLIP, "embed-text")(["a photo of a cat", "a diagram"])
    for res in (images, texts):
        assert len(res.outputs) == 2
        assert all(v.shape == (16,) and v.dtype == np.float32 for v in res.outputs)  # projection_dim
        assert all(np.linalg.norm(v) == pytest.approx(1.0, abs=1e-5) for v in res.outputs)
    raw = load_tiny(CLIP, "embed-image")(test_images[0], normalize=False).outputs[0]
    assert np.linalg.norm(raw) != pytest.approx(1.0, abs=1e-3)
    assert cosine(raw, images.outputs[0]) == pytest.approx(1.0, abs=1e-5)


def test_embed_tasks_declare_their_entry_points(load_tiny):
    for task, entry, output, keys in [
        ("embed-image", "get_image_features", "image_embeds", {"pixel_values"}),
        ("embed-text", "get_text_features", "text_embeds", {"input_ids", "attention_mask"}),
    ]:
        spec = load_tiny(CLIP, task).handler.model_spec()
        assert spec.entry == entry and spec.output_names == (output,)
        assert set(spec.example_inputs()) == keys  # exactly the method's keyword arguments


def test_long_text_is_truncated_with_a_note(load_tiny):
    ep = load_tiny(CLIP, "embed-text")
    res = ep("word " * 100)
    assert any("truncated" in note for note in res.provenance.notes)
    with pytest.raises(ia.InvalidInput, match="longer than the model's window"):
        ep("word " * 100, truncate=False)


def test_every_image_source_gives_the_same_vector(load_tiny, tmp_path: Path):
    ep = load_tiny(CLIP, "embed-image")
    image = gradient_image(48, 40)
    path = tmp_path / "x.png"
    image.save(path)
    sources = [image, np.asarray(image), png_bytes(image), str(path), path]
    vectors = ep(sources).outputs
    for vector in vectors[1:]:
        np.testing.assert_allclose(vector, vectors[0], atol=1e-5)


def test_exif_rgba_greyscale_and_huge_images(load_tiny):
    ep = load_tiny(CLIP, "embed-image")
    image = gradient_image(48, 32)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° clockwise to display
    rotated = png_bytes(image, exif=exif.tobytes())
    upright = image.transpose(Image.Transpose.ROTATE_270)
    np.testing.assert_allclose(ep(rotated).outputs[0], ep(upright).outputs[0], atol=1e-5)
    rgba = image.convert("RGBA")
    grey = image.convert("L")
    huge = Image.new("RGB", (6000, 30), (200, 10, 10))  # shrunk to 4096 px on the way in
    assert len(ep([rgba, grey, huge]).outputs) == 3


def test_images_one_or_three_pixels_high_or_wide_are_read_channels_last(load_tiny):
    # transformers guesses the channel axis from the shape and took (3, 40, 3) as channels first
    ep = load_tiny(CLIP, "embed-image")
    colour = (200, 30, 90)
    sizes = [(1, 1), (40, 3), (3, 40), (1, 40), (64, 48)]  # (width, height)
    vectors = ep([Image.new("RGB", size, colour) for size in sizes]).outputs
    for vector in vectors[:-1]:  # one colour at any size resizes to the same pixels
        np.testing.assert_allclose(vector, vectors[-1], atol=1e-6)


def _truncated_png() -> bytes:
    data = png_bytes(gradient_image(64, 64))
    return data[: len(data) // 2]


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"not an image at all", r"image #0: image data is not a recognised image format"),
        (_truncated_png(), r"image #0: image data is corrupt or truncated"),
        (np.zeros((0, 0, 3), dtype=np.uint8), r"image #0: image array is empty: 0x0"),
        (b"", r"image #0: image data is empty"),
        ("/no/such/image.png", r"image #0: image file not found"),
        (3.5, r"image #0: unsupported image source"),
    ],
)
def test_bad_images_are_invalid_input(load_tiny, source, message):
    for task, params in [("embed-image", {}), ("classify", {"labels": LABELS})]:
        with pytest.raises(ia.InvalidInput, match=message):
            load_tiny(CLIP, task)(source, **params)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "has no labels"),
        ({"labels": []}, "labels is empty"),
        ({"labels": "a cat"}, "labels must be a list"),
        ({"labels": ["a", "a"]}, "labels must be distinct"),
        ({"labels": ["a", ""]}, "label #1 must be a non-empty string"),
        ({"labels": ["a", 3]}, "label #1 must be a non-empty string"),
        ({"labels": LABELS, "template": "a photo"}, "template must be a string with"),
        ({"labels": LABELS, "top_k": 2}, "unknown parameter"),
    ],
)
def test_bad_classify_params_are_invalid_input(load_tiny, test_image, params, message):
    with pytest.raises(ia.InvalidInput, match=message):
        load_tiny(CLIP, "classify")(test_image, **params)


def test_bad_item_dict_is_invalid_input(load_tiny, test_image):
    with pytest.raises(ia.InvalidInput, match="a dict item takes the keys 'image' and 'labels'"):
        load_tiny(CLIP, "classify")({"img": test_image, "labels": LABELS})
