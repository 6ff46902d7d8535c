"""`vidseg convert sssegmentation SRC DST --config CFG`: the authors' weights as a vidseg checkpoint."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from vidseg.cli import CliError, check_output_file
    from vidseg.config import load_config
    from vidseg.convert.sssegmentation import convert

    cfg = load_config(args.config, args.overrides or ())
    check_output_file(args.dst, "DST")  # before the (large) source is read
    try:
        ckpt = convert(args.src, args.dst, cfg)
    except OSError as exc:
        raise CliError(f"cannot write {args.dst}: {exc.strerror or exc}") from None
    print(
        f"converted {args.src} ({len(ckpt['model'])} tensors) -> {args.dst} "
        f"(config {args.config} stored inside)"
    )
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "convert",
        help="convert the MCIBI++ authors' (sssegmentation) weights to a vidseg checkpoint",
        description="Read an sssegmentation checkpoint ({'model': state_dict, ...} or a bare state "
        "dict; loaded with weights_only=True, so no code runs), map every tensor onto "
        "the model the config builds, and write a vidseg checkpoint that `eval`, "
        "`stream` and `export` load (they also accept the authors' file directly).",
    )
    p.add_argument("format", choices=["sssegmentation"], help="the checkpoint's origin")
    p.add_argument("src", help="the authors' .pth file")
    p.add_argument("dst", help="where to write the vidseg checkpoint")
    p.add_argument(
        "--config",
        required=True,
        help="config that builds the same architecture: a YAML file or a packaged "
        "name (e.g. vspw/upernet_mcibipp_r50)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        metavar="KEY=VALUE",
        help="config override, repeatable",
    )
    p.set_defaults(func=run)
