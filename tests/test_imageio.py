"""Image decoding: EXIF rotation, every odd mode scaled not clipped, broken files named."""

import logging
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from docemb.errors import DocembError, ImageReadError
from docemb.imageio import list_images, load_images, read_rgb


@pytest.fixture()
def folder_with_bad_image(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((40, 60, 3), 40 * i, np.uint8)).save(tmp_path / f"good_{i}.png")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return tmp_path


def test_unreadable_image_error_names_the_file(folder_with_bad_image):
    with pytest.raises(ImageReadError, match="broken.jpg"):
        read_rgb(folder_with_bad_image / "broken.jpg")
    with pytest.raises(ImageReadError, match="broken.jpg.*--skip-bad-images"):
        load_images(list_images(folder_with_bad_image))


def test_skip_mode_warns_and_keeps_the_rest(folder_with_bad_image, caplog):
    with caplog.at_level(logging.WARNING):
        images, kept = load_images(list_images(folder_with_bad_image), on_error="skip")
    assert len(images) == 3 and all(p.name.startswith("good") for p in kept)
    assert "broken.jpg" in caplog.text


def test_read_rgb_shrinks_to_max_side(tmp_path):
    Image.fromarray(np.zeros((300, 600, 3), np.uint8)).save(tmp_path / "big.png")
    assert read_rgb(tmp_path / "big.png", max_side=200).shape == (100, 200, 3)


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DocembError, match="no images found"):
        list_images(tmp_path)
    with pytest.raises(DocembError, match="not a directory"):
        list_images(tmp_path / "missing")


def test_cli_reports_a_bad_file_without_a_traceback(folder_with_bad_image, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "docemb.train",
            "--data",
            str(folder_with_bad_image),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "broken.jpg" in result.stderr
    assert "Traceback" not in result.stderr


def test_16_bit_greyscale_is_scaled_not_clipped_to_white(tmp_path):
    ramp = (np.arange(64 * 32, dtype=np.uint16).reshape(32, 64) * 30).astype(np.uint16)  # 0 .. 61410
    Image.fromarray(ramp).save(tmp_path / "scan16.png")  # uint16: mode I;16
    with Image.open(tmp_path / "scan16.png") as opened:
        assert opened.mode.startswith("I")  # what scanners hand over
    decoded = read_rgb(tmp_path / "scan16.png")
    expected = np.round(ramp / ramp.max() * 255).astype(np.int16)
    assert np.abs(decoded[..., 0].astype(np.int16) - expected).max() <= 1
    assert decoded.min() == 0 and decoded.max() == 255  # convert("RGB") gave 255 everywhere


@pytest.mark.parametrize(
    "mode,values", [("I", np.arange(0, 2**20, 2**10, dtype=np.int32)), ("F", np.linspace(0, 1, 1024, dtype=np.float32))]
)
def test_32_bit_integer_and_float_greyscale_keep_their_range(tmp_path, mode, values):
    Image.fromarray(values.reshape(32, 32), mode=mode).save(tmp_path / "deep.tiff")
    decoded = read_rgb(tmp_path / "deep.tiff")[..., 0].reshape(-1).astype(int)
    assert decoded[0] == 0 and decoded[-1] == 255 and np.all(np.diff(decoded) >= 0)


def test_transparency_is_composited_on_white(tmp_path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[:10] = (200, 0, 0, 255)  # opaque red top, transparent black bottom
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "logo.png")
    Image.fromarray(rgba, mode="RGBA").convert("P").save(tmp_path / "logo.gif", transparency=0)
    decoded = read_rgb(tmp_path / "logo.png")
    assert tuple(decoded[15, 5]) == (255, 255, 255) and tuple(decoded[5, 5]) == (200, 0, 0)
    la = Image.fromarray(np.stack([np.full((20, 20), 60, np.uint8), rgba[..., 3]], -1), mode="LA")
    la.save(tmp_path / "grey.png")
    assert tuple(read_rgb(tmp_path / "grey.png")[15, 5]) == (255, 255, 255)


def test_cmyk_decodes_to_the_plain_conversion_without_a_profile(tmp_path):
    cmyk = Image.new("CMYK", (8, 8), (0, 255, 255, 0))  # pure red ink
    cmyk.save(tmp_path / "print.jpg")
    assert tuple(read_rgb(tmp_path / "print.jpg")[4, 4]) == pytest.approx((255, 0, 0), abs=3)
