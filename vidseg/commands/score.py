"""`vidseg score`: score a folder of VSPW-format prediction PNGs produced by any method, against
a dataset in any layout (VSPW, video files + mask folders, image sequences; docs/DATA.md)."""

from __future__ import annotations

import argparse
import os


def run(args: argparse.Namespace) -> int:
    from vidseg.cli import CliError, check_output_file
    from vidseg.metrics.report import format_table, write_metrics
    from vidseg.metrics.scorer import score_prediction_dir

    if args.flow == "raft" and not args.raft_weights:
        raise CliError(
            "--flow raft needs --raft-weights FILE (a local torchvision raft_large "
            "state dict); nothing is downloaded"
        )
    # checked before the (long) scoring, not after it
    out = check_output_file(args.out or os.path.join(args.pred, "metrics.json"), "--out")
    try:
        result = score_prediction_dir(
            args.data,
            args.pred,
            split=args.split,
            tc_videos=args.tc_videos,
            allow_missing=args.allow_missing,
            flow=args.flow,
            num_workers=(os.cpu_count() or 1) if args.workers is None else args.workers,
            tc=not args.no_tc,
            include_last_window=args.include_last_window,
            raft_weights=args.raft_weights,
            progress=not args.quiet,
            data_format=args.format,
            label_format=args.labels,
        )
    except (ValueError, FileNotFoundError, OSError) as exc:
        raise CliError(str(exc).replace("\n", " ")) from None
    print(format_table(result, per_class=args.per_class))
    if result["missing_predictions"]:
        print(
            f"warning: {result['missing_predictions']} prediction(s) missing and not scored, "
            f"e.g. {result['missing_examples'][:3]}"
        )
    try:
        write_metrics(result, out)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc}") from None
    print(f"metrics written to {out}")
    return 0


def register(sub) -> None:
    from vidseg.cli import add_layout_arguments, int_arg, max_threads

    p = sub.add_parser(
        "score",
        help="score VSPW-format prediction PNGs: mIoU, accuracies, mVC_8/16, TC",
        description="Score a folder <PRED>/<video>/<stem>.png of train-id predictions (0..123, "
        "single-channel or palette PNGs at mask size) against a split of a dataset "
        "in any layout (docs/DATA.md); <stem> is the frame's name in the layout "
        "(VSPW, frames: the image's, video: the mask's), as `vidseg eval` writes "
        "them. Metrics follow the official VSPW scripts; see "
        "docs/METRICS.md for every deviation.",
    )
    p.add_argument(
        "--data",
        required=True,
        metavar="ROOT",
        help="dataset root: VSPW (val.txt, data/), video (videos/, masks/) or frames "
        "(<video>/images/, <video>/masks/)",
    )
    add_layout_arguments(p, "ROOT")
    p.add_argument("--pred", required=True, metavar="DIR", help="prediction folder")
    p.add_argument(
        "--split",
        default="val",
        help="split file name without .txt (default: val); a video or frames root "
        "without split files scores every video",
    )
    p.add_argument("--out", metavar="FILE", help="metrics JSON (default: <DIR>/metrics.json)")
    p.add_argument(
        "--tc-videos",
        type=int_arg(0, note="0 = no TC"),
        metavar="N",
        help="TC on the first N videos of the split file only (100 = the official "
        "protocol); default: all videos",
    )
    p.add_argument("--no-tc", action="store_true", help="skip TC (no optical flow)")
    p.add_argument(
        "--flow",
        choices=("dis", "raft"),
        default="dis",
        help="flow for TC: OpenCV DIS (default, reported as TC-DIS) or RAFT",
    )
    p.add_argument(
        "--raft-weights",
        metavar="FILE",
        help="local torchvision raft_large weights for --flow raft",
    )
    p.add_argument(
        "--allow-missing",
        action="store_true",
        help="count and report missing predictions instead of failing",
    )
    p.add_argument(
        "--include-last-window",
        action="store_true",
        help="mVC also counts the window ending at each video's last frame "
        "(the official script skips it)",
    )
    p.add_argument(
        "--workers",
        type=int_arg(0, max_threads(), "4 x the CPU cores"),
        default=None,
        metavar="N",
        help="processes scoring videos in parallel (default: one per CPU core; 0/1: in this "
        "process; at most 4 x the cores); the result does not depend on it",
    )
    p.add_argument("--per-class", action="store_true", help="also print the per-class table")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
