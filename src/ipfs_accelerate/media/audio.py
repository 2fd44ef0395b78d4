"""Audio input: one way to turn a path, encoded bytes or a sample array into model input.

Every audio model family calls :func:`load_audio`, so the decoding, the mix-down to mono,
the PCM scaling, the resampling and the checks on bad input live in one place. The result
is always a 1-D ``float32`` array in ``[-1, 1]`` at the model's sampling rate.

Decoding tries soundfile (libsndfile: wav, flac, ogg, mp3, aiff …) first, because it is
fast and exact, and falls back to PyAV (FFmpeg: m4a, aac, opus in webm, video containers
…) for anything libsndfile cannot read. Resampling uses soxr (a librosa dependency) and
falls back to ``librosa.resample``.
"""

from __future__ import annotations

import io
import numbers
import os
import pathlib
from typing import Any

import numpy as np

from .._exceptions import InvalidInput
from .remote import refuse_remote_path

__all__ = ["AudioSource", "audio_seconds", "load_audio"]

#: What :func:`load_audio` accepts.
AudioSource = str | os.PathLike | bytes | bytearray | memoryview | np.ndarray

# An axis of this length or less may be the channel axis of a 2-D sample array; anything
# longer is taken to be time. 8 covers every common layout up to 7.1 surround.
_MAX_CHANNELS = 8


def load_audio(
    source: AudioSource,
    *,
    sampling_rate: int,
    sample_rate: int | None = None,
) -> np.ndarray:
    """Decode, mix down, scale and resample audio for a model.

    Args:
        source: A file path (``str`` or ``os.PathLike``) to an audio file in any format
            soundfile or FFmpeg can read; the encoded file contents as ``bytes``
            (``bytearray``/``memoryview``/a binary file object work too); or a numpy
            array of samples (a list or tuple of numbers is accepted as well), shaped
            ``(n,)``, ``(n, channels)`` or ``(channels, n)``. CPU tensors and other
            objects with ``__array__`` are read like arrays.
        sampling_rate: The rate, in Hz, the model expects; the result is resampled to it.
        sample_rate: The rate, in Hz, of ``source`` when it is an array (required then).
            Ignored for files and bytes, whose header states their rate.

    Returns:
        A contiguous 1-D ``float32`` array of samples in ``[-1, 1]`` at ``sampling_rate``.

    Raises:
        InvalidInput: The path does not exist; the file or bytes are not decodable audio;
            the audio is empty or holds NaN/inf; a rate is missing, zero or negative; the
            array has more than two dimensions or an unclear channel layout; or
            ``source`` is of an unsupported type.
    """
    target_rate = _check_rate(sampling_rate, "sampling_rate")

    if isinstance(source, (str, os.PathLike)):
        refuse_remote_path(source, what="audio")
        samples, rate = _decode_path(pathlib.Path(os.fspath(source)))
    elif isinstance(source, (bytes, bytearray, memoryview)):
        samples, rate = _decode_bytes(bytes(source), what="audio bytes")
    elif hasattr(source, "read") and callable(source.read):
        data = source.read()
        if not isinstance(data, (bytes, bytearray)):
            raise InvalidInput(
                f"audio file objects must be opened in binary mode ('rb'); read() returned {type(data).__name__}"
            )
        samples, rate = _decode_bytes(bytes(data), what="audio file object")
    elif isinstance(source, (np.ndarray, list, tuple)) or hasattr(source, "__array__"):
        # __array__ admits CPU tensors (torch, jax …) without importing their libraries.
        if sample_rate is None:
            raise InvalidInput(
                "sample_rate is required when audio is given as an array of samples "
                "(the rate the samples were recorded at, e.g. sample_rate=16000)"
            )
        rate = _check_rate(sample_rate, "sample_rate")
        samples = _array_to_mono_float(_as_array(source))
    else:
        raise InvalidInput(
            "audio must be a file path, the encoded file as bytes, or a numpy array of "
            f"samples; got {type(source).__name__}"
        )

    if samples.size == 0:
        raise InvalidInput("audio is empty: it holds zero samples")
    if rate != target_rate:
        samples = _resample(samples, rate, target_rate)
    return np.ascontiguousarray(samples, dtype=np.float32)


def audio_seconds(samples: np.ndarray | int, sampling_rate: int) -> float:
    """Return the duration of mono audio in seconds.

    Args:
        samples: A 1-D sample array (as returned by :func:`load_audio`) or a sample count.
        sampling_rate: The samples' rate in Hz.

    Returns:
        The duration in seconds.

    Raises:
        InvalidInput: The rate is not a positive number or ``samples`` is neither an
            array nor a count.
    """
    rate = _check_rate(sampling_rate, "sampling_rate")
    if isinstance(samples, numbers.Integral) and not isinstance(samples, bool):
        count = int(samples)
    elif isinstance(samples, np.ndarray):
        # The last axis is time for (n,) and (channels, n) alike.
        count = int(samples.shape[-1]) if samples.ndim else 0
    else:
        raise InvalidInput(f"audio_seconds expects a sample array or a sample count; got {type(samples).__name__}")
    if count < 0:
        raise InvalidInput(f"sample count must not be negative; got {count}")
    return count / rate


# --------------------------------------------------------------------------- helpers


def _check_rate(value: Any, name: str) -> int:
    """Return ``value`` as a positive int rate or raise InvalidInput naming ``name``."""
    # bool is an Integral, but True as a rate is a bug, not 1 Hz.
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise InvalidInput(f"{name} must be a positive number of Hz; got {value!r}")
    number = float(value)
    if not np.isfinite(number) or number != int(number):
        raise InvalidInput(f"{name} must be a whole number of Hz; got {value!r}")
    if number <= 0:
        raise InvalidInput(f"{name} must be positive; got {value!r}")
    return int(number)


def _decode_path(path: pathlib.Path) -> tuple[np.ndarray, int]:
    """Decode an audio file; return mono float32 samples and their rate."""
    if not path.exists():
        raise InvalidInput(f"audio file not found: {path}")
    if not path.is_file():
        raise InvalidInput(f"audio path is not a file: {path}")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read audio file {path}: {exc.strerror or exc}") from exc
    return _decode_bytes(data, what=f"audio file {path}")


def _decode_bytes(data: bytes, *, what: str) -> tuple[np.ndarray, int]:
    """Decode an encoded audio file held in memory, soundfile first, then PyAV."""
    if not data:
        raise InvalidInput(f"{what} is empty (0 bytes)")
    try:
        samples, rate = _decode_soundfile(data)
    except MemoryError:
        raise
    except Exception as sf_exc:  # noqa: BLE001 - any libsndfile failure means "try FFmpeg"
        try:
            samples, rate = _decode_pyav(data)
        except InvalidInput as exc:
            raise InvalidInput(f"{what}: {exc}") from exc
        except MemoryError:
            raise
        except Exception as av_exc:  # report both decoders' reasons
            raise InvalidInput(
                f"cannot decode {what}: it is not readable audio (corrupt, truncated, or not "
                f"an audio format); soundfile said: {_short(sf_exc)}; FFmpeg said: {_short(av_exc)}"
            ) from av_exc
    # Decoders hand back float32 in [-1, 1] already; only the checks and mixing remain.
    return _finish_float(samples, channel_axis=1 if samples.ndim == 2 else None), rate


def _decode_soundfile(data: bytes) -> tuple[np.ndarray, int]:
    """Decode with libsndfile; return (frames, channels) float32 and the rate."""
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return samples, int(rate)


def _decode_pyav(data: bytes) -> tuple[np.ndarray, int]:
    """Decode with FFmpeg through PyAV; return (frames, channels) float32 and the rate."""
    try:
        import av
    except ImportError as exc:  # pragma: no cover - av is a core dependency
        raise RuntimeError("PyAV is not installed") from exc

    chunks: list[np.ndarray] = []
    with av.open(io.BytesIO(data), mode="r") as container:
        if not container.streams.audio:
            raise InvalidInput("the data holds no audio stream (is it an image or a video without sound?)")
        stream = container.streams.audio[0]
        # Convert to planar float at the source rate and layout: FFmpeg's own downmix
        # would scale channels differently from the mean used for every other path.
        resampler = av.AudioResampler(format="fltp", layout=stream.layout, rate=stream.rate)
        rate = int(stream.rate or stream.codec_context.sample_rate or 0)
        for frame in container.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray())
        for out in resampler.resample(None):
            chunks.append(out.to_ndarray())
    if rate <= 0:
        raise RuntimeError("the audio stream does not state its sample rate")
    if not chunks:
        return np.zeros((0, 1), dtype=np.float32), rate
    # Planar frames are (channels, n); stack on time and turn into (n, channels).
    return np.concatenate(chunks, axis=1).T.astype(np.float32, copy=False), rate


def _as_array(source: Any) -> np.ndarray:
    """Turn an array, tensor or list of numbers into an ndarray, rejecting anything else."""
    if isinstance(source, np.ndarray):
        return source
    if not isinstance(source, (list, tuple)):
        try:
            return np.asarray(source)
        except (TypeError, ValueError, RuntimeError) as exc:
            # e.g. a CUDA tensor or one that requires grad: numpy cannot view it.
            raise InvalidInput(
                f"cannot read audio samples from a {type(source).__name__}: {exc} "
                "(pass a CPU array, e.g. tensor.detach().cpu().numpy())"
            ) from exc
    try:
        array = np.asarray(source)
    except (ValueError, TypeError) as exc:  # ragged nested lists
        raise InvalidInput(f"audio samples must form a regular array of numbers: {exc}") from exc
    if array.dtype.kind not in "biuf":
        raise InvalidInput(f"audio samples must be numbers; the {type(source).__name__} holds {array.dtype} values")
    if array.dtype.kind in "iu":
        # A Python list of ints carries no PCM width: read the values as float samples.
        array = array.astype(np.float64)
    return array


def _array_to_mono_float(array: np.ndarray) -> np.ndarray:
    """Scale an array of PCM or float samples to float32 in [-1, 1] and mix to mono."""
    if array.ndim == 0:
        raise InvalidInput("audio array is a scalar; expected samples shaped (n,) or (n, channels)")
    if array.ndim > 2:
        raise InvalidInput(
            f"audio array has {array.ndim} dimensions {tuple(array.shape)}; expected (n,), "
            "(n, channels) or (channels, n)"
        )
    channel_axis = _channel_axis(array.shape) if array.ndim == 2 else None
    kind = array.dtype.kind
    if kind == "f":
        # float64 stays wide until after the mix-down; _finish_float narrows it.
        return _finish_float(array, channel_axis=channel_axis)
    if kind == "i":
        # Signed PCM: full scale is 2 ** (bits - 1), so the type's range maps onto [-1, 1).
        floats = array.astype(np.float64) / 2.0 ** (8 * array.dtype.itemsize - 1)
    elif kind == "u" and array.dtype == np.uint8:
        # 8-bit PCM (WAV's convention) is unsigned with silence at 128.
        floats = (array.astype(np.float64) - 128.0) / 128.0
    elif kind == "u":
        # Wider unsigned PCM is rare; treat it like 8-bit, centred on half the range.
        half = 2.0 ** (8 * array.dtype.itemsize - 1)
        floats = (array.astype(np.float64) - half) / half
    else:
        raise InvalidInput(
            f"audio array dtype {array.dtype} is not supported; use float32/float64 in [-1, 1] or int16/int32/uint8 PCM"
        )
    return _finish_float(floats, channel_axis=channel_axis)


def _channel_axis(shape: tuple[int, ...]) -> int:
    """Pick the channel axis of a 2-D sample array: the short one, when it is clear."""
    rows, cols = shape
    if rows == 0 or cols == 0:
        raise InvalidInput(f"audio is empty: the array is shaped {tuple(shape)}")
    if cols <= _MAX_CHANNELS and rows > cols:
        return 1
    if rows <= _MAX_CHANNELS and cols > rows:
        return 0
    if rows == cols == 1:
        return 1
    raise InvalidInput(
        f"cannot tell which axis of the audio array shaped {tuple(shape)} holds the "
        f"channels: pass (n,), (n, channels) or (channels, n) with at most "
        f"{_MAX_CHANNELS} channels and more samples than channels"
    )


def _finish_float(samples: np.ndarray, *, channel_axis: int | None) -> np.ndarray:
    """Check float samples for NaN/inf, mix down to mono and bound them to [-1, 1]."""
    if samples.size == 0:
        raise InvalidInput("audio is empty: it holds zero samples")
    if not np.isfinite(samples).all():
        bad = int(np.count_nonzero(~np.isfinite(samples)))
        raise InvalidInput(f"audio contains {bad} NaN or infinite sample(s)")
    if channel_axis is not None:
        # Mean, not sum: keeps the mix in [-1, 1] and matches what feature extractors expect.
        samples = samples.mean(axis=channel_axis, dtype=np.float64)
    samples = samples.astype(np.float32, copy=False)
    peak = float(np.max(np.abs(samples)))
    if peak > 1.0:
        # Scale down rather than clip: clipping distorts, and a float array holding
        # unscaled PCM (peaks of thousands) would otherwise become a square wave.
        samples = samples / np.float32(peak)
    return samples


def _resample(samples: np.ndarray, orig_rate: int, target_rate: int) -> np.ndarray:
    """Resample mono float32 audio from ``orig_rate`` to ``target_rate``."""
    try:
        import soxr

        out = soxr.resample(samples, orig_rate, target_rate, quality="HQ")
    except ImportError:  # pragma: no cover - soxr comes with librosa
        import librosa

        out = librosa.resample(samples, orig_sr=orig_rate, target_sr=target_rate)
    out = np.asarray(out, dtype=np.float32)
    if out.size == 0:
        raise InvalidInput(
            f"audio of {samples.size} sample(s) at {orig_rate} Hz is too short to resample to {target_rate} Hz"
        )
    # A good resampler overshoots slightly on full-scale transients; keep the [-1, 1] promise.
    return np.clip(out, -1.0, 1.0, out=out)


def _short(exc: BaseException, limit: int = 160) -> str:
    """One line describing ``exc``, cut to ``limit`` characters."""
    # libsndfile's and FFmpeg's own reason, without the wrapper's "Error opening
    # <_io.BytesIO object at 0x…>" prefix or "[Errno -1094995529]" noise.
    reason = getattr(exc, "error_string", None) or getattr(exc, "strerror", None) or str(exc)
    text = " ".join(str(reason).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
