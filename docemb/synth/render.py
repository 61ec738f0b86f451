"""Drawing primitives and the five document kinds: card, id, form, letter, receipt.

Every kind draws from two random streams: `fam` decides the layout and content a whole family
shares, `mem` decides the small design changes (colour tone, logo, heading, a band) that tell a
family's members apart. The same family seed therefore yields near-duplicates, the hard case.
"""

from __future__ import annotations

import colorsys
import functools
import math
import random
import string

from PIL import Image, ImageDraw, ImageFont

RGB = tuple[int, int, int]
SYLLABLES = (
    "ka",
    "ro",
    "mi",
    "ten",
    "sa",
    "lo",
    "vi",
    "na",
    "del",
    "tor",
    "pa",
    "ex",
    "co",
    "ban",
    "ri",
    "um",
    "fi",
    "gra",
    "no",
    "sel",
)


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont:
    """Pillow's built-in scalable font: present on every fresh install, no font files needed."""
    return ImageFont.load_default(size=max(6, size))


def word(rng: random.Random, syllables: tuple[int, int] = (2, 3)) -> str:
    return "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(*syllables))).capitalize()


def words(rng: random.Random, n: int) -> str:
    return " ".join(word(rng) for _ in range(n))


def digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def colour(rng: random.Random, sat: tuple[float, float] = (0.4, 0.9), val: tuple[float, float] = (0.3, 0.9)) -> RGB:
    r, g, b = colorsys.hsv_to_rgb(rng.random(), rng.uniform(*sat), rng.uniform(*val))
    return int(r * 255), int(g * 255), int(b * 255)


def shift(c: RGB, rng: random.Random, amount: float) -> RGB:
    """The same colour, nudged in hue and brightness: a sibling product's tone."""
    h, s, v = colorsys.rgb_to_hsv(*(x / 255 for x in c))
    h = (h + rng.uniform(-amount, amount)) % 1.0
    v = min(1.0, max(0.05, v + rng.uniform(-amount, amount)))
    r, g, b = colorsys.hsv_to_rgb(h, s, v)
    return int(r * 255), int(g * 255), int(b * 255)


def mix(a: RGB, b: RGB, t: float) -> RGB:
    return tuple(int(x + (y - x) * t) for x, y in zip(a, b))  # type: ignore[return-value]


def contrast_text(bg: RGB) -> RGB:
    return (20, 20, 20) if sum(bg) > 420 else (245, 245, 245)


def logo(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], kind: int, fill: RGB, accent: RGB) -> None:
    """A small brand mark; `kind` picks one of eight shapes."""
    x0, y0, x1, y1 = box
    w, h = x1 - x0, y1 - y0
    if kind == 0:
        draw.ellipse(box, fill=fill)
    elif kind == 1:
        draw.ellipse((x0, y0, x0 + w * 0.65, y1), fill=fill)
        draw.ellipse((x0 + w * 0.35, y0, x1, y1), fill=accent)
    elif kind == 2:
        draw.polygon([(x0, y1), ((x0 + x1) / 2, y0), (x1, y1)], fill=fill)
    elif kind == 3:
        draw.rounded_rectangle(box, radius=max(1, int(min(w, h) * 0.25)), fill=fill)
        draw.rectangle((x0 + w * 0.3, y0 + h * 0.3, x1 - w * 0.3, y1 - h * 0.3), fill=accent)
    elif kind == 4:
        for i in range(3):
            draw.rectangle((x0, y0 + i * h / 3, x1, y0 + i * h / 3 + h / 5), fill=fill if i % 2 == 0 else accent)
    elif kind == 5:
        draw.polygon([(x0 + w / 2, y0), (x1, y0 + h / 2), (x0 + w / 2, y1), (x0, y0 + h / 2)], fill=fill)
    elif kind == 6:
        draw.ellipse(box, outline=fill, width=max(2, int(w * 0.12)))
        draw.ellipse((x0 + w * 0.35, y0 + h * 0.35, x1 - w * 0.35, y1 - h * 0.35), fill=accent)
    else:
        draw.pieslice(box, start=30, end=330, fill=fill)


def text(draw: ImageDraw.ImageDraw, xy: tuple[float, float], s: str, size: int, fill: RGB, anchor: str = "la") -> None:
    draw.text(xy, s, font=font(size), fill=fill, anchor=anchor)


def text_lines(draw: ImageDraw.ImageDraw, rng: random.Random, box: tuple[int, int, int, int], size: int, fill: RGB) -> None:
    """A paragraph of word-like text filling `box`, ragged right."""
    x0, y0, x1, y1 = box
    y = y0
    while y + size <= y1:
        line, x = [], x0
        while True:
            w = word(rng, (1, 3))
            width = draw.textlength(w + " ", font=font(size))
            if x + width > x1 or (line and rng.random() < 0.03):
                break
            line.append(w)
            x += width
        text(draw, (x0, y), " ".join(line), size, fill)
        y += int(size * 1.45)


# --- the five kinds ----------------------------------------------------------------------------
# Each takes (fam, mem, variations, long_side) and returns an RGB image. `variations` names the
# design changes this member makes; an empty set draws the family's base design.


def card(fam: random.Random, mem: random.Random, var: set[str], long_side: int) -> Image.Image:
    w, h = long_side, int(long_side / 1.586)
    base = colour(fam)
    if "tone" in var:
        base = shift(base, mem, 0.12)
    second = shift(base, fam, 0.2)
    image = Image.new("RGB", (w, h), base)
    draw = ImageDraw.Draw(image)
    bands = fam.randint(0, 3)
    if "band" in var:
        bands = (bands + mem.randint(1, 2)) % 4
    for i in range(bands):
        x = w * (0.3 + 0.2 * i)
        draw.polygon([(x, 0), (x + w * 0.15, 0), (x - w * 0.1, h), (x - w * 0.25, h)], fill=mix(base, second, 0.6))
    ink = contrast_text(base)
    logo_kind = fam.randrange(8)
    logo_fill = colour(fam, val=(0.7, 1.0))
    if "logo" in var:
        logo_kind = (logo_kind + mem.randint(1, 7)) % 8
    logo(draw, (int(w * 0.05), int(h * 0.07), int(w * 0.05 + h * 0.22), int(h * 0.29)), logo_kind, logo_fill, ink)
    name = words(fam, 1).upper()
    if "heading" in var:
        name = words(mem, 1).upper()
    text(draw, (int(w * 0.07 + h * 0.22), int(h * 0.1)), name, int(h * 0.12), ink)
    products = ["GOLD", "PLATINUM", "CLASSIC", "DEBIT", "BUSINESS", "WORLD"]
    product = fam.choice(products)
    if "product" in var:
        product = mem.choice([p for p in products if p != product])
    text(draw, (int(w * 0.95), int(h * 0.12)), product, int(h * 0.07), ink, anchor="ra")
    if fam.random() < 0.85:  # chip
        cx, cy = int(w * 0.1), int(h * 0.38)
        draw.rounded_rectangle(
            (cx, cy, cx + int(h * 0.2), cy + int(h * 0.15)), radius=3, fill=(212, 175, 55), outline=(140, 110, 30)
        )
        draw.line((cx, cy + int(h * 0.075), cx + int(h * 0.2), cy + int(h * 0.075)), fill=(140, 110, 30))
    number = " ".join(digits(fam, 4) for _ in range(4))
    text(draw, (int(w * 0.08), int(h * 0.62)), number, int(h * 0.09), ink)
    text(draw, (int(w * 0.08), int(h * 0.82)), words(fam, 2).upper(), int(h * 0.06), ink)
    text(draw, (int(w * 0.55), int(h * 0.82)), f"{fam.randint(1, 12):02d}/{fam.randint(26, 35)}", int(h * 0.06), ink)
    if fam.random() < 0.7:  # network mark
        r = int(h * 0.09)
        cx, cy = int(w * 0.84), int(h * 0.83)
        draw.ellipse((cx - r * 2, cy - r, cx, cy + r), fill=(235, 0, 27))
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(247, 158, 27))
    return image


def id_card(fam: random.Random, mem: random.Random, var: set[str], long_side: int) -> Image.Image:
    w, h = long_side, int(long_side / 1.586)
    paper = colour(fam, sat=(0.05, 0.25), val=(0.85, 1.0))
    if "tone" in var:
        paper = shift(paper, mem, 0.1)
    band = colour(fam, val=(0.3, 0.7))
    image = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(image)
    wave = mix(paper, band, 0.25)
    period = fam.uniform(10, 30)
    for k in range(0, h, max(3, h // 18)):  # guilloche-like background lines
        pts = [(x, k + 4 * math.sin(x / period + k)) for x in range(0, w, 6)]
        draw.line(pts, fill=wave, width=1)
    band_h = int(h * fam.uniform(0.14, 0.2))
    if "band" in var:
        band = shift(band, mem, 0.15)
    draw.rectangle((0, 0, w, band_h), fill=band)
    title = words(fam, 2).upper()
    if "heading" in var:
        title = words(mem, 2).upper()
    text(draw, (w // 2, band_h // 2), title, int(band_h * 0.45), contrast_text(band), anchor="mm")
    logo_kind = fam.randrange(8)
    if "logo" in var:
        logo_kind = (logo_kind + mem.randint(1, 7)) % 8
    logo(
        draw,
        (int(w * 0.02), int(band_h * 0.1), int(w * 0.02 + band_h * 0.8), int(band_h * 0.9)),
        logo_kind,
        contrast_text(band),
        mix(band, paper, 0.5),
    )
    photo_left = fam.random() < 0.75
    px0 = int(w * 0.05) if photo_left else int(w * 0.68)
    py0, pw, ph = int(h * 0.28), int(w * 0.26), int(h * 0.6)
    draw.rectangle((px0, py0, px0 + pw, py0 + ph), fill=(190, 200, 210), outline=(90, 90, 90))
    draw.ellipse((px0 + pw * 0.3, py0 + ph * 0.15, px0 + pw * 0.7, py0 + ph * 0.5), fill=(120, 110, 100))
    draw.ellipse((px0 + pw * 0.1, py0 + ph * 0.55, px0 + pw * 0.9, py0 + ph * 1.1), fill=(120, 110, 100))
    draw.rectangle((px0, py0 + ph, px0 + pw, py0 + ph + 2), fill=paper)
    fx = int(w * 0.36) if photo_left else int(w * 0.05)
    size = int(h * 0.045)
    labels = [word(fam).upper() for _ in range(fam.randint(4, 6))]
    if "product" in var:
        labels[mem.randrange(len(labels))] = word(mem).upper()
    for i, label in enumerate(labels):
        y = int(h * 0.27) + i * int(size * 2.9)
        text(draw, (fx, y), label, size, mix(band, (0, 0, 0), 0.3))
        text(draw, (fx, y + int(size * 1.2)), words(fam, fam.randint(1, 2)), int(size * 1.25), (20, 20, 20))
    if fam.random() < 0.5:  # machine-readable zone
        mrz = "<".join(word(fam).upper() for _ in range(3)).ljust(30, "<")
        text(draw, (int(w * 0.04), int(h * 0.9)), mrz, int(h * 0.05), (30, 30, 30))
    return image


def form(fam: random.Random, mem: random.Random, var: set[str], long_side: int) -> Image.Image:
    w, h = int(long_side / 1.414), long_side
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    accent = colour(fam, val=(0.3, 0.7))
    if "tone" in var:
        accent = shift(accent, mem, 0.15)
    margin = int(w * 0.07)
    logo_kind = fam.randrange(8)
    if "logo" in var:
        logo_kind = (logo_kind + mem.randint(1, 7)) % 8
    logo(draw, (margin, margin, margin + int(w * 0.1), margin + int(w * 0.1)), logo_kind, accent, (255, 255, 255))
    title_words = fam.randint(2, 4)
    title = words(fam, title_words).upper()
    if "heading" in var:
        title = words(mem, title_words).upper()
    text(draw, (margin + int(w * 0.14), margin + int(w * 0.02)), title, int(w * 0.04), (10, 10, 10))
    y = margin + int(w * 0.16)
    if (fam.random() < 0.6) != ("band" in var):
        draw.rectangle((margin, y, w - margin, y + int(h * 0.025)), fill=accent)
        y += int(h * 0.04)
    size = int(w * 0.022)
    sections = fam.randint(2, 4)
    for s in range(sections):
        text(draw, (margin, y), f"{s + 1}. {words(fam, 2)}", int(size * 1.3), accent)
        y += int(size * 2.2)
        kinds = ["boxes", "checks", "table", "rules"]
        kind = fam.choice(kinds)
        if "product" in var and s == sections - 1:
            kind = mem.choice([k for k in kinds if k != kind])
        rows = fam.randint(2, 4)
        for r in range(rows):
            if y > h - margin * 2:
                break
            if kind == "boxes":
                cols = fam.randint(1, 3)
                cw = (w - 2 * margin) // cols
                for c in range(cols):
                    text(draw, (margin + c * cw, y), word(fam), size, (60, 60, 60))
                    draw.rectangle((margin + c * cw, y + size + 2, margin + (c + 1) * cw - 6, y + size * 3), outline=(40, 40, 40))
                y += size * 4
            elif kind == "checks":
                for c in range(3):
                    x = margin + c * (w - 2 * margin) // 3
                    draw.rectangle((x, y, x + size, y + size), outline=(40, 40, 40))
                    text(draw, (x + size + 4, y), word(fam), size, (40, 40, 40))
                y += int(size * 2)
            elif kind == "table":
                cols = 4
                cw = (w - 2 * margin) // cols
                fill = mix(accent, (255, 255, 255), 0.8) if r == 0 else None
                for c in range(cols):
                    draw.rectangle((margin + c * cw, y, margin + (c + 1) * cw, y + size * 2), outline=(40, 40, 40), fill=fill)
                    if r == 0:
                        text(draw, (margin + c * cw + 3, y + 3), word(fam), size, (20, 20, 20))
                y += size * 2
            else:
                text(draw, (margin, y), word(fam) + ":", size, (40, 40, 40))
                draw.line((margin + size * 6, y + size, w - margin, y + size), fill=(80, 80, 80))
                y += int(size * 2.2)
        y += size
    draw.line((margin, h - margin, w - margin, h - margin), fill=accent, width=2)
    text(draw, (margin, h - margin + 4), f"{word(fam).upper()}-{digits(fam, 4)}", int(size * 0.9), (90, 90, 90))
    return image


def letter(fam: random.Random, mem: random.Random, var: set[str], long_side: int) -> Image.Image:
    w, h = int(long_side / 1.414), long_side
    image = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    accent = colour(fam)
    if "tone" in var:
        accent = shift(accent, mem, 0.15)
    margin = int(w * 0.09)
    header_h = int(h * fam.uniform(0.05, 0.1))
    if (fam.random() < 0.5) != ("band" in var):
        draw.rectangle((0, 0, w, header_h), fill=accent)
        head_ink = contrast_text(accent)
    else:
        head_ink = accent
    logo_kind = fam.randrange(8)
    if "logo" in var:
        logo_kind = (logo_kind + mem.randint(1, 7)) % 8
    logo(
        draw,
        (margin, int(header_h * 0.15), margin + int(header_h * 0.7), int(header_h * 0.85)),
        logo_kind,
        head_ink,
        mix(accent, (255, 255, 255), 0.5),
    )
    company = words(fam, 2)
    if "heading" in var:
        company = words(mem, 2)
    text(draw, (margin + header_h, header_h // 2), company, int(header_h * 0.4), head_ink, anchor="lm")
    size = int(w * 0.021)
    y = header_h + int(h * 0.04)
    for _ in range(3):  # address block
        text(draw, (margin, y), words(fam, 3), size, (50, 50, 50))
        y += int(size * 1.4)
    text(
        draw,
        (w - margin, header_h + int(h * 0.04)),
        f"{fam.randint(1, 28)} {word(fam)} 20{fam.randint(10, 29)}",
        size,
        (50, 50, 50),
        anchor="ra",
    )
    y += size * 2
    text(draw, (margin, y), words(fam, fam.randint(3, 6)), int(size * 1.4), (10, 10, 10))
    y += size * 3
    blocks = fam.randint(2, 4)
    for b in range(blocks):
        lines = fam.randint(3, 7)
        block_h = int(lines * size * 1.45)
        if y + block_h > h - margin * 2:
            break
        if (fam.random() < 0.25) != ("product" in var and b == 0):  # a table instead of text
            cols, rows = fam.randint(3, 5), lines // 2 + 1
            cw = (w - 2 * margin) // cols
            for r in range(rows):
                for c in range(cols):
                    draw.rectangle(
                        (margin + c * cw, y + r * size * 2, margin + (c + 1) * cw, y + (r + 1) * size * 2),
                        outline=(120, 120, 120),
                        fill=mix(accent, (255, 255, 255), 0.85) if r == 0 else None,
                    )
            y += rows * size * 2 + size * 2
        else:
            text_lines(draw, fam, (margin, y, w - margin, y + block_h), size, (40, 40, 40))
            y += block_h + size
    sig_y = min(y + size * 2, h - margin * 2)
    draw.line(
        [(margin + i * 8, sig_y + 6 * ((i * 7919 + fam.randrange(5)) % 3 - 1)) for i in range(10)], fill=(30, 30, 120), width=2
    )
    draw.line((margin, h - margin, w - margin, h - margin), fill=accent, width=1)
    text(draw, (w // 2, h - margin + 4), words(fam, 4), int(size * 0.8), (110, 110, 110), anchor="ma")
    return image


def receipt(fam: random.Random, mem: random.Random, var: set[str], long_side: int) -> Image.Image:
    w, h = int(long_side / fam.uniform(2.4, 3.0)), long_side
    paper = (250, 248, 240)
    if "tone" in var:
        paper = shift(paper, mem, 0.05)
    image = Image.new("RGB", (w, h), paper)
    draw = ImageDraw.Draw(image)
    ink = (35, 35, 35)
    margin = int(w * 0.07)
    size = int(w * 0.06)
    y = margin
    logo_kind = fam.randrange(8)
    if "logo" in var:
        logo_kind = (logo_kind + mem.randint(1, 7)) % 8
    if fam.random() < 0.7 or "logo" in var:
        logo(draw, (w // 2 - size * 2, y, w // 2 + size * 2, y + size * 4), logo_kind, ink, paper)
        y += size * 5
    store = words(fam, 2).upper()
    if "heading" in var:
        store = words(mem, 2).upper()
    text(draw, (w // 2, y), store, int(size * 1.4), ink, anchor="ma")
    y += int(size * 2.2)
    for _ in range(2):
        text(draw, (w // 2, y), words(fam, 3), int(size * 0.8), ink, anchor="ma")
        y += int(size * 1.2)
    dash = "- " * 40
    text(draw, (margin, y), dash, size, ink)
    y += int(size * 1.5)
    items = fam.randint(5, 14)
    if "product" in var:
        items += mem.choice([-3, -2, 2, 3])
    for _ in range(items):
        if y > h - size * 10:
            break
        text(draw, (margin, y), words(fam, fam.randint(1, 2)), size, ink)
        text(draw, (w - margin, y), f"{fam.randint(1, 99)}.{digits(fam, 2)}", size, ink, anchor="ra")
        y += int(size * 1.4)
    text(draw, (margin, y), dash, size, ink)
    y += int(size * 1.5)
    if "band" in var:
        draw.rectangle((margin, y - 2, w - margin, y + int(size * 1.8)), fill=(0, 0, 0))
        total_ink = paper
    else:
        total_ink = ink
    text(draw, (margin, y), "TOTAL", int(size * 1.3), total_ink)
    text(draw, (w - margin, y), f"{fam.randint(10, 500)}.{digits(fam, 2)}", int(size * 1.3), total_ink, anchor="ra")
    y += size * 3
    x = margin
    while x < w - margin and y + size * 3 < h:  # barcode
        bar = fam.randint(1, 3)
        draw.rectangle((x, y, x + bar, y + size * 3), fill=ink)
        x += bar + fam.randint(1, 3)
    return image


KINDS = {"card": card, "id": id_card, "form": form, "letter": letter, "receipt": receipt}
VARIATIONS = ("tone", "logo", "heading", "band", "product")
