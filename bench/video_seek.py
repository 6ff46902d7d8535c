"""Random clip reads from a video file: PyAV seeking vs PyAV decoding from the start (vs decord).

Writes (in a temporary folder) an H.264 mp4 of `--frames` frames at 480x854, one with a keyframe
every `--gop` frames and one with x264's default (every 250), then times, side by side in one
run, reading `--clips` random clips of 3 consecutive frames (history 2, as the clip loader does):

  seek          `PyAVFrameReader.get` (seek to the keyframe before the clip, decode forward);
                "index_ms" is its one-time packet scan per file, not in the per-clip time.
  from-start    the loader's earlier PyAV path: decode from frame 0 up to the clip's last frame.
  decord        `DecordFrameReader.get` when decord imports and reads this file, for reference
                (the product uses it only when its self-test passes: see "decord_selftest").

The seek and from-start frames must be identical. Last line: a JSON object with the figures.

Usage: PYTHONPATH=. python bench/video_seek.py [--frames 300] [--gop 30] [--clips 10]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import av
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from vidseg.io import selftest  # noqa: E402
from vidseg.io.random_access import DecordFrameReader, PyAVFrameReader  # noqa: E402

H, W = 480, 854


def write(path: str, frames: int, gop: int | None) -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    texture = (np.random.default_rng(0).integers(0, 8, (H, W))).astype(np.int32)
    options = {"preset": "veryfast", "crf": "23"} | ({"g": str(gop)} if gop else {})
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        for k in range(frames):
            base = ((xx + 3 * k) % 256 + texture + (yy // 8 + k) % 64) % 256
            rgb = np.stack([base, (base + 85) % 256, (255 - base)], axis=-1).astype(np.uint8)
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))


def from_start(path: str, indices: list[int]) -> tuple[dict, int]:
    wanted, last, out, decoded = set(indices), max(indices), {}, 0
    with av.open(path) as container:
        for i, frame in enumerate(container.decode(container.streams.video[0])):
            decoded += 1
            if i in wanted:
                out[i] = frame.to_ndarray(format="rgb24")
            if i >= last:
                break
    return out, decoded


def bench(path: str, clips: list[list[int]], use_decord: bool) -> dict:
    t0 = time.perf_counter()
    reader = PyAVFrameReader(path)
    assert reader.seekable  # builds the packet table (one demux pass, no decoding)
    t_index = time.perf_counter() - t0
    t0 = time.perf_counter()
    seek = [reader.get(c) for c in clips]
    t_seek = time.perf_counter() - t0
    t0 = time.perf_counter()
    start = [from_start(path, c) for c in clips]
    t_start = time.perf_counter() - t0
    identical = all(
        set(a) == set(b) and all(np.array_equal(a[i], b[i]) for i in a)
        for a, (b, _) in zip(seek, start)
    )
    n = len(clips)
    row = {
        "index_ms": round(1e3 * t_index, 1),
        "seek_ms_per_clip": round(1e3 * t_seek / n, 1),
        "from_start_ms_per_clip": round(1e3 * t_start / n, 1),
        "speedup": round(t_start / t_seek, 2),
        "identical": identical,
        "frames_decoded_per_clip_seek": round(reader.frames_decoded / n, 1),
        "frames_decoded_per_clip_from_start": round(sum(d for _, d in start) / n, 1),
    }
    if use_decord:
        try:
            dec = DecordFrameReader(path)
        except Exception as exc:  # noqa: BLE001 - the figure is optional
            row["decord_ms_per_clip"] = f"unreadable: {exc}"
            return row
        t0 = time.perf_counter()
        for c in clips:
            dec.get(c)
        row["decord_ms_per_clip"] = round(1e3 * (time.perf_counter() - t0) / n, 1)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--gop", type=int, default=30)
    parser.add_argument("--clips", type=int, default=10)
    args = parser.parse_args()
    _, reason = selftest.decord_status()
    use_decord = reason != "not installed" and not reason.startswith("import failed")
    rng = np.random.default_rng(0)
    clips = [[t - 2, t - 1, t] for t in rng.integers(2, args.frames, args.clips).tolist()]
    result = {
        "bench": "video_seek",
        "frames": args.frames,
        "size": f"{W}x{H}",
        "clips": args.clips,
        "decord_selftest": reason,
    }
    with tempfile.TemporaryDirectory() as tmp:
        for name, gop in ((f"gop{args.gop}", args.gop), ("gop250", None)):
            path = os.path.join(tmp, f"{name}.mp4")
            write(path, args.frames, gop)
            row = bench(path, clips, use_decord)
            print(f"{name}: " + ", ".join(f"{k} {v}" for k, v in row.items()))
            result[name] = row
    print(json.dumps(result))


if __name__ == "__main__":
    main()
