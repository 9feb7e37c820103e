"""Image handling, as a user sees it: any file Pillow opens becomes one upright RGB input.

open_rgb: a pixel limit, the first frame, EXIF orientation, RGB with transparency on white.
resize: ``center-crop`` (shorter side to 333, centre 299x299, as timm/torchvision) or
``squash`` (straight to 299x299, as ``keras.utils.load_img``). to_input: x / 127.5 - 1.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, features

from irv2cli.errors import ImageError
from irv2cli.inputs.images import (
    Preprocessing,
    decode,
    load_input,
    open_rgb,
    register_heif,
    resize,
    to_input,
)

SAMPLE_NAMES = ("chelsea.jpg", "coffee.jpg", "astronaut.jpg", "rocket.jpg")
RED, GREEN, BLUE, WHITE, BLACK = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255,) * 3, (0,) * 3


def noise_png(path: Path, width: int, height: int, seed: int = 0) -> Path:
    """A lossless RGB image of random pixels: any resampling error shows up in it."""
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image).astype(int)


# --- squash + nearest is Keras's own preprocessing ------------------------------------------


@pytest.fixture(scope="module")
def keras_input():
    """Keras's reference pipeline: load_img (squash, nearest), img_to_array, preprocess_input."""
    import keras

    def load(path: Path) -> np.ndarray:
        image = keras.utils.load_img(path, target_size=(299, 299))
        array = keras.utils.img_to_array(image)
        return keras.applications.inception_resnet_v2.preprocess_input(array)

    return load


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_squash_nearest_reproduces_keras_exactly_on_photos(keras_input, samples, name):
    ours = to_input(resize(open_rgb(samples / name), "squash", "nearest"))
    expected = keras_input(samples / name)
    assert ours.dtype == expected.dtype == np.float32
    assert np.array_equal(ours, expected)


@pytest.mark.parametrize("size", [(517, 213), (100, 700), (301, 298), (299, 299), (7, 5)],
                         ids=lambda size: "x".join(map(str, size)))
def test_squash_nearest_reproduces_keras_exactly_on_odd_sizes(keras_input, tmp_path, size):
    path = noise_png(tmp_path / "noise.png", *size)
    ours = to_input(resize(open_rgb(path), "squash", "nearest"))
    assert np.array_equal(ours, keras_input(path))


def test_squash_leaves_a_299_image_untouched(tmp_path):
    image = open_rgb(noise_png(tmp_path / "noise.png", 299, 299))
    for interpolation in ("nearest", "bilinear", "bicubic", "lanczos"):
        assert np.array_equal(pixels(resize(image, "squash", interpolation)), pixels(image))


def test_squash_ignores_the_aspect_ratio(samples):
    image = open_rgb(samples / "rocket.jpg")
    assert image.size == (640, 427)
    assert resize(image, "squash").size == (299, 299)


# --- centre crop: shorter side to round(299 / 0.8975) = 333, then the centre 299x299 -------


def torchvision_center_crop(image: Image.Image, interpolation: Image.Resampling) -> Image.Image:
    """``Resize(333) + CenterCrop(299)`` from torchvision, written out with Pillow."""
    width, height = image.size
    if width <= height:
        new_size = (333, int(height * 333 / width))
    else:
        new_size = (int(width * 333 / height), 333)
    resized = image.resize(new_size, interpolation)
    left = round((new_size[0] - 299) / 2)
    top = round((new_size[1] - 299) / 2)
    return resized.crop((left, top, left + 299, top + 299))


@pytest.mark.parametrize("name", SAMPLE_NAMES)
@pytest.mark.parametrize("portrait", [False, True], ids=["as-is", "turned"])
def test_center_crop_is_torchvision_resize_then_center_crop(samples, name, portrait):
    image = open_rgb(samples / name)
    if portrait:
        image = image.transpose(Image.Transpose.ROTATE_90)
    ours = resize(image, "center-crop", "bicubic")
    assert ours.size == (299, 299)
    expected = torchvision_center_crop(image, Image.Resampling.BICUBIC)
    assert np.array_equal(pixels(ours), pixels(expected))


@pytest.mark.parametrize("size", [(517, 213), (100, 700), (40, 30), (333, 333)],
                         ids=lambda size: "x".join(map(str, size)))
@pytest.mark.parametrize("interpolation", ["nearest", "bilinear", "bicubic", "lanczos"])
def test_center_crop_gives_299x299x3_for_any_size(tmp_path, size, interpolation):
    image = open_rgb(noise_png(tmp_path / "noise.png", *size))
    cropped = resize(image, "center-crop", interpolation)
    assert np.asarray(cropped).shape == (299, 299, 3)
    resample = Image.Resampling[interpolation.upper()]
    assert np.array_equal(pixels(cropped), pixels(torchvision_center_crop(image, resample)))


def framed_window(width: int, height: int) -> Image.Image:
    """Red outside the window centre-crop should keep, blue inside, a 4 px green frame.

    The shorter side is 666, so it is halved to 333 and the 299 px crop covers the centre
    598 px of the original on both axes.
    """
    image = Image.new("RGB", (width, height), RED)
    left, top = (width - 598) // 2, (height - 598) // 2
    image.paste(GREEN, (left, top, left + 598, top + 598))
    image.paste(BLUE, (left + 4, top + 4, left + 594, top + 594))
    return image


@pytest.mark.parametrize("size", [(1000, 666), (666, 1000)], ids=["landscape", "portrait"])
def test_center_crop_keeps_exactly_the_centre(size):
    cropped = pixels(resize(framed_window(*size), "center-crop", "nearest"))
    assert cropped.shape == (299, 299, 3)
    # Nothing from outside the window survives ...
    assert not (cropped == RED).all(axis=-1).any()
    # ... and the window is not smaller either: its frame is the output's border.
    for edge in (cropped[0], cropped[-1], cropped[:, 0], cropped[:, -1]):
        assert (edge == GREEN).all()
    assert (cropped[2:-2, 2:-2] == BLUE).all()


def test_unknown_resize_mode_is_refused(samples):
    with pytest.raises(ValueError, match="resize mode"):
        resize(open_rgb(samples / "chelsea.jpg"), "stretch")


# --- scaling to the network's range ----------------------------------------------------------


def test_to_input_scales_0_255_to_minus_1_plus_1_in_float32():
    grey = Image.fromarray(np.arange(256, dtype=np.uint8).reshape(16, 16)).convert("RGB")
    x = to_input(grey)
    assert x.dtype == np.float32
    assert x.shape == (16, 16, 3)
    assert x[0, 0, 0] == -1.0 and x[-1, -1, 0] == 1.0
    assert x.min() == -1.0 and x.max() == 1.0
    assert np.all(np.diff(x[..., 0].ravel()) > 0)


@pytest.mark.parametrize("mode", ["center-crop", "squash"])
def test_load_input_is_one_network_input(samples, mode):
    x = load_input(samples / "coffee.jpg", mode)
    assert x.shape == (299, 299, 3) and x.dtype == np.float32
    assert -1.0 <= x.min() < x.max() <= 1.0


# --- every mode Pillow opens becomes the RGB a person would see ------------------------------


def grey(values, dtype=np.uint8) -> Image.Image:
    return Image.fromarray(np.array([values], dtype=dtype))


def palette_red_blue() -> Image.Image:
    image = Image.new("P", (2, 1), 0)
    image.putpalette([*RED, *BLUE])
    image.putpixel((1, 0), 1)
    return image


def rgba(colours) -> Image.Image:
    return Image.fromarray(np.array([colours], dtype=np.uint8), "RGBA")


def on_white(colour, alpha):
    """What a viewer shows for ``colour`` at ``alpha`` over a white page."""
    return tuple(round(c * alpha / 255 + 255 * (1 - alpha / 255)) for c in colour)


def write_pgm16(path: Path, values) -> None:
    path.write_bytes(b"P5 %d 1 65535\n" % len(values) + np.array(values, ">u2").tobytes())


def rgb_with_key(path: Path) -> None:
    image = Image.new("RGB", (2, 1), (10, 20, 30))
    image.putpixel((1, 0), (1, 2, 3))
    image.save(path, transparency=(10, 20, 30))


MODES = [
    # id, file name, writer, mode Pillow opens it as, expected RGB pixels
    ("L", "grey.png", lambda p: grey([0, 128, 255]).save(p), "L",
     [BLACK, (128,) * 3, WHITE]),
    ("L-transparency-key", "grey.png", lambda p: grey([10, 20]).save(p, transparency=10), "L",
     [WHITE, (20,) * 3]),
    ("LA", "grey-alpha.png",
     lambda p: Image.fromarray(np.array([[[10, 255], [10, 0], [0, 128]]], np.uint8), "LA")
     .save(p), "LA", [(10,) * 3, WHITE, on_white(BLACK, 128)]),
    ("P", "palette.gif", lambda p: palette_red_blue().save(p), "P", [RED, BLUE]),
    ("P-transparency-key", "palette.gif", lambda p: palette_red_blue().save(p, transparency=0),
     "P", [WHITE, BLUE]),
    ("P-png-transparency-key", "palette.png",
     lambda p: palette_red_blue().save(p, transparency=0), "P", [WHITE, BLUE]),
    ("RGBA", "rgba.png",
     lambda p: rgba([[200, 0, 0, 0], [200, 0, 0, 255], [0, 0, 0, 128], [200, 0, 0, 128]]).save(p),
     "RGBA", [WHITE, (200, 0, 0), on_white(BLACK, 128), on_white((200, 0, 0), 128)]),
    ("RGB-transparency-key", "rgb.png", rgb_with_key, "RGB", [WHITE, (1, 2, 3)]),
    ("CMYK", "cmyk.tif",
     lambda p: Image.frombytes("CMYK", (3, 1), bytes([0, 255, 255, 0, 0, 0, 0, 255, 0, 0, 0, 0]))
     .save(p), "CMYK", [RED, BLACK, WHITE]),
    ("I;16", "grey16.png", lambda p: grey([0, 257, 32896, 65535], np.uint16).save(p), "I;16",
     [BLACK, (1,) * 3, (128,) * 3, WHITE]),
    ("I;16B", "grey16be.tif", lambda p: grey([65535, 32896, 0], ">u2").save(p), "I;16B",
     [WHITE, (128,) * 3, BLACK]),
    ("1", "bilevel.png", lambda p: Image.fromarray(np.array([[False, True]])).save(p), "1",
     [BLACK, WHITE]),
    ("I-pgm-16bit", "grey16.pgm", lambda p: write_pgm16(p, [0, 32896, 65535]), "I",
     [BLACK, (128,) * 3, WHITE]),
    ("I-tiff-32bit", "grey32.tif", lambda p: grey([0, 32896, 65535], np.int32).save(p), "I",
     [BLACK, (128,) * 3, WHITE]),
    ("I-tiff-8bit-range", "grey32-small.tif",
     lambda p: grey([0, 128, 255], np.int32).save(p), "I", [BLACK, (128,) * 3, WHITE]),
    ("F-unit-range", "float.tif", lambda p: grey([0.0, 0.5, 1.0], np.float32).save(p), "F",
     [BLACK, (128,) * 3, WHITE]),
    ("F-byte-range", "float-bytes.tif", lambda p: grey([0.0, 128.0, 255.0], np.float32).save(p),
     "F", [BLACK, (128,) * 3, WHITE]),
]


@pytest.mark.parametrize(("name", "write", "opened_as", "expected"),
                         [pytest.param(*case[1:], id=case[0]) for case in MODES])
def test_every_mode_becomes_the_rgb_a_person_sees(tmp_path, name, write, opened_as, expected):
    path = tmp_path / name
    write(path)
    with Image.open(path) as raw:
        assert raw.mode == opened_as  # the file really exercises this mode
    image = open_rgb(path)
    assert image.mode == "RGB"
    assert image.size == (len(expected), 1)
    np.testing.assert_allclose(pixels(image)[0], np.array(expected), atol=1)


# --- frames and orientation ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["animated.gif", "animated.png", "pages.tif"])
def test_the_first_frame_of_an_animation_is_used(tmp_path, name):
    first, *rest = (Image.new("RGB", (8, 6), colour) for colour in (RED, GREEN, BLUE))
    first.save(tmp_path / name, save_all=True, append_images=rest, duration=50, loop=0)
    with Image.open(tmp_path / name) as raw:
        assert raw.n_frames == 3
    image = open_rgb(tmp_path / name)
    assert image.size == (8, 6)
    assert (pixels(image) == RED).all()


def test_exif_orientation_is_honoured(tmp_path):
    # 40x20 with a colour per quadrant; Orientation=6 means "rotate 90 degrees clockwise
    # to display", so the upright picture is 20x40.
    image = Image.new("RGB", (40, 20))
    image.paste(RED, (0, 0, 20, 10))  # top left
    image.paste(GREEN, (20, 0, 40, 10))  # top right
    image.paste(BLUE, (0, 10, 20, 20))  # bottom left
    image.paste(WHITE, (20, 10, 40, 20))  # bottom right
    exif = Image.Exif()
    exif[0x0112] = 6
    path = tmp_path / "sideways.jpg"
    image.save(path, exif=exif, quality=95)

    upright = open_rgb(path)
    assert upright.size == (20, 40)
    corners = {"top left": (2, 2), "top right": (17, 2),
               "bottom left": (2, 37), "bottom right": (17, 37)}
    got = {where: upright.getpixel(xy) for where, xy in corners.items()}
    expected = {"top left": BLUE, "top right": RED, "bottom left": WHITE, "bottom right": GREEN}
    for where, colour in expected.items():
        np.testing.assert_allclose(got[where], colour, atol=12, err_msg=where)


# --- files that are not usable images ---------------------------------------------------------


def missing(tmp_path, samples):
    return tmp_path / "missing.jpg"


def directory(tmp_path, samples):
    (tmp_path / "folder.jpg").mkdir()
    return tmp_path / "folder.jpg"


def text_file(tmp_path, samples):
    (tmp_path / "notes.jpg").write_text("not a picture\n")
    return tmp_path / "notes.jpg"


def empty_file(tmp_path, samples):
    (tmp_path / "empty.jpg").write_bytes(b"")
    return tmp_path / "empty.jpg"


def truncated_jpeg(tmp_path, samples):
    data = (samples / "chelsea.jpg").read_bytes()
    (tmp_path / "truncated.jpg").write_bytes(data[: len(data) // 2])
    return tmp_path / "truncated.jpg"


@pytest.mark.parametrize(("make", "says"), [
    pytest.param(missing, "no such file", id="missing"),
    pytest.param(directory, "is a directory", id="directory"),
    pytest.param(text_file, "not an image", id="text-named-jpg"),
    pytest.param(empty_file, "not an image", id="zero-bytes"),
    pytest.param(truncated_jpeg, "truncated", id="truncated-jpeg"),
])
def test_unreadable_files_raise_image_error_naming_the_path(tmp_path, samples, make, says):
    path = make(tmp_path, samples)
    with pytest.raises(ImageError) as caught:
        open_rgb(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert says in message
    assert "\n" not in message


@pytest.fixture
def hundred_square(tmp_path) -> Path:
    return noise_png(tmp_path / "big.png", 100, 100)


def test_decompression_bomb_is_refused_with_a_way_out(hundred_square):
    with pytest.raises(ImageError) as caught:
        open_rgb(hundred_square, max_pixels=1000)
    message = str(caught.value)
    assert message.startswith(f"{hundred_square}: ")
    assert "100x100" in message and "1,000" in message
    assert "max-pixels" in message
    assert "\n" not in message


@pytest.mark.parametrize("max_pixels", [None, 10_000, 10**9])
def test_a_raised_or_lifted_pixel_limit_accepts_the_image(hundred_square, max_pixels):
    assert open_rgb(hundred_square, max_pixels=max_pixels).size == (100, 100)


def test_pillows_own_bomb_limit_also_becomes_an_image_error(hundred_square, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # Pillow refuses above twice this
    with pytest.raises(ImageError, match="decompression bomb") as caught:
        open_rgb(hundred_square, max_pixels=None)
    assert str(caught.value).startswith(f"{hundred_square}: ")


# --- phone photos: big JPEGs decoded at a reduced scale, HEIC, odd shapes -----------------


@pytest.fixture(scope="module")
def phone_photo(tmp_path_factory, samples) -> Path:
    """A 12-megapixel JPEG (4032x3024, quality 90), like a phone's."""
    path = tmp_path_factory.mktemp("phone") / "IMG_0001.jpg"
    photo = Image.open(samples / "chelsea.jpg").resize((4032, 3024), Image.Resampling.BICUBIC)
    photo.save(path, quality=90)
    return path


@pytest.mark.parametrize("mode", ["center-crop", "squash"])
def test_a_big_jpeg_is_decoded_at_a_reduced_scale_close_to_the_full_decode(phone_photo, mode):
    preprocessing = Preprocessing(mode, "bicubic")
    assert open_rgb(phone_photo, draft=preprocessing).size == (504, 378)  # 1/8 scale
    reduced = decode(phone_photo, preprocessing).astype(int)
    full = pixels(resize(open_rgb(phone_photo), mode, "bicubic"))
    assert np.abs(reduced - full).mean() < 1.0  # of 255 levels
    assert np.percentile(np.abs(reduced - full), 99) <= 5


def test_nearest_neighbour_always_decodes_in_full_so_keras_pixels_stay_exact(
        phone_photo, keras_input):
    preprocessing = Preprocessing("squash", "nearest")
    assert open_rgb(phone_photo, draft=preprocessing).size == (4032, 3024)
    assert np.array_equal(to_input(decode(phone_photo, preprocessing)),
                          keras_input(phone_photo))


def test_a_heic_photo_opens_upright(tmp_path, samples):
    register_heif()
    photo = Image.open(samples / "rocket.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    photo.save(tmp_path / "IMG_0002.heic", exif=exif.tobytes())
    upright = open_rgb(tmp_path / "IMG_0002.heic")
    assert upright.size == (photo.height, photo.width)
    expected = pixels(photo.transpose(Image.Transpose.ROTATE_270))
    assert np.abs(pixels(upright) - expected).mean() < 8  # HEIC is lossy


@pytest.mark.skipif(not features.check("avif"), reason="this Pillow was built without AVIF")
def test_an_avif_photo_opens(tmp_path, samples):
    Image.open(samples / "coffee.jpg").save(tmp_path / "photo.avif")
    assert open_rgb(tmp_path / "photo.avif").size == Image.open(samples / "coffee.jpg").size


@pytest.mark.parametrize("size", [(1, 2_000_000), (2_000_000, 1)], ids=["needle", "thread"])
@pytest.mark.parametrize("mode", ["center-crop", "squash"])
def test_extreme_aspect_ratios_become_one_input_without_a_giant_intermediate(
        tmp_path, size, mode):
    Image.new("L", size, 77).save(tmp_path / "line.png")
    x = decode(tmp_path / "line.png", Preprocessing(mode, "bicubic"))
    assert x.shape == (299, 299, 3) and (x == 77).all()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs on this system")
def test_a_fifo_is_refused_without_being_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe.jpg")
    with pytest.raises(ImageError, match="not a regular file"):
        open_rgb(tmp_path / "pipe.jpg")  # opening it would block forever


def test_an_image_with_no_pixels_is_refused(tmp_path):
    stub = b"GRIB\x00\x00\x00\x01" + bytes(64)  # a GRIB stub: Pillow reads it as 0x0
    (tmp_path / "stub.grib").write_bytes(stub)
    with pytest.raises(ImageError, match=r"no pixels \(0x0\)"):
        open_rgb(tmp_path / "stub.grib")
