"""Sample a fixed number of RGB frames from a video, for video models (X-CLIP, VideoMAE...).

Video models take a clip of exactly ``num_frames`` frames spread over the whole video.
:func:`load_video_frames` takes a video file (path or bytes, decoded with PyAV) or a
ready-made list of frames, picks the frames at uniformly spaced indices, and returns
them in a :class:`VideoClip` record together with what is known about the source
(frame count, frame rate, duration, whether frames had to be repeated).

Long videos are decoded sequentially and only the chosen frames are converted and
kept, so memory stays at ``num_frames`` frames whatever the video's length.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .._exceptions import InvalidInput
from .image import DEFAULT_MAX_SIDE, load_image
from .remote import refuse_remote_path

__all__ = ["VideoClip", "load_video_frames", "sample_indices"]

# Demuxers that read still images: FFmpeg happily opens a PNG or JPEG as a one-frame
# "video", but a caller who passes one to a video model almost certainly made a mistake.
_STILL_IMAGE_FORMATS = frozenset({"image2", "image2pipe", "tty"})


@dataclass(frozen=True)
class VideoClip:
    """Frames sampled uniformly from a video.

    Attributes:
        frames: exactly ``num_frames`` RGB images, all the same size, in time order.
            When ``repeated`` is true some entries are the same image object.
        indices: the source frame index of each entry of ``frames``
            (``numpy.round(numpy.linspace(0, total_frames - 1, num_frames))``).
        total_frames: the number of frames in the source (decoded frames for a video
            file, list length for a frame list).
        fps: the stream's average frame rate, or ``None`` for a frame list or when the
            container does not say.
        duration_s: the video's duration in seconds, or ``None`` when unknown.
        repeated: true when the source had fewer frames than asked for, so some frames
            appear more than once.
    """

    frames: tuple[Image.Image, ...]
    indices: tuple[int, ...]
    total_frames: int
    fps: float | None
    duration_s: float | None
    repeated: bool

    @property
    def size(self) -> tuple[int, int]:
        """The (width, height) shared by every frame."""
        return self.frames[0].size

    def __len__(self) -> int:
        return len(self.frames)


def sample_indices(total: int, num_frames: int) -> list[int]:
    """Return ``num_frames`` frame indices spread uniformly over ``total`` frames.

    The first and last frames are always included. When ``total < num_frames``
    indices repeat (each frame is used about ``num_frames / total`` times).

    Args:
        total: the number of frames available (at least 1).
        num_frames: how many indices to return (at least 1).

    Returns:
        Non-decreasing indices in ``[0, total - 1]``.

    Raises:
        InvalidInput: ``total`` or ``num_frames`` is below 1.
    """
    _check_num_frames(num_frames)
    if total < 1:
        raise InvalidInput(f"cannot sample frames from a video with {total} frames")
    # numpy.round rounds halves to even; that is fine for uniform spacing and is what
    # the reference video processors do.
    return [int(i) for i in np.round(np.linspace(0, total - 1, num_frames)).astype(np.int64)]


def load_video_frames(
    source: Any,
    *,
    num_frames: int,
    max_side: int = DEFAULT_MAX_SIDE,
) -> VideoClip:
    """Sample ``num_frames`` frames uniformly over a whole video.

    Args:
        source: a video file path (``str`` or ``os.PathLike``); the bytes of a video
            file; or a list/tuple of frames, each anything
            :func:`~ipfs_accelerate.media.image.load_image` accepts (PIL image, numpy
            array, image path, image bytes); or a numpy array shaped
            ``(T, H, W[, C])`` (a 3-D array whose last axis is 3 or 4 is refused as
            ambiguous: it looks like one image).
        num_frames: how many frames to return (at least 1).
        max_side: frames whose longest side exceeds this are shrunk to it.

    Returns:
        A :class:`VideoClip`. Rotation metadata of the video stream (phone videos) is
        applied, so frames appear upright.

    Raises:
        InvalidInput: ``num_frames`` < 1; the file is missing, not a video (text, a
            still image, audio only) or corrupt; the video has no frames; a frame list
            is empty, holds an invalid frame, or mixes frame sizes.
    """
    _check_num_frames(num_frames)
    if isinstance(source, (str, os.PathLike)):
        refuse_remote_path(source, what="video")
        path = Path(os.fspath(source))
        if not path.exists():
            raise InvalidInput(f"video file not found: {path}")
        if not path.is_file():
            raise InvalidInput(f"video path is not a file: {path}")
        return _from_container(lambda: str(path), f"video file {path}", num_frames, max_side)
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise InvalidInput("video data is empty (0 bytes)")
        # Each decoding pass needs its own stream positioned at the start.
        return _from_container(lambda: io.BytesIO(data), "video data", num_frames, max_side)
    if isinstance(source, np.ndarray):
        if source.ndim not in (3, 4):
            raise InvalidInput(f"a video array must be shaped (T, H, W) or (T, H, W, C), got {source.shape}")
        if source.ndim == 3 and source.shape[2] in (3, 4):
            # (T, H, W) grey frames 3 or 4 pixels wide are far less likely than one RGB(A)
            # image, which would otherwise become T grey slivers without a word.
            raise InvalidInput(
                f"a video array shaped {source.shape} reads as {source.shape[0]} grey frames "
                f"{source.shape[2]} pixels wide, or is one {'RGB' if source.shape[2] == 3 else 'RGBA'} image: "
                f"pass frames as (T, H, W, C), e.g. shape (1, {source.shape[0]}, {source.shape[1]}, {source.shape[2]}) "
                "for one image"
            )
        return _from_frame_list(list(source), num_frames, max_side)
    if isinstance(source, (list, tuple)):
        return _from_frame_list(source, num_frames, max_side)
    raise InvalidInput(
        f"unsupported video source of type {type(source).__name__}; expected a video "
        "file path, video bytes, or a list of frames"
    )


# --------------------------------------------------------------------------- frame lists


def _from_frame_list(frames: Sequence[Any], num_frames: int, max_side: int) -> VideoClip:
    if len(frames) == 0:
        raise InvalidInput("the list of video frames is empty")
    indices = sample_indices(len(frames), num_frames)
    wanted = set(indices)
    kept: dict[int, Image.Image] = {}
    first_size: tuple[int, int] | None = None
    for position, item in enumerate(frames):
        try:
            image = load_image(item, max_side=max_side)
        except InvalidInput as exc:
            raise InvalidInput(f"frame {position}: {exc}") from exc
        # Every frame is checked, not only the sampled ones: a model stacks frames into
        # one tensor, and a list of mixed sizes is a caller bug worth reporting.
        if first_size is None:
            first_size = image.size
        elif image.size != first_size:
            raise InvalidInput(
                "video frames must all have the same size, but frame 0 is "
                f"{_wh(first_size)} and frame {position} is {_wh(image.size)}"
            )
        if position in wanted:
            kept[position] = image
    return VideoClip(
        frames=tuple(kept[i] for i in indices),
        indices=tuple(indices),
        total_frames=len(frames),
        fps=None,
        duration_s=None,
        repeated=len(frames) < num_frames,
    )


# --------------------------------------------------------------------------- video files


_Opener = Callable[[], Any]


def _from_container(opener: _Opener, what: str, num_frames: int, max_side: int) -> VideoClip:
    import av  # imported lazily: only video inputs need PyAV

    with _open(opener, what) as container:
        stream = _video_stream(container, what)
        fps = float(stream.average_rate) if stream.average_rate else None
        duration_s = _duration(container, stream)
        # The container's frame count (mp4 'stts' table) is usually exact; webm/mkv
        # leave it at 0. It is verified against the decode below either way.
        claimed = int(stream.frames or 0)

    total = claimed if claimed > 0 else _count_packets(opener, what)
    if total == 0:
        raise InvalidInput(f"{what} has no video frames")
    indices = sample_indices(total, num_frames)
    kept, decoded = _decode_indices(opener, what, set(indices), max_side, av)
    if decoded != total:
        # The count was wrong (edit lists, packed frames...): sample again with the
        # true count. Rare, and it costs one more decoding pass, not unbounded memory.
        if decoded == 0:
            raise InvalidInput(f"{what} has no decodable video frames")
        total = decoded
        indices = sample_indices(total, num_frames)
        kept, decoded = _decode_indices(opener, what, set(indices), max_side, av)
        missing = [i for i in indices if i not in kept]
        if missing:
            raise InvalidInput(f"{what} decodes inconsistently; frames {missing} could not be read")

    frames = tuple(kept[i] for i in indices)
    sizes = {frame.size for frame in frames}
    if len(sizes) > 1:
        # A stream can change resolution mid-way; models need one size.
        raise InvalidInput(f"{what} changes frame size mid-stream ({', '.join(_wh(s) for s in sorted(sizes))})")
    return VideoClip(
        frames=frames,
        indices=tuple(indices),
        total_frames=total,
        fps=fps,
        duration_s=duration_s,
        repeated=total < num_frames,
    )


def _open(opener: _Opener, what: str) -> Any:
    import av

    try:
        return av.open(opener(), mode="r", metadata_errors="ignore")
    except EOFError as exc:  # av.error.EOFError derives from it
        raise InvalidInput(f"{what} ends before its header is complete (empty or truncated video)") from exc
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise InvalidInput(f"{what} is not a readable video: {_short(exc)}") from exc


def _video_stream(container: Any, what: str) -> Any:
    import av

    format_name = container.format.name or ""
    if format_name in _STILL_IMAGE_FORMATS or format_name.endswith("_pipe"):
        raise InvalidInput(f"{what} is a still image ({format_name}), not a video; use load_image for images")
    attached_pic = av.stream.Disposition.attached_pic
    for stream in container.streams.video:
        # Cover art in an audio file shows up as a one-frame "video" stream.
        if not stream.disposition & attached_pic:
            return stream
    kinds = sorted(
        {"cover art" if s.type == "video" and s.disposition & attached_pic else s.type for s in container.streams}
    ) or ["none"]
    raise InvalidInput(f"{what} has no video stream (streams: {', '.join(kinds)})")


def _duration(container: Any, stream: Any) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        # Container durations are in AV_TIME_BASE units (microseconds).
        return container.duration / 1_000_000
    return None


def _count_packets(opener: _Opener, what: str) -> int:
    """Count the video stream's packets without decoding them (cheap: no pixel work)."""
    import av

    count = 0
    with _open(opener, what) as container:
        stream = _video_stream(container, what)
        try:
            for packet in container.demux(stream):
                # The demuxer ends with an empty flush packet that holds no frame.
                if packet.size > 0:
                    count += 1
        except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
            raise InvalidInput(f"{what} is corrupt and cannot be read: {_short(exc)}") from exc
    return count


def _decode_indices(
    opener: _Opener, what: str, wanted: set[int], max_side: int, av: Any
) -> tuple[dict[int, Image.Image], int]:
    """Decode the whole stream once, converting and keeping only the ``wanted`` frames.

    Returns:
        The kept frames by index, and the number of frames decoded.
    """
    kept: dict[int, Image.Image] = {}
    decoded = 0
    with _open(opener, what) as container:
        stream = _video_stream(container, what)
        stream.thread_type = "AUTO"  # frame/slice threads: decoding dominates the cost
        try:
            for frame in container.decode(stream):
                if decoded in wanted:
                    kept[decoded] = _frame_to_image(frame, max_side)
                decoded += 1
        except (av.FFmpegError, OSError, ValueError, EOFError) as exc:
            raise InvalidInput(f"{what} is corrupt and cannot be decoded: {_short(exc)}") from exc
    return kept, decoded


def _frame_to_image(frame: Any, max_side: int) -> Image.Image:
    image = frame.to_image()  # converts any pixel format to RGB
    # Phones store portrait video as landscape plus a display-matrix rotation; apply
    # it (counter-clockwise degrees, as ffmpeg's autorotate does) so frames are upright.
    rotation = round(getattr(frame, "rotation", 0) or 0) % 360
    transpose = {
        90: Image.Transpose.ROTATE_90,
        180: Image.Transpose.ROTATE_180,
        270: Image.Transpose.ROTATE_270,
    }.get(rotation)
    if transpose is not None:
        image = image.transpose(transpose)
    return load_image(image, max_side=max_side)


# --------------------------------------------------------------------------- helpers


def _check_num_frames(num_frames: Any) -> None:
    if isinstance(num_frames, bool) or not isinstance(num_frames, (int, np.integer)) or num_frames < 1:
        raise InvalidInput(f"num_frames must be a positive integer, got {num_frames!r}")


def _wh(size: tuple[int, int]) -> str:
    return f"{size[0]}x{size[1]}"


def _short(exc: BaseException) -> str:
    # FFmpeg errors embed the errno and file name ('<none>' for bytes); the caller's
    # message already names the source, so keep only the description.
    text = (getattr(exc, "strerror", None) or str(exc)).strip() or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
