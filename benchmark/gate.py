"""Release gates: `--gate 'int8.cos_mean>=0.99 and int8.p50_ms<=float.p50_ms'` over a bench report.

A name is a model: `int8` (every int8 model of the release, peers and baselines aside: the gate
must hold for each), `float` (the float
model each int8 file was quantized from, when it is in the report, else the reference), or a
file name with non-alphanumerics as `_` (`model_int8_static_tflite`). An attribute
is a metric from row_metrics(). Quality metrics take the worst value over the eval sets, so a
gate cannot pass on generated documents while failing on real ones. Only comparisons,
arithmetic, `and`/`or`/`not` and numbers are allowed; nothing is executed.
"""

from __future__ import annotations

import ast
import itertools
import operator
import re
from dataclasses import dataclass

from docemb.errors import DocembError

GROUPS = ("float", "int8")
# metric -> (key in a row's eval metrics, higher is better)
QUALITY = {
    "r1": ("recall@1", True),
    "r5": ("recall@5", True),
    "auroc": ("auroc", True),
    "tpr_at_fpr1e_3": ("tpr@fpr1e-03", True),
    "tpr_at_fpr1e_2": ("tpr@fpr1e-02", True),
    "cos_mean": ("cos_mean", True),
    "cos_min": ("cos_min", True),
    "cos_p01": ("cos_p01", True),
    "cos_p05": ("cos_p05", True),
    "top1": ("top1_agreement", True),
    "top5": ("top5_agreement", True),
    "top1_clear": ("top1_agreement_clear", True),
    "score_error": ("score_error_median", False),
}
SPEED = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "init_ms", "first_ms", "peak_rss_mb")
_COMPARE = {
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
}
_ARITHMETIC = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_ALLOWED = (ast.Expression, ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.Compare, ast.BinOp, ast.Constant)
_ALLOWED += (ast.Attribute, ast.Name, ast.Load, *_COMPARE, *_ARITHMETIC)


def identifier(file_name: str) -> str:
    return re.sub(r"\W", "_", file_name)


def row_metrics(row: dict) -> dict[str, float | None]:
    """The numbers a gate can name, for one report row: size, the primary latency (first thread
    count, default runtime), XNNPACK partitions, and quality (worst over eval sets)."""
    metrics: dict[str, float | None] = {"size_mb": row["size_mb"]}
    primary = row["latency"][0] if row["latency"] else {}
    metrics.update({key: primary.get(key) for key in SPEED})
    if metrics["p50_ms"] is None:
        metrics["p50_ms"] = primary.get("mean_ms")
    delegation = (row.get("operators") or {}).get("xnnpack_on_host")
    metrics["partitions"] = delegation["partitions"] if delegation else None
    for name, (key, higher_is_better) in QUALITY.items():
        values = [m[key] for m in row["eval"].values() if m.get(key) is not None]
        metrics[name] = (min(values) if higher_is_better else max(values)) if values else None
    return metrics


@dataclass
class GateResult:
    expression: str
    passed: bool
    failures: list[str]


def _bindings(report: dict) -> dict[str, list[dict]]:
    rows = report["models"]
    names: dict[str, list[dict]] = {
        "float": [r for r in rows if r["role"] == "reference"],
        "int8": [r for r in rows if r["role"] == "model" and "int8" in (r.get("quantization") or "")],
    }
    for row in rows:
        names.setdefault(identifier(row["name"]), [row])
    return names


def _float_of(int8_row: dict, report: dict) -> dict:
    """The float model an int8 row was quantized from, if benchmarked too; else the reference."""
    by_name = {r["name"]: r for r in report["models"]}
    reference = next(r for r in report["models"] if r["role"] == "reference")
    return by_name.get(int8_row.get("float_model") or "", reference)


def _evaluate(node: ast.AST, env: dict[str, dict], expression: str):
    if isinstance(node, ast.Expression):
        return _evaluate(node.body, env, expression)
    if isinstance(node, ast.BoolOp):
        values = [_evaluate(v, env, expression) for v in node.values]
        return all(values) if isinstance(node.op, ast.And) else any(values)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.USub)):
        value = _evaluate(node.operand, env, expression)
        return (not value) if isinstance(node.op, ast.Not) else -value
    if isinstance(node, ast.Compare):
        left = _evaluate(node.left, env, expression)
        for op, right_node in zip(node.ops, node.comparators):
            right = _evaluate(right_node, env, expression)
            if not _COMPARE[type(op)](left, right):
                return False
            left = right
        return True
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        return _ARITHMETIC[type(node.op)](_evaluate(node.left, env, expression), _evaluate(node.right, env, expression))
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        metrics = env[node.value.id]
        if node.attr not in metrics:
            raise DocembError(f"--gate {expression!r}: unknown metric {node.attr!r}; known: {', '.join(metrics)}")
        value = metrics[node.attr]
        if value is None:
            raise DocembError(f"--gate {expression!r}: {node.value.id}.{node.attr} was not measured in this run")
        return value
    raise DocembError(
        f"--gate {expression!r}: {ast.unparse(node)!r} is not allowed (use model.metric, numbers, comparisons, and/or/not)"
    )


def evaluate_gate(expression: str, report: dict) -> GateResult:
    """Evaluate `expression` for every choice of model behind each group name it uses."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError as exc:
        raise DocembError(f"--gate {expression!r}: not a valid expression ({exc.msg})") from None
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED):
            raise DocembError(
                f"--gate {expression!r}: {type(node).__name__} is not allowed (use model.metric, numbers, comparisons, and/or/not)"
            )
    bindings = _bindings(report)
    used = sorted({n.id for n in ast.walk(tree) if isinstance(n, ast.Name)})
    for name in used:
        if name not in bindings:
            raise DocembError(f"--gate {expression!r}: no model called {name!r}; names: {', '.join(sorted(bindings))}")
        if not bindings[name]:
            raise DocembError(f"--gate {expression!r}: {name!r} matches no model in this report")
    iterated = [name for name in used if not (name == "float" and "int8" in used)]
    failures = []
    for choice in itertools.product(*(bindings[name] for name in iterated)):
        chosen = dict(zip(iterated, choice))
        if "float" in used and "int8" in used:
            chosen["float"] = _float_of(chosen["int8"], report)
        env = {name: row_metrics(row) for name, row in chosen.items()}
        if not _evaluate(tree, env, expression):
            failures.append(", ".join(f"{name}={row['name']}" for name, row in chosen.items()))
    return GateResult(expression, passed=not failures, failures=failures)
