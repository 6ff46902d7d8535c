"""Turn a video file into the VSPW layout so the evaluator and streamer can run on your footage.

Writes `<out>/data/<name>/origin/%08d.jpg` (RGB frames, optionally resampled to a fixed fps and
resized to a short side) and appends `<name>` to `<out>/<split>.txt`. VSPW itself was extracted
at 15 fps (`--fps 15`). Frame numbers start at `--start-index` (default 0, the decoded frame
index, which is also how `VideoFileClips` names mask PNGs).

    python data_tools/video_to_frames.py my_walk.mp4 my_vspw --fps 15 --short-side 480
"""

from __future__ import annotations

import argparse
import os
import sys

try:
    import vidseg  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402

from vidseg.data.transforms import resize_short_side  # noqa: E402


def decoded_frames(path: str):
    """Yield (time in seconds, upright RGB uint8 frame) for every frame PyAV decodes.

    Rotation metadata is applied, so the frames (and the masks drawn on them) match a player.
    """
    import av

    from vidseg.io.orientation import UprightConverter

    upright = UprightConverter(path)
    with av.open(path) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or 25)
        for i, frame in enumerate(container.decode(stream)):
            t = float(frame.time) if frame.time is not None else i / rate
            yield t, upright(frame, stream)


def resampled(frames, fps: float | None):
    """Yield frames at a constant `fps`: output j is the source frame nearest to time j / fps.

    Times are taken relative to the first frame. Without `fps` every frame is yielded once.
    """
    if fps is None:
        for _, frame in frames:
            yield frame
        return
    j, prev, t0 = 0, None, None
    for t, frame in frames:
        t0 = t if t0 is None else t0
        t -= t0
        while j / fps <= t + 1e-6:
            nearer_prev = prev is not None and abs(j / fps - prev[0]) < abs(j / fps - t)
            yield prev[1] if nearer_prev else frame
            j += 1
        prev = (t, frame)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("video", help="input video file (anything PyAV/FFmpeg decodes)")
    parser.add_argument("out", help="output VSPW-style root (created or extended)")
    parser.add_argument(
        "--name", help="video folder name (default: the file name without extension)"
    )
    parser.add_argument(
        "--split", default="test", help="split file to append the name to (default test)"
    )
    parser.add_argument("--fps", type=float, help="resample to this frame rate (VSPW: 15)")
    parser.add_argument("--short-side", type=int, help="resize frames to this short side")
    parser.add_argument("--max-frames", type=int, help="stop after this many output frames")
    parser.add_argument("--start-index", type=int, default=0, help="number of the first frame")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing video folder")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.video):
        print(f"video_to_frames: error: {args.video} not found", file=sys.stderr)
        return 2
    if args.fps is not None and args.fps <= 0:
        print(f"video_to_frames: error: --fps {args.fps}; expected > 0", file=sys.stderr)
        return 2
    name = args.name or os.path.splitext(os.path.basename(args.video))[0]
    origin = os.path.join(args.out, "data", name, "origin")
    if os.path.isdir(origin) and os.listdir(origin) and not args.overwrite:
        print(f"video_to_frames: error: {origin} is not empty (use --overwrite)", file=sys.stderr)
        return 2
    os.makedirs(origin, exist_ok=True)
    for old in os.listdir(origin):
        os.remove(os.path.join(origin, old))
    count = 0
    try:
        for frame in resampled(decoded_frames(args.video), args.fps):
            if args.max_frames is not None and count >= args.max_frames:
                break
            frame = resize_short_side(frame, args.short_side, cv2.INTER_LINEAR)
            path = os.path.join(origin, f"{args.start_index + count:08d}.jpg")
            if not cv2.imwrite(
                path,
                cv2.cvtColor(frame, cv2.COLOR_RGB2BGR),
                [cv2.IMWRITE_JPEG_QUALITY, args.quality],
            ):
                raise OSError(f"cannot write {path}")
            count += 1
    except Exception as exc:  # a corrupt tail: keep what was decoded, say so
        print(
            f"video_to_frames: stopped after {count} frames of {args.video}: {exc}", file=sys.stderr
        )
        if count == 0:
            return 1
    split_file = os.path.join(args.out, f"{args.split}.txt")
    names = []
    if os.path.isfile(split_file):
        with open(split_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
    if name not in names:
        with open(split_file, "w", encoding="utf-8") as f:
            f.write("".join(n + "\n" for n in names + [name]))
    print(f"wrote {count} frames to {origin}; {name} listed in {split_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
