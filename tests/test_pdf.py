"""PDF pages as images: named FILE.pdf#page=N, rendered on demand, broken PDFs named by what is wrong."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pytest
from PIL import Image

from docemb.api import load_model
from docemb.bulk import build_index
from docemb.errors import DocembError, ImageReadError
from docemb.imageio import expand_pdfs, read_rgb
from docemb.index import Index
from docemb.model import save_model

COLOURS = {"red": (255, 0, 0), "blue": (0, 0, 255), "green": (0, 128, 0)}


def write_pdf(path, colours: list[str]) -> None:
    pages = [Image.new("RGB", (200, 280), colour) for colour in colours]
    pages[0].save(path, format="PDF", save_all=True, append_images=pages[1:])


def encrypted_pdf(path) -> None:
    import pypdf

    buffer = io.BytesIO()
    write_pdf(buffer, ["red"])
    writer = pypdf.PdfWriter(clone_from=pypdf.PdfReader(buffer))
    writer.encrypt("secret", algorithm="RC4-128")
    writer.write(path)


def no_pages_pdf(path) -> None:
    import pypdf

    pypdf.PdfWriter().write(path)


def test_a_pdf_expands_to_its_pages_and_each_renders_by_name(tmp_path):
    write_pdf(tmp_path / "two.pdf", ["red", "blue"])
    Image.new("RGB", (40, 30), "green").save(tmp_path / "g.png")
    names, bad = expand_pdfs([tmp_path / "g.png", tmp_path / "two.pdf"])
    assert names == [str(tmp_path / "g.png"), f"{tmp_path}/two.pdf#page=1", f"{tmp_path}/two.pdf#page=2"] and bad == []
    blue = read_rgb(names[2], max_side=140)
    assert max(blue.shape[:2]) == 140 and blue.shape[0] > blue.shape[1]
    assert np.abs(blue[70, 50].astype(int) - COLOURS["blue"]).max() <= 2
    assert np.array_equal(read_rgb(tmp_path / "two.pdf", max_side=140), read_rgb(names[1], max_side=140))  # page 1
    with pytest.raises(ImageReadError, match="two.pdf#page=3: the PDF has 2 pages"):
        read_rgb(f"{tmp_path}/two.pdf#page=3")


@pytest.mark.parametrize(
    "make,problem",
    [
        (lambda p: p.write_bytes(b"%PDF-1.4 this is not a pdf"), "not a PDF, damaged"),
        (lambda p: p.write_bytes(b""), "not a PDF, damaged"),
        (encrypted_pdf, "encrypted: it needs a password"),
        (no_pages_pdf, "not a PDF, damaged, or with no pages"),
    ],
    ids=["garbage", "empty file", "encrypted", "no pages"],
)
def test_a_broken_pdf_is_named_with_what_is_wrong(tmp_path, make, problem):
    path = tmp_path / "doc.pdf"
    make(path)
    with pytest.raises(ImageReadError, match=f"doc.pdf: not a readable PDF \\({problem}"):
        expand_pdfs([path])
    names, bad = expand_pdfs([path], on_error="skip")
    assert names == [] and len(bad) == 1 and problem in bad[0]


def test_a_truncated_pdf_is_named(tmp_path):
    whole = tmp_path / "whole.pdf"
    write_pdf(whole, ["red", "blue"])
    (tmp_path / "cut.pdf").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(ImageReadError, match="cut.pdf: not a readable PDF"):
        read_rgb(tmp_path / "cut.pdf")


def test_the_index_embeds_a_pdf_page_by_page_and_again_only_when_it_changes(tmp_path, trained_model, synth_eval, capsys):
    from docemb.cli import main

    folder = tmp_path / "collection"
    shutil.copytree(synth_eval, folder / "images")
    (folder / "docs").mkdir()
    write_pdf(folder / "docs" / "two.pdf", ["red", "blue"])
    encrypted_pdf(folder / "docs" / "locked.pdf")
    save_model(tmp_path / "m.safetensors", trained_model)
    model = load_model(tmp_path / "m.safetensors", threads=1)
    with pytest.raises(DocembError, match="locked.pdf: not a readable PDF .*--skip-bad-images"):
        build_index(model, [folder], tmp_path / "index", workers=1)
    report = build_index(model, [folder], tmp_path / "index", workers=1, skip_bad=True)
    index = Index.open(tmp_path / "index")
    pages = [index.path(r) for r in np.flatnonzero(index.live) if "#page=" in index.path(r)]
    assert pages == [f"{folder}/docs/two.pdf#page=1", f"{folder}/docs/two.pdf#page=2"]
    assert [line.split(":")[0] for line in report.bad] == [str(folder / "docs" / "locked.pdf")]
    row = [stamp.path for stamp in index.stamps].index(pages[1])
    assert np.allclose(index.vectors(np.array([row]))[0], model.embed(pages[1])[0], atol=2e-2)  # rendered smaller
    main(["search", str(folder / "docs" / "two.pdf"), "--index", str(tmp_path / "index"), "-k", "1", "--json"])
    found = [(r["query"], r["results"][0]["path"]) for r in json.loads(capsys.readouterr().out)]
    assert found == [(page, page) for page in pages]  # a PDF query: each page, found in the index
    assert build_index(model, [folder], tmp_path / "index", workers=1, skip_bad=True).embedded == 0
    write_pdf(folder / "docs" / "two.pdf", ["red", "green", "blue"])
    assert build_index(model, [folder], tmp_path / "index", workers=1, skip_bad=True).embedded == 3


def test_a_pdfs_pages_register_as_templates_and_match_as_photos(tmp_path, trained_model, capsys):
    from docemb.cli import main

    save_model(tmp_path / "m.safetensors", trained_model)
    write_pdf(tmp_path / "forms.pdf", ["red", "blue"])
    store = tmp_path / "store.bin"
    main(
        [
            "match",
            "register",
            str(tmp_path / "forms.pdf"),
            "--model",
            str(tmp_path / "m.safetensors"),
            "--store",
            str(store),
            "--threshold",
            "0.5",
        ]
    )
    assert "2 templates" in capsys.readouterr().out
    main(["match", str(tmp_path / "forms.pdf"), "--store", str(store), "--json"])
    answers = json.loads(capsys.readouterr().out)
    assert [(a["photo"].rsplit("/", 1)[1], a["label"]) for a in answers] == [
        ("forms.pdf#page=1", "forms#page=1"),
        ("forms.pdf#page=2", "forms#page=2"),
    ]
