"""Training data sources: folders, PDFs, ImageFolder trees and generated documents, with weights."""

import json

import numpy as np
import pytest
from PIL import Image

from docemb.errors import DocembError
from docemb.train.data import ClassBatchSampler
from docemb.train.sources import SourceSpec, TemplatePool, load_source


@pytest.mark.parametrize(
    "text,expected",
    [
        ("data/templates", SourceSpec("folder", "data/templates", 1.0)),
        ("manuals/a.PDF@0.5", SourceSpec("pdf", "manuals/a.PDF", 0.5)),
        ("imagefolder:/data/imagenet/train@2", SourceSpec("imagefolder", "/data/imagenet/train", 2.0)),
        ("synth:300", SourceSpec("synth", "300", 1.0)),
        ("C:/docs", SourceSpec("folder", "C:/docs", 1.0)),
    ],
)
def test_source_specs_parse(text, expected):
    assert SourceSpec.parse(text) == expected


def test_bad_weights_are_refused():
    with pytest.raises(DocembError, match="weight"):
        SourceSpec.parse("folder:x@heavy")
    with pytest.raises(DocembError, match="> 0"):
        SourceSpec.parse("folder:x@0")


def write_pdf(path, pages):
    images = [Image.new("RGB", (200, 280), colour) for colour in pages]
    images[0].save(path, save_all=True, append_images=images[1:])


def test_pdf_pages_become_templates_and_a_broken_pdf_is_named(tmp_path):
    write_pdf(tmp_path / "two.pdf", ["red", "blue"])
    write_pdf(tmp_path / "one.pdf", ["green"])
    source = load_source(SourceSpec("pdf", str(tmp_path)), max_side=140)
    assert source.names == [f"{tmp_path}/one.pdf#page=1", f"{tmp_path}/two.pdf#page=1", f"{tmp_path}/two.pdf#page=2"]
    red = source.image(1)
    assert max(red.shape[:2]) == 140 and red.shape[0] > red.shape[1]
    assert np.abs(red[70, 50].astype(int) - [255, 0, 0]).max() <= 2  # JPEG-in-PDF rounding

    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 this is not a pdf")
    with pytest.raises(DocembError, match="broken.pdf"):
        load_source(SourceSpec("pdf", str(tmp_path)), max_side=140)
    skipped = load_source(SourceSpec("pdf", str(tmp_path)), max_side=140, on_error="skip")
    assert len(skipped) == 3 and "broken.pdf" in skipped.bad[0]


def test_sources_mix_into_one_pool_with_a_report(tmp_path, synth_train):
    tree = tmp_path / "tree"
    for cls, colour in [("cat", "white"), ("dog", "black")]:
        (tree / cls).mkdir(parents=True)
        Image.new("RGB", (50, 40), colour).save(tree / cls / "1.jpg")
    write_pdf(tmp_path / "doc.pdf", ["red"])
    specs = [f"folder:{synth_train}", f"imagefolder:{tree}@2", f"{tmp_path / 'doc.pdf'}@0.5", "synth:4"]
    pool = TemplatePool([load_source(SourceSpec.parse(s), 96, cache_dir=tmp_path / "cache") for s in specs])
    assert len(pool) == 8 + 2 + 1 + 4
    assert pool[9].mean() < 5 and pool[8].mean() > 250  # cat (white), dog (black), decoded on demand
    with pytest.raises(IndexError):
        pool[len(pool)]
    assert pool.image_weights().tolist() == [1.0] * 8 + [2.0, 2.0, 0.5] + [1.0] * 4
    table, rows = pool.report(num_variants=24)
    assert [r["classes"] for r in rows] == [192, 48, 24, 96]
    assert "imagefolder" in table and json.dumps(rows)
    assert (tmp_path / "cache" / "synth_seed0_n4" / "manifest.csv").is_file()


@pytest.mark.parametrize("kind", ["folder", "imagefolder"])
def test_multi_frame_files_give_their_first_frame_and_the_report_names_them(tmp_path, kind):
    folder = tmp_path / "images"
    folder.mkdir()
    red, blue = Image.new("RGB", (40, 30), "red"), Image.new("RGB", (40, 30), "blue")
    red.save(folder / "anim.gif", save_all=True, append_images=[blue])
    red.save(folder / "scan.tiff", save_all=True, append_images=[blue, blue])
    blue.save(folder / "still.png")
    pool = TemplatePool([load_source(SourceSpec.parse(f"{kind}:{folder}"), 64)])
    names = pool.sources[0].names
    for name, image in zip(names, (pool[i] for i in range(len(pool)))):
        colour = "blue" if name.endswith("still.png") else "red"  # the first frame, not the last
        assert np.abs(image.astype(int) - np.array(Image.new("RGB", (1, 1), colour))[0, 0]).max() <= 2, name
    table, rows = pool.report(num_variants=24)
    assert rows[0]["multi_frame"] == {"checked": 3, "first_frame_only": [str(folder / "anim.gif"), str(folder / "scan.tiff")]}
    assert "first frame only: 2 of 3" in table


def test_weighted_sampler_draws_heavier_sources_more_often():
    weights = np.array([1.0] * 50 + [3.0] * 50)
    sampler = ClassBatchSampler(100, batch_size=10, views=1, class_weights=weights)
    assert len(sampler) == 20  # round(sum(weights)) draws per epoch
    drawn = np.array([c for batch in sampler for c, _seed in batch])
    assert (drawn >= 50).sum() > 2 * (drawn < 50).sum()


def test_a_fixed_number_of_draws_keeps_the_epoch_length_whatever_the_data():
    """steps_per_epoch: an ablation that drops a source still trains for the base's steps."""
    for classes, weights in [(100, None), (100, np.full(100, 0.5)), (40, np.full(40, 3.0))]:
        sampler = ClassBatchSampler(classes, batch_size=10, views=2, class_weights=weights, draws=150)
        assert len(sampler) == 30  # 150 draws of 5 classes per batch
        drawn = [c for batch in sampler for c, _seed in batch]
        assert len(drawn) == 300 and set(drawn) <= set(range(classes))
