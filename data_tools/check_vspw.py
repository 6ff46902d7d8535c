"""Verify a VSPW download: counts per split, unreadable images, missing masks, bad mask values.

Same as `vidseg data check ROOT`. Exit code 0 when usable, 1 when not.

    python data_tools/check_vspw.py /data/VSPW_480p --json report.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys

try:
    import vidseg  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidseg.data.check import check_vspw  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("root", help="VSPW root holding data/, train.txt, val.txt, test.txt")
    parser.add_argument("--split", action="append", choices=("train", "val", "test"),
                        help="split to check (repeatable; default all three)")
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--decode-frames", action="store_true",
                        help="fully decode every frame (default: validate JPEG headers only)")
    parser.add_argument("--max-problems", type=int, default=50, help="problems printed")
    args = parser.parse_args(argv)
    if not os.path.isdir(args.root):
        print(f"check_vspw: error: data root {args.root} does not exist", file=sys.stderr)
        return 2
    report = check_vspw(args.root, splits=tuple(args.split or ("train", "val", "test")),
                        decode_frames=args.decode_frames)
    print(report.format(max_problems=args.max_problems))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=2)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
