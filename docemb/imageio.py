"""Reading images with errors that name the file, and finding the images of a data folder."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from docemb.errors import DocembError, ImageReadError
from docemb.pdf import is_pdf, page_count, page_name, render_page, split_page_name

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif")
OnError = Literal["raise", "skip"]
SKIP_HINT = "pass --skip-bad-images to skip such files"
PDF_LONG_SIDE = 1024  # a PDF page's long side in pixels when the caller names no max_side
log = logging.getLogger(__name__)


def read_rgb(path: str | os.PathLike, max_side: int | None = None, jpeg_draft: int | None = None) -> np.ndarray:
    """Decode `path` to an HxWx3 uint8 RGB array, honouring EXIF rotation (phone photos).

    With `max_side`, the image is shrunk (never enlarged) so its long side is at most that.
    With `jpeg_draft`, libjpeg may decode a JPEG at a reduced scale, no smaller than that on
    each side: far faster on large photos, but the pixels differ a little from a full decode.
    A PDF page (`FILE.pdf#page=N`, or `FILE.pdf` for its first) is rendered at a long side of
    `max_side`, or PDF_LONG_SIDE.
    """
    file, page = split_page_name(str(path))
    if page is not None or is_pdf(file):
        return render_page(file, page or 1, max_side or PDF_LONG_SIDE)
    try:
        with Image.open(path) as image:
            if jpeg_draft and image.format == "JPEG":
                image.draft("RGB", (jpeg_draft, jpeg_draft))
            image = to_rgb(ImageOps.exif_transpose(image))
            if max_side and max(image.size) > max_side:
                image = _shrink(image, max_side)
            array = np.asarray(image, dtype=np.uint8)
    except FileNotFoundError:
        raise ImageReadError(f"{path}: no such file") from None
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise ImageReadError(f"{path}: not a readable image ({exc.__class__.__name__}: {exc})") from None
    if array.ndim != 3 or min(array.shape[:2]) < 2:
        raise ImageReadError(f"{path}: image is too small ({array.shape[1]}x{array.shape[0]})")
    return array


def frame_count(path: str | os.PathLike) -> int:
    """Frames in an image file (an animated GIF, PNG or WebP, a multi-page TIFF), from its
    header; `read_rgb` decodes the first only, and the data report says which files had more."""
    try:
        with Image.open(path) as image:
            return int(getattr(image, "n_frames", 1))
    except (OSError, ValueError, Image.DecompressionBombError):
        return 1  # unreadable: read_rgb names the file and the problem


def _shrink(image: Image.Image, max_side: int) -> Image.Image:
    """Long side to `max_side`, aspect kept (Pillow's thumbnail), but no side under 2 px: a
    40000x40 strip stays an image."""
    if min(image.size) * max_side / max(image.size) >= 2:
        image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
        return image
    scale = max_side / max(image.size)
    return image.resize(tuple(max(2, round(side * scale)) for side in image.size), Image.Resampling.BILINEAR)


HIGH_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I", "F")


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB of any Pillow mode, without the silent losses of `convert("RGB")`: 16/32-bit integer
    and float greyscale are scaled to 8 bits by their brightest value (a float image within
    0-1 by 1), where convert clips them to white; transparency (RGBA, LA, PA, palette or
    greyscale with a transparent colour) is composited on white, where convert keeps whatever
    colour sits under it; CMYK goes through its ICC profile when it has one."""
    if image.mode in HIGH_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        top = 1.0 if image.mode == "F" and values.max() <= 1.0 else max(float(values.max()), 1e-12)
        grey = np.clip(np.nan_to_num(values) / top * 255.0 + 0.5, 0, 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if image.mode == "CMYK" and image.info.get("icc_profile"):
        from io import BytesIO

        from PIL import ImageCms

        try:
            source = ImageCms.ImageCmsProfile(BytesIO(image.info["icc_profile"]))
            return ImageCms.profileToProfile(image, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
        except (ImageCms.PyCMSError, OSError):
            pass  # a broken profile: the plain conversion below
    return image.convert("RGB")


def image_files(root: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> list[Path]:
    """Image files under the folder `root` (recursive), by suffix, unsorted; none is no error."""
    return [p for p in root.rglob("*") if p.suffix.lower() in suffixes and p.is_file()]


def expand_pdfs(paths: list[str | os.PathLike], on_error: OnError = "raise") -> tuple[list[str], list[str]]:
    """The paths with each PDF replaced by its pages' names, and "path: reason" for each PDF that
    cannot be opened (with on_error="skip"; "raise" stops at the first)."""
    names, bad = [], []
    for path in paths:
        if not is_pdf(path):  # an image, or one page already named
            names.append(str(path))
            continue
        try:
            names.extend(page_name(path, number) for number in range(1, page_count(path) + 1))
        except ImageReadError as exc:
            if on_error == "raise":
                raise
            bad.append(str(exc))
    return names, bad


def list_images(root: str | os.PathLike) -> list[Path]:
    """All image files under `root` (recursive), sorted so that class indices are stable."""
    root = Path(root)
    if not root.is_dir():
        raise DocembError(f"{root}: not a directory")
    files = sorted(image_files(root))
    if not files:
        raise DocembError(f"{root}: no images found (looked for {', '.join(IMAGE_SUFFIXES)})")
    return files


def load_images(
    paths: list[Path], max_side: int | None = None, on_error: OnError = "raise"
) -> tuple[list[np.ndarray], list[Path]]:
    """Decode every path; return the arrays and the paths that decoded.

    on_error="raise" stops at the first unreadable file with its name; "skip" logs a warning
    per bad file and goes on, so one corrupt download does not cost a whole run.
    """
    images, kept = [], []
    for path in paths:
        try:
            images.append(read_rgb(path, max_side))
        except ImageReadError as exc:
            if on_error == "raise":
                raise ImageReadError(f"{exc} ({SKIP_HINT})") from None
            log.warning("skipping %s", exc)
            continue
        kept.append(path)
    if not images:
        raise DocembError("no readable images among %d files" % len(paths))
    return images, kept
