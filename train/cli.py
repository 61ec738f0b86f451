"""`docemb train` / `python -m docemb.train`."""

from __future__ import annotations

import argparse

from docemb.train import config as train_config


def add_arguments(parser: argparse.ArgumentParser) -> None:
    train_config.add_arguments(parser)


def run(args: argparse.Namespace) -> None:
    """Single process: `docemb train ...`; several: `torchrun --nproc-per-node N -m docemb.train ...`."""
    from docemb.train.distributed import teardown
    from docemb.train.loop import train

    if args.resume:
        args.config = args.config or f"{args.resume}/config.yaml"
        args.out = args.resume
    try:
        train(train_config.resolve(args), resume=bool(args.resume))
    finally:
        teardown()
