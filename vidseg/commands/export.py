"""`vidseg export`: the per-frame streaming step as ONNX, history buffer as explicit inputs/outputs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def run(args: argparse.Namespace) -> int:
    from vidseg.cli import CliError, check_output_file
    from vidseg.engine.input_size import MAX_PIXELS
    from vidseg.errors import EXIT_PARTIAL

    if args.checkpoint is None and not args.random_init:
        raise CliError(
            "no checkpoint given: pass --checkpoint CKPT, or --random-init for a smoke test"
        )
    if args.checkpoint is not None and args.random_init:
        raise CliError("--checkpoint and --random-init exclude each other")
    check_output_file(args.onnx, "--onnx")
    if args.json:
        check_output_file(args.json, "--json")
    if args.size and args.size[0] * args.size[1] > MAX_PIXELS:
        raise CliError(
            f"--size {args.size[0]} {args.size[1]}: more than the input limit of "
            f"{MAX_PIXELS} pixels (docs/RELIABILITY.md)"
        )
    try:
        import onnx  # noqa: F401 - torch.onnx.export needs it
    except ImportError:
        raise CliError(
            "ONNX export needs the optional extra: pip install -e '.[onnx]' (onnx, onnxruntime)"
        ) from None
    import torch

    from vidseg.engine.export import check_against_torch, export_onnx
    from vidseg.engine.inference import load_inference_model
    from vidseg.engine.stream import model_short_side

    if args.random_init:
        print("WARNING: --random-init: exporting RANDOM WEIGHTS (smoke test only)", file=sys.stderr)
    cfg, model = load_inference_model(
        args.config, args.checkpoint, args.overrides or (), random_init=args.random_init
    )
    if args.size:
        size = tuple(args.size)
    else:  # a 16:9 frame at the streaming short side
        s = model_short_side(cfg)
        size = (s, round(s * 16 / 9))
    info = export_onnx(model, args.onnx, size, opset=args.opset)
    maps = f"history maps {tuple(info['map_shape'])}" if info["history"] else "no history (h = 0)"
    print(
        f"exported {args.onnx}: inputs {info['inputs']} -> outputs {info['outputs']}, frame "
        f"(1, 3, {size[0]}, {size[1]}), {maps}"
    )
    if args.no_check:
        return 0
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: skipped the check against PyTorch", file=sys.stderr)
        return 0
    g = torch.Generator().manual_seed(0)
    base = torch.randn(1, 3, *size, generator=g)
    # A short synthetic video: a drifting pattern plus noise, so history maps differ per frame.
    frames = [
        torch.roll(base, shifts=3 * k, dims=-1) + 0.1 * torch.randn(1, 3, *size, generator=g)
        for k in range(args.check_frames)
    ]
    diff = check_against_torch(model, args.onnx, frames)
    print(f"onnxruntime vs PyTorch step() over {len(frames)} frames: max |diff| = {diff:.2e}")
    if args.json:
        try:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            with open(args.json, "w", encoding="utf-8") as f:
                json.dump({**info, "max_abs_diff": diff, "frames": len(frames)}, f, indent=2)
        except OSError as exc:  # the .onnx file is written and kept
            raise CliError(
                f"cannot write --json {args.json}: {exc.strerror or exc}", EXIT_PARTIAL
            ) from None
    if diff > args.tolerance:
        raise CliError(
            f"{args.onnx}: ONNX output differs from PyTorch by {diff:.3g} "
            f"(> --tolerance {args.tolerance})",
            1,
        )
    return 0


def register(sub) -> None:
    from vidseg.cli import float_arg, int_arg
    from vidseg.engine.input_size import MAX_SIDE

    p = sub.add_parser(
        "export",
        help="export the streaming step to ONNX (history buffer as inputs/outputs)",
        description="Export forward(frame, first, hist_1..hist_h) -> (logits, new_map) for a "
        "fixed input size (forward(frame) -> logits for a model with history 0); the caller "
        "keeps the ring buffer of new_map outputs. The file's metadata records h, the "
        "history stride, the size and the class count. Checked against PyTorch with "
        "onnxruntime when installed. `vidseg stream --onnx FILE` runs it.",
    )
    p.add_argument("config", help="YAML file or packaged config name (`vidseg configs`)")
    p.add_argument("--checkpoint", metavar="CKPT", help="trained checkpoint")
    p.add_argument("--random-init", action="store_true", help="random weights (smoke test)")
    p.add_argument("--onnx", required=True, metavar="FILE", help="output .onnx file")
    p.add_argument(
        "--size",
        type=int_arg(1, MAX_SIDE, "the input limit"),
        nargs=2,
        metavar=("H", "W"),
        help="input size (default: stream short side, 16:9); each "
        f"side from the network stride to {MAX_SIDE} px (docs/RELIABILITY.md)",
    )
    p.add_argument("--opset", type=int_arg(1), default=17, help="ONNX opset (default 17)")
    p.add_argument("--check-frames", type=int_arg(1), default=5, help="frames of the check video")
    p.add_argument(
        "--tolerance", type=float_arg(0), default=1e-3, help="max abs logit difference allowed"
    )
    p.add_argument("--no-check", action="store_true", help="skip the onnxruntime check")
    p.add_argument("--json", metavar="FILE", help="write the export info and the check result")
    p.add_argument(
        "--set",
        dest="overrides",
        nargs="+",
        action="extend",
        metavar="KEY=VALUE",
        help="config overrides",
    )
    p.set_defaults(func=run)
