"""A run's data packed to travel (python -m docemb.train.bundle): same classes, same order, same weights."""

import dataclasses

import numpy as np
import pytest

from docemb.errors import DocembError
from docemb.imageio import list_images, load_images
from docemb.options import load_yaml
from docemb.train.bundle import bundle, main
from docemb.train.config import TrainConfig
from docemb.train.sources import SourceSpec, TemplatePool, load_source


def test_a_bundle_trains_on_the_same_images_in_the_same_order(tiny_config, synth_train, tmp_path):
    config = dataclasses.replace(tiny_config(tmp_path / "run"), data=[f"{synth_train}@0.5", "synth:6@2"])
    travelling, packed = bundle(config, tmp_path / "bundle", "webp", quality=95)
    assert [p.spec.weight for p in packed] == [0.5]
    written = load_yaml(tmp_path / "bundle" / "config.yaml")
    assert written["data"] == travelling.data and written["eval_data"] == []
    assert travelling.data[0].startswith("imagefolder:") and travelling.data[1] == "synth:6@2"  # made from its seed
    original = TemplatePool([load_source(SourceSpec.parse(t), config.max_side, cache_dir=tmp_path) for t in config.data])
    moved = TemplatePool([load_source(SourceSpec.parse(t), config.max_side, cache_dir=tmp_path) for t in travelling.data])
    assert len(moved) == len(original) == len(list_images(synth_train)) + 6
    assert np.array_equal(moved.image_weights(), original.image_weights())
    for i in range(len(original)):  # the same picture, up to the codec
        a, b = original[i].astype(float), moved[i].astype(float)
        assert a.shape == b.shape and np.abs(a - b).mean() < 4
    TrainConfig(**dataclasses.asdict(travelling)).validate()


def test_a_bundle_refuses_a_folder_in_use_and_a_bad_quality(tiny_config, synth_train, tmp_path, capsys):
    (tmp_path / "bundle").mkdir()
    (tmp_path / "bundle" / "old.txt").write_text("x")
    with pytest.raises(DocembError, match="not empty"):
        bundle(tiny_config(tmp_path / "run"), tmp_path / "bundle")
    with pytest.raises(SystemExit):
        main(["--config", "x.yaml", "--out", str(tmp_path / "b2"), "--quality", "100"])
    assert "--quality" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="x.yaml: config file not found"):
        main(["--config", str(tmp_path / "x.yaml"), "--out", str(tmp_path / "b2")])


def test_bundle_command_packs_a_config_file(synth_train, tmp_path, capsys):
    (tmp_path / "run.yaml").write_text(f"data:\n  - {synth_train}@0.25\nmax_side: 64\n")
    main(["--config", str(tmp_path / "run.yaml"), "--out", str(tmp_path / "b")])
    images, _ = load_images(list_images(tmp_path / "b" / "data" / "00-folder"))
    assert all(p.suffix == ".webp" for p in list_images(tmp_path / "b" / "data" / "00-folder"))
    assert len(images) == len(list_images(synth_train)) and max(max(i.shape[:2]) for i in images) == 64
    assert load_yaml(tmp_path / "b" / "config.yaml")["data"] == [f"imagefolder:{tmp_path / 'b' / 'data' / '00-folder'}@0.25"]
    assert "docemb train --config" in capsys.readouterr().out
