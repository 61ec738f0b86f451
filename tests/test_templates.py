"""Template store and decisions: the Android core's format and answers, from Python."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest

from docemb.errors import DocembError
from docemb.templates import MAGIC, StoreInfo, TemplateStore, read_info, write_info

GOLDEN = Path(__file__).resolve().parents[1] / "android_demo" / "app" / "src" / "main" / "assets" / "golden"


def test_decisions_equal_the_android_cores_on_the_golden_files():
    golden = json.loads((GOLDEN / "golden.json").read_text())
    store = TemplateStore(dim=256)
    for template in golden["templates"]:
        store.put(template["name"], np.stack([np.fromfile(GOLDEN / v["embedding"], dtype="<f4") for v in template["views"]]))
    for query in golden["queries"]:
        decision = store.decide(np.fromfile(GOLDEN / query["embedding"], dtype="<f4"), golden["threshold"], k=3)
        expected = query["expected"]
        assert decision.best == expected["best"] and decision.label == expected["decision"]
        assert [name for name, _ in decision.top] == [name for name, _ in expected["scores"]]
        assert np.allclose([s for _, s in decision.top], [s for _, s in expected["scores"]], atol=1e-5)


def test_store_round_trips_in_the_android_binary_format(tmp_path):
    rng = np.random.default_rng(0)
    store = TemplateStore(dim=8)
    for name in ("bank card", "carte d'identité", "form"):
        store.put(name, rng.normal(size=8))
    store.write(tmp_path / "templates.bin")
    data = (tmp_path / "templates.bin").read_bytes()
    assert int.from_bytes(data[:4], "big") == MAGIC and int.from_bytes(data[8:12], "big") == 8
    again = TemplateStore.read(tmp_path / "templates.bin")
    assert list(again.templates) == list(store.templates)
    assert all(np.array_equal(again.templates[n], store.templates[n]) for n in store.templates)
    write_info(tmp_path / "templates.bin", StoreInfo("model.tflite", "ab" * 32, 0.8))
    assert read_info(tmp_path / "templates.bin").threshold == 0.8


def test_ties_keep_registration_order_and_unknown_falls_below_the_threshold():
    store = TemplateStore(dim=2)
    store.put("first", np.array([1.0, 0.0]))
    store.put("second", np.array([1.0, 0.0]))
    decision = store.decide(np.array([1.0, 0.0]), threshold=0.9)
    assert decision.best == "first" and decision.label == "first"
    assert store.decide(np.array([0.0, 1.0]), threshold=0.5).label == "unknown"


def test_broken_store_files_get_an_error_naming_them(tmp_path):
    (tmp_path / "text.bin").write_bytes(b"hello, not a store")
    with pytest.raises(DocembError, match="text.bin: not a docemb template store"):
        TemplateStore.read(tmp_path / "text.bin")
    store = TemplateStore(dim=4)
    store.put("a", np.ones(4))
    store.write(tmp_path / "ok.bin")
    (tmp_path / "cut.bin").write_bytes((tmp_path / "ok.bin").read_bytes()[:-3])
    with pytest.raises(DocembError, match="cut.bin: truncated"):
        TemplateStore.read(tmp_path / "cut.bin")
    with pytest.raises(DocembError, match="cut.bin.json: missing"):
        read_info(tmp_path / "cut.bin")


def test_register_then_match_from_the_command_line(tmp_path, trained_model, synth_eval, capsys):
    from docemb.cli import main
    from docemb.model import save_model

    checkpoint = tmp_path / "model.safetensors"
    save_model(checkpoint, trained_model)
    templates = sorted(str(p) for p in synth_eval.glob("*.png"))
    store = tmp_path / "templates.bin"
    main(["match", "register", *templates[:4], "--model", str(checkpoint), "--store", str(store), "--threshold", "0.9"])
    main(["match", templates[2], "--store", str(store), "--json"])
    answer = json.loads(capsys.readouterr().out.split("\n", 1)[1])[0]
    assert answer["label"] == Path(templates[2]).stem and answer["score"] == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(SystemExit) as stopped:  # no threshold in a checkpoint: a clear error, exit 2
        main(["match", "register", templates[5], "--model", str(checkpoint), "--store", str(tmp_path / "other.bin")])
    assert stopped.value.code == 2 and "pass --threshold" in capsys.readouterr().err


def test_register_embeds_every_view_the_model_registers(tmp_path, trained_model, synth_eval):
    import copy
    from dataclasses import replace

    import docemb
    from docemb.cli import main
    from docemb.imageio import read_rgb
    from docemb.model import save_model
    from docemb.preprocess import TemplateView, fit_within, loose_frame, rotated

    viewed = copy.deepcopy(trained_model)
    views = (TemplateView(0.1), TemplateView(0.05, 6))
    viewed.config = replace(viewed.config, template_frame=0.1, template_views=views)
    checkpoint, store = tmp_path / "views.safetensors", tmp_path / "templates.bin"
    save_model(checkpoint, viewed)
    template = sorted(synth_eval.glob("*.png"))[0]
    main(["match", "register", str(template), "--model", str(checkpoint), "--store", str(store), "--threshold", "0.5"])
    stored = TemplateStore.read(store).templates[template.stem]
    model = docemb.load_model(checkpoint)
    assert stored.shape == (2, viewed.config.embedding_dim) and np.allclose(stored, model.embed_templates(template)[0], atol=1e-6)
    image = read_rgb(template)
    drawn = [loose_frame(image, 0.1), rotated(loose_frame(fit_within(image, 2 * model.preprocessing.size), 0.05), 6)]
    assert np.allclose(stored, model.embed(drawn), atol=1e-6)
    assert not np.allclose(stored[0], model.embed(template)[0], atol=1e-3)


def test_a_query_matches_a_template_by_its_best_view_and_older_stores_still_load(tmp_path):
    store = TemplateStore(dim=2)
    store.put("tilted", np.array([[1.0, 0.0], [0.6, 0.8]]))
    store.put("plain", np.array([0.0, 1.0]))
    decision = store.decide(np.array([0.6, 0.8]), threshold=0.9)
    assert decision.best == "tilted" and decision.score == pytest.approx(1.0)
    store.write(tmp_path / "views.bin")
    again = TemplateStore.read(tmp_path / "views.bin")
    assert again.templates["tilted"].shape == (2, 2) and again.templates["plain"].shape == (1, 2)
    older = struct.pack(">iiii", MAGIC, 1, 2, 1) + struct.pack(">H", 1) + b"a" + np.array([0.0, 1.0], ">f4").tobytes()
    (tmp_path / "v1.bin").write_bytes(older)  # version 1: one view, no view count
    assert np.array_equal(TemplateStore.read(tmp_path / "v1.bin").templates["a"], [[0.0, 1.0]])
    with pytest.raises(DocembError, match="expected \\(views, 2\\)"):
        store.put("wrong", np.ones((2, 3)))
