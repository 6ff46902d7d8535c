"""`vidseg data synth` (write a synthetic VSPW-format dataset) and `vidseg data check ROOT`."""

from __future__ import annotations

import argparse
import json
import time

from vidseg.cli import CliError

# CLI flag -> keyword of make_synthetic_vspw
_SYNTH_ARGS = {
    "train_videos": "num_train", "val_videos": "num_val", "test_videos": "num_test",
    "frames": "frames", "height": "height", "width": "width", "seed": "seed",
}


def run_synth(args: argparse.Namespace) -> int:
    from vidseg.data.synthetic import make_synthetic_vspw

    kwargs = {kw: getattr(args, flag) for flag, kw in _SYNTH_ARGS.items()
              if getattr(args, flag) is not None}
    kwargs["write_mp4"] = not args.no_mp4
    start = time.perf_counter()
    try:
        make_synthetic_vspw(args.out, **kwargs)
    except (ValueError, OSError) as exc:
        raise CliError(f"cannot write the synthetic dataset to {args.out}: {exc}") from exc
    print(f"synthetic VSPW written to {args.out} in {time.perf_counter() - start:.1f} s; "
          f"check it with: vidseg data check {args.out}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    import os

    from vidseg.data.check import check_vspw

    if not os.path.isdir(args.root):
        raise CliError(f"data root {args.root} does not exist")
    start = time.perf_counter()
    report = check_vspw(args.root, splits=tuple(args.split or ("train", "val", "test")),
                        decode_frames=args.decode_frames)
    print(report.format(max_problems=args.max_problems))
    print(f"checked in {time.perf_counter() - start:.1f} s")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0 if report.ok else 1


def register(sub) -> None:
    p = sub.add_parser("data", help="synthetic VSPW data and VSPW layout checks",
                       description="Create a synthetic VSPW-format dataset or verify a VSPW root.")
    data_sub = p.add_subparsers(dest="data_command", metavar="ACTION")
    data_sub.required = True

    s = data_sub.add_parser(
        "synth", help="write a synthetic VSPW-format dataset",
        description="Write a deterministic synthetic dataset in the VSPW layout (frames, masks, "
                    "split files, class list, val mp4s). Unset sizes use the generator's defaults.")
    s.add_argument("--out", required=True, help="output root (created)")
    s.add_argument("--seed", type=int, help="random seed (same seed = same dataset)")
    s.add_argument("--train-videos", type=int, help="number of train videos")
    s.add_argument("--val-videos", type=int, help="number of val videos")
    s.add_argument("--test-videos", type=int, help="number of test videos")
    s.add_argument("--frames", type=int, help="frames per video")
    s.add_argument("--height", type=int, help="frame height in pixels")
    s.add_argument("--width", type=int, help="frame width in pixels")
    s.add_argument("--no-mp4", action="store_true", help="do not write the val videos as H.264 mp4")
    s.set_defaults(func=run_synth)

    c = data_sub.add_parser(
        "check", help="verify a VSPW root (counts, unreadable images, masks)",
        description="Count videos/frames/masks per split, find empty or unreadable images, frames "
                    "without masks, mask values outside {0..124, 255}, RGB masks and size "
                    "mismatches. Exit code 1 when the layout is unusable.")
    c.add_argument("root", help="VSPW root holding data/, train.txt, val.txt, test.txt")
    c.add_argument("--split", action="append", choices=("train", "val", "test"),
                   help="split to check (repeatable; default all three)")
    c.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    c.add_argument("--decode-frames", action="store_true",
                   help="fully decode every frame (default: validate JPEG headers only)")
    c.add_argument("--max-problems", type=int, default=50, help="problems printed (default 50)")
    c.set_defaults(func=run_check)
