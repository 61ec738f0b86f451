"""Pack a run's training data into one folder that travels, for a machine with no network.

A lent GPU machine reaches no registry and takes a few tens of MB, while a corpus is built
from packages and lives outside the clone. `python -m docemb.train.bundle` decodes every
source of a config exactly as training would (long side `max_side`), writes each image as
one WebP (or JPEG) file, and writes beside them `config.yaml`: the same run with each source
replaced by an `imagefolder:` of those files, at its weight and in its order, so class indices
stay as they were. `synth:` sources travel as they are (made from their seed wherever the run
is). Held-out sets do not travel (evaluate where the data is).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from docemb.atomic import write_text
from docemb.errors import DocembError
from docemb.options import to_yaml
from docemb.train.config import TrainConfig, resolve
from docemb.train.sources import Source, SourceSpec, load_source


@dataclass(frozen=True)
class PackedSource:
    spec: SourceSpec  # the original source
    folder: Path  # its images
    images: int
    bytes: int


FORMATS = {"webp": "WEBP", "jpeg": "JPEG"}


def pack_source(source: Source, folder: Path, image_format: str, quality: int) -> PackedSource:
    """Every image of `source` as `folder/NNNNNN.<format>`, numbered in the source's order."""
    folder.mkdir(parents=True, exist_ok=True)
    size = 0
    for index in tqdm(range(len(source)), desc=f"pack {source.spec.path}", unit="img", leave=False):
        path = folder / f"{index:06d}.{image_format}"
        Image.fromarray(np.ascontiguousarray(source.image(index))).save(path, FORMATS[image_format], quality=quality)
        size += path.stat().st_size
    return PackedSource(source.spec, folder, len(source), size)


def bundle(
    config: TrainConfig, out: Path, image_format: str = "webp", quality: int = 70
) -> tuple[TrainConfig, list[PackedSource]]:
    """Pack every file source of `config` under `out/data`; the config that trains on them,
    written as `out/config.yaml` with paths as `out` is given (run it from the same folder)."""
    if out.exists() and any(out.iterdir()):
        raise DocembError(f"{out}: not empty; a bundle is written into a new folder")
    packed, data = [], []
    for number, text in enumerate(config.data):
        spec = SourceSpec.parse(text)
        if spec.kind == "synth":
            data.append(text)
            continue
        source = load_source(spec, config.max_side, "raise", seed=config.seed)
        packed.append(pack_source(source, out / "data" / f"{number:02d}-{spec.kind}", image_format, quality))
        data.append(f"imagefolder:{packed[-1].folder}@{spec.weight:g}")
    travelling = replace(config, data=data, eval_data=[])
    write_text(out / "config.yaml", to_yaml(travelling))
    return travelling, packed


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m docemb.train.bundle", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="the run's YAML config (as for docemb train --config)")
    parser.add_argument("--out", required=True, type=Path, help="new folder for the images and the rewritten config")
    parser.add_argument("--max-side", type=int, help="decode at this long side (default: the config's max_side)")
    parser.add_argument("--format", choices=sorted(FORMATS), default="webp", help="image format of the bundle")
    parser.add_argument("--quality", type=int, default=70, help="WebP or JPEG quality")
    args = parser.parse_args(argv)
    if not 1 <= args.quality <= 95:
        parser.error(f"--quality must be in 1..95, got {args.quality}")
    try:
        config = resolve(argparse.Namespace(config=args.config, max_side=args.max_side))
        _, packed = bundle(config, args.out, args.format, args.quality)
    except DocembError as exc:
        raise SystemExit(f"bundle: error: {exc}") from None
    for p in packed:
        print(f"{p.spec.kind}:{p.spec.path}@{p.spec.weight:g}  {p.images} images  {p.bytes / 2**20:.1f} MiB  -> {p.folder}")
    print(f"{args.out}: {sum(p.images for p in packed)} images, {sum(p.bytes for p in packed) / 2**20:.1f} MiB; train with")
    print(f"  docemb train --config {args.out / 'config.yaml'} --out RUN_DIR")


if __name__ == "__main__":
    main()
