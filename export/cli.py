"""`docemb export --ckpt CKPT | --untrained | --peer NAME --out DIR [--include onnx tflite tflite-fp16]`:
model files with their contracts."""

from __future__ import annotations

import argparse
from pathlib import Path

from docemb.formats import includes, lookup


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ckpt", help="model.safetensors written by `docemb train`")
    parser.add_argument("--out", required=True, help="folder for the exported files")
    parser.add_argument(
        "--include", nargs="+", default=["onnx"], choices=includes("export"), help="formats to write (default: onnx)"
    )
    parser.add_argument(
        "--layout", choices=("NHWC", "NCHW"), default="NHWC", help="TFLite input layout (default: NHWC, as Android bitmaps come)"
    )
    parser.add_argument(
        "--builtin-normalization",
        action="store_true",
        help="TFLite takes RGB 0-255 floats and normalises inside (what MediaPipe's ImageEmbedder feeds)",
    )
    parser.add_argument("--name", default=None, help="file stem (default: model, or untrained with --untrained)")
    parser.add_argument("--untrained", action="store_true", help="export the same architecture with fresh weights (a baseline)")
    parser.add_argument("--arch", default=None, help="architecture for --untrained without --ckpt (default: lcnet_050)")
    parser.add_argument("--seed", type=int, default=0, help="initialisation seed for --untrained and --peer (default: 0)")
    parser.add_argument(
        "--peer",
        metavar="NAME",
        help="export another backbone with docemb's head for `docemb bench` to compare: mobilenetv3_small_050, "
        "mobilenetv3_small_075, mobilenetv3_small_100 or efficientnet_lite0 (writes its checkpoint too)",
    )
    parser.add_argument("--check-data", help="folder of images to compare torch and exported outputs on, besides random inputs")
    parser.add_argument("--no-simplify", action="store_true", help="skip onnxslim graph simplification")


def run(args: argparse.Namespace) -> None:
    from docemb.lock import output_lock

    with output_lock(args.out):
        _export(args)


def _export(args: argparse.Namespace) -> None:
    from dataclasses import asdict

    import numpy as np

    from docemb.contract import BUILTIN_NORMALIZATION, describe_model, sha256, threshold_table, write_contract
    from docemb.errors import DocembError
    from docemb.export.onnx_export import export_onnx, verify_onnx
    from docemb.imageio import list_images, load_images
    from docemb.model import ModelConfig, build_model, load_model, read_model_metadata, save_model
    from docemb.verify import contract_entry

    if sum(map(bool, (args.ckpt and not args.untrained, args.untrained, args.peer))) != 1:
        raise DocembError("give one of --ckpt CKPT, --untrained (with or without --ckpt) or --peer NAME")
    out = Path(args.out)
    if args.peer:
        from docemb.peers import build_peer

        model, weights = build_peer(args.peer, seed=args.seed)
        checkpoint = out / f"{args.name or 'peer_' + args.peer}.safetensors"
        save_model(checkpoint, model, {"peer": args.peer, "backbone_weights": weights})
        source = {
            "checkpoint": str(checkpoint.resolve()),
            "checkpoint_sha256": sha256(checkpoint),
            "peer": args.peer,
            "backbone_weights": weights,
        }
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
    name = args.name or ("untrained" if args.untrained else f"peer_{args.peer}" if args.peer else "model")
    # shipped weights carry their run's thresholds inside (the run folder stays on the machine that trained them)
    thresholds = (metadata.get("thresholds") or threshold_table(source.get("run"))) if args.ckpt and not args.untrained else None
    verification = contract_entry()

    rng = np.random.default_rng(0)
    size = model.config.input_size
    check_inputs = rng.normal(0, 1, (8, 3, size, size)).astype(np.float32)
    if args.check_data:
        images, _ = load_images(list_images(args.check_data)[:8], max_side=512)
        check_inputs = np.concatenate([check_inputs, np.stack([model.preprocessing(im) for im in images])])

    if "onnx" in args.include:
        path = export_onnx(model, lookup("export", ".onnx", "onnx").path(out, name), simplify=not args.no_simplify)
        difference = max(verify_onnx(model, path, check_inputs), verify_onnx(model, path, check_inputs[:1]))
        contract = write_contract(
            path,
            model.preprocessing,
            describe_model(path),
            {**source, "exporter": "torch.onnx legacy, opset 17", "max_abs_diff_vs_torch": difference},
            thresholds=thresholds,
            verification=verification,
        )
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, max |torch - onnx| = {difference:.1e}) and {contract}")

    for fmt in [f for f in args.include if f.startswith("tflite")]:
        from docemb.export.tflite_export import export_tflite, verify_tflite

        entry = lookup("export", ".tflite", fmt)
        precision = entry.graph  # float32 or float16
        path = entry.path(out, name)
        export_tflite(model, path, precision, args.layout, args.builtin_normalization)
        builtin = model.preprocessing if args.builtin_normalization else None
        difference = verify_tflite(model, path, check_inputs, precision, builtin)
        io = describe_model(path)
        if builtin:
            io["input"]["normalization"] = BUILTIN_NORMALIZATION
        contract = write_contract(
            path,
            model.preprocessing,
            io,
            {**source, "exporter": f"litert-torch, {precision}", "max_abs_diff_vs_torch": difference},
            thresholds=thresholds,
            verification=verification,
        )
        print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB, max |torch - tflite| = {difference:.1e}) and {contract}")
