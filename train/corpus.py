"""`docemb corpus`: a large training pool from what the package registries hold.

Three pieces, each written as image files with one manifest row per image (source package,
version, file, page, licence), cached and idempotent (a piece whose `.done` file exists is
skipped; a killed run redoes only the unfinished piece):

- `pages`: PDF pages from Debian documentation packages, several per PDF, via pypdfium2;
- `photos`: wallpapers and photos from Debian background packages, a few crops each;
- `cards`: ID-1 card designs composed from icon fonts on npm (colours, chip, number bars, text);
- `brandcards`: one card per brand of the Simple Icons font (npm `simple-icons-font`), on the
  brand's own colour, the kind of design `realdocs`' cards are. Every brand a realdocs card uses
  (eval templates, eval unknown and train; `realdocs_brands.txt`) is left out by its slug.

Packages reserved for independent evaluation are refused by name, and so are the four TeX Live
packages that `realdocs/eval`'s manuals come from, so no page of an eval manual can enter.
Train on the result with `--data imagefolder:CORPUS/pages imagefolder:CORPUS/photos ...`:
images are decoded on demand, never held in memory.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from docemb.atomic import atomic_path, write_json
from docemb.errors import DocembError, ImageReadError
from docemb.imageio import to_rgb
from docemb.pdf import page_count, render_pages

# Independent evaluation data: never trained, calibrated or tuned on.
RESERVED = {
    "texlive-latex-recommended-doc": "reserved for independent evaluation",
    "texlive-science-doc": "reserved for independent evaluation",
    "texlive-publishers-doc": "reserved for independent evaluation",
    "lilypond-doc-pdf": "reserved for independent evaluation",
    "flag-icons": "reserved for independent evaluation",
    "texlive-humanities-doc": "realdocs/eval's manuals come from it",
    "texlive-metapost-doc": "realdocs/eval's manuals come from it",
    "texlive-pictures-doc": "realdocs/eval's manuals come from it",
    "texlive-fonts-extra-doc": "realdocs/eval's manuals come from it",
    "simple-icons": "realdocs' cards are made from it",
}
PAGE_PACKAGES = ("texlive-latex-extra-doc", "texlive-latex-base-doc", "texlive-pstricks-doc", "texlive-fonts-recommended-doc")
PHOTO_PACKAGES = ("gnome-backgrounds", "mate-backgrounds", "plasma-workspace-wallpapers")
# npm package, version, the font file inside its tarball
ICON_FONTS = (
    ("@mdi/font", "7.4.47", "package/fonts/materialdesignicons-webfont.ttf", "Apache-2.0 (Material Design Icons)"),
    ("@fortawesome/fontawesome-free", "6.7.2", "package/webfonts/fa-brands-400.ttf", "CC-BY-4.0 (Font Awesome Free icons)"),
    ("@fortawesome/fontawesome-free", "6.7.2", "package/webfonts/fa-solid-900.ttf", "CC-BY-4.0 (Font Awesome Free icons)"),
)
# npm package, version, font file, icon list (slug, code point, colour), licence
BRAND_FONT = (
    "simple-icons-font",
    "16.31.0",
    "package/font/SimpleIcons.ttf",
    "package/font/simple-icons.json",
    "CC0-1.0 (Simple Icons; the logos are their owners' trademarks)",
)
REALDOCS_BRANDS = Path(__file__).with_name("realdocs_brands.txt")
FIELDS = ("path", "piece", "package", "version", "file", "page", "licence")


@dataclass(frozen=True)
class CorpusImage:
    """One manifest row: where an image came from and under which terms."""

    path: str  # relative to the corpus folder
    piece: str
    package: str
    version: str
    file: str
    page: int
    licence: str


@dataclass(frozen=True)
class CorpusOptions:
    out: Path
    pages_per_pdf: int = 3
    max_pdfs: int | None = None
    photo_crops: int = 4
    cards: int = 6000
    brand_cards: int | None = None
    long_side: int = 256
    page_packages: tuple[str, ...] = PAGE_PACKAGES
    photo_packages: tuple[str, ...] = PHOTO_PACKAGES


def refuse_reserved(names: tuple[str, ...]) -> None:
    """Stop before any download when a reserved package is asked for, naming it."""
    for name in names:
        bare = name.split("@")[0] if not name.startswith("@") else name
        if bare in RESERVED:
            raise DocembError(f"{name}: refused ({RESERVED[bare]}); it must never enter training or calibration")


def _debian_package(name: str, cache: Path) -> tuple[Path, str]:
    """The package's .deb in the cache (fetched with `apt-get download` once) and its version."""
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob(f"{name}_*.deb"))
    if not found:
        result = subprocess.run(["apt-get", "download", name], cwd=cache, capture_output=True, text=True)
        found = sorted(cache.glob(f"{name}_*.deb"))
        if result.returncode or not found:
            raise DocembError(f"apt-get download {name} failed: {result.stderr.strip()[-300:]} (run `apt-get update` first?)")
    version = found[-1].name.split("_")[1].replace("%3a", ":")
    return found[-1], version


def _deb_members(deb: Path, suffixes: tuple[str, ...]) -> Iterator[tuple[str, bytes]]:
    """(path inside the package, bytes) of each file with one of `suffixes`, streamed from the
    .deb without unpacking the rest."""
    process = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    try:
        with tarfile.open(fileobj=process.stdout, mode="r|") as archive:
            for member in archive:
                if member.isfile() and member.name.lower().endswith(suffixes):
                    handle = archive.extractfile(member)
                    if handle is not None:
                        yield member.name.lstrip("./"), handle.read()
    finally:
        process.stdout.close()
        if process.wait():
            raise DocembError(f"{deb}: dpkg-deb could not read the package")


def _page_numbers(count: int, wanted: int) -> list[int]:
    """The first pages (title, contents) and one from the middle: a manual's look varies most there."""
    first = list(range(min(count, max(1, wanted - 1))))
    middle = count // 2
    return first + ([middle] if wanted > 1 and middle not in first and middle < count else [])


def _render_pdf(data: bytes, pages: int, long_side: int) -> list[tuple[int, Image.Image]]:
    """(page number, image) of the pages _page_numbers picks; none for a PDF PDFium cannot read."""
    try:
        numbers = [number + 1 for number in _page_numbers(page_count(data), pages)]
        return [(n, Image.fromarray(page)) for n, page in zip(numbers, render_pages(data, long_side, numbers))]
    except ImageReadError:
        return []


def _safe_name(text: str) -> str:
    digest = hashlib.sha1(text.encode()).hexdigest()[:8]
    stem = "".join(c if c.isalnum() else "_" for c in Path(text).stem)[-60:]
    return f"{stem}_{digest}"


def _licence(package: str) -> str:
    return f"Debian main (DFSG-free); /usr/share/doc/{package}/copyright in the package"


def build_pages(options: CorpusOptions, cache: Path) -> Iterator[CorpusImage]:
    for package in options.page_packages:
        deb, version = _debian_package(package, cache)
        members = _deb_members(deb, (".pdf",))
        for number, (name, data) in enumerate(tqdm(members, desc=f"pages {package}", unit="pdf")):
            if options.max_pdfs is not None and number >= options.max_pdfs:
                break
            for page, image in _render_pdf(data, options.pages_per_pdf, options.long_side):
                path = Path("pages") / package / f"{_safe_name(name)}_p{page}.png"
                (options.out / path).parent.mkdir(parents=True, exist_ok=True)
                image.save(options.out / path)
                yield CorpusImage(str(path), "pages", package, version, name, page, _licence(package))


def _largest_per_folder(members: Iterator[tuple[str, bytes]]) -> dict[str, tuple[str, bytes]]:
    """KDE ships each wallpaper at many resolutions in one folder: keep the largest file."""
    kept: dict[str, tuple[str, bytes]] = {}
    for name, data in members:
        key = name.split("/contents/images")[0] if "/contents/images" in name else name
        if key not in kept or len(data) > len(kept[key][1]):
            kept[key] = (name, data)
    return kept


def build_photos(options: CorpusOptions, cache: Path) -> Iterator[CorpusImage]:
    rng = np.random.default_rng(0)
    for package in options.photo_packages:
        deb, version = _debian_package(package, cache)
        members = _largest_per_folder(_deb_members(deb, (".jpg", ".jpeg", ".png", ".webp")))
        for name, data in tqdm(members.values(), desc=f"photos {package}", unit="img"):
            try:
                with Image.open(io.BytesIO(data)) as opened:
                    image = to_rgb(opened)
            except (OSError, ValueError):
                continue
            for crop in range(options.photo_crops):
                # a square-ish region of a quarter to all of the picture: distinct crops are distinct classes
                w, h = image.size
                side = rng.uniform(0.45, 1.0)
                cw, ch = int(w * side), int(h * side * rng.uniform(0.6, 1.0))
                x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
                part = image.crop((x, y, x + cw, y + ch))
                part.thumbnail((options.long_side, options.long_side), Image.Resampling.LANCZOS)
                path = Path("photos") / package / f"{_safe_name(name)}_c{crop}.jpg"
                (options.out / path).parent.mkdir(parents=True, exist_ok=True)
                part.save(options.out / path, quality=92)
                yield CorpusImage(str(path), "photos", package, version, name, crop, _licence(package))


def _npm_tarball(package: str, version: str, cache: Path) -> Path:
    """The package's tarball in the cache, fetched with `npm pack` once for all its files."""
    tarball = cache / f"{package.replace('/', '_')}-{version}.tgz"
    if tarball.is_file():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        result = subprocess.run(["npm", "pack", f"{package}@{version}", "--silent"], cwd=tmp, capture_output=True, text=True)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if result.returncode or not tarballs:
            raise DocembError(f"npm pack {package}@{version} failed: {result.stderr.strip()[-300:]}")
        tarballs[0].replace(tarball)
    return tarball


def _npm_file(package: str, version: str, member: str, cache: Path) -> Path:
    """One file of an npm package's tarball, extracted once."""
    target = cache / f"{package.replace('/', '_')}-{version}" / Path(member).name
    if target.is_file():
        return target
    with tarfile.open(_npm_tarball(package, version, cache)) as archive:
        handle = archive.extractfile(member)
        if handle is None:
            raise DocembError(f"{package}@{version}: no {member} in the package")
        target.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(target) as out:
            out.write_bytes(handle.read())
    return target


def build_cards(options: CorpusOptions, cache: Path) -> Iterator[CorpusImage]:
    from docemb.train.cards import font_glyphs, render_card

    fonts = [
        (package, version, licence, _npm_file(package, version, member, cache))
        for package, version, member, licence in ICON_FONTS
    ]
    glyphs = [(font, package, version, licence, code) for package, version, licence, font in fonts for code in font_glyphs(font)]
    rng = np.random.default_rng(1)
    picks = rng.choice(len(glyphs), size=min(options.cards, len(glyphs)), replace=False)
    for number, pick in enumerate(tqdm(picks, desc="cards", unit="card")):
        font, package, version, licence, code = glyphs[int(pick)]
        image = render_card(font, code, np.random.default_rng(10_000 + number), options.long_side)
        path = Path("cards") / f"card{number:05d}.png"
        (options.out / path).parent.mkdir(parents=True, exist_ok=True)
        image.save(options.out / path)
        yield CorpusImage(str(path), "cards", package, version, f"{Path(font).name}#U+{code:04X}", 0, licence)


@dataclass(frozen=True)
class BrandIcon:
    slug: str
    code: int
    colour: tuple[int, int, int]


def realdocs_brands(path: Path = REALDOCS_BRANDS) -> set[str]:
    """Slugs of the brands on realdocs' cards: never drawn into the corpus."""
    lines = (line.strip() for line in path.read_text().splitlines())
    return {line for line in lines if line and not line.startswith("#")}


def brand_icons(listing: Path, excluded: set[str]) -> list[BrandIcon]:
    """The font's icons with their brand colours, less the `excluded` slugs."""
    try:
        records = json.loads(listing.read_text())
        icons = [BrandIcon(r["slug"], int(r["code"], 16), tuple(bytes.fromhex(r["hex"]))) for r in records]
    except (ValueError, KeyError, TypeError) as error:
        raise DocembError(f"{listing}: not a Simple Icons font listing ({error})") from error
    return [icon for icon in icons if icon.slug not in excluded]


def build_brand_cards(options: CorpusOptions, cache: Path) -> Iterator[CorpusImage]:
    from docemb.train.cards import render_card

    package, version, font_member, listing_member, licence = BRAND_FONT
    font = _npm_file(package, version, font_member, cache)
    icons = brand_icons(_npm_file(package, version, listing_member, cache), realdocs_brands())
    for number, icon in enumerate(tqdm(icons[: options.brand_cards], desc="brand cards", unit="card")):
        image = render_card(font, icon.code, np.random.default_rng(20_000 + number), options.long_side, icon.colour)
        path = Path("brandcards") / f"{icon.slug}.png"
        (options.out / path).parent.mkdir(parents=True, exist_ok=True)
        image.save(options.out / path)
        yield CorpusImage(str(path), "brandcards", package, version, f"{Path(font).name}#{icon.slug}", 0, licence)


PIECES = {"pages": build_pages, "photos": build_photos, "cards": build_cards, "brandcards": build_brand_cards}


def build_corpus(options: CorpusOptions, pieces: tuple[str, ...] = tuple(PIECES), cache: Path | None = None) -> Path:
    """Build the missing pieces into `options.out`; returns the manifest's path."""
    refuse_reserved(options.page_packages + options.photo_packages + tuple(p for p, *_ in ICON_FONTS) + BRAND_FONT[:1])
    cache = cache or options.out / ".downloads"
    for piece in pieces:
        done = options.out / f"{piece}.done.csv"
        if done.is_file():
            print(f"{piece}: done already ({done})")
            continue
        rows = list(PIECES[piece](options, cache))
        with atomic_path(done) as tmp, open(tmp, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=FIELDS)
            writer.writeheader()
            writer.writerows(asdict(row) for row in rows)
        print(f"{piece}: {len(rows)} images")
    return write_manifest(options)


def write_manifest(options: CorpusOptions) -> Path:
    """One manifest of every finished piece, and its sha256 (the model card cites it)."""
    rows = []
    for piece in PIECES:
        done = options.out / f"{piece}.done.csv"
        if done.is_file():
            with open(done, newline="") as handle:
                rows.extend(csv.DictReader(handle))
    manifest = options.out / "manifest.csv"
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    counts = {piece: sum(row["piece"] == piece for row in rows) for piece in PIECES}
    digest = hashlib.sha256(manifest.read_bytes()).hexdigest()
    write_json(
        options.out / "corpus.json",
        {
            "images": len(rows),
            "pieces": counts,
            "manifest_sha256": digest,
            **{f.name: str(getattr(options, f.name)) for f in fields(options)},
        },
    )
    print(f"corpus: {len(rows)} images {counts}; manifest {manifest} (sha256 {digest[:12]})")
    return manifest


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, type=Path, help="corpus folder (kept outside the repository)")
    parser.add_argument("--pieces", nargs="+", choices=list(PIECES), default=list(PIECES))
    parser.add_argument("--pages-per-pdf", type=int, default=CorpusOptions.pages_per_pdf)
    parser.add_argument("--max-pdfs", type=int, default=None, help="at most this many PDFs per package (a quick corpus)")
    parser.add_argument("--photo-crops", type=int, default=CorpusOptions.photo_crops)
    parser.add_argument("--cards", type=int, default=CorpusOptions.cards)
    parser.add_argument("--brand-cards", type=int, default=None, help="at most this many brand cards (default: every brand)")
    parser.add_argument("--page-packages", nargs="+", default=list(PAGE_PACKAGES))
    parser.add_argument("--photo-packages", nargs="+", default=list(PHOTO_PACKAGES))
    parser.add_argument("--downloads", type=Path, default=None, help="cache of .deb and npm files (default OUT/.downloads)")


def run(args: argparse.Namespace) -> None:
    options = CorpusOptions(
        out=args.out,
        pages_per_pdf=args.pages_per_pdf,
        max_pdfs=args.max_pdfs,
        photo_crops=args.photo_crops,
        cards=args.cards,
        brand_cards=args.brand_cards,
        page_packages=tuple(args.page_packages),
        photo_packages=tuple(args.photo_packages),
    )
    build_corpus(options, tuple(args.pieces), args.downloads)
