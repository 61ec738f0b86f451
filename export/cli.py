"""`docemb export --ckpt CKPT --out DIR [--include onnx]`: model files with their contracts."""

from __future__ import annotations

import argparse
from pathlib import Path

FORMATS = ("onnx",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", help="model.safetensors written by `docemb train`")
    parser.add_argument("--out", required=True, help="folder for the exported files")
    parser.add_argument("--include", nargs="+", default=["onnx"], choices=FORMATS, help="formats to write (default: onnx)")
    parser.add_argument("--name", default=None, help="file stem (default: model, or untrained with --untrained)")
    parser.add_argument("--untrained", action="store_true", help="export the same architecture with fresh weights (a baseline)")
    parser.add_argument("--arch", default=None, help="architecture for --untrained without --ckpt (default: lcnet_050)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed for --untrained (default: 0)")
    parser.add_argument("--check-data", help="folder of images to compare torch and exported outputs on, besides random inputs")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim graph simplification")


def run(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    import numpy as np

    from docemb.contract import describe_onnx, sha256, write_contract
    from docemb.errors import DocembError
    from docemb.export.onnx_export import export_onnx, verify_onnx
    from docemb.imageio import list_images, load_images
    from docemb.model import ModelConfig, build_model, load_model, read_model_metadata

    if not args.ckpt and not args.untrained:
        raise DocembError("give --ckpt CKPT, or --untrained for a baseline")
    if args.ckpt:
        model = load_model(args.ckpt)
        metadata = read_model_metadata(args.ckpt)
        source = {
            "checkpoint": str(Path(args.ckpt).resolve()),
            "checkpoint_sha256": sha256(args.ckpt),
            "run": metadata.get("run"),
            "epoch": metadata.get("epoch"),
        }
    if args.untrained:
        config = model.config if args.ckpt else ModelConfig(arch=args.arch or "lcnet_050")
        model = build_model(config, seed=args.seed).eval()
        source = {"untrained": True, "seed": args.seed, "model_config": asdict(config)}
    name = args.name or ("untrained" if args.untrained else "model")
    out = Path(args.out)

    rng = np.random.default_rng(0)
    size = model.config.input_size
    check_inputs = rng.normal(0, 1, (8, 3, size, size)).astype(np.float32)
    if args.check_data:
        images, _ = load_images(list_images(args.check_data)[:8], max_side=512)
        check_inputs = np.concatenate([check_inputs, np.stack([model.preprocessing(im) for im in images])])

    if "onnx" in args.include:
        path = export_onnx(model, out / f"{name}.onnx", simplify=not args.no_simplify)
        difference = max(verify_onnx(model, path, check_inputs), verify_onnx(model, path, check_inputs[:1]))
        contract = write_contract(
            path,
            model.preprocessing,
            describe_onnx(path),
            {**source, "exporter": "torch.onnx legacy, opset 17", "max_abs_diff_vs_torch": difference},
        )
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, max |torch - onnx| = {difference:.1e}) and {contract}")
