"""Dynamic int8 for either format: layers int8 largest first while the mean cosine holds.

The weights sit mostly in a few late layers (head Linears, last pointwise convs), while the
small early layers can carry most of the int8 error (activations with a wide per-image range,
quantized per tensor at run time; onnxruntime's kernels on the shipped model). So layers go int8 largest first, and with validation images
the walk stops at the first layer that would take the mean cosine to float below the target.
Depthwise convs stay float: a few percent of the weights, and neither onnxruntime's ConvInteger
nor XNNPACK runs them well in int8 (docs/quantization.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from docemb.atomic import atomic_path
from docemb.evaluation import cosine_drift


@dataclass
class DynamicChoice:
    """Which layers a dynamic int8 model holds in int8, and what that costs in drift."""

    int8_layers: list[str]
    float_layers: list[dict[str, str]]  # name and op type of the weighted layers left in float, largest first
    int8_weight_share: float  # share of the weighted layers' parameters stored as int8
    drift: dict[str, float] | None = None  # on the validation images, when given
    target_met: bool | None = None


class WeightedLayer(NamedTuple):
    """A layer whose weight dynamic quantization would store as int8."""

    name: str
    op_type: str
    parameters: int
    depthwise: bool


def largest_first(
    layers: list[WeightedLayer],
    write: Callable[[list[str], Path], None],
    embed: Callable[[Path, np.ndarray], np.ndarray],
    float_path: Path,
    out_path: Path,
    validation: np.ndarray | None = None,
    cos_mean_target: float = 0.998,
) -> DynamicChoice:
    """Write `out_path` with the layers (largest first, depthwise left out) that keep the mean
    cosine of `embed(file, validation)` to that of the float file at the target; all of them
    without validation images. `write(names, path)` writes a file with those layers in int8."""
    layers = sorted(layers, key=lambda layer: -layer.parameters)
    chosen = [layer.name for layer in layers if not layer.depthwise]
    drift, met = None, None
    if validation is not None:
        reference = embed(float_path, validation)
        trial_path = out_path.with_name(f"{out_path.stem}.trial{out_path.suffix}")
        candidates, chosen = chosen, []
        try:
            for name in candidates:
                write([*chosen, name], trial_path)
                trial = cosine_drift(reference, embed(trial_path, validation))
                if chosen and trial["cos_mean"] < cos_mean_target:
                    break
                chosen, drift = [*chosen, name], trial
        finally:
            trial_path.unlink(missing_ok=True)
        met = drift["cos_mean"] >= cos_mean_target
    with atomic_path(out_path) as tmp:
        write(chosen, tmp)
    return DynamicChoice(
        int8_layers=chosen,
        float_layers=[{"name": layer.name, "op_type": layer.op_type} for layer in layers if layer.name not in chosen],
        int8_weight_share=sum(layer.parameters for layer in layers if layer.name in chosen)
        / sum(layer.parameters for layer in layers),
        drift=drift,
        target_met=met,
    )
