"""`vidseg plot RUN_DIR`: draw a training run's curves (loss terms, lr, validation) into a PNG."""

from __future__ import annotations

import argparse


def run(args: argparse.Namespace) -> int:
    from vidseg.cli import check_output_file
    from vidseg.engine.plot import plot_curves

    if args.out:
        check_output_file(args.out, "--out")
    print(plot_curves(args.run_dir, args.out).describe())
    return 0


def register(sub) -> None:
    p = sub.add_parser(
        "plot",
        help="draw a training run's curves (loss, lr, val mIoU/mVC/TC) into curves.png",
        description="Read RUN_DIR/scalars.jsonl, written by `vidseg train`, and draw three panels "
        "against the iteration: the loss terms, the learning rate of each parameter "
        "group (backbone / heads) and the validation mIoU, mVC_8, mVC_16 and TC. "
        "Works on a running or stopped run (an incomplete last line is skipped). "
        "Needs matplotlib: pip install 'vidseg[tb]'. For live curves: "
        "tensorboard --logdir RUN_DIR.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="training run folder (holds scalars.jsonl)")
    p.add_argument("--out", metavar="PNG", help="image to write (default: RUN_DIR/curves.png)")
    p.set_defaults(func=run)
