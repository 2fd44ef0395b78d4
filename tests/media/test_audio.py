"""Tests of ipfs_accelerate.media.audio: every decoding path and every rejected input."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from ipfs_accelerate._exceptions import InvalidInput
from ipfs_accelerate.media.audio import audio_seconds, load_audio

RATE = 16000


def tone(seconds: float = 0.5, rate: int = RATE, freq: float = 440.0, amplitude: float = 0.5) -> np.ndarray:
    """A float32 sine wave."""
    t = np.arange(int(seconds * rate)) / rate
    return (amplitude * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def assert_mono_float(samples: np.ndarray, length: int | None = None) -> None:
    assert isinstance(samples, np.ndarray)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert samples.flags.c_contiguous
    assert np.all(np.abs(samples) <= 1.0)
    if length is not None:
        assert samples.shape == (length,)


def encode(samples: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    path = shutil.which("ffmpeg")
    if path is None:
        pytest.skip("ffmpeg is not installed (apt-get install -y ffmpeg)")
    return path


def ffmpeg_encode(ffmpeg: str, source: Path, target: Path, *codec_args: str) -> Path:
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-y", "-i", str(source), *codec_args, str(target)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return target


# --------------------------------------------------------------------------- files


@pytest.mark.parametrize(
    ("suffix", "subtype", "tolerance"),
    [("wav", "PCM_16", 1e-4), ("wav", "FLOAT", 1e-7), ("flac", "PCM_16", 1e-4), ("ogg", "VORBIS", 0.05)],
)
def test_soundfile_formats(tmp_path: Path, suffix: str, subtype: str, tolerance: float) -> None:
    signal = tone()
    path = tmp_path / f"tone.{suffix}"
    soundfile.write(path, signal, RATE, subtype=subtype)
    for source in (path, str(path)):
        samples = load_audio(source, sampling_rate=RATE)
        assert_mono_float(samples, len(signal))
        assert np.max(np.abs(samples - signal)) < tolerance


def test_stereo_file_is_mixed_down(tmp_path: Path) -> None:
    left, right = tone(freq=440.0, amplitude=0.8), tone(freq=440.0, amplitude=0.2)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), RATE, subtype="FLOAT")
    samples = load_audio(path, sampling_rate=RATE)
    assert_mono_float(samples, len(left))
    np.testing.assert_allclose(samples, (left + right) / 2, atol=1e-6)


def test_mp3_via_ffmpeg(tmp_path: Path, ffmpeg: str) -> None:
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, tone(1.0), RATE)
    mp3 = ffmpeg_encode(ffmpeg, wav, tmp_path / "tone.mp3", "-codec:a", "libmp3lame", "-b:a", "64k")
    samples = load_audio(mp3, sampling_rate=RATE)
    assert_mono_float(samples)
    # MP3 pads the start and end with encoder delay: the length is close, not exact.
    assert abs(audio_seconds(samples, RATE) - 1.0) < 0.1
    assert 0.3 < np.max(np.abs(samples)) <= 0.6


def test_m4a_falls_back_to_pyav(tmp_path: Path, ffmpeg: str) -> None:
    """AAC in MP4 is beyond libsndfile, so this exercises the PyAV path (and bytes)."""
    wav = tmp_path / "tone.wav"
    soundfile.write(wav, np.stack([tone(1.0, 44100), tone(1.0, 44100)], axis=1), 44100)
    m4a = ffmpeg_encode(ffmpeg, wav, tmp_path / "tone.m4a", "-codec:a", "aac", "-b:a", "96k")
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(m4a)
    for source in (m4a, m4a.read_bytes()):
        samples = load_audio(source, sampling_rate=RATE)
        assert_mono_float(samples)
        assert abs(audio_seconds(samples, RATE) - 1.0) < 0.1
        assert 0.3 < np.max(np.abs(samples)) <= 0.6


def test_encoded_bytes_and_file_objects() -> None:
    signal = tone()
    for fmt, subtype in (("WAV", "PCM_16"), ("FLAC", "PCM_16"), ("OGG", "VORBIS")):
        data = encode(signal, RATE, fmt, subtype)
        for source in (data, bytearray(data), memoryview(data), io.BytesIO(data)):
            samples = load_audio(source, sampling_rate=RATE)
            assert_mono_float(samples, len(signal))


def test_sample_rate_is_ignored_for_files(tmp_path: Path) -> None:
    path = tmp_path / "tone.wav"
    soundfile.write(path, tone(), RATE)
    samples = load_audio(path, sampling_rate=RATE, sample_rate=8000)
    assert len(samples) == len(tone())


def test_speech_wav_fixture_decodes(speech_wav: tuple[Path, str]) -> None:
    path, text = speech_wav
    samples = load_audio(path, sampling_rate=RATE)
    assert_mono_float(samples)
    assert 3.0 < audio_seconds(samples, RATE) < 15.0
    assert np.max(np.abs(samples)) > 0.1
    assert text


def test_long_speech_fixture_is_over_a_minute(long_speech_wav: tuple[Path, str]) -> None:
    path, text = long_speech_wav
    info = soundfile.info(str(path))
    assert info.samplerate == RATE
    assert info.channels == 1
    assert info.duration > 60.0
    assert len(text.split()) > 100


# --------------------------------------------------------------------------- arrays


def test_float_arrays() -> None:
    signal = tone()
    for array in (signal, signal.astype(np.float64), signal.astype(np.float16)):
        samples = load_audio(array, sampling_rate=RATE, sample_rate=RATE)
        assert_mono_float(samples, len(signal))
        np.testing.assert_allclose(samples, signal, atol=1e-3)
    samples = load_audio(signal.tolist(), sampling_rate=RATE, sample_rate=RATE)
    np.testing.assert_allclose(samples, signal, atol=1e-6)


def test_cpu_tensor() -> None:
    torch = pytest.importorskip("torch")
    signal = tone()
    samples = load_audio(torch.from_numpy(signal), sampling_rate=RATE, sample_rate=RATE)
    np.testing.assert_allclose(samples, signal, atol=1e-7)
    with pytest.raises(InvalidInput, match=r"cannot read audio samples from a Tensor.*detach\(\)"):
        load_audio(torch.zeros(100, requires_grad=True), sampling_rate=RATE, sample_rate=RATE)


def test_int_pcm_arrays_are_scaled() -> None:
    signal = tone()
    int16 = np.round(signal * 32767).astype(np.int16)
    int32 = int16.astype(np.int32) << 16
    uint8 = np.round(signal * 127 + 128).astype(np.uint8)
    for array, tolerance in ((int16, 1e-4), (int32, 1e-4), (uint8, 1e-2)):
        samples = load_audio(array, sampling_rate=RATE, sample_rate=RATE)
        assert_mono_float(samples, len(signal))
        np.testing.assert_allclose(samples, signal, atol=tolerance)
    # Full scale stays within [-1, 1].
    extremes = np.array([-32768, 32767, 0] * 100, dtype=np.int16)
    samples = load_audio(extremes, sampling_rate=RATE, sample_rate=RATE)
    assert samples.min() == -1.0 and samples.max() < 1.0


def test_stereo_arrays_both_layouts() -> None:
    left, right = tone(amplitude=0.6), tone(amplitude=0.2)
    expected = (left + right) / 2
    frames_last = np.stack([left, right], axis=0)  # (channels, n)
    frames_first = np.stack([left, right], axis=1)  # (n, channels)
    for array in (frames_last, frames_first, np.round(frames_first * 32767).astype(np.int16)):
        samples = load_audio(array, sampling_rate=RATE, sample_rate=RATE)
        assert_mono_float(samples, len(left))
        np.testing.assert_allclose(samples, expected, atol=1e-4)
    six = np.stack([left] * 6, axis=1)
    np.testing.assert_allclose(load_audio(six, sampling_rate=RATE, sample_rate=RATE), left, atol=1e-6)
    column = left[:, None]
    np.testing.assert_allclose(load_audio(column, sampling_rate=RATE, sample_rate=RATE), left, atol=1e-7)


def test_loud_float_is_scaled_not_clipped() -> None:
    signal = tone(amplitude=0.5) * 4000.0  # float array holding unscaled PCM values
    samples = load_audio(signal, sampling_rate=RATE, sample_rate=RATE)
    assert_mono_float(samples, len(signal))
    assert np.max(np.abs(samples)) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(samples, signal / np.max(np.abs(signal)), atol=1e-6)


@pytest.mark.parametrize("orig_rate", [44100, 8000, 48000])
def test_resampling_keeps_duration_and_pitch(orig_rate: int) -> None:
    seconds, freq = 2.0, 440.0
    signal = tone(seconds, orig_rate, freq)
    samples = load_audio(signal, sampling_rate=RATE, sample_rate=orig_rate)
    assert_mono_float(samples)
    assert abs(len(samples) - seconds * RATE) <= 1
    assert audio_seconds(samples, RATE) == pytest.approx(seconds, abs=1e-3)
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * RATE / len(samples)
    assert peak_hz == pytest.approx(freq, abs=1.0)


def test_resampling_a_file(tmp_path: Path) -> None:
    path = tmp_path / "cd.flac"
    soundfile.write(path, tone(1.5, 44100), 44100)
    samples = load_audio(path, sampling_rate=RATE)
    assert audio_seconds(samples, RATE) == pytest.approx(1.5, abs=1e-3)


def test_audio_seconds() -> None:
    assert audio_seconds(np.zeros(8000, dtype=np.float32), 16000) == 0.5
    assert audio_seconds(48000, 16000) == 3.0
    assert audio_seconds(np.zeros((2, 4410)), 44100) == pytest.approx(0.1)
    with pytest.raises(InvalidInput, match="sampling_rate must be positive"):
        audio_seconds(100, 0)
    with pytest.raises(InvalidInput, match="sample array or a sample count"):
        audio_seconds("100", 16000)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope.wav"
    for source in (missing, str(missing)):
        with pytest.raises(InvalidInput, match="audio file not found") as info:
            load_audio(source, sampling_rate=RATE)
        assert "nope.wav" in str(info.value)


def test_directory_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="not a file"):
        load_audio(tmp_path, sampling_rate=RATE)


def test_corrupt_and_truncated_files(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\xff" * 40)
    with pytest.raises(InvalidInput, match="not readable audio") as info:
        load_audio(corrupt, sampling_rate=RATE)
    assert "corrupt.wav" in str(info.value)
    assert "soundfile said" in str(info.value) and "FFmpeg said" in str(info.value)
    flac = encode(tone(), RATE, "FLAC", "PCM_16")
    truncated = tmp_path / "truncated.flac"
    truncated.write_bytes(flac[:30])
    with pytest.raises(InvalidInput, match=r"not readable audio|empty"):
        load_audio(truncated, sampling_rate=RATE)


def test_empty_file_and_bytes(tmp_path: Path) -> None:
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    with pytest.raises(InvalidInput, match=r"empty \(0 bytes\)"):
        load_audio(empty, sampling_rate=RATE)
    with pytest.raises(InvalidInput, match=r"empty \(0 bytes\)"):
        load_audio(b"", sampling_rate=RATE)


def test_non_audio_bytes() -> None:
    with pytest.raises(InvalidInput, match="not readable audio"):
        load_audio(b"this is plain text, not a sound file" * 20, sampling_rate=RATE)
    with pytest.raises(InvalidInput, match=r"not readable audio|no audio stream"):
        load_audio(b"\x89PNG\r\n\x1a\n" + bytes(200), sampling_rate=RATE)


def test_image_file_has_no_audio_stream(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "picture.png"
    Image.new("RGB", (16, 16), (200, 10, 10)).save(path)
    with pytest.raises(InvalidInput, match=r"no audio stream|not readable audio"):
        load_audio(path, sampling_rate=RATE)


def test_text_file_object_rejected() -> None:
    with pytest.raises(InvalidInput, match="binary mode"):
        load_audio(io.StringIO("hello"), sampling_rate=RATE)


def test_zero_length_audio(tmp_path: Path) -> None:
    path = tmp_path / "silence0.wav"
    soundfile.write(path, np.zeros(0, dtype=np.float32), RATE)
    with pytest.raises(InvalidInput, match="zero samples"):
        load_audio(path, sampling_rate=RATE)
    for array in (np.zeros(0, dtype=np.float32), np.zeros((0, 2), dtype=np.int16), []):
        with pytest.raises(InvalidInput, match="empty"):
            load_audio(array, sampling_rate=RATE, sample_rate=RATE)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_samples(bad: float) -> None:
    signal = tone().astype(np.float64)
    signal[10] = bad
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        load_audio(signal, sampling_rate=RATE, sample_rate=RATE)
    stereo = np.stack([tone(), tone()], axis=1)
    stereo[5, 1] = bad
    with pytest.raises(InvalidInput, match="1 NaN or infinite"):
        load_audio(stereo, sampling_rate=RATE, sample_rate=RATE)


def test_nan_in_float_wav(tmp_path: Path) -> None:
    signal = tone()
    signal[100] = np.nan
    path = tmp_path / "nan.wav"
    soundfile.write(path, signal, RATE, subtype="FLOAT")
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        load_audio(path, sampling_rate=RATE)


def test_array_needs_sample_rate() -> None:
    with pytest.raises(InvalidInput, match="sample_rate is required"):
        load_audio(tone(), sampling_rate=RATE)


@pytest.mark.parametrize("rate", [0, -16000, 16000.5, float("nan"), "16000", True, None])
def test_bad_array_sample_rate(rate: object) -> None:
    match = "sample_rate is required" if rate is None else "sample_rate must be"
    with pytest.raises(InvalidInput, match=match):
        load_audio(tone(), sampling_rate=RATE, sample_rate=rate)  # type: ignore[arg-type]


@pytest.mark.parametrize("rate", [0, -1, None, 8000.25])
def test_bad_target_sampling_rate(tmp_path: Path, rate: object) -> None:
    with pytest.raises(InvalidInput, match="sampling_rate must be"):
        load_audio(tone(), sampling_rate=rate, sample_rate=RATE)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("source", "match"),
    [
        (None, "got NoneType"),
        (42, "got int"),
        ({"samples": [0.0]}, "got dict"),
        (["a.wav", "b.wav"], "must be numbers"),
        ([[0.1, 0.2], [0.3]], "regular array of numbers"),
        (np.array(["x", "y"]), "not supported"),
        (np.zeros(10, dtype=np.complex64), "not supported"),
    ],
)
def test_wrong_types(source: object, match: str) -> None:
    with pytest.raises(InvalidInput, match=match):
        load_audio(source, sampling_rate=RATE, sample_rate=RATE)  # type: ignore[arg-type]


def test_too_many_dimensions() -> None:
    with pytest.raises(InvalidInput, match="3 dimensions"):
        load_audio(np.zeros((2, 2, 1000), dtype=np.float32), sampling_rate=RATE, sample_rate=RATE)
    with pytest.raises(InvalidInput, match="scalar"):
        load_audio(np.array(0.5), sampling_rate=RATE, sample_rate=RATE)


def test_ambiguous_channel_layout() -> None:
    for shape in ((100, 200), (4, 4), (16, 9)):
        with pytest.raises(InvalidInput, match="which axis"):
            load_audio(np.zeros(shape, dtype=np.float32), sampling_rate=RATE, sample_rate=RATE)


def test_invalid_input_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        load_audio(None, sampling_rate=RATE)  # type: ignore[arg-type]
