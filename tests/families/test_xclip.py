"""X-CLIP: zero-shot video classification on a tiny synthetic model and ffmpeg-made videos."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import ipfs_accelerate as ia
from tests.fixtures.vision import gradient_image

XCLIP = "microsoft/xclip-base-patch32"
LABELS = ["playing sports", "cooking", "a test pattern"]
FRAMES = 4  # the tiny config's num_frames


@pytest.fixture(scope="module")
def empty_video(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An AVI with a video stream and no frames, made with ffmpeg."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    path = tmp_path_factory.mktemp("video") / "empty.avi"
    cmd = [ffmpeg, "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi",
           "-i", "testsrc=duration=1:size=64x48:rate=10", "-frames:v", "0", "-c:v", "mpeg4", str(path)]
    subprocess.run(cmd, check=True, capture_output=True, timeout=60)
    return path


def test_classify_a_video_file(load_tiny, test_video_path):
    res = load_tiny(XCLIP)(test_video_path, labels=LABELS)
    (ranked,) = res.outputs
    assert {r["label"] for r in ranked} == set(LABELS)
    scores = [r["score"] for r in ranked]
    assert scores == sorted(scores, reverse=True) and sum(scores) == pytest.approx(1.0, abs=1e-5)
    assert res.provenance.task == "classify" and res.provenance.family == "xclip"
    assert res.timings["frames"] == FRAMES
    assert res.timings["ms_per_frame"] == pytest.approx(1000 * res.timings["total_s"] / FRAMES)


def test_file_bytes_and_frame_list_are_videos_too(load_tiny, test_video_path):
    ep = load_tiny(XCLIP)
    from_path = ep(test_video_path, labels=LABELS).outputs[0]
    from_bytes = ep(test_video_path.read_bytes(), labels=LABELS).outputs[0]
    assert from_bytes == from_path
    frames = [gradient_image(64, 48) for _ in range(6)]
    one = ep(frames, labels=LABELS)  # a list of frames is one video
    assert len(one.outputs) == 1 and one.timings["frames"] == FRAMES
    two = ep([frames, str(test_video_path)], labels=LABELS)  # a list of videos
    assert len(two.outputs) == 2 and two.timings["frames"] == 2 * FRAMES
    assert [r["label"] for r in two.outputs[1]] == [r["label"] for r in from_path]


def test_short_frame_list_is_repeated_with_a_note(load_tiny):
    res = load_tiny(XCLIP)([gradient_image(32, 32), gradient_image(32, 32)], labels=LABELS)
    assert any("frames were repeated" in note for note in res.provenance.notes)


def test_per_video_labels(load_tiny, test_video_path):
    res = load_tiny(XCLIP)([{"video": test_video_path, "labels": ["a", "b"]}])
    assert {r["label"] for r in res.outputs[0]} == {"a", "b"}


def test_bad_videos_are_invalid_input(load_tiny, tmp_path, empty_video, test_images):
    ep = load_tiny(XCLIP)
    text = tmp_path / "notes.txt"
    text.write_text("not a video")
    still = tmp_path / "still.png"
    gradient_image(32, 32).save(still)
    cases = [
        (empty_video, "video #0: .*has no video frames"),
        (text, "video #0: .*not a readable video"),
        (still, "video #0: .*is a still image"),
        (test_images, "video #0: video frames must all have the same size"),
        (tmp_path / "missing.mp4", "video #0: video file not found"),
        (np.zeros((3, 0, 0, 3), dtype=np.uint8), "video #0: frame 0: image array is empty"),
    ]
    for source, message in cases:
        with pytest.raises(ia.InvalidInput, match=message):
            ep(source, labels=LABELS)
    with pytest.raises(ia.InvalidInput, match="has no labels"):
        ep(still)
