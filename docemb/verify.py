"""Geometric verification: re-rank the embedding's shortlist by local features that agree on one
homography, so pages that look alike at 128 pixels (two manuals of one class file, page 1 and
page 2) are told apart by their text.

Features (ORB by default, SIFT selectable; OpenCV 5 moved AKAZE out of its main modules) are computed
once per template. For a query, each of the embedding's top-K templates is matched (ratio test),
a RANSAC homography is fitted, and the inliers re-rank the shortlist. Where either side has too
few keypoints (a flat card) the cosine order stands.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

from docemb.atomic import atomic_path
from docemb.errors import DocembError

DETECTORS = ("orb", "sift")


@dataclass(frozen=True)
class VerifySettings:
    detector: str = "orb"
    features: int = 1000  # keypoints per image (ORB, SIFT)
    fast_threshold: int = 20  # ORB's corner contrast: lower finds corners in blurred, dim captures
    long_side: int = 640  # images are resized to this long side first
    ratio: float = 0.8  # Lowe's ratio test
    ransac_px: float = 5.0  # reprojection error of an inlier, at long_side
    min_keypoints: int = 30  # fewer on either side: cosine decides
    min_inliers: int = 15  # fewer: the pair is not verified


@dataclass(frozen=True)
class Features:
    keypoints: np.ndarray  # (N, 2) float32 positions at long_side
    descriptors: np.ndarray | None

    @property
    def count(self) -> int:
        return len(self.keypoints)


@dataclass(frozen=True)
class Candidate:
    """One shortlisted template for a query: its cosine rank and score, and its inliers."""

    index: int
    cosine_rank: int
    cosine: float
    inliers: int  # -1: not verifiable (too few keypoints)


def _detector(settings: VerifySettings):
    if settings.detector == "orb":
        return cv2.ORB_create(nfeatures=settings.features, fastThreshold=settings.fast_threshold)
    if settings.detector == "sift":
        return cv2.SIFT_create(nfeatures=settings.features)
    raise DocembError(f"unknown detector {settings.detector!r}; choose one of {', '.join(DETECTORS)}")


def features(image: np.ndarray, settings: VerifySettings = VerifySettings()) -> Features:
    """Keypoints and descriptors of an RGB uint8 image, resized to `settings.long_side`."""
    scale = settings.long_side / max(image.shape[:2])
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    grey = cv2.resize(grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)), interpolation=cv2.INTER_AREA)
    keypoints, descriptors = _detector(settings).detectAndCompute(grey, None)
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return Features(points, descriptors)


def inliers(query: Features, template: Features, settings: VerifySettings = VerifySettings()) -> int:
    """RANSAC homography inliers among ratio-test matches; -1 when either side has too few
    keypoints; 0 without fitting when fewer than `min_inliers` matches pass the ratio test (no
    homography could verify the pair, and RANSAC costs most on such pairs: it runs to its
    iteration limit when almost every match is an outlier)."""
    if min(query.count, template.count) < settings.min_keypoints or query.descriptors is None or template.descriptors is None:
        return -1
    source, target = matches(query, template, settings)
    return homography_inliers(source, target, settings) if worth_fitting(source, settings) else 0


def worth_fitting(source: np.ndarray, settings: VerifySettings = VerifySettings()) -> bool:
    """Whether a pair's ratio-test matches are enough for a homography to reach `min_inliers`."""
    return len(source) >= settings.min_inliers


def matches(query: Features, template: Features, settings: VerifySettings = VerifySettings()) -> tuple[np.ndarray, np.ndarray]:
    """(query points, template points) of the descriptor matches that pass the ratio test."""
    norm = cv2.NORM_HAMMING if query.descriptors.dtype == np.uint8 else cv2.NORM_L2
    pairs = cv2.BFMatcher(norm).knnMatch(query.descriptors, template.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < settings.ratio * p[1].distance]
    return query.keypoints[[m.queryIdx for m in good]], template.keypoints[[m.trainIdx for m in good]]


def homography_inliers(source: np.ndarray, target: np.ndarray, settings: VerifySettings = VerifySettings()) -> int:
    """Matches that agree on one RANSAC homography (0 with fewer than the 4 points it needs)."""
    if len(source) < 4:
        return 0
    _, mask = cv2.findHomography(source, target, cv2.RANSAC, settings.ransac_px)
    return int(mask.sum()) if mask is not None else 0


def rerank(
    query: Features, cosines: np.ndarray, templates: list[Features], k: int = 20, settings: VerifySettings = VerifySettings()
) -> list[Candidate]:
    """The top-k templates by cosine, verified: those with at least `min_inliers` first (most
    inliers first), then the rest in cosine order. With no verifiable candidate, cosine order."""
    order = np.argsort(-cosines, kind="stable")[:k]
    candidates = [
        Candidate(int(i), rank, float(cosines[i]), inliers(query, templates[i], settings)) for rank, i in enumerate(order)
    ]
    verified = sorted((c for c in candidates if c.inliers >= settings.min_inliers), key=lambda c: (-c.inliers, c.cosine_rank))
    return verified + [c for c in candidates if c.inliers < settings.min_inliers]


@dataclass(frozen=True)
class VerifyRule:
    """Match or unknown from both signals. A shortlisted template with at least `min_inliers`
    inliers matches when its cosine also reaches `verified_cosine` (so a shared header alone
    does not pass an unregistered page); without such a template, or where features cannot
    decide (flat cards), the plain cosine threshold applies."""

    min_inliers: int = 26  # calibrated on unknown captures at the hard strength (docs/results.md)
    verified_cosine: float = 0.0


# how VerifyRule's default was measured; written into every contract beside the rule
CALIBRATED_ON = (
    "ORB inliers of hard-strength captures of realdocs/eval/unknown (pages no template shows): "
    "at most 0.5 % reach min_inliers (docs/results.md)"
)


def contract_entry(settings: VerifySettings = VerifySettings(), rule: VerifyRule = VerifyRule()) -> dict:
    """The contract's `verification` section: what an app needs to verify as docemb does."""
    return {"features": asdict(settings), "rule": asdict(rule), "calibrated_on": CALIBRATED_ON}


def from_contract(contract: dict) -> tuple[VerifySettings, VerifyRule]:
    """The features and rule a contract names; the defaults for contracts written before it had them."""
    entry = contract.get("verification") or {}
    return VerifySettings(**entry.get("features", {})), VerifyRule(**entry.get("rule", {}))


@dataclass(frozen=True)
class VerifiedDecision:
    best: Candidate | None
    matched: bool
    verified: bool  # the decision rests on inliers, not on the cosine threshold
    shortlist: list[Candidate]


def decide(ranked: list[Candidate], threshold: float, rule: VerifyRule) -> VerifiedDecision:
    """The decision for a shortlist re-ranked by `rerank`. Its first template is the answer: with
    the rule's inliers it is verified; with fewer (some inliers, or none and the cosine order
    stands) the cosine threshold decides whether it matches. A few inliers still tell the right
    page from a look-alike more often than the cosine order does (docs/results.md)."""
    if not ranked:
        return VerifiedDecision(None, False, False, [])
    best = ranked[0]
    if best.inliers >= rule.min_inliers:
        return VerifiedDecision(best, best.cosine >= rule.verified_cosine, True, ranked)
    return VerifiedDecision(best, best.cosine >= threshold, False, ranked)


FEATURES_VERSION = 1


def features_path(store: str | os.PathLike) -> Path:
    return Path(f"{store}.features.npz")


def save_features(path: str | os.PathLike, settings: VerifySettings, named: dict[str, Features]) -> int:
    """Templates' features in one versioned .npz (no pickle), written atomically; returns its size in bytes."""
    meta = {"version": FEATURES_VERSION, "settings": asdict(settings), "names": list(named)}
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for i, item in enumerate(named.values()):
        arrays[f"k{i}"] = item.keypoints
        arrays[f"d{i}"] = item.descriptors if item.descriptors is not None else np.zeros((0, 32), np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path).stat().st_size


def load_features(path: str | os.PathLike) -> tuple[VerifySettings, dict[str, Features]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes())
            if meta.get("version") != FEATURES_VERSION:
                raise DocembError(
                    f"{path}: features version {meta.get('version')} is not supported (this docemb reads {FEATURES_VERSION})"
                )
            named = {}
            for i, name in enumerate(meta["names"]):
                descriptors = data[f"d{i}"]
                named[name] = Features(data[f"k{i}"], descriptors if len(descriptors) else None)
    except FileNotFoundError:
        raise DocembError(f"{path}: missing; register the templates again with --verify") from None
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise DocembError(f"{path}: not a docemb features file ({exc})") from None
    return VerifySettings(**meta["settings"]), named
