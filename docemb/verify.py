"""Geometric verification: re-rank the embedding's shortlist by local features that agree on one
homography, so pages that look alike at 128 pixels (two manuals of one class file, page 1 and
page 2) are told apart by their text.

Features (ORB by default, SIFT selectable; OpenCV 5 moved AKAZE out of its main modules) are computed
once per template. For a query, each of the embedding's top-K templates is matched (ratio test),
a homography is fitted (USAC), and the inliers of a homography that could be a photo of the
template re-rank the shortlist. Where either side has too few keypoints (a flat card) the cosine
order stands. Templates also keep the features of a blurred copy, which a blurred capture is
matched against: its corners and descriptors look like those, not like the sharp page's.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from docemb.atomic import atomic_path
from docemb.errors import DocembError

DETECTORS = ("orb", "sift")
# homography estimators: USAC finds as many inliers as RANSAC (the first version's) in a fraction of the time
ESTIMATORS = {"usac": cv2.USAC_DEFAULT, "ransac": cv2.RANSAC}
SHORTLIST = 30  # templates verified per query by default: long enough to hold nearly every page at medium (docs/search.md)


@dataclass(frozen=True)
class VerifySettings:
    detector: str = "orb"
    features: int = 1000  # keypoints per image (ORB, SIFT)
    fast_threshold: int = 20  # ORB's corner contrast: lower finds corners in blurred, dim captures
    # ORB detects again at these lower thresholds, in turn, while an image yields fewer than
    # enough_keypoints: blur and low light leave a page with almost no corners at fast_threshold
    retry_thresholds: tuple[int, ...] = (10, 5, 2)
    enough_keypoints: int = 100
    # templates also keep features of a copy blurred by this Gaussian sigma (pixels at long_side;
    # 0: none), which queries that needed a retry threshold are matched against
    soft_sigma: float = 5.0
    long_side: int = 640  # images are resized to this long side first
    ratio: float = 0.8  # Lowe's ratio test
    estimator: str = "usac"  # of the homography: a key of ESTIMATORS
    ransac_px: float = 5.0  # reprojection error of an inlier, at long_side
    # a homography counts only if the template's outline lands in the capture as a convex quad,
    # not mirrored, of this share of the template's own area (see `plausible`)
    check_geometry: bool = True
    min_area: float = 0.05
    max_area: float = 4.0
    min_keypoints: int = 30  # fewer on either side: cosine decides
    min_inliers: int = 15  # fewer: the pair is not verified

    def __post_init__(self) -> None:
        if self.detector not in DETECTORS:
            raise DocembError(f"unknown detector {self.detector!r}; choose one of {', '.join(DETECTORS)}")
        if self.estimator not in ESTIMATORS:
            raise DocembError(f"unknown estimator {self.estimator!r}; choose one of {', '.join(ESTIMATORS)}")

    @property
    def thresholds(self) -> tuple[int, ...]:
        """The FAST thresholds detection tries in turn (SIFT has none: one pass)."""
        return (self.fast_threshold, *self.retry_thresholds) if self.detector == "orb" else (0,)

    def to_dict(self) -> dict:
        """The settings as JSON holds them (tuples as lists), so a contract read back compares equal."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, fields: dict) -> VerifySettings:
        """Settings read back from JSON (a contract, a features file), lists made tuples again."""
        return cls(**{name: tuple(value) if isinstance(value, list) else value for name, value in fields.items()})


@dataclass(frozen=True)
class Features:
    keypoints: np.ndarray  # (N, 2) float32 positions at long_side
    descriptors: np.ndarray | None
    size: tuple[int, int]  # (width, height) of the image at long_side
    retried: bool = False  # found only at a retry threshold: the image is blurred or dim
    soft: Features | None = None  # a template's: the features of its blurred copy

    @property
    def count(self) -> int:
        return len(self.keypoints)

    @property
    def nbytes(self) -> int:
        """Bytes of the arrays, the blurred copy's included."""
        own = self.keypoints.nbytes + (self.descriptors.nbytes if self.descriptors is not None else 0)
        return own + (self.soft.nbytes if self.soft is not None else 0)


@dataclass(frozen=True)
class Candidate:
    """One shortlisted template for a query: its cosine rank and score, and its inliers."""

    index: int
    cosine_rank: int
    cosine: float
    inliers: int  # -1: not verifiable (too few keypoints)


def _detector(settings: VerifySettings, fast_threshold: int):
    if settings.detector == "orb":
        return cv2.ORB_create(nfeatures=settings.features, fastThreshold=fast_threshold)
    return cv2.SIFT_create(nfeatures=settings.features)


def features(image: np.ndarray, settings: VerifySettings = VerifySettings()) -> Features:
    """Keypoints and descriptors of an RGB uint8 image (a query), resized to `settings.long_side`;
    ORB lowers its corner threshold (`retry_thresholds`) for images with too few keypoints."""
    return _grey_features(_grey(image, settings), settings)


def template_features(image: np.ndarray, settings: VerifySettings = VerifySettings()) -> Features:
    """A template's `features`, with those of its blurred copy (`soft_sigma`) for blurred queries;
    none where no query can be found blurred (no retry thresholds)."""
    grey = _grey(image, settings)
    blurred_queries = settings.soft_sigma > 0 and len(settings.thresholds) > 1
    soft = _grey_features(cv2.GaussianBlur(grey, (0, 0), settings.soft_sigma), settings) if blurred_queries else None
    return replace(_grey_features(grey, settings), soft=soft)


def _grey(image: np.ndarray, settings: VerifySettings) -> np.ndarray:
    scale = settings.long_side / max(image.shape[:2])
    grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (round(grey.shape[1] * scale), round(grey.shape[0] * scale)), interpolation=cv2.INTER_AREA)


def _grey_features(grey: np.ndarray, settings: VerifySettings) -> Features:
    for retry, threshold in enumerate(settings.thresholds):
        keypoints, descriptors = _detector(settings, threshold).detectAndCompute(grey, None)
        if len(keypoints) >= settings.enough_keypoints:
            break
    points = np.array([k.pt for k in keypoints], dtype=np.float32).reshape(-1, 2)
    return Features(points, descriptors, (grey.shape[1], grey.shape[0]), retried=retry > 0)


def counterpart(template: Features, query: Features) -> Features:
    """The template's features a query is matched against: the blurred copy's for a blurred query."""
    return template.soft if query.retried and template.soft is not None else template


def inliers(query: Features, template: Features, settings: VerifySettings = VerifySettings()) -> int:
    """Homography inliers among ratio-test matches with the template's `counterpart`; -1 when
    either side has too few keypoints; 0 without fitting when fewer than `min_inliers` matches
    pass the ratio test (no homography could verify the pair, and a fit costs most on such pairs:
    almost every match is an outlier)."""
    template = counterpart(template, query)
    if min(query.count, template.count) < settings.min_keypoints or query.descriptors is None or template.descriptors is None:
        return -1
    source, target = matches(query, template, settings)
    return homography_inliers(source, target, template.size, settings) if worth_fitting(source, settings) else 0


def worth_fitting(source: np.ndarray, settings: VerifySettings = VerifySettings()) -> bool:
    """Whether a pair's ratio-test matches are enough for a homography to reach `min_inliers`."""
    return len(source) >= settings.min_inliers


def matches(query: Features, template: Features, settings: VerifySettings = VerifySettings()) -> tuple[np.ndarray, np.ndarray]:
    """(query points, template points) of the descriptor matches that pass the ratio test."""
    norm = cv2.NORM_HAMMING if query.descriptors.dtype == np.uint8 else cv2.NORM_L2
    pairs = cv2.BFMatcher(norm).knnMatch(query.descriptors, template.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < settings.ratio * p[1].distance]
    return query.keypoints[[m.queryIdx for m in good]], template.keypoints[[m.trainIdx for m in good]]


def homography_inliers(
    source: np.ndarray, target: np.ndarray, template_size: tuple[int, int], settings: VerifySettings = VerifySettings()
) -> int:
    """Matches that agree on one homography from query to template: 0 with fewer than the 4
    points it needs, or when that homography is not `plausible`."""
    if len(source) < 4:
        return 0
    homography, mask = cv2.findHomography(source, target, ESTIMATORS[settings.estimator], settings.ransac_px)
    if mask is None or (settings.check_geometry and not plausible(homography, template_size, settings)):
        return 0
    return int(mask.sum())


def plausible(homography: np.ndarray | None, template_size: tuple[int, int], settings: VerifySettings = VerifySettings()) -> bool:
    """Whether a homography from capture to template could come from a photo of the template:
    the template's outline, mapped into the capture, is a convex quad, not mirrored, of a sane
    area. Matches along one edge (a card's bar, a line of text) fit homographies that fold the
    page onto a line; without this check they let unregistered cards verify."""
    if homography is None:
        return False
    width, height = template_size
    outline = np.float32([[0, 0], [width, 0], [width, height], [0, height]])
    try:
        quad = cv2.perspectiveTransform(outline[None], np.linalg.inv(homography))[0]
    except np.linalg.LinAlgError:
        return False
    if not np.isfinite(quad).all() or not cv2.isContourConvex(quad):
        return False
    area = cv2.contourArea(quad, oriented=True) / cv2.contourArea(outline, oriented=True)  # < 0: mirrored
    return settings.min_area <= area <= settings.max_area


def rerank(
    query: Features,
    cosines: np.ndarray,
    templates: list[Features],
    k: int = SHORTLIST,
    settings: VerifySettings = VerifySettings(),
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
    return {"features": settings.to_dict(), "rule": asdict(rule), "calibrated_on": CALIBRATED_ON}


def from_contract(contract: dict) -> tuple[VerifySettings, VerifyRule]:
    """The features and rule a contract names; the defaults for contracts written before it had them."""
    entry = contract.get("verification") or {}
    return VerifySettings.from_dict(entry.get("features", {})), VerifyRule(**entry.get("rule", {}))


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


FEATURES_VERSION = 2  # 2: each image's size at long_side, and a template's blurred copy (arrays sk<i>, sd<i>)


def features_path(store: str | os.PathLike) -> Path:
    return Path(f"{store}.features.npz")


def save_features(path: str | os.PathLike, settings: VerifySettings, named: dict[str, Features]) -> int:
    """Templates' features in one versioned .npz (no pickle), written atomically; returns its size in bytes."""
    meta = {
        "version": FEATURES_VERSION,
        "settings": settings.to_dict(),
        "names": list(named),
        "sizes": [list(item.size) for item in named.values()],
    }
    arrays = {"meta": np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)}
    for i, item in enumerate(named.values()):
        for prefix, part in (("", item), ("s", item.soft)):
            if part is not None:
                arrays[f"{prefix}k{i}"] = part.keypoints
                arrays[f"{prefix}d{i}"] = part.descriptors if part.descriptors is not None else np.zeros((0, 32), np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path).stat().st_size


def load_features(path: str | os.PathLike) -> tuple[VerifySettings, dict[str, Features]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(data["meta"].tobytes())
            if meta.get("version") != FEATURES_VERSION:
                raise DocembError(
                    f"{path}: features version {meta.get('version')} is not supported (this docemb reads"
                    f" {FEATURES_VERSION}); register the templates again with --verify"
                )
            named = {}
            for i, (name, size) in enumerate(zip(meta["names"], meta["sizes"], strict=True)):
                soft = _stored(data, "s", i, size) if f"sk{i}" in data else None
                named[name] = replace(_stored(data, "", i, size), soft=soft)
    except FileNotFoundError:
        raise DocembError(f"{path}: missing; register the templates again with --verify") from None
    except (OSError, KeyError, ValueError, json.JSONDecodeError) as exc:
        raise DocembError(f"{path}: not a docemb features file ({exc})") from None
    return VerifySettings.from_dict(meta["settings"]), named


def _stored(data, prefix: str, i: int, size: list[int]) -> Features:
    """One feature set of a features file: arrays <prefix>k<i> and <prefix>d<i> ("s": a template's blurred copy)."""
    descriptors = data[f"{prefix}d{i}"]
    return Features(data[f"{prefix}k{i}"], descriptors if len(descriptors) else None, tuple(size))
