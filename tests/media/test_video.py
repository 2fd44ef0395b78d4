"""Tests of ipfs_accelerate.media.video: sampling, every accepted source, every rejected one.

Most videos here are written with PyAV, one solid colour per frame that encodes the
frame's index, so a decoded frame tells which source frame it was.
"""

from __future__ import annotations

import io
import itertools
import shutil
import subprocess
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from ipfs_accelerate._exceptions import InvalidInput
from ipfs_accelerate.media import video as video_module
from ipfs_accelerate.media.video import VideoClip, load_video_frames, sample_indices
from tests.fixtures.vision import (
    TEST_VIDEO_FPS,
    TEST_VIDEO_FRAMES,
    TEST_VIDEO_SECONDS,
    TEST_VIDEO_SIZE,
    gradient_image,
)

SIZE = (64, 48)


def index_colour(index: int) -> tuple[int, int, int]:
    # Steps of 16 survive yuv420p and lossy coding (errors of a few levels); 256 indices.
    return ((index % 16) * 16 + 8, (index // 16) * 16 + 8, 128)


def frame_index(image: Image.Image) -> int:
    """The index a colour-coded frame was written with (read from its centre)."""
    array = np.asarray(image, dtype=np.float64)
    h, w = array.shape[:2]
    red, green = array[h // 2 - 4 : h // 2 + 4, w // 2 - 4 : w // 2 + 4, :2].mean(axis=(0, 1))
    return round((green - 8) / 16) * 16 + round((red - 8) / 16)


def write_video(
    path_or_none: Path | None,
    num_frames: int,
    *,
    fmt: str = "mp4",
    codec: str = "libx264",
    size: tuple[int, int] = SIZE,
    rotation: int | None = None,
) -> bytes:
    """Write a 10 fps video whose frame i is a solid index_colour(i); return its bytes."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        if rotation is not None:
            stream.set_display_rotation(rotation)
        if num_frames == 0:
            container.start_encoding()  # header with a video stream but no packets
        for index in range(num_frames):
            array = np.empty((size[1], size[0], 3), dtype=np.uint8)
            array[...] = index_colour(index)
            array[:4, :8] = 255  # a white mark in the top-left corner shows rotation
            for packet in stream.encode(av.VideoFrame.from_ndarray(array, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    data = buffer.getvalue()
    if path_or_none is not None:
        path_or_none.write_bytes(data)
    return data


def decode_all(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# --------------------------------------------------------------------------- sample_indices


def test_sample_indices_formula() -> None:
    assert sample_indices(20, 8) == [0, 3, 5, 8, 11, 14, 16, 19]
    assert sample_indices(50, 8) == [0, 7, 14, 21, 28, 35, 42, 49]
    assert sample_indices(10, 10) == list(range(10))
    assert sample_indices(10, 1) == [0]
    assert sample_indices(1, 4) == [0, 0, 0, 0]
    assert sample_indices(5, 8) == [0, 1, 1, 2, 2, 3, 3, 4]
    for total, n in [(7, 3), (100, 16), (3, 32), (1000, 8)]:
        expected = np.round(np.linspace(0, total - 1, n)).astype(int).tolist()
        assert sample_indices(total, n) == expected


def test_sample_indices_bad() -> None:
    with pytest.raises(InvalidInput, match="video with 0 frames"):
        sample_indices(0, 4)
    with pytest.raises(InvalidInput, match="num_frames must be a positive integer"):
        sample_indices(10, 0)


# --------------------------------------------------------------------------- ffmpeg testsrc


def test_testsrc_video_path(test_video_path: Path) -> None:
    expected_indices = sample_indices(TEST_VIDEO_FRAMES, 8)
    reference = decode_all(test_video_path)
    assert len(reference) == TEST_VIDEO_FRAMES
    for source in (test_video_path, str(test_video_path), test_video_path.read_bytes()):
        clip = load_video_frames(source, num_frames=8)
        assert isinstance(clip, VideoClip)
        assert len(clip) == 8 and len(clip.frames) == 8
        assert clip.indices == tuple(expected_indices)
        assert clip.total_frames == TEST_VIDEO_FRAMES
        assert clip.fps == pytest.approx(TEST_VIDEO_FPS)
        assert clip.duration_s == pytest.approx(TEST_VIDEO_SECONDS, abs=0.15)
        assert clip.repeated is False
        assert clip.size == TEST_VIDEO_SIZE
        for frame, index in zip(clip.frames, clip.indices, strict=True):
            assert frame.mode == "RGB"
            # Same decoder, same frame: identical pixels.
            assert np.array_equal(np.asarray(frame), reference[index])


def test_testsrc_frames_differ(test_video_path: Path) -> None:
    clip = load_video_frames(test_video_path, num_frames=4)
    arrays = [np.asarray(frame, dtype=np.int32) for frame in clip.frames]
    # testsrc's moving pattern and frame counter change every frame.
    assert all(np.abs(a - b).mean() > 1 for a, b in itertools.pairwise(arrays))


# --------------------------------------------------------------------------- colour-coded


@pytest.mark.parametrize(
    "fmt, codec",
    [
        ("mp4", "libx264"),  # frame count in the container (stts)
        ("matroska", "ffv1"),  # no frame count: packets are counted first
        ("avi", "mpeg4"),
    ],
)
def test_uniform_sampling_picks_the_right_frames(tmp_path: Path, fmt: str, codec: str) -> None:
    path = tmp_path / f"colours.{fmt}"
    write_video(path, 50, fmt=fmt, codec=codec)
    clip = load_video_frames(path, num_frames=8)
    assert clip.indices == (0, 7, 14, 21, 28, 35, 42, 49)
    assert [frame_index(f) for f in clip.frames] == list(clip.indices)
    assert clip.total_frames == 50
    assert clip.fps == pytest.approx(10)
    assert clip.duration_s == pytest.approx(5.0, abs=0.2)
    assert clip.size == SIZE
    assert not clip.repeated


def test_every_frame(tmp_path: Path) -> None:
    data = write_video(None, 12)
    clip = load_video_frames(data, num_frames=12)
    assert [frame_index(f) for f in clip.frames] == list(range(12))


def test_single_frame_requested() -> None:
    clip = load_video_frames(write_video(None, 12), num_frames=1)
    assert clip.indices == (0,)
    assert frame_index(clip.frames[0]) == 0


def test_fewer_frames_than_asked_repeats() -> None:
    clip = load_video_frames(write_video(None, 5), num_frames=8)
    assert clip.repeated is True
    assert clip.total_frames == 5
    assert clip.indices == (0, 1, 1, 2, 2, 3, 3, 4)
    assert [frame_index(f) for f in clip.frames] == [0, 1, 1, 2, 2, 3, 3, 4]
    assert len(clip.frames) == 8


def test_one_frame_video_fills_the_clip() -> None:
    clip = load_video_frames(write_video(None, 1), num_frames=4)
    assert clip.repeated and clip.total_frames == 1
    assert [frame_index(f) for f in clip.frames] == [0, 0, 0, 0]


def test_only_sampled_frames_are_converted(monkeypatch: pytest.MonkeyPatch) -> None:
    converted: list[int] = []
    original = video_module._frame_to_image

    def counting(frame: av.VideoFrame, max_side: int) -> Image.Image:
        converted.append(1)
        return original(frame, max_side)

    monkeypatch.setattr(video_module, "_frame_to_image", counting)
    clip = load_video_frames(write_video(None, 60), num_frames=4)
    # 60 frames decoded, but only the 4 sampled ones became PIL images (bounded memory).
    assert len(converted) == 4
    assert [frame_index(f) for f in clip.frames] == [0, 20, 39, 59]


def test_wrong_frame_count_metadata_is_corrected(monkeypatch: pytest.MonkeyPatch) -> None:
    # A container that overstates its frame count: sampling must use the real count.
    monkeypatch.setattr(video_module, "_count_packets", lambda opener, what: 30)
    data = write_video(None, 20, fmt="matroska", codec="ffv1")
    clip = load_video_frames(data, num_frames=8)
    assert clip.total_frames == 20
    assert clip.indices == tuple(sample_indices(20, 8))
    assert [frame_index(f) for f in clip.frames] == list(clip.indices)


def test_rotation_metadata_is_applied() -> None:
    clip = load_video_frames(write_video(None, 4, rotation=90), num_frames=2)
    assert clip.size == (SIZE[1], SIZE[0])  # portrait
    frame = np.asarray(clip.frames[0])
    # Rotated 90° counter-clockwise: the top-left white mark is now bottom-left.
    assert frame[-3:, :3].min() > 230
    assert frame[:3, :3, 0].max() < 100


def test_max_side_applies_to_frames() -> None:
    clip = load_video_frames(write_video(None, 3, size=(128, 96)), num_frames=2, max_side=64)
    assert clip.size == (64, 48)


def test_clip_is_frozen() -> None:
    clip = load_video_frames(write_video(None, 3), num_frames=2)
    with pytest.raises(AttributeError):
        clip.total_frames = 7  # type: ignore[misc]


# --------------------------------------------------------------------------- frame lists


def test_frame_list_of_pil_images() -> None:
    frames = [Image.new("RGB", SIZE, index_colour(i)) for i in range(10)]
    clip = load_video_frames(frames, num_frames=4)
    assert clip.indices == (0, 3, 6, 9)
    assert [frame_index(f) for f in clip.frames] == [0, 3, 6, 9]
    assert clip.total_frames == 10 and clip.fps is None and clip.duration_s is None
    assert not clip.repeated


def test_frame_list_of_arrays_paths_and_tuple(tmp_path: Path) -> None:
    arrays = [np.full((SIZE[1], SIZE[0], 3), index_colour(i), dtype=np.uint8) for i in range(3)]
    paths = []
    for i, array in enumerate(arrays):
        paths.append(tmp_path / f"f{i}.png")
        Image.fromarray(array).save(paths[-1])
    for source in (arrays, tuple(paths), np.stack(arrays), [arrays[0], paths[1], arrays[2]]):
        clip = load_video_frames(source, num_frames=3)
        assert [frame_index(f) for f in clip.frames] == [0, 1, 2]
        assert clip.size == SIZE


def test_frame_list_shorter_than_asked() -> None:
    frames = [Image.new("RGB", SIZE, index_colour(i)) for i in range(2)]
    clip = load_video_frames(frames, num_frames=5)
    assert clip.repeated
    assert [frame_index(f) for f in clip.frames] == [0, 0, 0, 1, 1]  # round(0.5) == 0


def test_frame_list_empty() -> None:
    with pytest.raises(InvalidInput, match="list of video frames is empty"):
        load_video_frames([], num_frames=4)


def test_frame_list_mixed_sizes(test_images: list[Image.Image]) -> None:
    frames = [test_images[0], test_images[0], test_images[1]]
    with pytest.raises(InvalidInput, match="same size, but frame 0 is 64x48 and frame 2 is 40x56"):
        load_video_frames(frames, num_frames=2)


def test_frame_list_bad_item() -> None:
    frames = [gradient_image(8, 8), gradient_image(8, 8), b"not an image"]
    with pytest.raises(InvalidInput, match=r"^frame 2: image data is not a recognised image format"):
        load_video_frames(frames, num_frames=2)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("num_frames", [0, -3, 2.5, True, "8", None])
def test_bad_num_frames(num_frames: object) -> None:
    with pytest.raises(InvalidInput, match="num_frames must be a positive integer"):
        load_video_frames([gradient_image(8, 8)], num_frames=num_frames)  # type: ignore[arg-type]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"video file not found: .*missing\.mp4"):
        load_video_frames(tmp_path / "missing.mp4", num_frames=4)


def test_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a file"):
        load_video_frames(str(tmp_path), num_frames=4)


def test_text_file_is_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("this is not a video\n" * 20)
    with pytest.raises(InvalidInput, match=r"notes.txt is not a readable video: Invalid data") as info:
        load_video_frames(path, num_frames=4)
    assert isinstance(info.value.__cause__, av.FFmpegError)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_still_image_is_not_a_video(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"still.{fmt.lower()}"
    gradient_image(32, 24).save(path, fmt)
    with pytest.raises(InvalidInput, match=r"is a still image \(\w+_pipe\), not a video"):
        load_video_frames(path, num_frames=4)
    with pytest.raises(InvalidInput, match="still image"):
        load_video_frames(path.read_bytes(), num_frames=4)


def test_audio_only_file_has_no_video_stream(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("pcm_s16le", rate=8000, layout="mono")
        samples = (np.sin(np.arange(8000) / 8) * 8000).astype(np.int16)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with pytest.raises(InvalidInput, match=r"has no video stream \(streams: audio\)"):
        load_video_frames(path, num_frames=4)


def test_audio_with_cover_art_is_not_a_video(tmp_path: Path) -> None:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.skip("ffmpeg is not installed")
    cover = tmp_path / "cover.png"
    gradient_image(32, 32).save(cover)
    out = tmp_path / "song.mp3"
    cmd = [
        ffmpeg, "-nostdin", "-loglevel", "error", "-y",
        "-f", "lavfi", "-i", "sine=duration=0.5", "-i", str(cover),
        "-map", "0", "-map", "1", "-c:v", "copy", "-id3v2_version", "3",
        "-disposition:v", "attached_pic", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0:
        pytest.skip(f"this ffmpeg cannot write an mp3 with cover art: {result.stderr.strip()}")
    with pytest.raises(InvalidInput, match=r"no video stream \(streams: audio, cover art\)"):
        load_video_frames(out, num_frames=4)


def test_video_with_no_frames(tmp_path: Path) -> None:
    data = write_video(None, 0, fmt="avi", codec="mpeg4")
    with pytest.raises(InvalidInput, match="video data has no video frames"):
        load_video_frames(data, num_frames=4)
    path = tmp_path / "empty.avi"
    path.write_bytes(data)
    with pytest.raises(InvalidInput, match=r"empty\.avi has no video frames"):
        load_video_frames(path, num_frames=4)


def test_empty_and_garbage_bytes() -> None:
    with pytest.raises(InvalidInput, match="video data is empty"):
        load_video_frames(b"", num_frames=4)
    with pytest.raises(InvalidInput, match="video data is not a readable video"):
        load_video_frames(b"\x00\x01garbage" * 50, num_frames=4)


def test_truncated_mp4_without_index() -> None:
    data = write_video(None, 20)  # moov atom at the end: the first half has no index
    with pytest.raises(InvalidInput, match="video data is not a readable video"):
        load_video_frames(data[: len(data) // 2], num_frames=4)


@pytest.mark.parametrize("source", [42, None, 3.5, {"video": "x"}])
def test_wrong_type(source: object) -> None:
    with pytest.raises(InvalidInput, match="unsupported video source of type"):
        load_video_frames(source, num_frames=4)


def test_bad_array_shape() -> None:
    with pytest.raises(InvalidInput, match=r"video array must be shaped"):
        load_video_frames(np.zeros((4, 4), dtype=np.uint8), num_frames=2)
