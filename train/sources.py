"""Training data sources, mixed in one run; every source image (or PDF page) is its own class.

A source is written `[KIND:]PATH[@WEIGHT]`:

- `folder:DIR` — template images, recursive, any common format (the default for a directory);
- `pdf:PATH` — a PDF file or a folder of PDFs, each page a template (the default for `*.pdf`);
- `imagefolder:DIR` — an ImageFolder/ImageNet-style tree of extra classes, each image its own
  class; decoded on demand, so a million images need not fit in memory;
- `synth:N` — N generated documents (`docemb synth`), made once and cached.

WEIGHT scales how often a source's classes are drawn per epoch relative to the others (1 = each
class once per epoch, 0.5 = half of them, 2 = twice).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from docemb.errors import DocembError, ImageReadError
from docemb.imageio import SKIP_HINT, OnError, frame_count, list_images, load_images, read_rgb
from docemb.pdf import page_name, render_pages

log = logging.getLogger(__name__)

SOURCE_KINDS = ("folder", "pdf", "imagefolder", "synth")


@dataclass(frozen=True)
class SourceSpec:
    kind: str
    path: str
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        body, weight = text, 1.0
        if "@" in text:
            body, _, raw = text.rpartition("@")
            try:
                weight = float(raw)
            except ValueError:
                raise DocembError(f"data source {text!r}: weight after '@' must be a number") from None
            if weight <= 0:
                raise DocembError(f"data source {text!r}: weight must be > 0")
        kind, sep, path = body.partition(":")
        if not sep or kind not in SOURCE_KINDS:  # no kind given (or a Windows drive letter)
            kind, path = ("pdf" if body.lower().endswith(".pdf") else "folder"), body
        return cls(kind=kind, path=os.path.expanduser(path), weight=weight)


@dataclass
class Source:
    """One source's classes: `image(i)` decodes image i at most `max_side` on its long side."""

    spec: SourceSpec
    names: list[str]
    max_side: int
    _loaded: list[np.ndarray] | None = None  # decoded up front for small sources
    _paths: list[Path] = field(default_factory=list)  # decoded on demand for large ones
    bad: list[str] = field(default_factory=list)  # unreadable files skipped (each reason is logged as a warning)

    def __len__(self) -> int:
        return len(self.names)

    def image(self, index: int) -> np.ndarray:
        if self._loaded is not None:
            return self._loaded[index]
        return read_rgb(self._paths[index], self.max_side)

    def _picks(self, limit: int) -> np.ndarray:
        """Up to `limit` indices spread over the source: the data report looks at these."""
        return np.linspace(0, len(self) - 1, min(limit, len(self))).astype(int)

    def sizes(self, limit: int = 200) -> np.ndarray:
        """(height, width) of up to `limit` images, for the data report."""
        if self._loaded is not None:
            return np.array([self._loaded[i].shape[:2] for i in self._picks(limit)])
        sizes = []
        for i in self._picks(limit):
            with Image.open(self._paths[i]) as image:
                sizes.append(image.size[::-1])
        return np.array(sizes)

    def multi_frame(self, limit: int = 200) -> tuple[int, list[str]]:
        """(files looked at, those with several frames, of which training uses the first): all of
        a source decoded up front, up to `limit` of one decoded on demand; none of a PDF or of
        generated documents (docemb writes them one frame each)."""
        if self.spec.kind in ("pdf", "synth"):
            return 0, []
        picks = range(len(self)) if self._loaded is not None else self._picks(limit)
        return len(picks), [self.names[i] for i in picks if frame_count(self.names[i]) > 1]


def _decode_all(spec: SourceSpec, paths: list[Path], max_side: int, on_error: OnError) -> Source:
    images, kept = load_images(paths, max_side, on_error)
    decoded = set(kept)
    return Source(spec, [str(p) for p in kept], max_side, _loaded=images, bad=[str(p) for p in paths if p not in decoded])


def _pdf_source(spec: SourceSpec, max_side: int, on_error: OnError) -> Source:
    root = Path(spec.path)
    files = [root] if root.is_file() else sorted(root.rglob("*.pdf")) if root.is_dir() else []
    if not files:
        raise DocembError(f"{root}: no PDF file found")
    images, names, bad = [], [], []
    for file in files:
        try:
            pages = render_pages(file, max_side)
        except ImageReadError as exc:
            if on_error == "raise":
                raise DocembError(f"{exc} ({SKIP_HINT})") from None
            log.warning("skipping %s", exc)
            bad.append(str(file))
            continue
        images.extend(pages)
        names.extend(page_name(file, number) for number in range(1, len(pages) + 1))
    return Source(spec, names, max_side, _loaded=images, bad=bad)


def _synth_source(spec: SourceSpec, max_side: int, on_error: OnError, cache_dir: Path, seed: int) -> Source:
    from docemb.synth import generate

    try:
        count = int(spec.path)
    except ValueError:
        raise DocembError(f"synth source wants a count, as in synth:2000, got {spec.path!r}") from None
    folder = cache_dir / f"synth_seed{seed}_n{count}"
    if not (folder / "manifest.csv").is_file():  # the manifest is written last: its presence means complete
        generate(folder, n=count, seed=seed)
    return _decode_all(spec, list_images(folder), max_side, on_error)


def load_source(
    spec: SourceSpec, max_side: int, on_error: OnError = "raise", cache_dir: str | os.PathLike = ".", seed: int = 0
) -> Source:
    if spec.kind == "folder":
        return _decode_all(spec, list_images(spec.path), max_side, on_error)
    if spec.kind == "imagefolder":
        paths = list_images(spec.path)
        return Source(spec, [str(p) for p in paths], max_side, _paths=paths)
    if spec.kind == "pdf":
        return _pdf_source(spec, max_side, on_error)
    if spec.kind == "synth":
        return _synth_source(spec, max_side, on_error, Path(cache_dir), seed)
    raise DocembError(f"unknown data source kind {spec.kind!r}; choose one of {', '.join(SOURCE_KINDS)}")


class TemplatePool:
    """All sources as one indexable collection; image i is class group i."""

    def __init__(self, sources: list[Source]) -> None:
        if not sources or not sum(len(s) for s in sources):
            raise DocembError("no training images in any data source")
        self.sources = sources
        self.offsets = np.cumsum([0] + [len(s) for s in sources])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def __getitem__(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise IndexError(index)
        which = int(np.searchsorted(self.offsets, index, side="right")) - 1
        return self.sources[which].image(index - int(self.offsets[which]))

    def image_weights(self) -> np.ndarray:
        return np.concatenate([np.full(len(s), s.spec.weight) for s in self.sources])

    def report(self, num_variants: int) -> tuple[str, list[dict]]:
        """A table for the terminal and the same rows for data_report.json."""
        total_draws = float(sum(len(s) * s.spec.weight for s in self.sources))
        rows = []
        for source in self.sources:
            sizes = source.sizes()
            checked, multi_frame = source.multi_frame()
            rows.append(
                {
                    "kind": source.spec.kind,
                    "path": source.spec.path,
                    "images": len(source),
                    "classes": len(source) * num_variants,
                    "weight": source.spec.weight,
                    "share_of_draws": len(source) * source.spec.weight / total_draws,
                    "height": [int(sizes[:, 0].min()), int(sizes[:, 0].max())],
                    "width": [int(sizes[:, 1].min()), int(sizes[:, 1].max())],
                    "unreadable": source.bad,
                    "multi_frame": {"checked": checked, "first_frame_only": multi_frame},
                }
            )
        lines = [
            f"{'kind':<11} {'path':<36} {'images':>7} {'classes':>8} {'weight':>6} {'share':>6}  size (h x w)        unreadable"
        ]
        for row in rows:
            path = row["path"] if len(row["path"]) <= 36 else "..." + row["path"][-33:]
            label = f"{row['kind']:<11} {path:<36}"
            size = f"{row['height'][0]}-{row['height'][1]} x {row['width'][0]}-{row['width'][1]}"
            lines.append(
                f"{label:<40} {row['images']:>7} {row['classes']:>8} {row['weight']:>6.2f} {row['share_of_draws']:>6.1%}  "
                f"{size:<19} {len(row['unreadable'])}"
            )
            lines.extend(f"    skipped {reason}" for reason in row["unreadable"][:5])
            if multi_frame := row["multi_frame"]["first_frame_only"]:
                shown = ", ".join(multi_frame[:3]) + (", ..." if len(multi_frame) > 3 else "")
                lines.append(
                    f"    first frame only: {len(multi_frame)} of {row['multi_frame']['checked']} files checked have several ({shown})"
                )
        return "\n".join(lines), rows
