"""Generated documents: the embedded default data, deterministic for a seed.

Templates come in families of near-duplicates (same layout, small design changes) because
telling similar documents apart is what this model is for. `docemb synth --out DIR --n N`.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from tqdm import tqdm

from docemb.atomic import atomic_path
from docemb.synth.render import KINDS, VARIATIONS

# How often each kind appears: cards and IDs are what users register most.
KIND_WEIGHTS = {"card": 0.3, "id": 0.2, "form": 0.2, "letter": 0.2, "receipt": 0.1}
MANIFEST = "manifest.csv"


@dataclass(frozen=True)
class TemplateSpec:
    index: int
    family: int
    kind: str
    variations: tuple[str, ...]


def _rng(*parts: object) -> random.Random:
    """A random stream fixed by its parts, independent of generation order and Python's hash seed."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "little"))


def template_spec(seed: int, index: int, family_size: int) -> TemplateSpec:
    family = index // family_size
    kind = _rng(seed, "kind", family).choices(list(KIND_WEIGHTS), weights=list(KIND_WEIGHTS.values()))[0]
    member = index % family_size
    # member 0 is the family's base design; every other member changes one or two things
    variations = (
        ()
        if member == 0
        else tuple(sorted(_rng(seed, "var", index).sample(VARIATIONS, k=_rng(seed, "nvar", index).randint(1, 2))))
    )
    return TemplateSpec(index=index, family=family, kind=kind, variations=variations)


def render_template(seed: int, spec: TemplateSpec, long_side: int = 384) -> Image.Image:
    fam = _rng(seed, "family", spec.family)
    mem = _rng(seed, "member", spec.index)
    return KINDS[spec.kind](fam, mem, set(spec.variations), long_side)


def generate(out: str | os.PathLike, n: int, seed: int = 0, family_size: int = 3, long_side: int = 384) -> Path:
    """Write n templates as PNG plus manifest.csv into `out`; returns the manifest path.

    Existing files with the right name are kept, so an interrupted run resumes where it stopped.
    """
    if n < 1 or family_size < 1:
        raise ValueError("n and family_size must be at least 1")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    width = max(5, len(str(n - 1)))
    for index in tqdm(range(n), desc=f"synth {out}", unit="doc"):
        spec = template_spec(seed, index, family_size)
        name = f"{index:0{width}d}_{spec.kind}.png"
        path = out / name
        if not path.exists():
            buffer = io.BytesIO()
            render_template(seed, spec, long_side).save(buffer, format="PNG")
            with atomic_path(path) as tmp:
                tmp.write_bytes(buffer.getvalue())
        rows.append({"name": name, "kind": spec.kind, "family": spec.family, "variations": "+".join(spec.variations) or "base"})
    manifest = out / MANIFEST
    with atomic_path(manifest) as tmp, open(tmp, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["name", "kind", "family", "variations"])
        writer.writeheader()
        writer.writerows(rows)
    return manifest
