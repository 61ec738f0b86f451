"""`docemb match register TEMPLATES... --model MODEL --store STORE`, then
`docemb match PHOTO... --store STORE`: the best template per photo, or "unknown"."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from docemb.errors import DocembError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", nargs="+", help="photos to match; or `register` followed by template images")
    parser.add_argument("--store", required=True, type=Path, help="template store file (the Android app's format)")
    parser.add_argument("--model", type=Path, help="model to register with (required by `register`; matching uses the store's)")
    parser.add_argument("--threshold", type=float, help="match threshold (default: the contract's, measured at FPR 1e-2)")
    parser.add_argument("-k", type=int, default=3, help="templates listed per photo (default: 3)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def contract_threshold(model_path: Path) -> float:
    from docemb.contract import read_contract

    thresholds = read_contract(model_path).get("thresholds") if model_path.suffix != ".safetensors" else None
    if not thresholds:
        raise DocembError(f"{model_path}: no match threshold in its contract; pass --threshold")
    return float(thresholds["match"]["threshold"])


def register(args: argparse.Namespace, templates: list[str]) -> None:
    from docemb.api import load_model
    from docemb.templates import StoreInfo, TemplateStore, info_path, read_info, write_info

    if args.model is None:
        raise DocembError("register needs --model")
    model = load_model(args.model)
    vectors = model.embed(templates)
    if args.store.is_file():
        store, info = TemplateStore.read(args.store), read_info(args.store)
        if info.model_sha256 != model.sha256:
            raise DocembError(f"{args.store}: registered with {info.model}, not {model.name}; use another --store")
    else:
        threshold = args.threshold if args.threshold is not None else contract_threshold(args.model)
        store, info = TemplateStore(vectors.shape[1]), StoreInfo(str(args.model), model.sha256, threshold)
    for path, vector in zip(templates, vectors):
        store.put(Path(path).stem, vector)
    store.write(args.store)
    write_info(args.store, info)
    print(
        f"{args.store}: {len(store)} templates ({len(templates)} registered now; {info_path(args.store)} holds model and threshold)"
    )


def match(args: argparse.Namespace) -> None:
    from docemb.api import load_model
    from docemb.templates import TemplateStore, read_info

    store, info = TemplateStore.read(args.store), read_info(args.store)
    model = load_model(args.model or info.model)
    if model.sha256 != info.model_sha256:
        raise DocembError(f"{model.path}: not the model {info.model} the templates of {args.store} were registered with")
    threshold = args.threshold if args.threshold is not None else info.threshold
    decisions = [store.decide(vector, threshold, args.k) for vector in model.embed(args.images)]
    if args.json:
        print(
            json.dumps(
                [{"photo": p, "label": d.label, "score": d.score, "top": d.top} for p, d in zip(args.images, decisions)], indent=2
            )
        )
        return
    print(f"threshold {threshold:.4f}")
    for photo, decision in zip(args.images, decisions):
        top = "  ".join(f"{name} {score:.3f}" for name, score in decision.top)
        print(f"{photo}: {decision.label} ({decision.score:.4f})   top: {top}")


def run(args: argparse.Namespace) -> None:
    if args.images[0] == "register":
        if len(args.images) < 2:
            raise DocembError("register needs template images")
        register(args, args.images[1:])
    else:
        match(args)
