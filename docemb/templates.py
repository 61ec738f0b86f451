"""Registered templates and the match-or-unknown decision, the same as the Android core's.

The store file is the Android app's own format (android_demo/core TemplateStore.java: "DEMB",
version, dimension, count, then per template a modified-UTF-8 name, its number of views (from
version 2) and their big-endian float32s), so
templates registered on a desktop load on a phone and back. Which model made the embeddings
and the match threshold sit beside it in `STORE.json`; templates registered for geometric
verification keep their local features in `STORE.features.npz` (docemb.verify).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from docemb import verify as verification
from docemb.atomic import atomic_path, write_json
from docemb.errors import DocembError
from docemb.verify import Features, VerifyRule, VerifySettings

MAGIC = 0x44454D42  # "DEMB"
VERSION = 2  # 1: one view per template, no view count
UNKNOWN = "unknown"
MAX_VIEWS = 64


@dataclass(frozen=True)
class StoreInfo:
    """What the embeddings of a store are comparable with."""

    model: str
    model_sha256: str
    threshold: float
    verify_rule: dict | None = None  # VerifyRule's fields, for stores registered with features


@dataclass(frozen=True)
class Decision:
    best: str | None
    score: float
    matched: bool
    top: list[tuple[str, float]]
    verified: bool = False  # decided by geometric verification, not the cosine threshold
    inliers: int | None = None  # of the best template, when verification ran (-1: too few keypoints)
    cosine_rank: int = 0  # the best template's place in the cosine order

    @property
    def label(self) -> str:
        return self.best if self.matched and self.best is not None else UNKNOWN


class TemplateStore:
    """Name -> unit embeddings of its views (views, D), in registration order; a query scores a
    template's best view."""

    def __init__(self, dim: int, verify_settings: VerifySettings | None = None) -> None:
        self.dim = dim
        self.templates: dict[str, np.ndarray] = {}
        self.verify_settings = verify_settings  # set: templates keep local features for verification
        self.features: dict[str, Features] = {}

    def put(self, name: str, embedding: np.ndarray, image: np.ndarray | None = None) -> None:
        """Register (or replace) a template from the embedding of each of its views ((D,) for one);
        with verification on, its RGB `image` gives its features."""
        views = np.atleast_2d(np.asarray(embedding, dtype=np.float32))
        if views.ndim != 2 or views.shape[1] != self.dim or not 1 <= len(views) <= MAX_VIEWS:
            raise DocembError(
                f"embedding of {name} has shape {views.shape}, expected (views, {self.dim}), 1 to {MAX_VIEWS} views"
            )
        if self.verify_settings is not None:
            if image is None:
                raise DocembError(f"{name}: this store verifies matches; register the template with its image")
            self.features[name] = verification.template_features(image, self.verify_settings)
        norms = np.maximum(np.linalg.norm(views, axis=1, keepdims=True), 1e-12)
        self.templates[name] = (views / norms).astype(np.float32)

    def remove(self, name: str) -> None:
        self.templates.pop(name, None)
        self.features.pop(name, None)

    def __len__(self) -> int:
        return len(self.templates)

    def scores(self, query: np.ndarray) -> np.ndarray:
        """The query's dot product with every template's best view, in registration order."""
        vector = np.asarray(query, dtype=np.float32).reshape(-1)
        return np.array([np.max(views @ vector) for views in self.templates.values()], dtype=np.float32)

    def top_k(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        """The k best templates by dot product, best first; ties keep registration order (as Java's stable sort)."""
        if not self.templates:
            return []
        names, scores = list(self.templates), self.scores(query)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(names[i], float(scores[i])) for i in order]

    def decide(self, query: np.ndarray, threshold: float, k: int = 3) -> Decision:
        """Best template by cosine, matched at `threshold`: the Android core's decision."""
        top = self.top_k(query, k)
        if not top:
            return Decision(None, float("nan"), False, [])
        name, score = top[0]
        return Decision(name, score, score >= threshold, top)

    def match(
        self,
        query: np.ndarray,
        threshold: float,
        k: int = 3,
        image: np.ndarray | None = None,
        verify: bool = False,
        rule: VerifyRule = VerifyRule(),
        shortlist: int = verification.SHORTLIST,
    ) -> Decision:
        """`decide`, or with `verify` the cosine shortlist re-ranked by geometric verification
        of the query's RGB `image` against each template (docemb.verify)."""
        if not verify:
            return self.decide(query, threshold, k)
        if self.verify_settings is None or image is None:
            raise DocembError("verification needs a store registered with features and the query's image")
        names, cosines = list(self.templates), self.scores(query)
        shortlisted = [self.features[n] for n in names]
        query_features = verification.features(image, self.verify_settings)
        candidates = verification.rerank(query_features, cosines, shortlisted, shortlist, self.verify_settings)
        verdict = verification.decide(candidates, threshold, rule)
        if verdict.best is None:
            return Decision(None, float("nan"), False, [])
        top = [(names[c.index], c.cosine) for c in candidates[:k]]
        best = verdict.best
        return Decision(names[best.index], best.cosine, verdict.matched, top, verdict.verified, best.inliers, best.cosine_rank)

    # the Android app's binary format -----------------------------------------------------------
    def write(self, path: str | os.PathLike) -> None:
        parts = [struct.pack(">iiii", MAGIC, VERSION, self.dim, len(self.templates))]
        for name, views in self.templates.items():
            encoded = name.encode("utf-8")
            parts.append(
                struct.pack(">H", len(encoded)) + encoded + struct.pack(">H", len(views)) + views.astype(">f4").tobytes()
            )
        with atomic_path(path) as tmp:
            tmp.write_bytes(b"".join(parts))
        if self.verify_settings is not None:
            verification.save_features(
                verification.features_path(path), self.verify_settings, {n: self.features[n] for n in self.templates}
            )

    @classmethod
    def read(cls, path: str | os.PathLike) -> TemplateStore:
        data = Path(path).read_bytes()
        try:
            magic, version, dim, count = struct.unpack_from(">iiii", data, 0)
            if magic != MAGIC:
                raise DocembError(f"{path}: not a docemb template store")
            if version not in (1, VERSION):
                raise DocembError(
                    f"{path}: template store version {version} is not supported (this docemb reads 1 and {VERSION})"
                )
            store, offset = cls(dim), 16
            for _ in range(count):
                (length,) = struct.unpack_from(">H", data, offset)
                name = data[offset + 2 : offset + 2 + length].decode("utf-8")
                offset += 2 + length
                views = 1
                if version > 1:
                    (views,) = struct.unpack_from(">H", data, offset)
                    offset += 2
                store.templates[name] = np.frombuffer(data, ">f4", views * dim, offset).astype(np.float32).reshape(views, dim)
                offset += 4 * views * dim
        except (struct.error, ValueError, UnicodeDecodeError) as exc:
            raise DocembError(f"{path}: truncated or corrupt template store ({exc})") from None
        features_file = verification.features_path(path)
        if features_file.is_file():
            store.verify_settings, store.features = verification.load_features(features_file)
            missing = set(store.templates) - set(store.features)
            if missing:
                raise DocembError(f"{features_file}: no features for {sorted(missing)[:3]}; register them again")
        return store


def info_path(store: str | os.PathLike) -> Path:
    return Path(f"{store}.json")


def write_info(store: str | os.PathLike, info: StoreInfo) -> None:
    write_json(info_path(store), asdict(info))


def read_info(store: str | os.PathLike) -> StoreInfo:
    path = info_path(store)
    try:
        return StoreInfo(**json.loads(path.read_text()))
    except FileNotFoundError:
        raise DocembError(f"{path}: missing; register templates with `docemb match register`") from None
    except (json.JSONDecodeError, TypeError) as exc:
        raise DocembError(f"{path}: not a template store's info file ({exc})") from None
