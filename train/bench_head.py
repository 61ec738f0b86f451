"""Benchmark: PartialFC against a full classifier as the number of classes grows.

    python -m docemb.train.bench_head [--classes 10000 100000 1000000] [--sample-rate 0.1]

For each class count, the margin-softmax head's forward + backward time per step and the peak
extra memory of that step (resident set growth over the weights already held), for the full
softmax (sample rate 1) and the sampled one. Each measurement runs in a fresh process so that
one's allocations do not hide the next one's.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import time

import torch

from docemb.train.margins import build_margin
from docemb.train.partial_fc import PartialFC


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _measure(classes: int, sample_rate: float, batch: int, dim: int, steps: int, queue) -> None:
    torch.manual_seed(0)
    head = PartialFC(classes, dim, build_margin("cosface", 32.0, 0.25), sample_rate)
    embeddings = torch.randn(batch, dim, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    head.weight.grad = torch.zeros_like(head.weight)  # the gradient buffer exists in training too
    before = _peak_rss_mb()
    times = []
    for step in range(steps + 2):
        start = time.perf_counter()
        head(embeddings, labels).backward()
        if step >= 2:  # two warm-up steps
            times.append(time.perf_counter() - start)
    queue.put({"ms": 1000 * sorted(times)[len(times) // 2], "peak_mb": _peak_rss_mb() - before})


def measure(classes: int, sample_rate: float, batch: int, dim: int, steps: int) -> dict:
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_measure, args=(classes, sample_rate, batch, dim, steps, queue))
    process.start()
    result = queue.get()
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--sample-rate", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()

    rows = []
    print(f"batch {args.batch}, dim {args.dim}, {torch.get_num_threads()} thread(s); median of {args.steps} steps")
    print(
        f"{'classes':>9}  {'full ms':>8}  {'sampled ms':>10}  {'time ratio':>10}  {'full MB':>8}  {'sampled MB':>10}  {'memory ratio':>12}"
    )
    for classes in args.classes:
        full = measure(classes, 1.0, args.batch, args.dim, args.steps)
        sampled = measure(classes, args.sample_rate, args.batch, args.dim, args.steps)
        row = {"classes": classes, "sample_rate": args.sample_rate, "full": full, "sampled": sampled}
        rows.append(row)
        print(
            f"{classes:>9}  {full['ms']:>8.1f}  {sampled['ms']:>10.1f}  {sampled['ms'] / full['ms']:>10.2f}  "
            f"{full['peak_mb']:>8.0f}  {sampled['peak_mb']:>10.0f}  {sampled['peak_mb'] / max(full['peak_mb'], 1e-9):>12.2f}"
        )
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(rows, handle, indent=2)


if __name__ == "__main__":
    main()
