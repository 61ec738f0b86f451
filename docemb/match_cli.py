"""`docemb match register TEMPLATES... --model MODEL --store STORE`, then
`docemb match PHOTO... --store STORE`: the best template per photo, or "unknown"."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

from docemb.errors import DocembError

if TYPE_CHECKING:
    from docemb.templates import Decision
    from docemb.verify import VerifyRule, VerifySettings


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from docemb.verify import SHORTLIST

    parser.add_argument(
        "images", nargs="+", help="photos (or PDFs: a page each) to match; or `register` followed by template images or PDFs"
    )
    parser.add_argument("--store", required=True, type=Path, help="template store file (the Android app's format)")
    parser.add_argument("--model", type=Path, help="model to register with (required by `register`; matching uses the store's)")
    parser.add_argument("--threshold", type=float, help="match threshold (default: the contract's, measured at FPR 1e-2)")
    parser.add_argument("-k", type=int, default=3, help="templates listed per photo (default: 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="geometric verification: `register` keeps each template's local features; matching re-ranks the cosine "
        "shortlist by homography inliers (docemb.verify)",
    )
    parser.add_argument(
        "--shortlist", type=int, default=SHORTLIST, help=f"templates verified per photo with --verify (default: {SHORTLIST})"
    )


def contract_threshold(model_path: Path) -> float:
    from docemb.contract import read_contract

    thresholds = read_contract(model_path).get("thresholds") if model_path.suffix != ".safetensors" else None
    if not thresholds:
        raise DocembError(f"{model_path}: no match threshold in its contract; pass --threshold")
    return float(thresholds["match"]["threshold"])


def verification(model_path: Path) -> tuple[VerifySettings, VerifyRule]:
    """The features and rule of the model's contract (the defaults for a checkpoint)."""
    from docemb.contract import read_contract
    from docemb.verify import VerifyRule, VerifySettings, from_contract

    return (VerifySettings(), VerifyRule()) if model_path.suffix == ".safetensors" else from_contract(read_contract(model_path))


def template_name(path: str) -> str:
    """A template's name: its file's stem, with `#page=N` for a PDF page (so a PDF's pages stay
    apart); bytes of a file name that are not UTF-8 become U+FFFD (the store holds text)."""
    from docemb.pdf import PAGE_MARK, split_page_name

    file, number = split_page_name(path)
    text = os.fsencode(Path(file).stem).decode("utf-8", errors="replace")
    return text if number is None else f"{text}{PAGE_MARK}{number}"


def register(args: argparse.Namespace, templates: list[str]) -> None:
    from dataclasses import asdict

    from docemb.api import load_model
    from docemb.imageio import expand_pdfs, read_rgb
    from docemb.templates import StoreInfo, TemplateStore, info_path, read_info, write_info
    from docemb.verify import features_path

    if args.model is None:
        raise DocembError("register needs --model")
    model = load_model(args.model)
    templates = expand_pdfs(templates)[0]
    images = [read_rgb(path) for path in templates]
    vectors = model.embed_templates(images)
    if args.store.is_file():
        store, info = TemplateStore.read(args.store), read_info(args.store)
        if info.model_sha256 != model.sha256:
            raise DocembError(f"{args.store}: registered with {info.model}, not {model.name}; use another --store")
        if args.verify != (store.verify_settings is not None):
            raise DocembError(f"{args.store}: registered {'without' if args.verify else 'with'} --verify; register the same way")
    else:
        threshold = args.threshold if args.threshold is not None else contract_threshold(args.model)
        settings, rule = verification(args.model)
        store = TemplateStore(vectors.shape[-1], settings if args.verify else None)
        info = StoreInfo(str(args.model), model.sha256, threshold, asdict(rule) if args.verify else None)
    for path, vector, image in zip(templates, vectors, images):
        store.put(template_name(path), vector, image)
    store.write(args.store)
    write_info(args.store, info)
    print(
        f"{args.store}: {len(store)} templates ({len(templates)} registered now; {info_path(args.store)} holds model and threshold)"
    )
    if args.verify:
        size = features_path(args.store).stat().st_size
        print(f"{features_path(args.store)}: local features, {size / 1e3:.0f} kB ({size / len(store) / 1e3:.1f} kB per template)")


def match(args: argparse.Namespace) -> None:
    from docemb.api import load_model
    from docemb.imageio import expand_pdfs, read_rgb
    from docemb.templates import TemplateStore, read_info
    from docemb.verify import VerifyRule

    store, info = TemplateStore.read(args.store), read_info(args.store)
    model = load_model(args.model or info.model)
    if model.sha256 != info.model_sha256:
        raise DocembError(f"{model.path}: not the model {info.model} the templates of {args.store} were registered with")
    threshold = args.threshold if args.threshold is not None else info.threshold
    if args.verify and store.verify_settings is None:
        raise DocembError(f"{args.store}: registered without features; register again with --verify")
    rule = VerifyRule(**info.verify_rule) if info.verify_rule else VerifyRule()
    photos = expand_pdfs(args.images)[0]
    images = [read_rgb(path) for path in photos]
    decisions = [
        store.match(vector, threshold, args.k, image, args.verify, rule, args.shortlist)
        for vector, image in zip(model.embed(images), images)
    ]
    if args.json:
        print(json.dumps([{"photo": p, **_decision_json(d)} for p, d in zip(photos, decisions)], indent=2))
        return
    print(
        f"threshold {threshold:.4f}"
        + (f"; verified: >= {rule.min_inliers} inliers and cosine >= {rule.verified_cosine:.4f}" if args.verify else "")
    )
    for photo, decision in zip(photos, decisions):
        top = "  ".join(f"{name} {score:.3f}" for name, score in decision.top)
        how = ""
        if args.verify:
            how = f"  [{'verified, ' if decision.verified else ''}{decision.inliers} inliers, cosine rank {decision.cosine_rank + 1}]"
        print(f"{photo}: {decision.label} ({decision.score:.4f}){how}   top: {top}")


def _decision_json(decision: Decision) -> dict:
    answer = {"label": decision.label, "score": decision.score, "top": decision.top}
    if decision.inliers is not None:
        answer |= {"verified": decision.verified, "inliers": decision.inliers, "cosine_rank": decision.cosine_rank}
    return answer


def run(args: argparse.Namespace) -> None:
    if args.images[0] == "register":
        if len(args.images) < 2:
            raise DocembError("register needs template images")
        register(args, args.images[1:])
    else:
        match(args)
