"""A 2-D map of an image collection: t-SNE (openTSNE) of its embeddings, coloured by folder or a
label, as a PNG and as one self-contained HTML page with each image's thumbnail on hover."""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from docemb.atomic import write_text
from docemb.errors import DocembError


def layout(vectors: np.ndarray, seed: int = 0, perplexity: float = 30.0, threads: int | None = None) -> np.ndarray:
    """(N, 2) positions that keep each image near its nearest neighbours in embedding space."""
    try:
        from openTSNE import TSNE
    except ImportError:
        raise DocembError("docemb map needs openTSNE: pip install -c constraints.txt openTSNE (make setup installs it)") from None
    if len(vectors) < 4:
        raise DocembError(f"a map needs at least 4 images, the index has {len(vectors)}")
    perplexity = min(perplexity, (len(vectors) - 1) / 3)  # t-SNE's bound on small sets
    tsne = TSNE(perplexity=perplexity, metric="cosine", random_state=seed, n_jobs=threads or os.cpu_count() or 1, verbose=False)
    return np.asarray(tsne.fit(np.asarray(vectors, dtype=np.float32)), dtype=np.float32)


def folder_groups(paths: list[str]) -> list[str]:
    """Each path's first folder below the collection's common root (its own folder when flat)."""
    parents = [Path(p).parent for p in paths]
    root = Path(os.path.commonpath([str(p) for p in parents])) if parents else Path()
    return [(p.relative_to(root).parts or (p.name,))[0] for p in parents]


def label_groups(paths: list[str], labels_csv: Path, column: str) -> list[str]:
    """Labels from a CSV with a `path` column (or file names in a `name` column); others are 'unlabelled'."""
    try:
        with open(labels_csv, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except OSError as exc:
        raise DocembError(f"{labels_csv}: cannot read ({exc.strerror})") from None
    if not rows or column not in rows[0] or not ({"path", "name"} & set(rows[0])):
        raise DocembError(f"{labels_csv}: needs a `path` or `name` column and a `{column}` column")
    key = "path" if "path" in rows[0] else "name"
    labels = {(str(Path(r[key]).resolve()) if key == "path" else Path(r[key]).name): r[column] for r in rows}
    lookup = (lambda p: str(Path(p).resolve())) if key == "path" else (lambda p: Path(p).name)
    return [labels.get(lookup(p), "unlabelled") for p in paths]


def thumbnail_uri(path: str, size: int = 96) -> str:
    """A small JPEG of the image as a data: URI (an empty string when it no longer reads)."""
    from docemb.imageio import ImageReadError, read_rgb

    try:
        image = Image.fromarray(read_rgb(path, max_side=size))
    except ImageReadError:
        return ""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode()


_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font:13px sans-serif;margin:12px}}#tip{{position:fixed;pointer-events:none;background:#fff;border:1px solid #999;
padding:4px;display:none;max-width:220px;word-break:break-all}}#tip img{{display:block;max-width:200px}}</style></head>
<body><h3>{title}</h3><div id="legend"></div><canvas id="map" width="900" height="900"></canvas><div id="tip"></div>
<script>
const points = {points}; const groups = {groups};
const canvas = document.getElementById("map"), ctx = canvas.getContext("2d"), tip = document.getElementById("tip");
const colour = g => `hsl(${{(g * 137.5) % 360}}, 65%, 45%)`;
groups.forEach((g, i) => {{ const s = document.createElement("span"); s.style.color = colour(i); s.style.marginRight = "14px";
  s.textContent = "\u25cf " + g; document.getElementById("legend").append(s); }});
for (const p of points) {{ ctx.fillStyle = colour(p.g); ctx.beginPath(); ctx.arc(p.x, p.y, 3, 0, 6.3); ctx.fill(); }}
canvas.onmousemove = e => {{
  const r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
  let best = null, d = 64;
  for (const p of points) {{ const q = (p.x - x) ** 2 + (p.y - y) ** 2; if (q < d) {{ d = q; best = p; }} }}
  if (!best) {{ tip.style.display = "none"; return; }}
  tip.replaceChildren();
  if (best.t) {{ const im = new Image(); im.src = best.t; tip.append(im); }}
  tip.append(document.createTextNode(best.p));
  tip.style.left = (e.clientX + 14) + "px"; tip.style.top = (e.clientY + 14) + "px"; tip.style.display = "block";
}};
</script></body></html>
"""


def write_html(xy: np.ndarray, groups: list[str], paths: list[str], out: Path, thumbnails: int, title: str) -> Path:
    """The map as one HTML file; the first `thumbnails` points carry their image inline."""
    names = sorted(set(groups))
    scaled = 20 + 860 * (xy - xy.min(axis=0)) / np.maximum(np.ptp(xy, axis=0), 1e-9)
    points = []
    for i, (position, group, path) in enumerate(tqdm(list(zip(scaled, groups, paths)), desc="map thumbnails", unit="img")):
        point = {"x": round(float(position[0]), 1), "y": round(float(position[1]), 1), "g": names.index(group), "p": path}
        if i < thumbnails:
            point["t"] = thumbnail_uri(path)
        points.append(point)

    def script_json(value: object) -> str:  # "</" would end the script element
        return json.dumps(value).replace("</", "<\\/")

    page = _PAGE.format(title=html.escape(title), points=script_json(points), groups=script_json(names))
    write_text(out, page)
    return out
