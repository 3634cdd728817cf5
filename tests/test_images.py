"""Pictures read as they are: every mode to 8-bit RGB by scaling, EXIF orientation, strict decoding."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFile, ImageOps

from reference_models.cli import run
from reference_models.data.errors import CorruptImageError, DataError
from reference_models.data.images import load_image, read_header, to_rgb
from reference_models.predict import main as predict_main


def _pixels(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGB"
    return np.asarray(image).astype(int)


def _saved(tmp_path: Path, image: Image.Image, name: str, **options) -> Path:
    path = tmp_path / name
    image.save(path, **options)
    return path


def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.linspace(1000, 65535, 48).astype(np.uint16).reshape(6, 8)
    path = _saved(tmp_path, Image.fromarray(values), "deep.png")
    with Image.open(path) as stored:
        assert stored.mode == "I;16"
        assert (np.asarray(stored.convert("RGB")) == 255).all()  # Pillow's own conversion: white
    out = _pixels(load_image(path))
    assert np.array_equal(out[..., 0], out[..., 2])
    assert np.abs(out[..., 0] - values / 257).max() <= 0.5 + 1e-9


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda v: Image.frombytes("I;16B", (3, 1), v.astype(">u2").tobytes()), [0, 128, 255]),
        (lambda v: Image.fromarray(v.astype(np.int32)), [0, 128, 255]),  # 16-bit values read as "I"
        (lambda v: Image.fromarray((v.astype(np.int32) - 70000)), [0, 128, 255]),  # outside 0..65535: its range
        (lambda v: Image.fromarray((v / 65535).astype(np.float32)), [0, 128, 255]),  # F in [0, 1]
        (lambda v: Image.fromarray((v / 65535 * 8 - 3).astype(np.float32)), [0, 128, 255]),  # F elsewhere
    ],
)
def test_deep_and_float_greys_are_scaled(make, expected):
    picture = make(np.array([[0, 32896, 65535]]))
    assert picture.mode in ("I;16B", "I", "F")
    assert _pixels(to_rgb(picture))[0, :, 1].tolist() == expected


def test_float_nan_is_black_and_constant_pictures_do_not_divide_by_zero():
    assert _pixels(to_rgb(Image.fromarray(np.array([[np.nan, 0.5]], np.float32))))[0, :, 0].tolist() == [0, 128]
    assert _pixels(to_rgb(Image.fromarray(np.full((2, 2), 7.0, np.float32)))).max() == 0


def test_a_palette_png_keeps_its_colours_and_its_transparency_shows_white(tmp_path):
    indices = np.array([[0, 1], [2, 1]], dtype=np.uint8)
    palette = [255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * (256 * 3 - 9)
    picture = Image.fromarray(indices, mode="P")
    picture.putpalette(palette)
    plain = _pixels(load_image(_saved(tmp_path, picture, "palette.png")))
    assert plain.tolist() == [[[255, 0, 0], [0, 255, 0]], [[0, 0, 255], [0, 255, 0]]]
    see_through = _pixels(load_image(_saved(tmp_path, picture, "clear.png", transparency=1)))
    assert see_through.tolist() == [[[255, 0, 0], [255, 255, 255]], [[0, 0, 255], [255, 255, 255]]]


def test_a_cmyk_jpeg_is_mixed_without_ink_overflow(tmp_path):
    path = _saved(tmp_path, Image.new("CMYK", (8, 8), (128, 0, 0, 128)), "cmyk.jpg", quality=100)
    with Image.open(path) as stored:
        assert stored.mode == "CMYK"
    # (255 - C)(255 - K)/255 per channel; adding C + K and clipping would give red 0.
    assert np.abs(_pixels(load_image(path))[4, 4] - [63, 127, 127]).max() <= 3


@pytest.mark.parametrize(
    ("mode", "colour", "expected"),
    [
        ("RGBA", (10, 20, 30, 0), [255, 255, 255]),
        ("RGBA", (10, 20, 30, 255), [10, 20, 30]),
        ("RGBA", (0, 0, 0, 128), [127, 127, 127]),
        ("LA", (40, 0), [255, 255, 255]),
        ("LA", (40, 255), [40, 40, 40]),
        ("1", 1, [255, 255, 255]),
        ("L", 77, [77, 77, 77]),
        ("RGB", (1, 2, 3), [1, 2, 3]),
    ],
)
def test_other_modes(tmp_path, mode, colour, expected):
    path = _saved(tmp_path, Image.new(mode, (3, 2), colour), f"{mode}.png")
    assert np.abs(_pixels(load_image(path))[1, 2] - expected).max() <= 1


def _oriented(tmp_path: Path, orientation: int, stored: np.ndarray, suffix: str = ".jpg") -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"turned{orientation}{suffix}"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), **({"quality": 95} if suffix == ".jpg" else {}))
    return path


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_as_exif_transpose_does(tmp_path, orientation):
    stored = np.random.default_rng(orientation).integers(0, 256, (20, 40, 3), dtype=np.uint8)
    path = _oriented(tmp_path, orientation, stored)
    with Image.open(path) as picture:
        reference = np.asarray(ImageOps.exif_transpose(picture).convert("RGB"))
        as_stored = np.asarray(picture.convert("RGB"))
    assert np.array_equal(np.asarray(load_image(path)), reference)
    assert np.array_equal(np.asarray(load_image(path, exif_orientation=False)), as_stored)
    assert read_header(path).orientation == orientation
    assert read_header(path).upright_size == (reference.shape[1], reference.shape[0])


@pytest.mark.filterwarnings("ignore:Corrupt EXIF data")
def test_a_malformed_exif_block_reads_the_picture_as_stored(tmp_path):
    path = tmp_path / "odd.jpg"
    Image.new("RGB", (6, 4), (9, 9, 9)).save(path, exif=b"Exif\x00\x00MM\x00*garbage")
    assert load_image(path).size == (6, 4) and read_header(path).orientation == 1


def _cut(data: bytes, keep: float) -> bytes:
    return data[: int(len(data) * keep)]


@pytest.mark.parametrize("pad_truncated", [False, True])
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_pictures_fail_to_load_naming_the_file(tmp_path, monkeypatch, suffix, pad_truncated):
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", pad_truncated)
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = io.BytesIO()
    Image.fromarray(noise).save(whole, format="PNG" if suffix == ".png" else "JPEG")
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(_cut(whole.getvalue(), 0.6))
    assert read_header(path).width == 64  # the header survives the cut: only decoding finds it
    with pytest.raises(CorruptImageError, match=rf"cut\{suffix}: cannot decode the picture \(OSError: .*truncated") as caught:
        load_image(path)
    assert isinstance(caught.value, DataError) and isinstance(caught.value, OSError)
    assert ImageFile.LOAD_TRUNCATED_IMAGES is pad_truncated


def test_missing_and_garbage_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.png: image file not found"):
        load_image(tmp_path / "nothing.png")
    (tmp_path / "text.png").write_text("hello")
    with pytest.raises(CorruptImageError, match=r"text\.png: cannot decode the picture \(UnidentifiedImageError"):
        load_image(tmp_path / "text.png")
    with pytest.raises(CorruptImageError, match=r"text\.png: cannot read the picture's header"):
        read_header(tmp_path / "text.png")


_PNG = io.BytesIO()
Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(_PNG, format="PNG")


@settings(deadline=None, max_examples=60)
@given(cut=st.integers(0, len(_PNG.getvalue())), flips=st.lists(st.tuples(st.integers(0, 10**4), st.integers(0, 255)), max_size=4))
def test_damaged_pictures_raise_only_corrupt_image_errors(tmp_path_factory, cut, flips):
    data = bytearray(_PNG.getvalue()[:cut] or b"\x00")
    for position, byte in flips:
        data[position % len(data)] = byte
    path = tmp_path_factory.mktemp("fuzz") / "damaged.png"
    path.write_bytes(bytes(data))
    try:
        picture = load_image(path)
    except CorruptImageError as error:
        assert str(error).startswith(f"{path}: ") and "\n" not in str(error)
    else:
        assert picture.mode == "RGB"


class _Stop(Exception):
    pass


def test_predict_reads_pictures_upright_through_load_image(tmp_path, monkeypatch):
    from reference_models.data import images

    seen = []

    def spy(path, **options):
        picture = load_image(path, **options)
        seen.append((Path(path), options, picture.size))
        raise _Stop  # before any model is loaded: only the picture is under test

    monkeypatch.setattr(images, "load_image", spy)
    path = _oriented(tmp_path, 6, np.zeros((20, 40, 3), dtype=np.uint8))  # 40 wide as stored
    args = ["--checkpoint", str(tmp_path / "model.pt"), "--image", str(path), "--text", "the thing",
            "--out", str(tmp_path / "out.png"), "--device", "cpu"]
    with pytest.raises(_Stop):
        predict_main(args)
    assert seen == [(path, {}, (20, 40))]  # the default: turned upright, 20 wide


def test_predict_on_a_truncated_picture_is_one_line(tmp_path, capsys):
    whole = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(whole, format="JPEG")
    path = tmp_path / "cut.jpg"
    path.write_bytes(_cut(whole.getvalue(), 0.5))
    args = ["--checkpoint", str(tmp_path / "model.pt"), "--image", str(path), "--text", "x",
            "--out", str(tmp_path / "o.png"), "--device", "cpu"]
    assert run(lambda: predict_main(args), "predict") == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"predict: error: {path}: cannot decode the picture") and "\n" not in err
