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
