"""Write a synthetic VSPW-format dataset (see vidseg/data/synthetic.py) and print its summary.

Example::

    python data_tools/make_synthetic_vspw.py --out data/synthetic --preview synth_preview.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidseg.data.synthetic import make_synthetic_vspw  # noqa: E402


def contact_sheet(root: str, path: str, videos: int = 4, frames_per_video: int = 5) -> None:
    """Save a grid: for the first val (then train) videos, a few frames above their masks."""
    import cv2

    from vidseg.data.vspw import read_frame, read_split, to_train_ids
    from vidseg.io.palette import colorize

    rows = []
    for name in (read_split(root, "val") + read_split(root, "train"))[:videos]:
        folder = os.path.join(root, "data", name)
        stems = sorted(f[:-4] for f in os.listdir(os.path.join(folder, "origin")))
        picks = [
            stems[round(k * (len(stems) - 1) / max(frames_per_video - 1, 1))]
            for k in range(frames_per_video)
        ]
        images, masks = [], []
        for stem in picks:
            images.append(read_frame(os.path.join(folder, "origin", stem + ".jpg")))
            raw = cv2.imread(os.path.join(folder, "mask", stem + ".png"), cv2.IMREAD_UNCHANGED)
            colour = colorize(to_train_ids(raw))
            colour[raw == 0], colour[raw == 255] = 96, 255  # "others" grey, void white
            masks.append(colour)
        rows += [np.hstack(images), np.hstack(masks)]
    cv2.imwrite(path, np.vstack(rows)[..., ::-1])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--out", required=True, help="output root (created; an earlier synthetic set is replaced)"
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed = same bytes)")
    p.add_argument("--train-videos", type=int, default=16, help="train videos (default 16)")
    p.add_argument("--val-videos", type=int, default=4, help="val videos (default 4)")
    p.add_argument(
        "--test-videos", type=int, default=2, help="test videos, frames only (default 2)"
    )
    p.add_argument("--frames", type=int, default=30, help="frames per video (default 30)")
    p.add_argument("--height", type=int, default=144, help="frame height (default 144)")
    p.add_argument("--width", type=int, default=256, help="frame width (default 256)")
    p.add_argument("--workers", type=int, default=None, help="render threads (default: CPU count)")
    p.add_argument("--no-mp4", action="store_true", help="do not write val videos as H.264 mp4")
    p.add_argument("--preview", metavar="PNG", help="also save a contact sheet of frames and masks")
    args = p.parse_args(argv)
    try:
        summary = make_synthetic_vspw(
            args.out,
            num_train=args.train_videos,
            num_val=args.val_videos,
            num_test=args.test_videos,
            frames=args.frames,
            height=args.height,
            width=args.width,
            seed=args.seed,
            write_mp4=not args.no_mp4,
            workers=args.workers,
        )
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.preview:
        contact_sheet(args.out, args.preview)
        summary["preview"] = args.preview
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
