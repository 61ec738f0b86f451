"""docemb index / search: resumable shards, only new or changed files, exact top-k, clear refusals."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from docemb.api import load_model
from docemb.bulk import build_index
from docemb.errors import DocembError
from docemb.index import Index
from docemb.model import build_model, save_model


@pytest.fixture()
def collection(tmp_path, synth_train, synth_eval) -> Path:
    folder = tmp_path / "photos"
    shutil.copytree(synth_train, folder / "a")
    shutil.copytree(synth_eval, folder / "b" / "nested")
    return folder


@pytest.fixture()
def checkpoint(tmp_path, trained_model) -> Path:
    """A trained model: a random one maps these pages to one point, and rankings need spread."""
    path = tmp_path / "small.safetensors"
    save_model(path, trained_model)
    return path


def vectors_by_path(index: Index) -> dict[str, np.ndarray]:
    rows = np.flatnonzero(index.live)
    return dict(zip((index.path(r) for r in rows), index.vectors(rows)))


def test_index_embeds_every_image_once_and_search_finds_each_itself(collection, checkpoint, tmp_path):
    model = load_model(checkpoint, threads=1)
    report = build_index(model, [collection], tmp_path / "index", shard_size=5, workers=1)
    index = Index.open(tmp_path / "index")
    assert report.embedded == len(index) == 14 and len(report.shards) == 3
    stored = vectors_by_path(index)
    path = sorted(stored)[3]
    assert np.allclose(stored[path], model.embed(path)[0], atol=2e-3)  # float16 storage
    scores, rows = index.search(index.vectors(), k=3, chunk=4)  # several chunks merged
    own = np.flatnonzero(index.live)
    first = rows[:, 0] == own  # each image finds itself first, or a near-duplicate page its float16 row ties with
    ties = np.isclose(scores[:, 0], np.einsum("ij,ij->i", index.vectors(), index.vectors()), atol=1e-3)
    assert (first | ties).all() and (rows == own[:, None]).any(axis=1).all() and first.mean() >= 0.8
    brute = index.vectors() @ index.vectors().T
    assert np.allclose(scores, -np.sort(-brute, axis=1)[:, :3], atol=1e-5)


def test_a_second_run_embeds_only_new_or_changed_files(collection, checkpoint, tmp_path):
    model = load_model(checkpoint, threads=1)
    build_index(model, [collection], tmp_path / "index", workers=1)
    again = build_index(model, [collection], tmp_path / "index", workers=1)
    assert again.embedded == 0 and again.skipped_unchanged == 14
    changed = sorted(collection.rglob("*.png"))[0]
    os.utime(changed, ns=(time.time_ns(), time.time_ns()))
    third = build_index(model, [collection], tmp_path / "index", workers=1)
    assert third.embedded == 1 and len(Index.open(tmp_path / "index")) == 14  # the new row supersedes the old


def test_another_model_is_refused_with_both_names(collection, checkpoint, trained_model, tmp_path):
    build_index(load_model(checkpoint, threads=1), [collection], tmp_path / "index", workers=1)
    other = tmp_path / "other.safetensors"
    save_model(other, build_model(trained_model.config, seed=7))
    with pytest.raises(DocembError, match="small.safetensors.*other.safetensors"):
        build_index(load_model(other, threads=1), [collection], tmp_path / "index", workers=1)


def test_int8_storage_keeps_the_rankings(collection, checkpoint, tmp_path):
    model = load_model(checkpoint, threads=1)
    build_index(model, [collection], tmp_path / "f16", workers=1)
    build_index(model, [collection], tmp_path / "i8", storage="int8", workers=1)
    f16, i8 = Index.open(tmp_path / "f16"), Index.open(tmp_path / "i8")
    assert np.abs(f16.vectors() - i8.vectors()).max() < 0.01
    exact, _ = f16.search(f16.vectors(), 1)
    _, rows = i8.search(f16.vectors(), 1)
    found = np.sum(f16.vectors() * f16.vectors()[rows[:, 0]], axis=1)  # what int8's pick scores exactly
    assert np.all(found >= exact[:, 0] - 0.01)  # it may swap near-ties, never lose a clear best


def test_an_unreadable_file_stops_the_run_by_name_or_is_listed_and_skipped(collection, checkpoint, tmp_path):
    bad = collection / "a" / "zzz_broken.png"
    bad.write_bytes(b"")
    model = load_model(checkpoint, threads=1)
    with pytest.raises(DocembError, match="zzz_broken.png"):
        build_index(model, [collection], tmp_path / "index", shard_size=4, workers=1)
    kept = len(Index.open(tmp_path / "index"))
    assert kept > 0  # shards finished before the bad file stay
    report = build_index(model, [collection], tmp_path / "index", workers=1, skip_bad=True)
    assert [line.split(":")[0] for line in report.bad] == [str(bad)]
    assert len(Index.open(tmp_path / "index")) == 14 and report.embedded == 14 - kept


def test_killed_run_resumes_to_the_same_index(collection, checkpoint, tmp_path):
    for i in range(40):  # enough rows that the kill lands between shards
        shutil.copy(sorted(collection.rglob("*.png"))[i % 14], collection / f"copy{i:02d}.png")
    command = [
        str(Path(sys.executable).with_name("docemb")),
        "index",
        str(collection),
        "--model",
        str(checkpoint),
        "--shard-size",
        "4",
        "--batch-size",
        "2",
        "--workers",
        "1",
    ]
    subprocess.run([*command, "--out", str(tmp_path / "whole")], check=True, capture_output=True)
    process = subprocess.Popen(
        [*command, "--out", str(tmp_path / "killed")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    meta = tmp_path / "killed" / "index.json"
    deadline = time.time() + 120
    while time.time() < deadline and not (meta.is_file() and len(json.loads(meta.read_text())["shards"]) >= 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    partial = len(Index.open(tmp_path / "killed"))
    assert 0 < partial < 54
    subprocess.run([*command, "--out", str(tmp_path / "killed")], check=True, capture_output=True)
    whole, resumed = vectors_by_path(Index.open(tmp_path / "whole")), vectors_by_path(Index.open(tmp_path / "killed"))
    assert sorted(whole) == sorted(resumed)
    assert all(np.array_equal(whole[p], resumed[p]) for p in whole)


def test_near_duplicate_links_chain_into_groups():
    from docemb.dedup_cli import duplicate_groups

    query_rows = np.array([0, 1, 2, 3, 4])
    rows = np.array([[0, 1], [1, 2], [2, 1], [3, 0], [4, 3]])  # 0-1, 1-2 link; 3's and 4's best are weak
    scores = np.array([[1.0, 0.97], [1.0, 0.96], [1.0, 0.96], [1.0, 0.5], [1.0, 0.95]])
    assert duplicate_groups(scores, rows, query_rows, 0.95) == [[0, 1, 2], [3, 4]]
    assert duplicate_groups(scores, rows, query_rows, 0.99) == []


@pytest.mark.parametrize("storage", ["float16", "int8"])
def test_an_exact_copy_scores_one_as_stored_whatever_the_storage(storage):
    from docemb.dedup_cli import as_cosines
    from docemb.index import decode, encode

    rng = np.random.default_rng(0)
    rows = rng.normal(size=(500, 64)) * rng.uniform(0.01, 3, size=64)  # uneven components, as a small model's
    rows = (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)
    stored = decode(*encode(rows, storage))
    live = np.arange(len(rows))
    self_scores = (stored * stored).sum(axis=1, keepdims=True)
    assert self_scores.min() < 0.9999  # rounding alone puts some copies under a strict threshold
    assert np.allclose(as_cosines(self_scores, live[:, None], live, stored), 1, atol=1e-6)


def test_dedup_finds_copies_in_an_index(collection, checkpoint, tmp_path, capsys):
    from docemb.cli import main

    original = sorted((collection / "a").glob("*.png"))[0]
    copy = collection / "a" / "copy_of_first.png"
    shutil.copy(original, copy)
    build_index(load_model(checkpoint, threads=1), [collection], tmp_path / "index", workers=1)
    main(["dedup", "--index", str(tmp_path / "index"), "--threshold", "0.9999", "--json", "--sheet", str(tmp_path / "sheet.png")])
    records = json.loads(capsys.readouterr().out)
    group_of = {r["path"]: r["group"] for r in records}
    assert group_of[str(copy)] == group_of[str(original)]  # (a tiny model also groups a family's near-identical members)
    score_of = {r["path"]: r["score_to_first"] for r in records}
    assert score_of[str(copy)] == pytest.approx(score_of[str(original)], abs=1e-6)
    firsts = {r["group"]: r["path"] for r in reversed(records)}  # each group's first record
    assert all(score_of[path] == pytest.approx(1.0, abs=1e-6) for path in firsts.values())  # cosine, not the stored rounding
    assert (tmp_path / "sheet.png").stat().st_size > 0


def test_map_draws_the_collection_by_folder_with_thumbnails_on_hover(collection, checkpoint, tmp_path):
    from docemb.cli import main
    from docemb.collection_map import folder_groups, layout

    build_index(load_model(checkpoint, threads=1), [collection], tmp_path / "index", workers=1)
    main(["map", "--index", str(tmp_path / "index"), "--out", str(tmp_path / "map.png"), "--html", str(tmp_path / "map.html")])
    assert (tmp_path / "map.png").stat().st_size > 0
    page = (tmp_path / "map.html").read_text()
    index = Index.open(tmp_path / "index")
    paths = [index.path(r) for r in np.flatnonzero(index.live)]
    assert all(json.dumps(p)[1:-1] in page for p in paths) and page.count("data:image/jpeg;base64,") == len(paths)
    assert sorted(set(folder_groups(paths))) == ["a", "b"]
    # the map keeps neighbours: each image's nearest point on the map is among its 5 nearest in embedding space
    xy = layout(index.vectors(), seed=0)
    on_map = np.argsort(((xy[:, None] - xy[None]) ** 2).sum(-1), axis=1)[:, 1]
    _, nearest = index.search(index.vectors(), k=6)
    assert np.mean([m in row[1:] for m, row in zip(on_map, nearest)]) >= 0.7


def test_approximate_search_finds_what_exact_search_finds(collection, checkpoint, tmp_path, capsys):
    from docemb.ann import Ann
    from docemb.cli import main

    main(["index", str(collection), "--model", str(checkpoint), "--out", str(tmp_path / "index"), "--workers", "1", "--ann"])
    assert "recall@10 against exact 1.000" in capsys.readouterr().out
    index = Index.open(tmp_path / "index")
    exact_scores, exact_rows = index.search(index.vectors(), k=3)
    scores, rows = Ann(tmp_path / "index").search(index.vectors(), k=3)
    assert np.array_equal(rows, exact_rows) and np.allclose(scores, exact_scores, atol=2e-3)
    main(["search", index.path(int(rows[0, 0])), "--index", str(tmp_path / "index"), "--ann", "-k", "2", "--json"])
    assert json.loads(capsys.readouterr().out)[0]["results"][0]["path"] == index.path(int(rows[0, 0]))


def test_the_speed_benchmark_indexes_the_collection_it_writes(checkpoint, tmp_path):
    from PIL import Image

    from docemb.benchmark.index_speed import index_speed, write_collection

    sources = [np.random.default_rng(i).integers(0, 255, (50, 40, 3), dtype=np.uint8) for i in range(2)]
    collection = write_collection(tmp_path / "small", sources, 6, (32, 24), seed=0)
    files = sorted(collection.folder.glob("*.jpg"))
    assert len(files) == 6 and Image.open(files[0]).size == (32, 24)
    mixed = write_collection(tmp_path / "mixed", sources, 6, (40, 40), seed=1, smallest=20)
    sides = [side for path in mixed.folder.glob("*.jpg") for side in Image.open(path).size]
    assert min(sides) >= 20 and max(sides) <= 40 and len(set(sides)) > 1
    row = index_speed(checkpoint, collection, fast_jpeg=False, workers=1, threads=1)
    assert row.images == 6 and row.images_per_s == pytest.approx(6 / row.seconds)
    assert 50 < row.peak_rss_mb < 4000 and 10 < row.worker_peak_rss_mb < 4000  # measured in its own process
    ceiling = index_speed(checkpoint, collection, fast_jpeg=False, workers=1, threads=1, engine="decode-only")
    assert (ceiling.engine, ceiling.images) == ("decode-only", 6)


def test_neighbour_precision_counts_own_label_among_the_nearest():
    from docemb.benchmark.neighbours import precision_at_k

    embeddings = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9], [0.7, 0.7]], np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=1, keepdims=True)
    rows = precision_at_k(embeddings, ["a", "a", "b", "b", "c"], ks=(1, 2))
    # "c" has no other member and asks nothing; each a and b finds its twin first, then the mixed one
    assert rows == [(1, 4, 1.0, 1.0), (2, 4, 0.5, 0.5)]


def test_neighbour_labels_come_from_the_folders_manifest(tmp_path):
    from docemb.benchmark.neighbours import labelled

    folder = tmp_path / "eval" / "templates"
    folder.mkdir(parents=True)
    for name in ("page0", "page1", "card0"):
        (folder / f"{name}.png").write_bytes(b"")
    (tmp_path / "eval" / "manifest.csv").write_text(
        "split,name,kind,source\neval/templates,page0,page,a.pdf#page=1\neval/templates,page1,page,a.pdf#page=2\n"
        "eval/templates,card0,card,icon\nother/templates,page9,page,b.pdf#page=1\n"
    )
    paths, labels = labelled(folder)
    assert [p.stem for p in paths] == ["page0", "page1", "card0"]
    assert labels == {"kind": ["page", "page", "card"], "source document": ["a.pdf", "a.pdf", "icon"]}


def test_neighbour_benchmark_rows_say_k_and_queries(checkpoint, synth_eval):
    import csv

    from docemb.benchmark.neighbours import benchmark

    with open(synth_eval / "manifest.csv", newline="") as handle:
        families = [row["family"] for row in csv.DictReader(handle)]
    shared = sum(families.count(f) > 1 for f in families)
    rows = benchmark(checkpoint, [synth_eval])
    assert [(r.label, r.k, r.queries) for r in rows] == [("family", k, shared) for k in (1, 5, 10)]
    assert all(0 <= r.precision <= r.ceiling + 1e-9 and r.ceiling <= 1 for r in rows)


def test_decoding_runs_a_window_ahead_of_the_model_not_the_whole_collection():
    from docemb.bulk import _decoded

    class Pool:  # records how many jobs each imap call was given
        def __init__(self):
            self.windows = []

        def imap(self, function, jobs, chunksize):
            self.windows.append(len(jobs))
            return iter(jobs)

    pool = Pool()
    assert list(_decoded(pool, list(range(10)), window=4)) == list(range(10))  # in order, each once
    assert pool.windows == [4, 4, 2]


def test_the_ray_engine_writes_the_index_the_local_engine_writes(collection, checkpoint, tmp_path, monkeypatch):
    """Same rows, same order, same shards; a bad file stops it by name and what is done stays."""
    import ray

    from docemb import ray_engine as engines
    from docemb.ray_engine import RaySettings, ray_engine

    monkeypatch.setattr(engines, "RAY_WINDOW", 6)  # the 15 files as three Ray datasets in turn

    bad = collection / "a" / "zzz_broken.png"
    bad.write_bytes(b"")
    model = load_model(checkpoint, threads=1)
    local = build_index(model, [collection], tmp_path / "local", shard_size=5, batch_size=4, workers=1, skip_bad=True)
    engine = ray_engine(checkpoint, threads=1, batch_size=4, fast_jpeg=False, settings=RaySettings(actors=2))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)  # one local instance for every run
    try:
        whole = build_index(model, [collection], tmp_path / "ray", shard_size=5, engine=engine, skip_bad=True)
        with pytest.raises(DocembError, match="zzz_broken.png"):
            build_index(model, [collection], tmp_path / "stopped", shard_size=5, engine=engine)
        kept = len(Index.open(tmp_path / "stopped"))
        resumed = build_index(model, [collection], tmp_path / "stopped", shard_size=5, engine=engine, skip_bad=True)
    finally:
        ray.shutdown()
    assert whole.bad == local.bad == [line for line in whole.bad if line.startswith(str(bad))] and len(whole.bad) == 1
    ours, theirs = Index.open(tmp_path / "local"), Index.open(tmp_path / "ray")
    assert ours.meta.shards == theirs.meta.shards
    assert [ours.path(r) for r in range(len(ours))] == [theirs.path(r) for r in range(len(theirs))]
    assert np.array_equal(ours.vectors(), theirs.vectors())
    assert kept >= 8 and resumed.embedded == 14 - kept  # the 8 files sorted before the bad one stayed
    stopped = vectors_by_path(Index.open(tmp_path / "stopped"))
    assert stopped.keys() == vectors_by_path(ours).keys()
    assert all(np.array_equal(stopped[p], v) for p, v in vectors_by_path(ours).items())


def test_search_over_several_indexes_answers_as_one_index_of_all(collection, checkpoint, trained_model, tmp_path, capsys):
    from docemb.cli import main

    model = load_model(checkpoint, threads=1)
    for name, roots in [("whole", [collection]), ("a", [collection / "a"]), ("b", [collection / "b"])]:
        build_index(model, roots, tmp_path / name, workers=1)
    query = sorted(str(p) for p in collection.rglob("*.png"))[2]

    def hits(*indexes: str) -> list[tuple[str, float]]:
        main(["search", query, "--index", *(str(tmp_path / i) for i in indexes), "-k", "5", "--json"])
        return [(h["path"], round(h["score"], 5)) for h in json.loads(capsys.readouterr().out)[0]["results"]]

    assert hits("a", "b") == hits("whole") and hits("whole")[0][0] == query
    other = tmp_path / "other.safetensors"
    save_model(other, build_model(trained_model.config, seed=7))
    build_index(load_model(other, threads=1), [collection / "b"], tmp_path / "other", workers=1)
    with pytest.raises(SystemExit):
        main(["search", query, "--index", str(tmp_path / "a"), str(tmp_path / "other")])
    assert "with other.safetensors" in (err := capsys.readouterr().err) and "with small.safetensors" in err
