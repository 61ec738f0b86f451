"""Generated documents: seeded families of near-duplicates with a manifest."""

import csv

import numpy as np
from PIL import Image

from docemb.synth import KIND_WEIGHTS, generate, render_template, template_spec


def pixels(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)


def test_same_seed_same_bytes_other_seed_other_documents(tmp_path):
    a = generate(tmp_path / "a", n=6, seed=3, long_side=128).parent
    b = generate(tmp_path / "b", n=6, seed=3, long_side=128).parent
    c = generate(tmp_path / "c", n=6, seed=4, long_side=128).parent
    names = sorted(p.name for p in a.glob("*.png"))
    assert names == sorted(p.name for p in b.glob("*.png"))
    assert all((a / n).read_bytes() == (b / n).read_bytes() for n in names)
    assert {p.read_bytes() for p in a.glob("*.png")}.isdisjoint(p.read_bytes() for p in c.glob("*.png"))


def test_manifest_lists_every_file_with_kind_and_family(tmp_path):
    manifest = generate(tmp_path, n=9, seed=0, family_size=3, long_side=128)
    rows = list(csv.DictReader(open(manifest)))
    assert [r["name"] for r in rows] == sorted(p.name for p in tmp_path.glob("*.png"))
    assert {r["kind"] for r in rows} <= set(KIND_WEIGHTS)
    assert [int(r["family"]) for r in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert rows[0]["variations"] == "base" and rows[1]["variations"] != "base"


def test_aspect_ratios_are_those_of_real_documents():
    expected = {"card": 1.586, "id": 1.586, "form": 1 / 1.414, "letter": 1 / 1.414}
    seen = set()
    for index in range(0, 90, 3):
        spec = template_spec(0, index, 3)
        image = render_template(0, spec, long_side=300)
        ratio = image.width / image.height
        if spec.kind in expected:
            assert abs(ratio - expected[spec.kind]) < 0.02
        else:  # receipt: tall and narrow
            assert 1 / 3.1 < ratio < 1 / 2.3
        seen.add(spec.kind)
    assert seen == set(KIND_WEIGHTS)


def test_family_members_are_near_duplicates_but_never_identical():
    within, across = [], []
    for family in range(20):
        base_spec = template_spec(0, family * 3, 3)
        base = np.asarray(render_template(0, base_spec, 192), dtype=np.float32)
        for member in (1, 2):
            image = np.asarray(render_template(0, template_spec(0, family * 3 + member, 3), 192), dtype=np.float32)
            if image.shape == base.shape:
                diff = np.abs(image - base).mean()
                assert diff > 0, f"family {family} member {member} is identical to its base"
                within.append(diff)
        other = np.asarray(render_template(0, template_spec(0, family * 3 + 3, 3), 192), dtype=np.float32)
        if other.shape == base.shape:
            across.append(np.abs(other - base).mean())
    assert np.median(within) < 0.5 * np.median(across)


def test_cli_writes_the_requested_count(tmp_path):
    from docemb.cli import main

    main(["synth", "--out", str(tmp_path), "--n", "4", "--long-side", "96"])
    assert len(list(tmp_path.glob("*.png"))) == 4
