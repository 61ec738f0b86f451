"""The benchmark report as a terminal table, Markdown and JSON."""

from __future__ import annotations

from pathlib import Path

from docemb.atomic import write_json, write_text


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _partitions(delegation: dict | None) -> str:
    if not delegation:
        return "-"
    left = delegation["not_delegated"]
    return f"{delegation['partitions']}" + (f" ({len(left)} ops out: {', '.join(sorted(set(left)))})" if left else "")


def table_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    sets = report["eval_sets"]
    header = ["model", "size MB", "x smaller", "p50 ms", "p90 ms", "x faster", "XNNPACK partitions"]
    for name in sets:
        header += [f"{name} R@1", f"{name} cos mean", f"{name} cos min", f"{name} top1 agree"]
    rows = []
    for row in report["models"]:
        cells = [
            row["name"],
            _fmt(row["size_mb"], 2),
            _fmt(row.get("size_ratio"), 1),
            _fmt(row["latency"]["p50_ms"], 2),
            _fmt(row["latency"]["p90_ms"], 2),
            _fmt(row.get("speedup"), 2),
            _partitions(row.get("delegation")),
        ]
        for name in sets:
            metrics = row["eval"][name]
            cells += [
                _fmt(metrics["recall@1"]),
                _fmt(metrics.get("cos_mean"), 4),
                _fmt(metrics.get("cos_min"), 4),
                _fmt(metrics.get("top1_agreement")),
            ]
        rows.append(cells)
    return header, rows


def terminal_table(report: dict) -> str:
    header, rows = table_rows(report)
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown(report: dict) -> str:
    header, rows = table_rows(report)
    env = report["environment"]
    lines = [
        "# docemb benchmark",
        "",
        f"Reference (float) model: `{report['reference']}`. Drift columns compare each model's embeddings with it on the same images;",
        "R@1 is Recall@1 of seeded photo-distorted queries against their clean templates. Latency: batch 1, "
        f"{env['threads']} thread(s), median of {env['runs']} runs after {env['warmup']} warm-up runs.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
        "",
        f"Machine: {env['cpu']} ({env['cpu_count']} cores), {env['platform']}; onnxruntime {env['onnxruntime']}, ai-edge-litert {env.get('ai_edge_litert') or '-'} (XNNPACK), numpy {env['numpy']}.",
        "",
    ]
    return "\n".join(lines)


def write_reports(report: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "bench.json", out / "bench.md"]
    write_json(paths[0], report)
    write_text(paths[1], markdown(report))
    return paths
