"""`vidseg data synth` (a synthetic dataset in any layout), `vidseg data check ROOT` and
`vidseg data convert` (a VSPW-format root into the video or frames layout); docs/DATA.md."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time

from vidseg.cli import (
    CliError,
    add_layout_arguments,
    check_output_dir,
    check_output_file,
    int_arg,
)
from vidseg.data.formats import FORMATS
from vidseg.engine.input_size import MAX_SIDE

# CLI flag -> keyword of make_synthetic_vspw
_SYNTH_ARGS = {
    "train_videos": "num_train",
    "val_videos": "num_val",
    "test_videos": "num_test",
    "frames": "frames",
    "height": "height",
    "width": "width",
    "seed": "seed",
}


def run_synth(args: argparse.Namespace) -> int:
    if args.preset == "hard":
        from vidseg.data.synthetic_hard import make_hard_synthetic_vspw as make
    else:
        from vidseg.data.synthetic import make_synthetic_vspw as make
    kwargs = {
        kw: getattr(args, flag)
        for flag, kw in _SYNTH_ARGS.items()
        if getattr(args, flag) is not None
    }
    kwargs["write_mp4"] = not args.no_mp4 and args.format == "vspw"
    check_output_dir(args.out, "--out")
    start = time.perf_counter()
    try:
        if args.format == "vspw":
            make(args.out, **kwargs)
        else:
            import tempfile

            from vidseg.data.convert_layout import convert_vspw

            # generated in VSPW form next to nothing the user owns, then rewritten
            with tempfile.TemporaryDirectory(prefix="vidseg-synth-") as tmp:
                make(tmp, **kwargs)
                convert_vspw(tmp, args.out, args.format)
                if args.preset == "hard":  # frame indices, so it holds in every layout
                    from vidseg.data.synthetic_hard import CORRUPTED_FILE

                    shutil.copyfile(
                        os.path.join(tmp, CORRUPTED_FILE), os.path.join(args.out, CORRUPTED_FILE)
                    )
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot write the synthetic dataset to {args.out}: {exc}") from exc
    fmt = "" if args.format == "vspw" else f" --format {args.format}"
    print(
        f"synthetic {args.format} dataset ({args.preset} preset) written to {args.out} in "
        f"{time.perf_counter() - start:.1f} s; check it with: vidseg data check {args.out}{fmt}"
    )
    return 0


def run_convert(args: argparse.Namespace) -> int:
    from vidseg.data.convert_layout import convert_vspw

    if not os.path.isdir(args.src):
        what = "is a file, not a folder" if os.path.exists(args.src) else "does not exist"
        raise CliError(f"source root {args.src} {what}")
    check_output_dir(args.out, "--out")
    start = time.perf_counter()
    try:
        summary = convert_vspw(
            args.src, args.out, args.format, splits=tuple(args.split or ("train", "val"))
        )
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot convert {args.src} to {args.out}: {exc}") from exc
    counts = ", ".join(
        f"{s} {n} videos / {summary['frames'][s]} frames" for s, n in summary["videos"].items()
    )
    print(
        f"{args.src} written as data.format={args.format} to {args.out} ({counts}) in "
        f"{time.perf_counter() - start:.1f} s; check it with: vidseg data check {args.out} "
        f"--format {args.format}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from vidseg.data.check import check_vspw
    from vidseg.data.check_layouts import check_layout
    from vidseg.data.layouts import detect_format

    if not os.path.isdir(args.root):
        what = "is a file, not a folder" if os.path.exists(args.root) else "does not exist"
        raise CliError(f"data root {args.root} {what}")
    if args.json:
        check_output_file(args.json, "--json")
    fmt = args.format
    if fmt == "auto":  # a root that looks like none of them gets the VSPW report of what is missing
        fmt = detect_format(args.root) or "vspw"
    start = time.perf_counter()
    if fmt == "vspw":
        report = check_vspw(
            args.root,
            splits=tuple(args.split or ("train", "val", "test")),
            decode_frames=args.decode_frames,
        )
    else:
        report = check_layout(
            args.root,
            fmt,
            splits=args.split,
            label_format=args.labels,
            decode_frames=args.decode_frames,
        )
    print(report.format(max_problems=args.max_problems))
    print(f"checked in {time.perf_counter() - start:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0 if report.ok else 1


def register(sub) -> None:
    p = sub.add_parser(
        "data",
        help="synthetic data, layout checks and conversion (docs/DATA.md)",
        description="Create a synthetic dataset, verify a dataset root (VSPW, "
        "video files + masks, image sequences) or convert a VSPW-format "
        "root into another layout. See docs/DATA.md.",
    )
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True

    s = data_sub.add_parser(
        "synth",
        help="write a synthetic dataset (VSPW, video or frames layout)",
        description="Write a deterministic synthetic dataset: in the VSPW layout (frames, masks, "
        "split files, class list, val mp4s), or with --format video|frames its "
        "train and val splits in that layout (docs/DATA.md). Unset sizes use the "
        "generator's defaults.",
    )
    s.add_argument("--out", required=True, help="output root (created)")
    s.add_argument(
        "--format",
        choices=FORMATS,
        default="vspw",
        help="layout to write (default vspw; video and frames hold train and val)",
    )
    s.add_argument("--seed", type=int_arg(0), help="random seed (same seed = same dataset)")
    s.add_argument("--train-videos", type=int_arg(0), help="number of train videos")
    s.add_argument("--val-videos", type=int_arg(0), help="number of val videos")
    s.add_argument(
        "--test-videos", type=int_arg(0), help="number of test videos (vspw only: unlabelled)"
    )
    s.add_argument("--frames", type=int_arg(1), help="frames per video")
    s.add_argument("--height", type=int_arg(16, MAX_SIDE), help="frame height in pixels")
    s.add_argument("--width", type=int_arg(16, MAX_SIDE), help="frame width in pixels")
    s.add_argument("--no-mp4", action="store_true", help="do not write the val videos as H.264 mp4")
    s.add_argument(
        "--preset",
        choices=("normal", "hard"),
        default="normal",
        help="normal (default) or hard: twin classes told apart only by dataset-level "
        "statistics, corrupted frame bursts listed in corrupted.json, slow motion "
        "(docs/ABLATIONS.md)",
    )
    s.set_defaults(func=run_synth)

    c = data_sub.add_parser(
        "check",
        help="verify a dataset root (counts, unreadable files, masks, pairing)",
        description="Count videos/frames/masks per split and find what training would trip "
        "on: empty or unreadable images and videos, frames without masks or a mask "
        "count that differs from the frame count (such videos are listed as "
        "refused), mask values outside the label format, RGB masks and size "
        "mismatches. Exit code 1 when the layout is unusable.",
    )
    c.add_argument(
        "root",
        help="dataset root (VSPW: data/ + split files; video: videos/ + "
        "masks/; frames: <video>/images/ + <video>/masks/)",
    )
    add_layout_arguments(c, "the root")
    c.add_argument(
        "--split",
        action="append",
        choices=("train", "val", "test"),
        help="split to check (repeatable; default: VSPW all three, other layouts "
        "every split file present, or every video)",
    )
    c.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    c.add_argument(
        "--decode-frames",
        action="store_true",
        help="fully decode every frame and video (default: JPEG headers, video container headers)",
    )
    c.add_argument(
        "--max-problems", type=int_arg(0), default=50, help="problems printed (default 50)"
    )
    c.set_defaults(func=run_check)

    v = data_sub.add_parser(
        "convert",
        help="rewrite a VSPW-format root in the video or frames layout",
        description="Write the labelled splits of a VSPW-format root as data.format: video "
        "(H.264 mp4 + mask folders) or frames (image and mask folders); masks are "
        "copied byte for byte.",
    )
    v.add_argument("src", help="VSPW-format root")
    v.add_argument("--out", required=True, help="output root (new or empty)")
    v.add_argument("--format", choices=("video", "frames"), required=True, help="layout to write")
    v.add_argument(
        "--split",
        action="append",
        choices=("train", "val"),
        help="split to convert (repeatable; default train and val)",
    )
    v.set_defaults(func=run_convert)
