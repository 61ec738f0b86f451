"""A bad-input corpus made here, given to every command that reads images: odd but valid files
are read, broken ones stop the run with one line naming the file, and --skip-bad-images lists them."""

from __future__ import annotations

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from docemb.cli import main
from docemb.model import save_model

NON_UTF8 = os.fsdecode(b"caf\xe9.png")  # a Latin-1 name: its bytes are no UTF-8


def _png_claiming(path: Path, width: int, height: int) -> None:
    """A small PNG whose header claims width x height: Pillow meets a decompression bomb on open."""
    Image.new("L", (8, 8)).save(path)
    data = bytearray(path.read_bytes())
    header = b"IHDR" + struct.pack(">II", width, height) + bytes(data[24:29])
    data[12:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(header))
    path.write_bytes(bytes(data))


def _write_valid(folder: Path, rng: np.random.Generator) -> list[str]:
    def noise(h: int, w: int) -> Image.Image:
        return Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))

    noise(64, 80).save(folder / "plain.png")
    noise(50, 50).save(folder / "jpeg_named.png", format="JPEG")  # wrong extension
    noise(40, 40).save(folder / NON_UTF8)
    noise(40, 40).save(folder / ("long" * 60 + ".png"))  # 244 bytes: near the file-system limit
    Image.new("RGB", (40000, 40), "white").save(folder / "wide.png")
    Image.fromarray((rng.integers(0, 65535, (30, 30))).astype(np.uint16)).save(folder / "grey16.png")
    Image.fromarray(rng.integers(0, 255, (30, 30, 2), dtype=np.uint8), "LA").save(folder / "la.png")
    Image.new("CMYK", (30, 30), (10, 200, 30, 0)).save(folder / "cmyk.jpg")
    Image.fromarray(rng.random((30, 30)).astype(np.float32), "F").save(folder / "float.tif")
    frames = [noise(30, 30).convert("P") for _ in range(3)]
    frames[0].save(folder / "frames.gif", save_all=True, append_images=frames[1:])
    return [path.name for path in folder.iterdir()]  # written first, into an empty folder


def _write_broken(folder: Path, rng: np.random.Generator) -> list[str]:
    (folder / "zero.png").write_bytes(b"")
    Image.fromarray(rng.integers(0, 255, (60, 60, 3), dtype=np.uint8)).save(folder / "whole.png")
    whole = (folder / "whole.png").read_bytes()
    (folder / "whole.png").unlink()
    (folder / "truncated.png").write_bytes(whole[: len(whole) // 2])
    (folder / "random.jpg").write_bytes(rng.integers(0, 255, 4000, dtype=np.uint8).tobytes())
    (folder / "text.png").write_text("not an image\n")
    _png_claiming(folder / "bomb.png", 30000, 30000)
    Image.new("RGB", (1, 1)).save(folder / "one_pixel.png")  # decodes, but holds no document
    return ["bomb.png", "one_pixel.png", "random.jpg", "text.png", "truncated.png", "zero.png"]


@pytest.fixture()
def corpus(tmp_path) -> tuple[Path, set[str], set[str]]:
    """(folder, names that must be read, names that must be refused); also entries no command
    may take for an image: a folder named like one, a symlink loop, a link back up the tree."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    rng = np.random.default_rng(0)
    valid, broken = _write_valid(folder, rng), _write_broken(folder, rng)
    (folder / "folder.png").mkdir()
    os.symlink("loop_b.png", folder / "loop_a.png")
    os.symlink("loop_a.png", folder / "loop_b.png")
    (folder / "sub").mkdir()
    os.symlink("..", folder / "sub" / "up")
    return folder, set(valid), set(broken)


@pytest.fixture()
def checkpoint(tmp_path, small_model) -> Path:
    save_model(tmp_path / "small.safetensors", small_model)
    return tmp_path / "small.safetensors"


def _fails_naming(capsys, argv: list[str], name: str) -> str:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err.strip()  # progress bars, then the error
    error = err.splitlines()[-1]
    assert exit_info.value.code == 2 and "Traceback" not in err
    assert error.startswith(f"docemb {argv[0]}: error: ") and name in error
    return error


def test_index_reads_the_odd_files_and_names_or_lists_the_broken_ones(corpus, checkpoint, tmp_path, capsys):
    folder, valid, broken = corpus
    argv = ["index", str(folder), "--model", str(checkpoint), "--out", str(tmp_path / "index"), "--workers", "1"]
    _fails_naming(capsys, argv, str(folder / "bomb.png"))  # the first broken file in sorted order
    main([*argv, "--skip-bad-images"])
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "index" / "report.json").read_text())
    assert {line.split(": ")[0].rsplit("/", 1)[1] for line in report["bad"]} == broken
    main(["search", str(folder / "plain.png"), "--index", str(tmp_path / "index"), "-k", "100", "--json"])
    found = {Path(hit["path"]).name for hit in json.loads(capsys.readouterr().out)[0]["results"]}
    assert found == valid and f"{len(broken)} unreadable" in out


def test_match_registers_every_odd_file_and_refuses_each_broken_one_by_name(corpus, checkpoint, tmp_path, capsys):
    folder, valid, broken = corpus
    store = tmp_path / "store.bin"
    register = ["match", "register", "--model", str(checkpoint), "--store", str(store), "--threshold", "0.5"]
    main([*register[:2], *(str(folder / name) for name in sorted(valid)), *register[2:]])
    assert f"{len(valid)} templates" in capsys.readouterr().out
    for name in sorted(broken):
        _fails_naming(capsys, [*register[:2], str(folder / name), *register[2:]], name)
        _fails_naming(capsys, ["match", str(folder / name), "--store", str(store)], name)


def test_training_sources_and_calibration_skip_exactly_the_broken_files(corpus):
    from docemb.errors import DocembError
    from docemb.quantize.calibration import calibration_pool, finetune_images
    from docemb.train.sources import SourceSpec, load_source

    folder, valid, broken = corpus
    with pytest.raises(DocembError, match="bomb.png.*--skip-bad-images"):
        load_source(SourceSpec("folder", str(folder)), max_side=128)
    source = load_source(SourceSpec("folder", str(folder)), max_side=128, on_error="skip")
    assert {Path(name).name for name in source.names} == valid
    assert {Path(name).name for name in source.bad} == broken
    calibrating = {path.name for path in calibration_pool([folder])} & valid
    assert len(finetune_images([folder], count=64)) == len(calibrating) > 0


def test_evaluate_names_the_first_broken_file(corpus, checkpoint, capsys):
    folder, _, _ = corpus
    _fails_naming(capsys, ["evaluate", str(checkpoint), "--data", str(folder), "--strengths", "mild"], "bomb.png")
