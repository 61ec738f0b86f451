"""The benchmark report: terminal tables, bench.json, bench.md and bench.html with plots."""

from __future__ import annotations

import html
from pathlib import Path

from docemb.atomic import write_json, write_text
from docemb.benchmark.gate import row_metrics


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _runtime(row: dict) -> str:
    return row["latency"][0]["runtime"] if row["latency"] else "-"


def unsupported_summary(row: dict) -> str:
    """What would leave the accelerator on a phone, short: per delegate or execution provider
    that does not take everything, the op types it leaves out."""
    operators = row.get("operators") or {}
    parts = []
    for delegate, support in (operators.get("delegates") or {}).items():
        types = sorted({u["op"] for u in support["unsupported"]})
        if types:
            parts.append(f"{delegate}: {', '.join(types)}")
    for provider, coverage in (operators.get("execution_providers") or {}).items():
        if coverage["unsupported_ops"]:
            parts.append(f"{provider}: {', '.join(coverage['unsupported_ops'])}")
    return "; ".join(parts) or "none"


def host_graph_summary(row: dict) -> str:
    """How this host ran the graph, short: XNNPACK partitions for TFLite; for ONNX, the ops
    onnxruntime's CPU provider leaves in float between DequantizeLinear and QuantizeLinear."""
    operators = row.get("operators") or {}
    xnnpack = operators.get("xnnpack_on_host")
    if xnnpack:
        out = f", {len(xnnpack['not_delegated'])} ops out" if xnnpack["not_delegated"] else ""
        return f"XNNPACK {xnnpack['partitions']} part.{out}"
    islands = sum((operators.get("cpu_graph_on_host") or {}).get("float_between_qdq", {}).values())
    return f"ORT {islands} float ops in int8" if islands else "-"


def _render(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def _clip(text: str, width: int | None) -> str:
    return text if width is None or len(text) <= width else text[: width - 1] + "…"


def summary_rows(report: dict, clip: int | None = None) -> tuple[list[str], list[list[str]]]:
    """One row per model: format, runtime, size, drift (top-1 agreement per eval set, the rest
    the worst over them), Recall@1 per eval set, p50, XNNPACK on this host, and what phone
    runtimes leave out (clipped to `clip` characters for terminals)."""
    sets = list(report["eval_sets"])
    header = ["model", "format", "runtime", "size MB", "cos mean", "cos min", *(f"{name} top1" for name in sets)]
    header += ["top1 clear", "score err", *(f"{name} R@1" for name in sets), "p50 ms", "host graph"]
    header += ["unsupported ops on phone runtimes"]
    rows = []
    for row in report["models"]:
        metrics = row_metrics(row)
        rows.append(
            [
                row["name"],
                row["format"],
                _runtime(row),
                _fmt(row["size_mb"], 2),
                _fmt(metrics["cos_mean"], 4),
                _fmt(metrics["cos_min"], 4),
                *(_fmt(row["eval"][name].get("top1_agreement")) for name in sets),
                _fmt(metrics["top1_clear"]),
                _fmt(metrics["score_error"], 4),
                *(_fmt(row["eval"][name]["recall@1"]) for name in sets),
                _fmt(metrics["p50_ms"], 2),
                host_graph_summary(row),
                _clip(unsupported_summary(row), clip),
            ]
        )
    return header, rows


def latency_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    header = [
        "model",
        "device",
        "runtime",
        "threads",
        "init ms",
        "first ms",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "mean ms",
        "peak RSS MB",
    ]
    rows = []
    for row in report["models"]:
        for latency in row["latency"]:
            rows.append(
                [
                    row["name"],
                    latency["device"],
                    latency["runtime"],
                    str(latency["threads"]),
                    _fmt(latency["init_ms"], 1),
                    _fmt(latency["first_ms"], 2),
                    _fmt(latency["p50_ms"], 2),
                    _fmt(latency["p90_ms"], 2),
                    _fmt(latency["p99_ms"], 2),
                    _fmt(latency["mean_ms"], 2),
                    _fmt(latency["peak_rss_mb"], 1),
                ]
            )
    return header, rows


def operator_rows(report: dict, layers_shown: int = 2) -> tuple[list[str], list[list[str]]]:
    """Per model and delegate or execution provider: coverage and what falls back, with up to
    `layers_shown` of the layers each op comes from (0: counts only)."""
    header = ["model", "runtime", "takes", "falls back to CPU (op: layers)"]
    rows = []
    for row in report["models"]:
        operators = row.get("operators") or {}
        for delegate, support in (operators.get("delegates") or {}).items():
            by_op: dict[str, list[str]] = {}
            for item in support["unsupported"]:
                by_op.setdefault(f"{item['op']} {item['dtype']}", []).append(item["layer"])
            fallbacks = "; ".join(f"{op}: {_layers(layers, layers_shown)}" for op, layers in by_op.items()) or "-"
            rows.append([row["name"], delegate, f"{support['ops_supported']}/{support['ops_total']} ops", fallbacks])
        for provider, coverage in (operators.get("execution_providers") or {}).items():
            layers_by_op = coverage["unsupported_layers"]
            fallbacks = "; ".join(f"{op}: {_layers(layers, layers_shown)}" for op, layers in layers_by_op.items()) or "-"
            takes = f"{coverage['nodes_supported']}/{coverage['nodes_total']} nodes in {coverage['partitions']} partition(s), {coverage['suitability']}"
            rows.append([row["name"], provider, takes, fallbacks])
    return header, rows


def _layers(layers: list[str], shown: int) -> str:
    if not shown:
        return f"x{len(layers)}"
    more = f" +{len(layers) - shown} more" if len(layers) > shown else ""
    return ", ".join(layers[:shown]) + more


def op_profile_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    """benchmark_model's time per node type, for the phone runs made with --op-profile."""
    header = ["model", "device", "runtime", "threads", "node type", "count", "avg ms", "%"]
    rows = [
        [
            row["name"],
            lat["device"],
            lat["runtime"],
            str(lat["threads"]),
            t["node_type"],
            str(t["count"]),
            _fmt(t["avg_ms"], 3),
            _fmt(t["percent"], 1),
        ]
        for row in report["models"]
        for lat in row["latency"]
        for t in ((lat.get("op_profile") or {}).get("by_type") or [])
    ]
    return header, rows


def layer_drift_rows(report: dict) -> tuple[list[str], list[list[str]]]:
    header = ["model", "layer", "op", "own SQNR dB", "accumulated SQNR dB"]
    rows = [
        [row["name"], e["node"], e["op_type"], _fmt(e["own_sqnr_db"], 1), _fmt(e["accumulated_sqnr_db"], 1)]
        for row in report["models"]
        for e in (row.get("layer_drift") or [])[:5]
    ]
    return header, rows


def terminal_report(report: dict) -> str:
    env = report["environment"]
    parts = [
        _render(*summary_rows(report, clip=60)),
        "",
        "Latency (batch 1, median of {} runs after {} warm-up runs; every runtime and thread count):".format(
            env["runs"], env["warmup"]
        ),
        _render(*latency_rows(report)),
        "",
        "Phone runtimes (TFLite: support tables; ONNX: onnxruntime's mobile usability checker; layers in bench.md):",
        _render(*operator_rows(report, layers_shown=0)),
        "",
    ]
    header, rows = layer_drift_rows(report)
    if rows:
        parts += ["Layers with the largest int8 error of their own (SQNR, higher is better):", _render(header, rows), ""]
    return "\n".join([*parts, machine_line(report)])


def machine_line(report: dict) -> str:
    env = report["environment"]
    phone = f"; phone {env['phone']['device']}" if env.get("phone") else ""
    return (
        f"{env['cpu']} ({env['cpu_count']} cores), onnxruntime {env['onnxruntime']}, ai-edge-litert "
        f"{env.get('ai_edge_litert') or '-'}, threads {env['threads']}, median of {env['runs']} runs{phone}"
    )


def _markdown_table(header: list[str], rows: list[list[str]]) -> list[str]:
    return [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def _optional_section(title: str, header: list[str], rows: list[list[str]]) -> list[str]:
    """A Markdown section for a table that only some runs have (--layer-drift, --op-profile)."""
    return [f"## {title}", "", *_markdown_table(header, rows), ""] if rows else []


def markdown(report: dict, plots: dict[str, Path]) -> str:
    lines = [
        "# docemb benchmark",
        "",
        f"Reference (float) model: `{report['reference']}`. Drift compares each model's embeddings with it on the same",
        "images (cos: worst eval set); R@1 is Recall@1 of seeded photo-distorted queries against their clean templates.",
        "",
        *_markdown_table(*summary_rows(report)),
        "",
        "## Latency",
        "",
        *_markdown_table(*latency_rows(report)),
        "",
        "## Operators on phone runtimes",
        "",
        *_markdown_table(*operator_rows(report)),
        "",
        *_optional_section("Per-layer int8 drift", *layer_drift_rows(report)),
        *_optional_section("Phone op profile", *op_profile_rows(report)),
        "Support tables: " + "; ".join(f"{t['delegate']} ({t['source']}, {t['version']})" for t in report["support_tables"]),
        "",
        "## Plots",
        "",
        *(f"![{name}]({path.name})" for name, path in plots.items()),
        "",
        f"Machine: {machine_line(report)}; {report['environment']['platform']}.",
        "",
    ]
    return "\n".join(lines)


def html_page(report: dict, plots: dict[str, Path]) -> str:
    def table(header: list[str], rows: list[list[str]]) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    images = "".join(
        f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(n)}"><figcaption>{html.escape(n)}</figcaption></figure>'
        for n, p in plots.items()
    )
    style = (
        "body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;font-size:13px;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 7px;text-align:right}td:first-child,th:first-child{text-align:left}"
        "th{background:#f3f3f3}figure{display:inline-block;margin:0 1em 1em 0}img{max-width:640px}"
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>docemb benchmark</title><style>{style}</style></head><body>"
        f"<h1>docemb benchmark</h1><p>Reference (float) model: <code>{html.escape(report['reference'])}</code>.</p>"
        f"{table(*summary_rows(report))}<h2>Plots</h2>{images}<h2>Latency</h2>{table(*latency_rows(report))}"
        f"<h2>Operators on phone runtimes</h2>{table(*operator_rows(report))}"
        f"<p>{html.escape(machine_line(report))}</p></body></html>"
    )


def write_plots(report: dict, scores: dict, out: Path) -> dict[str, Path]:
    """latency against drift, latency distributions, and score histograms per eval set."""
    from docemb.plots import latency_distributions, latency_vs_drift, score_histogram_grid

    plots = {}
    points = {}
    for row in report["models"]:
        metrics = row_metrics(row)
        if metrics["cos_mean"] is not None and metrics["p50_ms"] is not None:
            points[row["name"]] = (metrics["p50_ms"], metrics["cos_mean"])
    if points:
        plots["latency against drift"] = latency_vs_drift(points, out / "latency_vs_drift.png")
    times = {
        f"{row['name']} {lat['runtime']} x{lat['threads']}": lat["times_ms"]
        for row in report["models"]
        for lat in row["latency"]
        if lat.get("times_ms")
    }
    if times:
        plots["latency distributions"] = latency_distributions(times, out / "latency_distributions.png")
    for set_name, by_model in scores.items():
        if by_model:
            file = out / f"scores_{set_name.replace('/', '_')}.png"
            plots[f"scores on {set_name}"] = score_histogram_grid(by_model, file, f"query-template scores, {set_name}")
    return plots


def write_reports(report: dict, scores: dict, out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    plots = write_plots(report, scores, out)
    paths = [out / "bench.json", out / "bench.md", out / "bench.html"]
    write_json(paths[0], report)
    write_text(paths[1], markdown(report, plots))
    write_text(paths[2], html_page(report, plots))
    return paths
