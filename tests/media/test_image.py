"""Tests of ipfs_accelerate.media.image: every accepted source and every rejected one."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ipfs_accelerate._exceptions import InvalidInput
from ipfs_accelerate.media.image import DEFAULT_MAX_SIDE, load_image, load_images
from tests.fixtures.vision import gradient_image


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int32)


def assert_rgb(image: Image.Image, size: tuple[int, int]) -> None:
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB"
    assert image.size == size


# --------------------------------------------------------------------------- sources


def test_path_str_and_pathlib(tmp_path: Path, test_image: Image.Image) -> None:
    path = tmp_path / "gradient.png"
    test_image.save(path)
    for source in (str(path), path):
        out = load_image(source)
        assert_rgb(out, test_image.size)
        assert np.array_equal(pixels(out), pixels(test_image))


def test_loaded_image_outlives_the_file(tmp_path: Path, test_image: Image.Image) -> None:
    path = tmp_path / "gone.png"
    test_image.save(path)
    out = load_image(path)
    path.unlink()
    # Fully decoded: no lazy reads from the (now deleted) file.
    assert out.getpixel((10, 10)) == test_image.getpixel((10, 10))


@pytest.mark.parametrize("wrap", [bytes, bytearray, memoryview])
def test_encoded_bytes(wrap: type, test_image: Image.Image) -> None:
    out = load_image(wrap(encode(test_image, "PNG")))
    assert_rgb(out, test_image.size)
    assert np.array_equal(pixels(out), pixels(test_image))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP"])
def test_common_formats(fmt: str, test_image: Image.Image) -> None:
    assert_rgb(load_image(encode(test_image, fmt)), test_image.size)


def test_pil_image_is_copied_not_modified(test_image: Image.Image) -> None:
    before = test_image.copy()
    out = load_image(test_image)
    assert out is not test_image
    assert_rgb(out, test_image.size)
    out.putpixel((0, 0), (1, 2, 3))
    assert np.array_equal(pixels(test_image), pixels(before))


def test_lazily_opened_pil_image(test_image: Image.Image) -> None:
    lazy = Image.open(io.BytesIO(encode(test_image, "PNG")))
    assert_rgb(load_image(lazy), test_image.size)


def test_numpy_uint8_shapes() -> None:
    grey = np.arange(12, dtype=np.uint8).reshape(3, 4) * 20
    for array in (grey, grey[:, :, None]):
        out = load_image(array)
        assert_rgb(out, (4, 3))
        assert out.getpixel((3, 2)) == (220, 220, 220)
    rgb = np.zeros((3, 4, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    assert load_image(rgb).getpixel((0, 0)) == (200, 0, 0)


def test_numpy_rgba_composited_on_white() -> None:
    rgba = np.zeros((2, 2, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red
    rgba[0, 1] = (255, 0, 0, 0)  # fully transparent
    rgba[1, 0] = (0, 0, 0, 128)  # half-transparent black
    out = load_image(rgba)
    assert_rgb(out, (2, 2))
    assert out.getpixel((0, 0)) == (255, 0, 0)
    assert out.getpixel((1, 0)) == (255, 255, 255)
    assert all(abs(c - 127) <= 1 for c in out.getpixel((0, 1)))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_numpy_float_in_unit_range(dtype: type) -> None:
    array = np.array([[0.0, 0.5], [1.0, 0.25]], dtype=dtype)
    out = load_image(array)
    assert_rgb(out, (2, 2))
    assert [out.getpixel(p)[0] for p in [(0, 0), (1, 0), (0, 1), (1, 1)]] == [0, 128, 255, 64]


def test_numpy_non_contiguous(test_image: Image.Image) -> None:
    array = np.asarray(test_image)[::2, ::-1]  # strided and reversed view
    out = load_image(array)
    assert_rgb(out, (test_image.width, test_image.height // 2))
    assert np.array_equal(pixels(out), array.astype(np.int32))


# --------------------------------------------------------------------------- modes


def test_rgba_png_composited_on_white() -> None:
    image = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    image.putpixel((1, 1), (0, 0, 255, 255))
    out = load_image(encode(image, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255)
    assert out.getpixel((1, 1)) == (0, 0, 255)


def test_la_composited_on_white() -> None:
    image = Image.new("LA", (2, 2), (0, 0))
    image.putpixel((0, 0), (0, 255))
    out = load_image(image)
    assert out.getpixel((0, 0)) == (0, 0, 0)
    assert out.getpixel((1, 1)) == (255, 255, 255)


def test_palette_with_and_without_transparency() -> None:
    palette_image = Image.new("P", (2, 2), 0)
    palette_image.putpalette([10, 20, 30, 200, 100, 50] + [0, 0, 0] * 254)
    palette_image.putpixel((1, 1), 1)
    out = load_image(encode(palette_image, "PNG"))
    assert out.getpixel((0, 0)) == (10, 20, 30)
    assert out.getpixel((1, 1)) == (200, 100, 50)
    out = load_image(encode(palette_image, "PNG", transparency=0))
    assert out.getpixel((0, 0)) == (255, 255, 255)  # transparent index -> white
    assert out.getpixel((1, 1)) == (200, 100, 50)


def test_greyscale_and_bilevel() -> None:
    assert load_image(Image.new("L", (3, 2), 77)).getpixel((0, 0)) == (77, 77, 77)
    assert load_image(Image.new("1", (3, 2), 1)).getpixel((0, 0)) == (255, 255, 255)


def test_16_bit_greyscale_is_rescaled_not_clipped() -> None:
    array = np.array([[0, 257 * 128, 65535]], dtype=np.uint16)
    for source in (Image.fromarray(array), encode(Image.fromarray(array), "PNG")):
        out = load_image(source)
        assert [out.getpixel((x, 0)) for x in range(3)] == [(0, 0, 0), (128,) * 3, (255,) * 3]


def test_32_bit_integer_and_float_modes() -> None:
    assert load_image(Image.new("I", (2, 2), 100)).getpixel((0, 0)) == (100, 100, 100)
    assert load_image(Image.new("I", (2, 2), 65535)).getpixel((0, 0)) == (255, 255, 255)
    assert load_image(Image.new("F", (2, 2), 0.5)).getpixel((0, 0)) == (128, 128, 128)


def test_cmyk_jpeg() -> None:
    cmyk = Image.new("CMYK", (8, 8), (255, 0, 0, 0))  # full cyan ink
    out = load_image(encode(cmyk, "JPEG", quality=100))
    assert_rgb(out, (8, 8))
    red, green, blue = out.getpixel((4, 4))
    assert red < 10 and green > 245 and blue > 245


# --------------------------------------------------------------------------- EXIF


def jpeg_with_orientation(image: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation  # ExifTags.Base.Orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


def test_exif_orientation_6_rotates(tmp_path: Path) -> None:
    stored = gradient_image(64, 48)
    data = jpeg_with_orientation(stored, 6)
    path = tmp_path / "rotated.jpg"
    path.write_bytes(data)
    # Orientation 6: the camera was turned; the image displays rotated 90° clockwise.
    expected = pixels(stored.transpose(Image.Transpose.ROTATE_270))
    for source in (data, path, Image.open(io.BytesIO(data))):
        out = load_image(source)
        assert_rgb(out, (48, 64))  # width and height swapped
        assert np.abs(pixels(out) - expected).mean() < 4  # JPEG noise only


def test_exif_orientation_1_leaves_image_alone() -> None:
    out = load_image(jpeg_with_orientation(gradient_image(64, 48), 1))
    assert out.size == (64, 48)


def test_already_transposed_image_is_not_rotated_twice() -> None:
    data = jpeg_with_orientation(gradient_image(64, 48), 6)
    once = load_image(data)
    assert load_image(once).size == once.size


# --------------------------------------------------------------------------- size bound


def test_large_image_is_shrunk_keeping_aspect() -> None:
    wide = Image.new("RGB", (5000, 1000), (10, 20, 30))
    out = load_image(wide, max_side=1000)
    assert_rgb(out, (1000, 200))
    assert out.getpixel((500, 100)) == (10, 20, 30)
    tall = Image.new("RGB", (30, 9000))
    assert load_image(tall).size == (14, DEFAULT_MAX_SIDE)  # 30 * 4096 / 9000 = 13.65


def test_large_jpeg_is_shrunk_via_draft() -> None:
    big = gradient_image(4000, 3000)
    out = load_image(encode(big, "JPEG"), max_side=500)
    assert_rgb(out, (500, 375))
    reference = pixels(big.resize((500, 375), Image.Resampling.LANCZOS))
    assert np.abs(pixels(out) - reference).mean() < 4


def test_small_image_is_not_enlarged(test_image: Image.Image) -> None:
    assert load_image(test_image, max_side=10_000).size == test_image.size
    assert load_image(test_image, max_side=64).size == test_image.size


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "100", None])
def test_bad_max_side(bad: object, test_image: Image.Image) -> None:
    with pytest.raises(InvalidInput, match="max_side must be a positive integer"):
        load_image(test_image, max_side=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- bad input


def test_missing_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"image file not found: .*nope\.png"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(InvalidInput, match="image file not found"):
        load_image(str(tmp_path / "nope.png"))


def test_directory_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="is not a file"):
        load_image(tmp_path)


def test_text_file_is_not_an_image(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    path.write_text("just some text\n")
    with pytest.raises(InvalidInput, match=r"notes\.txt is not a recognised image format"):
        load_image(path)


@pytest.mark.parametrize("data", [b"hello, world", b"\x00" * 100, b"%PDF-1.4 not really"])
def test_non_image_bytes(data: bytes) -> None:
    with pytest.raises(InvalidInput, match="not a recognised image format") as info:
        load_image(data)
    assert info.value.__cause__ is not None  # chained, not swallowed


def test_empty_bytes() -> None:
    with pytest.raises(InvalidInput, match="empty"):
        load_image(b"")


@pytest.mark.parametrize("fmt", ["PNG", "JPEG"])
def test_truncated_image(fmt: str) -> None:
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data = encode(noisy, fmt)
    with pytest.raises(InvalidInput, match="corrupt or truncated") as info:
        load_image(data[: len(data) * 2 // 3])
    assert isinstance(info.value.__cause__, OSError)
    with pytest.raises(InvalidInput, match="corrupt or truncated"):
        load_image(Image.open(io.BytesIO(data[: len(data) * 2 // 3])))


def test_corrupt_png_data() -> None:
    rng = np.random.default_rng(1)
    data = bytearray(encode(Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)), "PNG"))
    start = data.find(b"IDAT") + 20
    data[start : start + 40] = b"\x00" * 40
    with pytest.raises(InvalidInput, match="corrupt or truncated"):
        load_image(bytes(data))


def test_zero_size_images() -> None:
    with pytest.raises(InvalidInput, match=r"image is empty: 0x0 pixels"):
        load_image(Image.new("RGB", (0, 0)))
    with pytest.raises(InvalidInput, match=r"empty: 5x0 pixels"):
        load_image(Image.new("RGB", (5, 0)))
    with pytest.raises(InvalidInput, match=r"image array is empty: 0x4 pixels"):
        load_image(np.zeros((4, 0, 3), dtype=np.uint8))
    with pytest.raises(InvalidInput, match="empty"):
        load_image(np.zeros((0, 0), dtype=np.uint8))


@pytest.mark.parametrize("source", [123, 1.5, None, ["a.png"], {"image": 1}, object()])
def test_wrong_type(source: object) -> None:
    with pytest.raises(InvalidInput, match="unsupported image source of type"):
        load_image(source)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 2), (2, 3, 5), (2, 3, 3, 1), (1, 2, 3, 3), (3, 32, 32)])
def test_bad_array_shape(shape: tuple[int, ...]) -> None:
    with pytest.raises(InvalidInput, match=r"must be shaped .* channels last, got shape"):
        load_image(np.zeros(shape, dtype=np.uint8))


@pytest.mark.parametrize("dtype", [np.int64, np.uint16, np.int8, bool, np.complex64, object])
def test_bad_array_dtype(dtype: type) -> None:
    with pytest.raises(InvalidInput, match="must be uint8, or float with values in"):
        load_image(np.zeros((4, 4, 3), dtype=dtype))


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_float_array(bad_value: float) -> None:
    array = np.full((4, 4, 3), 0.5, dtype=np.float32)
    array[1, 2, 0] = bad_value
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        load_image(array)


@pytest.mark.parametrize("low, high", [(0.0, 255.0), (-0.5, 0.5), (0.0, 1.01)])
def test_float_array_out_of_range(low: float, high: float) -> None:
    with pytest.raises(InvalidInput, match=r"values in \[0, 1\], got"):
        load_image(np.array([[low, high]], dtype=np.float32))


def test_decompression_bomb_is_invalid_input(monkeypatch: pytest.MonkeyPatch) -> None:
    filters_before = list(warnings.filters)
    warn_range = encode(Image.new("RGB", (40, 40)), "PNG")  # 1600 px: PIL only warns
    error_range = encode(Image.new("RGB", (100, 100)), "PNG")  # 10000 px: PIL raises
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    for data in (warn_range, error_range):
        with pytest.raises(InvalidInput, match="decompression bomb"):
            load_image(data)
    assert warnings.filters == filters_before  # the promoted warning did not leak


def test_invalid_input_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        load_image(b"nope")


# --------------------------------------------------------------------------- load_images


def test_load_images_mixed_sources(tmp_path: Path, test_images: list[Image.Image]) -> None:
    path = tmp_path / "second.png"
    test_images[1].save(path)
    sources = [test_images[0], path, encode(test_images[1], "PNG"), np.asarray(test_images[0])]
    out = load_images(sources)
    assert [im.size for im in out] == [(64, 48), (40, 56), (40, 56), (64, 48)]
    assert all(im.mode == "RGB" for im in out)
    assert load_images(tuple(test_images))[1].size == (40, 56)


def test_load_images_numpy_batch() -> None:
    batch = np.zeros((3, 8, 6, 3), dtype=np.uint8)
    out = load_images(batch)
    assert len(out) == 3 and out[0].size == (6, 8)


def test_load_images_max_side(test_images: list[Image.Image]) -> None:
    assert [im.size for im in load_images(test_images, max_side=28)] == [(28, 21), (20, 28)]


def test_load_images_empty() -> None:
    with pytest.raises(InvalidInput, match="list of images is empty"):
        load_images([])


@pytest.mark.parametrize("source", ["a.png", b"bytes", 3])
def test_load_images_not_a_list(source: object) -> None:
    with pytest.raises(InvalidInput, match="expects a list of images"):
        load_images(source)  # type: ignore[arg-type]


def test_load_images_names_the_bad_item(test_image: Image.Image) -> None:
    with pytest.raises(InvalidInput, match=r"^image 1: image data is not a recognised image format"):
        load_images([test_image, b"garbage", test_image])


def test_a_remote_string_is_never_opened_as_a_path(tmp_path):
    from ipfs_accelerate.media.audio import load_audio
    from ipfs_accelerate.media.remote import RemoteText
    from ipfs_accelerate.media.video import load_video_frames

    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8)).save(image)
    assert load_image(str(image)).size == (8, 8)  # a library caller's path is read
    calls = [lambda: load_image(RemoteText(str(image))),
             lambda: load_audio(RemoteText(str(image)), sampling_rate=16000),
             lambda: load_video_frames(RemoteText(str(image)), num_frames=2)]
    for call, what in zip(calls, ["image", "audio", "video"], strict=True):
        with pytest.raises(InvalidInput, match=f"does not open files or URLs given as text: send the {what} itself"):
            call()
