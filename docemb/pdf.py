"""PDF pages as images: `docemb index`, `search` and `match` read a PDF as an image per page,
and `read_rgb` reads any page by its name.

A page is named `FILE.pdf#page=N` (N from 1), the form `docemb index` stores and `docemb
search` prints. PDFium's error code cannot be trusted for a load that fails (a file with no
pages sets none, so the previous failure's code stands), so the reason is read from the file.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from docemb.errors import ImageReadError

PAGE_MARK = "#page="


def is_pdf(path: str | os.PathLike) -> bool:
    return Path(path).suffix.lower() == ".pdf"


def is_pdf_page(name: str) -> bool:
    return split_page_name(name)[1] is not None


def page_name(path: str | os.PathLike, number: int) -> str:
    """The name of page `number` (from 1) of `path`."""
    return f"{path}{PAGE_MARK}{number}"


def split_page_name(name: str) -> tuple[str, int | None]:
    """(file, page number from 1) of a page name; (name, None) for a plain file."""
    file, mark, number = name.rpartition(PAGE_MARK)
    if mark and number.isdigit() and is_pdf(file):
        return file, int(number)
    return name, None


def page_count(source: str | os.PathLike | bytes) -> int:
    """Pages in the PDF (a file, or its bytes), at least one; else an ImageReadError naming it."""
    document = _open(source)
    try:
        return len(document)
    finally:
        document.close()


def render_page(path: str | os.PathLike, number: int, long_side: int) -> np.ndarray:
    """Page `number` (from 1) as HxWx3 uint8 RGB, rendered so its long side is `long_side`."""
    return render_pages(path, long_side, [number])[0]


def render_pages(source: str | os.PathLike | bytes, long_side: int, numbers: Iterable[int] | None = None) -> list[np.ndarray]:
    """The given pages (from 1; default every page) of a PDF file or its bytes, as render_page
    gives them, from one opening of the document."""
    import pypdfium2 as pdfium

    document = _open(source)
    try:
        pages = []
        for number in numbers or range(1, len(document) + 1):
            if not 1 <= number <= len(document):
                raise ImageReadError(f"{_name(source, number)}: the PDF has {len(document)} pages")
            page = document[number - 1]
            width, height = page.get_size()
            try:
                bitmap = page.render(scale=long_side / max(width, height, 1e-6))
            except pdfium.PdfiumError as exc:
                raise ImageReadError(f"{_name(source, number)}: cannot render the page ({exc})") from None
            pages.append(np.asarray(bitmap.to_pil().convert("RGB"), dtype=np.uint8))
        return pages
    finally:
        document.close()


def _name(source: str | os.PathLike | bytes, number: int | None = None) -> str:
    name = "PDF data" if isinstance(source, bytes) else str(source)
    return name if number is None else page_name(name, number)


def _open(source: str | os.PathLike | bytes):
    import pypdfium2 as pdfium

    if not isinstance(source, bytes) and not Path(source).is_file():
        raise ImageReadError(f"{source}: no such file")
    try:
        document = pdfium.PdfDocument(source if isinstance(source, bytes) else str(source))
    except pdfium.PdfiumError:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        reason = "encrypted: it needs a password" if b"/Encrypt" in data else "not a PDF, damaged, or with no pages"
        raise ImageReadError(f"{_name(source)}: not a readable PDF ({reason})") from None
    if len(document) == 0:
        document.close()
        raise ImageReadError(f"{_name(source)}: not a readable PDF (holds no pages)")
    return document
