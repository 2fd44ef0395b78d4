"""VideoMAE: embed-video on a tiny synthetic model and an ffmpeg-made video."""

from __future__ import annotations

import numpy as np
import pytest

import ipfs_accelerate as ia
from tests.fixtures.models import cosine
from tests.fixtures.vision import gradient_image

VIDEOMAE = "MCG-NJU/videomae-base"
FRAMES = 4  # the tiny config's num_frames


def test_embed_a_video_file(load_tiny, test_video_path):
    res = load_tiny(VIDEOMAE)(test_video_path)
    (vector,) = res.outputs
    assert vector.shape == (32,) and vector.dtype == np.float32  # the tiny hidden size
    p = res.provenance
    assert (p.family, p.task, p.weights) == ("videomae", "embed-video", "synthetic")
    assert res.timings["frames"] == FRAMES and res.timings["ms_per_frame"] > 0
    assert {"preprocess_s", "inference_s", "total_s", "items_per_s"} <= set(res.timings)


def test_batch_equals_one_by_one_and_normalize(load_tiny, test_video_path):
    ep = load_tiny(VIDEOMAE)
    frames = [gradient_image(64, 48).rotate(10 * t) for t in range(8)]
    videos = [test_video_path, frames, np.stack([np.asarray(f) for f in frames])]
    batch = ep(videos)
    assert batch.timings["frames"] == 3 * FRAMES
    for video, vector in zip(videos, batch.outputs, strict=True):
        np.testing.assert_allclose(ep(video).outputs[0], vector, atol=1e-5)
    np.testing.assert_allclose(batch.outputs[1], batch.outputs[2], atol=1e-5)  # list == array
    unit = ep(test_video_path, normalize=True).outputs[0]
    assert np.linalg.norm(unit) == pytest.approx(1.0, abs=1e-5)
    assert cosine(unit, batch.outputs[0]) == pytest.approx(1.0, abs=1e-6)


def test_frames_one_or_three_pixels_high_are_read_channels_last(load_tiny):
    ep = load_tiny(VIDEOMAE)
    shapes = [(3, 3), (1, 40), (3, 17), (16, 16)]  # (height, width) of FRAMES uniform frames
    vectors = ep([np.full((FRAMES, h, w, 3), 120, np.uint8) for h, w in shapes]).outputs
    for vector in vectors[:-1]:
        np.testing.assert_allclose(vector, vectors[-1], atol=1e-6)


def test_bad_videos_are_invalid_input(load_tiny, tmp_path, test_images):
    ep = load_tiny(VIDEOMAE)
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    for source, message in [
        (text, "video #0: .*not a readable video"),
        (test_images, "video #0: video frames must all have the same size"),
        ([], "empty batch"),
        (b"\x00garbage" * 40, "video #0: video data is not a readable video"),
        ([gradient_image(32, 32), b"corrupt"], "video #0: frame 1: image data is not a recognised image"),
        (np.zeros((32, 24, 3), np.uint8), r"video #0: a video array shaped \(32, 24, 3\) reads as 32 grey frames "
                                          r"3 pixels wide, or is one RGB image: .*\(1, 32, 24, 3\)"),
    ]:
        with pytest.raises(ia.InvalidInput, match=message):
            ep(source)
    with pytest.raises(ia.InvalidInput, match="normalize"):
        ep(test_images[0:1], normalize="yes")
