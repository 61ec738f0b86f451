"""`docemb synth --out DIR --n N`."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, help="folder to write PNG templates and manifest.csv into")
    parser.add_argument("--n", type=int, default=500, help="number of templates (default: 500)")
    parser.add_argument("--seed", type=int, default=0, help="different seeds give disjoint families (default: 0)")
    parser.add_argument("--family-size", type=int, default=3, help="near-duplicates per family (default: 3)")
    parser.add_argument("--long-side", type=int, default=384, help="long side in pixels (default: 384)")


def run(args: argparse.Namespace) -> None:
    from docemb.errors import DocembError
    from docemb.synth import generate

    if args.n < 1 or args.family_size < 1 or args.long_side < 64:
        raise DocembError("--n and --family-size must be >= 1 and --long-side >= 64")
    manifest = generate(args.out, args.n, seed=args.seed, family_size=args.family_size, long_side=args.long_side)
    print(f"wrote {args.n} templates and {manifest}")
