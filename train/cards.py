"""Card-like designs from an icon font: the kind of template (a bank's or a shop's card) that
differs from its neighbours by a logo and a colour, drawn at ID-1 proportions (85.6 x 54 mm)."""

from __future__ import annotations

import string
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

ID1_ASPECT = 85.6 / 54


def font_glyphs(path: str | Path) -> list[int]:
    """Code points of the icons in a font (its private-use and symbol glyphs, not letters)."""
    from fontTools.ttLib import TTFont

    cmap = TTFont(str(path)).getBestCmap() or {}
    return sorted(code for code in cmap if code >= 0xE000 or 0x2000 <= code < 0x3000)


def _colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, size=3))


def _contrast(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    light = sum(colour) / 3 > 128
    return (20, 20, 30) if light and rng.random() < 0.8 else (245, 245, 245) if not light else _colour(rng)


def _tint(colour: tuple[int, int, int], rng: np.random.Generator) -> tuple[int, int, int]:
    """The colour mixed with white or black: a brand card's second tone."""
    towards, share = (255 if rng.random() < 0.5 else 0), rng.uniform(0.2, 0.4)
    return tuple(int(round(c + (towards - c) * share)) for c in colour)


def render_card(
    font_path: str | Path,
    code: int,
    rng: np.random.Generator,
    long_side: int = 256,
    background: tuple[int, int, int] | None = None,
) -> Image.Image:
    """One card: background colour (flat or two-tone; a brand's `background` where one is given,
    with a band of its tint), the icon as logo, and on some a chip, number groups and a name line,
    each placed and sized at random."""
    width, height = long_side, int(round(long_side / ID1_ASPECT))
    brand = background is not None
    background = background or _colour(rng)
    card = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(card)
    if rng.random() < 0.4:  # two-tone: a band or a diagonal
        other = _tint(background, rng) if brand else _colour(rng)
        if brand or rng.random() < 0.5:
            y0 = int(rng.uniform(0.5, 0.8) * height)
            draw.rectangle((0, y0, width, height), fill=other)
        else:
            draw.polygon([(int(rng.uniform(0.3, 0.8) * width), 0), (width, 0), (width, height)], fill=other)
    ink = _contrast(background, rng)
    size = int(rng.uniform(0.25, 0.55) * height)
    logo = ImageFont.truetype(str(font_path), size)
    x = int(rng.uniform(0.05, 0.95) * width - size / 2) if rng.random() < 0.5 else int(0.06 * width)
    y = int(rng.uniform(0.06, 0.4) * height)
    draw.text((max(2, min(width - size, x)), y), chr(code), font=logo, fill=ink)
    if rng.random() < 0.6:  # a chip
        cx, cy = int(0.1 * width), int(rng.uniform(0.35, 0.5) * height)
        draw.rounded_rectangle((cx, cy, cx + int(0.13 * width), cy + int(0.16 * height)), radius=4, fill=(212, 175, 55))
    text_font = ImageFont.load_default(size=max(8, int(rng.uniform(0.07, 0.11) * height)))
    if rng.random() < 0.7:  # card number in groups of four, or plain bars
        groups = " ".join("".join(rng.choice(list(string.digits), 4)) for _ in range(4))
        ny = int(rng.uniform(0.62, 0.75) * height)
        if rng.random() < 0.5:
            draw.text((int(0.08 * width), ny), groups, font=text_font, fill=ink)
        else:
            for k in range(4):
                bx = int((0.08 + 0.22 * k) * width)
                draw.rectangle((bx, ny, bx + int(0.17 * width), ny + int(0.05 * height)), fill=ink)
    if rng.random() < 0.6:  # a name or brand line
        word = "".join(rng.choice(list(string.ascii_uppercase), int(rng.integers(4, 14))))
        draw.text((int(0.08 * width), int(0.85 * height)), word, font=text_font, fill=ink)
    return card
