"""Faults a long run meets: a second run on the same folder, a killed run's leftovers, a full
disk, an unusable output folder, a broken model, and many threads on one model."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from docemb.api import load_model
from docemb.atomic import write_text
from docemb.errors import DocembError
from docemb.lock import LOCK_NAME, output_lock
from docemb.model import save_model
from docemb.train.checkpoint import load_checkpoint, save_checkpoint
from docemb.train.distributed import Runtime
from docemb.train.state import TrainingState


@contextlib.contextmanager
def held_by_another_process(folder: Path) -> Iterator[int]:
    """`folder`'s lock held by a second Python process for the block; yields its pid."""
    holder = subprocess.Popen(
        [sys.executable, "-c", f"from docemb.lock import output_lock\nwith output_lock({str(folder)!r}):\n    input()"],
        stdin=subprocess.PIPE,
    )
    try:
        while not (folder / LOCK_NAME).exists():
            assert holder.poll() is None
        yield holder.pid
    finally:
        holder.communicate(b"\n", timeout=30)


def test_a_second_run_on_the_same_folder_is_refused_with_the_holders_pid(tmp_path):
    with held_by_another_process(tmp_path) as pid:
        with pytest.raises(DocembError, match=f"in use by process {pid}"):
            with output_lock(tmp_path):
                pass
    with output_lock(tmp_path):  # released when the holder ended
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"{os.getpid()}\n")
    assert not (tmp_path / LOCK_NAME).exists()


@pytest.mark.parametrize("command", ["index", "export", "train"])
def test_every_writing_command_refuses_a_folder_another_run_holds(command, small_model, synth_train, tmp_path, capsys):
    from docemb.cli import main

    checkpoint, out = tmp_path / "small.safetensors", tmp_path / "out"
    save_model(checkpoint, small_model)
    argv = {
        "index": ["index", str(synth_train), "--model", str(checkpoint), "--out", str(out), "--workers", "1"],
        "export": ["export", "--ckpt", str(checkpoint), "--out", str(out)],
        "train": ["train", "--data", str(synth_train), "--out", str(out), "--epochs", "1", "--arch", "lcnet_050"],
    }[command]
    out.mkdir()
    with held_by_another_process(out) as pid:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 2
        assert f"in use by process {pid}" in capsys.readouterr().err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing of the second run's written


def test_a_killed_runs_lock_is_taken_over(tmp_path):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout
    (tmp_path / LOCK_NAME).write_text(f"{gone.strip()}\nkilled run\n")
    with output_lock(tmp_path):
        assert (tmp_path / LOCK_NAME).read_text().startswith(f"{os.getpid()}\n")


def test_an_output_folder_that_cannot_be_made_is_named_before_any_work(tmp_path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(DocembError, match="a_file/out: cannot write there"):
        with output_lock(tmp_path / "a_file" / "out"):
            pytest.fail("the block must not run")


def _full_disk(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_a_full_disk_during_a_write_keeps_the_previous_file(tmp_path, monkeypatch):
    report = tmp_path / "report.json"
    write_text(report, "finished\n")
    monkeypatch.setattr(os, "replace", _full_disk)
    with pytest.raises(DocembError, match="report.json: no space left on the device while writing it; the previous file is kept"):
        write_text(report, "new\n")
    assert report.read_text() == "finished\n" and [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_a_written_file_gets_the_mode_a_plain_open_gives_it(tmp_path):
    from docemb import atomic

    previous = os.umask(0o022)
    atomic._file_mode.cache_clear()  # read once per process: this test sets its own umask
    try:
        write_text(tmp_path / "model.card.md", "card\n")
        (tmp_path / "plain.txt").write_text("plain\n")
    finally:
        os.umask(previous)
        atomic._file_mode.cache_clear()
    modes = [oct((tmp_path / name).stat().st_mode & 0o777) for name in ("model.card.md", "plain.txt")]
    assert modes == [oct(0o644)] * 2  # not mkstemp's 0600: other users can read the models


def test_a_full_disk_during_an_index_shard_keeps_the_finished_ones(tmp_path, monkeypatch):
    from docemb.index import FileStamp, Index, IndexWriter

    writer = IndexWriter.open_or_create(tmp_path / "index", "m", "0" * 64, 4, "float16")
    rows = np.eye(4, dtype=np.float32)
    writer.write_shard(rows[:2], [FileStamp(f"a{i}.png", 1, 1) for i in range(2)])
    monkeypatch.setattr(np, "save", _full_disk)
    with pytest.raises(DocembError, match="shard-00001.npy: no space left on the device"):
        writer.write_shard(rows[2:], [FileStamp(f"b{i}.png", 1, 1) for i in range(2)])
    monkeypatch.undo()
    index = Index.open(tmp_path / "index")
    assert [index.path(r) for r in range(len(index))] == ["a0.png", "a1.png"]
    assert sorted(p.name for p in (tmp_path / "index").iterdir()) == ["index.json", "shard-00000.csv", "shard-00000.npy"]


def test_a_full_disk_during_a_checkpoint_keeps_the_last_one(tmp_path, monkeypatch):
    module = torch.nn.Linear(4, 2)
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1)
    run = SimpleNamespace(
        folder=tmp_path,
        state=TrainingState(epoch=1, step=10, history=[]),
        runtime=Runtime(rank=0, world_size=1, device=torch.device("cpu")),
        modules={"model": module},
        optimizer=optimizer,
        scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
    )
    save_checkpoint(run)
    saved = module.weight.detach().clone()
    run.state = TrainingState(epoch=2, step=20, history=[])
    with torch.no_grad():
        module.weight.add_(1.0)
    monkeypatch.setattr("docemb.train.checkpoint.save_file", _full_disk)
    with pytest.raises(DocembError, match="writing the checkpoint failed .*the previous checkpoint is kept"):
        save_checkpoint(run)
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["latest.json", "step_000000010"]
    assert load_checkpoint(run).step == 10 and torch.equal(module.weight, saved)


def test_a_model_that_gives_non_finite_embeddings_is_named(small_model, tmp_path):
    with torch.no_grad():
        small_model.head.fc[0].weight[0, 0] = float("nan")
    save_model(tmp_path / "broken.safetensors", small_model)
    with pytest.raises(DocembError, match="broken.safetensors: gave non-finite embeddings for 2 of 2 images"):
        load_model(tmp_path / "broken.safetensors").embed(np.zeros((2, 80, 60, 3), np.uint8))


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_eight_threads_on_one_model_get_what_one_thread_gets(small_model, tmp_path, suffix):
    if suffix == ".tflite":
        pytest.importorskip("litert_torch", reason="TFLite tools not installed")
        from docemb.export.tflite_export import export_tflite

        path = export_tflite(small_model, tmp_path / "m.tflite", "float32", "NHWC", False)
    else:
        from docemb.export.onnx_export import export_onnx

        path = export_onnx(small_model, tmp_path / "m.onnx")
    from docemb.contract import describe_model, write_contract

    write_contract(path, small_model.preprocessing, describe_model(path), {"checkpoint": None})
    model = load_model(path, threads=1)
    images = [np.random.default_rng(i).integers(0, 255, (70, 50, 3), dtype=np.uint8) for i in range(16)]
    alone = model.embed(images, batch_size=2)
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda i: model.embed(images[i], batch_size=1), range(16)))
    np.testing.assert_allclose(np.concatenate(together), alone, atol=1e-6)


def _stages(checkpoint: Path, calib: Path, out: Path) -> list[list[str]]:
    """export, quantize and bench as `make export-int8` runs them, on a small model."""
    docemb = str(Path(sys.executable).with_name("docemb"))
    small = ["--calib-count", "4", "--validation-count", "4", "--methods", "minmax", "--max-float-nodes", "0"]
    models = [str(out / name) for name in ("model.onnx", "model_int8_static.onnx")]
    return [
        [docemb, "export", "--ckpt", str(checkpoint), "--out", str(out), "--include", "onnx"],
        [docemb, "quantize", "--model", str(out / "model.onnx"), "--calib", str(calib), "--qat", "never", *small],
        [docemb, "bench", *models, "--ref", models[0], "--data", str(calib), "--out", str(out / "bench"), "--threads", "1"]
        + ["--runs", "5", "--warmup", "1"],
    ]


def _only_whole_files(out: Path) -> None:
    """Every file a later step would read is complete: models load, JSON parses, and a model
    with a contract is the one the contract describes."""
    import onnx

    from docemb.contract import check_contract

    for path in (p for p in out.rglob("*") if p.is_file()):
        if path.name.startswith("."):  # an atomic write's temporary file, never read by name
            continue
        if path.suffix == ".onnx":
            onnx.load(str(path))
            if Path(f"{path}.contract.json").is_file():
                check_contract(path)
        elif path.suffix == ".json":
            json.loads(path.read_text())


@pytest.mark.slow  # export, quantize and bench once whole, then killed at three points each and run again
def test_export_quantize_and_bench_killed_anywhere_leave_only_whole_files_and_finish_the_same(small_model, synth_train, tmp_path):
    checkpoint = tmp_path / "model.safetensors"
    save_model(checkpoint, small_model)
    durations = []
    for command in _stages(checkpoint, synth_train, tmp_path / "whole"):
        start = time.monotonic()
        subprocess.run(command, check=True, capture_output=True)
        durations.append(time.monotonic() - start)
    last_files = ("model.onnx.contract.json", "model.onnx.quantize_report.json", "bench/bench.html")  # each stage's last write
    cut_short = 0
    for share in (0.3, 0.6, 0.9):
        out = tmp_path / f"killed_at_{share}"
        for command, duration, last in zip(_stages(checkpoint, synth_train, out), durations, last_files):
            process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(share * duration)
            process.send_signal(signal.SIGKILL)
            process.wait()
            cut_short += not (out / last).is_file()
            if out.is_dir():
                _only_whole_files(out)
            subprocess.run(command, check=True, capture_output=True)
        for name in ("model.onnx", "model_int8_dynamic.onnx", "model_int8_static.onnx"):
            assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), (share, name)
        killed, whole = (json.loads((root / "bench" / "bench.json").read_text()) for root in (out, tmp_path / "whole"))
        assert [m["eval"] for m in killed["models"]] == [m["eval"] for m in whole["models"]]  # latencies differ, quality not
    assert cut_short >= 5, f"only {cut_short} of 9 kills landed before the stage finished"
