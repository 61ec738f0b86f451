"""CPU smoke tests of training on generated documents: it runs, writes its files, resumes."""

import csv
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file

from docemb.errors import DocembError
from docemb.model import load_model
from docemb.train.config import TrainConfig
from docemb.train.loop import lr_lambda, train


def tiny_config(data, eval_data, out, epochs=2) -> TrainConfig:
    return TrainConfig(
        data=[str(data)],
        eval_data=[str(eval_data)],
        out=str(out),
        epochs=epochs,
        batch_size=32,
        input_size=64,
        embedding_dim=32,
        squeeze_channels=16,
        max_side=96,
        work_size=72,
        workers=0,
        warmup_epochs=0.5,
        eval_queries=1,
    )


def test_training_writes_model_config_metrics_and_report(synth_train, synth_eval, tmp_path):
    config = tiny_config(synth_train, synth_eval, tmp_path / "run")
    model_path = train(config)
    run = tmp_path / "run"
    assert (run / "config.yaml").is_file()
    history = list(csv.DictReader(open(run / "metrics.csv")))
    assert [int(r["epoch"]) for r in history] == [0, 1, 2]
    assert all(float(r["loss"]) > 0 for r in history[1:])
    report = json.loads((run / "report.json").read_text())
    assert set(report["trained"]) == {
        f"{synth_eval.parent.name}/{synth_eval.name}/recall@1",
        f"{synth_eval.parent.name}/{synth_eval.name}/recall@5",
    }
    model = load_model(model_path)
    assert model.config.embedding_dim == 32 and not model.training


def test_resumed_run_reproduces_the_uninterrupted_one(synth_train, synth_eval, tmp_path):
    config = tiny_config(synth_train, synth_eval, tmp_path / "run", epochs=2)
    whole = load_file(train(config))
    # a kill during epoch 2: its checkpoint and the final model never got written
    checkpoints = tmp_path / "run" / "checkpoints"
    shutil.rmtree(checkpoints / "epoch_0002")
    (checkpoints / "latest.json").write_text(json.dumps({"checkpoint": "epoch_0001"}))
    (tmp_path / "run" / "model.safetensors").unlink()
    resumed = load_file(train(config, resume=True))
    assert whole.keys() == resumed.keys()
    for key in whole:
        assert torch.allclose(whole[key], resumed[key], atol=1e-6), key


def test_a_second_run_into_the_same_folder_is_refused(synth_train, synth_eval, tmp_path):
    train(tiny_config(synth_train, synth_eval, tmp_path / "run", epochs=1))
    with pytest.raises(DocembError, match="--resume"):
        train(tiny_config(synth_train, synth_eval, tmp_path / "run", epochs=1))


def test_schedule_warms_up_then_decays_to_zero():
    for schedule in ("cosine", "poly"):
        factor = lr_lambda(total_steps=100, warmup_steps=10, schedule=schedule)
        values = [factor(s) for s in range(101)]
        assert values[0] == pytest.approx(0.1) and values[9] == pytest.approx(1.0)
        assert all(b <= a + 1e-12 for a, b in zip(values[10:], values[11:]))
        assert values[100] == pytest.approx(0.0)
