"""Make torchvision, and so timm and open_clip, importable beside the CPU build of torch.

The only torchvision on PyPI for torch 2.13.0 is a CUDA build. Under the CPU torch its compiled
ops fail to load, and `import torchvision` then dies with
``RuntimeError: operator torchvision::nms does not exist`` while registering meta kernels.
Nothing in docemb uses torchvision's ops, so when (and only when) its extension cannot load we
define the two op schemas it registers against. Import this module before timm or open_clip.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import sys

import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: the schemas vanish with it


def _extension_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return True  # no torchvision: nothing to fix
    for package_dir in spec.submodule_search_locations:
        for shared_object in glob.glob(os.path.join(package_dir, "_C*.so")):
            try:
                torch.ops.load_library(shared_object)
                return True
            except OSError:
                return False
    return False


def ensure_torchvision_importable() -> None:
    """Define the torchvision op schemas if its compiled extension cannot provide them."""
    global _library
    if "torchvision" in sys.modules or _library is not None:
        return
    if torch._C._jit_get_schemas_for_operator("torchvision::nms") or _extension_loads():
        return
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        _library.define(schema)


ensure_torchvision_importable()
