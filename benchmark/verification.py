"""`python -m docemb.benchmark.verification MODEL --data EVAL_FOLDER`: what geometric verification
adds to the embedding, and what it costs.

The captures are docemb.capture's (the ones `docemb evaluate` scores), kept at capture
resolution for the local features. Per strength and kind of template: Recall@1 by cosine and
after re-ranking the shortlist, and open-set TPR at FPR 1e-2 against the folder's `unknown/`
captures for both decision rules, and how often the true template is in the cosine shortlist
at all (the most verification can reach). The rule's inlier count is calibrated on one strength
(`--calibrate-on`, default hard) so that captures of unregistered documents are rarely verified:
those of `--calibrate-data` (training images, none of them a template) or, without it, of the
eval folder's own `unknown/`. Where that rule verifies more than 1 % of a strength's unknown
captures, that strength's TPR takes the fewest inliers above it that keep FPR 1e-2. The unknown
captures closest to a match are listed per strength (`--impostor-sheet` draws them). Then the
time per query for each shortlist length and strength, one thread.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from docemb.atomic import write_json
from docemb.benchmark.quality import OPEN_SET_FPR, add_scale_arguments, open_set, scale_problem, template_kinds
from docemb.capture import CAPTURE_STRENGTHS, simulate_capture
from docemb.embedders import Embedder, load_embedder
from docemb.evaluation import EVAL_MAX_SIDE, embed_resized, embed_templates, registered_as, template_inputs, template_scores
from docemb.imageio import list_images, load_images
from docemb.preprocess import Preprocessing, centre_crop
from docemb.verify import (
    DETECTORS,
    ESTIMATORS,
    SHORTLIST,
    Candidate,
    Features,
    VerifyRule,
    VerifySettings,
    counterpart,
    decide,
    features,
    homography_inliers,
    matches,
    rerank,
    template_features,
    worth_fitting,
)


@dataclass
class Captures:
    """Queries of one strength: labels, embeddings and local features (unknown ones: label -1)."""

    labels: np.ndarray
    embeddings: np.ndarray
    features: list[Features]


@dataclass
class StrengthRun:
    known: Captures
    unknown: Captures | None
    known_lists: list[list[Candidate]]  # each known capture's shortlist, re-ranked
    unknown_lists: list[list[Candidate]]


@dataclass(frozen=True)
class VerifyRow:
    strength: str
    group: str
    queries: int
    recall_cosine: float
    in_shortlist: float  # the true template is among the cosine top-K
    recall_verified: float
    tpr_cosine: float | None
    tpr_verified: float | None  # at FPR 1e-2, at the strength's operating point
    tpr_min_inliers: int | None  # the rule of that point: the calibrated one's or more


def _captures(
    images: list[np.ndarray],
    strength: str,
    seed: int,
    embed: Embedder,
    prep: Preprocessing,
    settings: VerifySettings,
    query_crop: float = 1.0,
) -> Captures:
    """The embedding sees the capture centre-cropped to `query_crop`; verification sees all of it."""
    rng = np.random.default_rng(seed)  # the order docemb.evaluation.build_eval_set draws in
    shots = [simulate_capture(image, strength, rng) for image in tqdm(images, desc=f"captures {strength}", leave=False)]
    embeddings = embed_resized(embed, prep, np.stack([prep.resize(centre_crop(s, query_crop)) for s in shots]))
    return Captures(np.arange(len(shots)), embeddings, [features(s, settings) for s in shots])


def _shortlists(
    captures: Captures, templates: np.ndarray, named: list[Features], k: int, settings: VerifySettings
) -> list[list[Candidate]]:
    scores = template_scores(captures.embeddings, templates)
    return [rerank(q, s, named, k, settings) for q, s in zip(tqdm(captures.features, desc="verify", leave=False), scores)]


def calibrate(unknown: list[list[Candidate]], fpr: float = OPEN_SET_FPR / 2) -> VerifyRule:
    """The fewest inliers that at most `fpr` of unknown captures reach on any shortlisted template
    (half the open-set budget; the cosine threshold takes the rest)."""
    most = np.sort([max((c.inliers for c in shortlist), default=0) for shortlist in unknown])[::-1]
    reached = int(most[min(int(np.floor(fpr * len(most))), len(most) - 1)]) + 1
    return VerifyRule(min_inliers=max(VerifyRule().min_inliers, reached))


def _verified_threshold(unknown: list[list[Candidate]], rule: VerifyRule) -> float:
    """The cosine threshold of unverified decisions (a match needs more) that lets unknown
    captures pass, verified or not, at most 1 % of the time: verified ones spend the budget first."""
    unknown_verdicts = [decide(s, 2.0, rule) for s in unknown]
    verified_fp = sum(v.matched for v in unknown_verdicts)
    rest = np.sort([v.best.cosine for v in unknown_verdicts if not v.verified])[::-1]
    allowed = max(0, int(np.floor(OPEN_SET_FPR * len(unknown))) - verified_fp)
    return float(rest[min(allowed, len(rest) - 1)]) if len(rest) else -1.0


@dataclass(frozen=True)
class OperatingPoint:
    """A rule and a cosine threshold for unverified decisions that together let at most 1 % of
    unknown captures through."""

    rule: VerifyRule
    threshold: float


def operating_point(
    known: list[list[Candidate]], unknown: list[list[Candidate]], labels: np.ndarray, rule: VerifyRule
) -> OperatingPoint:
    """The point of highest TPR at FPR 1e-2 among `rule` and stricter ones (more inliers). The
    calibrated rule can verify more than 1 % of unknown captures at a strength it was not
    calibrated on (sharp captures of a template's look-alike): a stricter one then keeps FPR 1e-2,
    as the cosine threshold is set per strength too."""
    budget = int(np.floor(OPEN_SET_FPR * len(unknown)))
    most = [max((c.inliers for c in s), default=0) for s in unknown]
    points = []
    for inliers in sorted({rule.min_inliers, *(m + 1 for m in most if m >= rule.min_inliers)}):
        strict = replace(rule, min_inliers=inliers)
        if sum(decide(s, 2.0, strict).matched for s in unknown) <= budget:
            points.append(OperatingPoint(strict, _verified_threshold(unknown, strict)))
    return max(points, key=lambda point: _tpr_at(known, labels, point))


def _tpr_at(known: list[list[Candidate]], labels: np.ndarray, point: OperatingPoint) -> float:
    verdicts = [decide(s, np.nextafter(point.threshold, 2), point.rule) for s in known]
    return float(np.mean([v.matched and v.best.index == label for v, label in zip(verdicts, labels)]))


@dataclass(frozen=True)
class Impostor:
    """An unknown capture among those closest to passing: what sets the open-set threshold."""

    strength: str
    unknown: str  # file name in unknown/
    template: str  # the template it is decided for
    cosine: float
    inliers: int  # with that template; -1: not verifiable
    verified: bool  # decided on inliers, not on the cosine threshold (at the strength's operating point)
    passes: bool  # matched at the strength's operating point


def closest_impostors(
    strength: str,
    unknown: list[list[Candidate]],
    point: OperatingPoint,
    unknown_names: list[str],
    template_names: list[str],
    n: int,
) -> list[Impostor]:
    """The `n` unknown captures nearest to a match: verified ones first (most inliers first), then
    by cosine. Near the 1 % budget a single capture moves TPR by points, so which ones they are
    says whether the model or the data bounds it."""
    verdicts = [(name, decide(s, np.nextafter(point.threshold, 2), point.rule)) for name, s in zip(unknown_names, unknown) if s]
    verdicts.sort(key=lambda item: (not item[1].verified, -item[1].best.inliers if item[1].verified else -item[1].best.cosine))
    return [
        Impostor(strength, name, template_names[v.best.index], v.best.cosine, v.best.inliers, bool(v.verified), bool(v.matched))
        for name, v in verdicts[:n]
    ]


def _rows(
    strength: str, kinds: list[str], run: StrengthRun, templates: np.ndarray, rule: VerifyRule, point: OperatingPoint | None
) -> list[VerifyRow]:
    captures, known, labels = run.known, run.known_lists, run.known.labels
    scores = template_scores(captures.embeddings, templates)
    cosine_best = scores.argmax(axis=1)
    verified_best = np.array([decide(s, -2.0, rule).best.index for s in known])
    impostor = template_scores(run.unknown.embeddings, templates).max(axis=1) if run.unknown else None
    query_kinds = np.asarray(kinds)[labels]
    rows = []
    for group in ["all", *sorted(set(kinds))]:
        pick = np.ones(len(labels), bool) if group == "all" else query_kinds == group
        correct = cosine_best[pick] == labels[pick]
        tpr_cos = open_set(scores.max(axis=1)[pick], correct, impostor)[0] if impostor is not None else None
        picked = [s for s, p in zip(known, pick) if p]
        tpr_ver = _tpr_at(picked, labels[pick], point) if point else None
        recall_verified = float(np.mean(verified_best[pick] == labels[pick]))
        listed = float(np.mean([any(c.index == label for c in s) for s, label in zip(picked, labels[pick])]))
        inliers = point.rule.min_inliers if point else None
        row = VerifyRow(
            strength, group, int(pick.sum()), float(correct.mean()), listed, recall_verified, tpr_cos, tpr_ver, inliers
        )
        rows.append(row)
    return rows


def _timing(
    captures: Captures, templates: np.ndarray, named: list[Features], settings: VerifySettings, ks: list[int], n: int = 50
) -> dict[str, float]:
    """Milliseconds per query (local features of the query included), one thread."""
    cv2.setNumThreads(1)
    times = {}
    for k in [*ks, len(named)]:
        start = time.perf_counter()
        for embedding, query in zip(captures.embeddings[:n], captures.features[:n]):
            rerank(query, template_scores(embedding[None], templates)[0], named, k, settings)
        times[str(k)] = 1e3 * (time.perf_counter() - start) / min(n, len(captures.features))
    return times


@dataclass(frozen=True)
class VerifyCost:
    """Where a verified query's time goes on one thread, and the work counted: what a phone
    estimate scales (docs/search.md)."""

    features_ms: float  # resize and local features of one image at capture size
    match_ms: float  # per shortlisted template: descriptor distances and the ratio test
    ransac_ms: float  # per shortlisted template: the homography fit (settings.estimator), where enough matches pass
    ransac_share: float  # of shortlisted templates with enough matches to fit one
    query_keypoints: float
    template_keypoints: float
    distances_per_template: float  # descriptor distances per shortlisted template (brute force)
    descriptor_bytes: int


def _cost(
    images: list[np.ndarray], captures: Captures, templates: np.ndarray, named: list[Features], settings, k: int, n: int = 50
):
    cv2.setNumThreads(1)
    start = time.perf_counter()
    for image in images[:n]:
        features(image, settings)
    features_ms = 1e3 * (time.perf_counter() - start) / min(n, len(images))
    shortlisted = (
        (query, counterpart(named[i], query))
        for embedding, query in zip(captures.embeddings[:n], captures.features[:n])
        for i in np.argsort(-template_scores(embedding[None], templates)[0], kind="stable")[:k]
    )
    pairs = [(query, template) for query, template in shortlisted if min(query.count, template.count) >= settings.min_keypoints]
    start = time.perf_counter()
    matched = [matches(query, template, settings) for query, template in pairs]
    match_ms = 1e3 * (time.perf_counter() - start) / len(pairs)
    fitted = [(source, target, t.size) for (source, target), (_, t) in zip(matched, pairs) if worth_fitting(source, settings)]
    start = time.perf_counter()
    for source, target, size in fitted:
        homography_inliers(source, target, size, settings)
    ransac_ms = 1e3 * (time.perf_counter() - start) / len(pairs)
    return VerifyCost(
        features_ms,
        match_ms,
        ransac_ms,
        len(fitted) / len(pairs),
        float(np.mean([q.count for q in captures.features[:n]])),
        float(np.mean([t.count for t in named])),
        float(np.mean([q.count * t.count for q, t in pairs])),
        int(named[0].descriptors.shape[1] * named[0].descriptors.itemsize),
    )


CALIBRATION_IMAGES = 600  # of --calibrate-data, seeded
UNKNOWN_SEED = 1  # of the unknown captures, so a sheet can draw them again
IMPOSTORS_LISTED = 5  # closest unknown captures kept per strength


def _sample(paths: list[Path], count: int, seed: int = 0) -> list[Path]:
    if len(paths) <= count:
        return paths
    return [paths[i] for i in sorted(np.random.default_rng(seed).choice(len(paths), count, replace=False))]


def benchmark(
    model: Path,
    folder: Path,
    strengths: list[str],
    k: int,
    ks: list[int],
    calibrate_on: str,
    settings: VerifySettings,
    calibrate_data: Path | None = None,
    query_crop: float = 1.0,
    template_pad: float | None = None,
) -> dict:
    embed, prep = load_embedder(model)
    paths = list_images(folder / "templates" if (folder / "templates").is_dir() else folder)
    images, paths = load_images(paths, max_side=EVAL_MAX_SIDE)
    kinds = template_kinds(folder, [p.name for p in paths])
    registered = registered_as(prep, template_pad)
    templates = embed_templates(embed, prep, template_inputs(images, registered))
    named = [template_features(i, settings) for i in tqdm(images, desc="template features", leave=False)]
    unknown_images, unknown_paths = (
        load_images(list_images(folder / "unknown"), max_side=EVAL_MAX_SIDE) if (folder / "unknown").is_dir() else ([], [])
    )
    runs = {}
    for strength in [calibrate_on, *[s for s in strengths if s != calibrate_on]]:
        known = _captures(images, strength, 0, embed, prep, settings, query_crop)
        unknown = _captures(unknown_images, strength, UNKNOWN_SEED, embed, prep, settings, query_crop) if unknown_images else None
        unknown_lists = _shortlists(unknown, templates, named, k, settings) if unknown else []
        runs[strength] = StrengthRun(known, unknown, _shortlists(known, templates, named, k, settings), unknown_lists)
    if calibrate_data is not None:
        pool = _sample(list_images(calibrate_data), CALIBRATION_IMAGES)
        pool_images = load_images(pool, max_side=EVAL_MAX_SIDE)[0]
        pool_captures = _captures(pool_images, calibrate_on, 2, embed, prep, settings, query_crop)
        impostors = _shortlists(pool_captures, templates, named, k, settings)
        rule, calibrated_on = calibrate(impostors), f"{calibrate_on} captures of {len(pool)} images of {calibrate_data}"
    elif unknown_images:
        rule, calibrated_on = calibrate(runs[calibrate_on].unknown_lists), f"{calibrate_on} captures of {folder}/unknown"
    else:
        rule, calibrated_on = VerifyRule(), "not calibrated (no unknown images)"
    points = {
        strength: operating_point(run.known_lists, run.unknown_lists, run.known.labels, rule) if run.unknown_lists else None
        for strength, run in runs.items()
    }
    rows = [row for strength in strengths for row in _rows(strength, kinds, runs[strength], templates, rule, points[strength])]
    names, unknown_names = [p.name for p in paths], [p.name for p in unknown_paths]
    closest = [
        impostor
        for strength in strengths
        if points[strength]
        for impostor in closest_impostors(
            strength, runs[strength].unknown_lists, points[strength], unknown_names, names, IMPOSTORS_LISTED
        )
    ]
    feature_bytes = np.mean([f.nbytes for f in named])
    timing = {strength: _timing(runs[strength].known, templates, named, settings, ks) for strength in strengths}
    cost = _cost(images, runs[calibrate_on].known, templates, named, settings, k)
    return {
        "rule": asdict(rule),
        "calibrated_on": calibrated_on,
        "settings": settings.to_dict(),
        "shortlist": k,
        "query_crop": query_crop,
        "template_views": [asdict(v) for v in registered.views],
        "rows": [asdict(r) for r in rows],
        "closest_unknown": [asdict(i) for i in closest],
        "feature_bytes_per_template": float(feature_bytes),
        "ms_per_query": timing,
        "cost": asdict(cost),
        "templates": len(named),
    }


def format_table(result: dict) -> str:
    lines = [
        f"{'strength':<8} {'group':<14} {'queries':>7} {'R@1 cos':>8} {'in top-K':>8} {'R@1 ver':>8} {'TPR cos':>8} {'TPR ver':>8}"
        f" {'at inliers':>10}"
    ]
    for r in result["rows"]:
        tprs = "".join(f" {v:8.3f}" if v is not None else f" {'-':>8}" for v in (r["tpr_cosine"], r["tpr_verified"]))
        inliers = r["tpr_min_inliers"] if r["tpr_min_inliers"] is not None else "-"
        lines.append(
            f"{r['strength']:<8} {r['group'][:14]:<14} {r['queries']:>7} {r['recall_cosine']:8.3f} {r['in_shortlist']:8.3f}"
            f" {r['recall_verified']:8.3f}{tprs} {inliers:>10}"
        )
    lines.append(
        f"rule: {result['rule']}, calibrated on {result['calibrated_on']} (TPR ver: FPR 1e-2 at every strength, with"
        " this rule or, where it verifies more unknown captures than that, the fewest inliers that keep it)"
    )
    lines.append(
        f"shortlist {result['shortlist']}"
        f"; for the embedding, captures centre-cropped to {result['query_crop']}, templates as {len(result['template_views'])} view(s)"
    )
    lines.append(f"features: {result['feature_bytes_per_template'] / 1e3:.1f} kB per template ({result['templates']} templates)")
    if result["closest_unknown"]:
        lines.append("closest unknown captures (verified first, then by cosine; * passes at the strength's TPR ver point):")
    for i in result["closest_unknown"]:
        evidence = (
            "too few keypoints" if i["inliers"] < 0 else f"{i['inliers']} inliers" + (", verified" if i["verified"] else "")
        )
        lines.append(
            f"  {i['strength']:<8} {'*' if i['passes'] else ' '} {i['unknown']} -> {i['template']}  cos {i['cosine']:.3f}, {evidence}"
        )
    for strength, times in result["ms_per_query"].items():
        lines.append(f"ms per query, one thread, {strength}: " + "  ".join(f"K={k} {v:.1f}" for k, v in times.items()))
    c = result["cost"]
    lines.append(
        f"cost, one thread: features {c['features_ms']:.2f} ms per image ({c['query_keypoints']:.0f} keypoints per query, "
        f"{c['template_keypoints']:.0f} per template); per shortlisted template: matching {c['match_ms']:.3f} ms "
        f"({c['distances_per_template'] / 1e3:.0f}k distances of {c['descriptor_bytes']} bytes), homography fit {c['ransac_ms']:.3f} ms"
        f" (fitted for {c['ransac_share']:.0%} of them)"
    )
    return "\n".join(lines)


def impostor_sheet(folder: Path, impostors: list[dict], path: Path, per_strength: int = 3) -> Path:
    """A PNG of the closest unknown captures: each row the unknown document, its capture (drawn
    again as the benchmark drew it) and the template it came nearest to."""
    from docemb.plots import image_rows

    unknown_images, unknown_paths = load_images(list_images(folder / "unknown"), max_side=EVAL_MAX_SIDE)
    index = {p.name: i for i, p in enumerate(unknown_paths)}
    template_dir = folder / "templates" if (folder / "templates").is_dir() else folder
    rows = []
    for strength in dict.fromkeys(i["strength"] for i in impostors):
        rng = np.random.default_rng(UNKNOWN_SEED)
        shots = [simulate_capture(image, strength, rng) for image in unknown_images]
        for i in [i for i in impostors if i["strength"] == strength][:per_strength]:
            template = load_images([template_dir / i["template"]], max_side=EVAL_MAX_SIDE)[0][0]
            verdict = "passes" if i["passes"] else "rejected"
            rows.append(
                [
                    (unknown_images[index[i["unknown"]]], f"unknown/{i['unknown']}"),
                    (shots[index[i["unknown"]]], f"{strength} capture, {verdict}"),
                    (template, f"{i['template']}: cos {i['cosine']:.3f}, {i['inliers']} inliers"),
                ]
            )
    return image_rows(rows, path, "unknown documents closest to a match")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="eval folder (templates/ and optional unknown/)")
    parser.add_argument("--strengths", nargs="+", choices=CAPTURE_STRENGTHS, default=list(CAPTURE_STRENGTHS))
    parser.add_argument("--calibrate-on", choices=CAPTURE_STRENGTHS, default="hard")
    parser.add_argument(
        "--calibrate-data",
        type=Path,
        help="images of unregistered documents to calibrate the rule on (training data; default: the eval folder's unknown/)",
    )
    parser.add_argument("-k", type=int, default=SHORTLIST, help=f"shortlist length verified per query (default: {SHORTLIST})")
    parser.add_argument("--time-k", type=int, nargs="+", default=sorted({5, 10, 20, SHORTLIST, 50}))
    parser.add_argument("--features", type=int, default=VerifySettings.features, help="keypoints per image")
    parser.add_argument("--fast-threshold", type=int, default=VerifySettings.fast_threshold, help="ORB's FAST corner threshold")
    parser.add_argument("--detector", choices=DETECTORS, default=VerifySettings.detector)
    parser.add_argument("--long-side", type=int, default=VerifySettings.long_side, help="pixels images are resized to first")
    parser.add_argument(
        "--retry-thresholds",
        type=int,
        nargs="*",
        default=list(VerifySettings.retry_thresholds),
        help="ORB's lower FAST thresholds for images with few keypoints (none: no retry)",
    )
    parser.add_argument(
        "--soft-sigma",
        type=float,
        default=VerifySettings.soft_sigma,
        help="blur of the templates' second feature set, for blurred queries (0: none)",
    )
    parser.add_argument("--estimator", choices=ESTIMATORS, default=VerifySettings.estimator, help="homography estimator")
    parser.add_argument(
        "--check-geometry",
        action=argparse.BooleanOptionalAction,
        default=VerifySettings.check_geometry,
        help="count only homographies that could be a photo of the template (docemb.verify.plausible)",
    )
    add_scale_arguments(parser)  # the embedding's view; verification sees whole captures and clean templates
    parser.add_argument("--out", type=Path)
    parser.add_argument("--plot", type=Path, help="PNG of Recall@1 with and without verification, and time against K")
    parser.add_argument(
        "--impostor-sheet", type=Path, help="PNG of the unknown captures closest to a match, with their templates"
    )
    args = parser.parse_args(argv)
    if problem := scale_problem(args):
        parser.error(problem)
    settings = VerifySettings(
        detector=args.detector,
        features=args.features,
        fast_threshold=args.fast_threshold,
        retry_thresholds=tuple(args.retry_thresholds),
        soft_sigma=args.soft_sigma,
        long_side=args.long_side,
        estimator=args.estimator,
        check_geometry=args.check_geometry,
    )
    result = benchmark(
        args.model,
        args.data,
        args.strengths,
        args.k,
        args.time_k,
        args.calibrate_on,
        settings,
        args.calibrate_data,
        args.query_crop,
        args.template_pad,
    )
    print(format_table(result))
    if args.out:
        write_json(args.out, result)
    if args.plot:
        from docemb.plots import verification_summary

        print(f"wrote {verification_summary(result['rows'], result['ms_per_query'], args.plot)}")
    if args.impostor_sheet and result["closest_unknown"]:
        print(f"wrote {impostor_sheet(args.data, result['closest_unknown'], args.impostor_sheet)}")


if __name__ == "__main__":
    main()
