"""Make the 480p variant of VSPW (what every paper evaluates on) from the full-resolution release.

Every frame and mask is resized to height H (default 480) and width int(H * w / h), frames
bilinear, masks nearest (label values are never mixed); file names, split files and the class
list are kept. Palette masks are written as plain 8-bit index PNGs with the same values.

    python data_tools/resize_vspw.py /data/VSPW /data/VSPW_480p --workers 8
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from multiprocessing import Pool

try:
    import vidseg  # noqa: F401
except ImportError:  # running from a source checkout that is not installed
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import cv2  # noqa: E402

from vidseg.data.vspw import FRAME_EXTENSIONS, read_frame, read_mask  # noqa: E402


def target_size(h: int, w: int, height: int) -> tuple[int, int]:
    """(W, H) for cv2.resize: height fixed, width int(height * w / h) as the official script."""
    return int(height * w / h), height


def resize_video(job: tuple[str, str, str, int, int, bool]) -> tuple[str, int, list[str]]:
    """Resize one video folder; returns (name, files written, failures)."""
    src_root, dst_root, name, height, quality, skip_existing = job
    written, failures = 0, []
    for sub, is_mask in (("origin", False), ("mask", True)):
        src_dir = os.path.join(src_root, "data", name, sub)
        if not os.path.isdir(src_dir):
            continue
        dst_dir = os.path.join(dst_root, "data", name, sub)
        os.makedirs(dst_dir, exist_ok=True)
        for fname in sorted(os.listdir(src_dir)):
            ext = os.path.splitext(fname)[1].lower()
            if ext not in ((".png",) if is_mask else FRAME_EXTENSIONS):
                continue
            src, dst = os.path.join(src_dir, fname), os.path.join(dst_dir, fname)
            if skip_existing and os.path.isfile(dst) and os.path.getsize(dst) > 0:
                continue
            try:
                if is_mask:
                    img = read_mask(src)
                    img = cv2.resize(
                        img, target_size(*img.shape, height), interpolation=cv2.INTER_NEAREST
                    )
                    ok = cv2.imwrite(dst, img)
                else:
                    rgb = read_frame(src)
                    img = cv2.resize(
                        rgb, target_size(*rgb.shape[:2], height), interpolation=cv2.INTER_LINEAR
                    )
                    ok = cv2.imwrite(
                        dst,
                        cv2.cvtColor(img, cv2.COLOR_RGB2BGR),
                        [cv2.IMWRITE_JPEG_QUALITY, quality],
                    )
                if not ok:
                    raise OSError(f"cannot write {dst}")
                written += 1
            except (OSError, ValueError) as exc:
                failures.append(f"{src}: {exc}")
    return name, written, failures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("src", help="full-resolution VSPW root (holding data/ and the split files)")
    parser.add_argument("dst", help="output root (created)")
    parser.add_argument("--height", type=int, default=480, help="output height (default 480)")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    parser.add_argument("--quality", type=int, default=95, help="JPEG quality (default 95)")
    parser.add_argument(
        "--skip-existing",
        action="store_true",
        help="keep non-empty output files (resume an interrupted run)",
    )
    args = parser.parse_args(argv)
    data_dir = os.path.join(args.src, "data")
    if not os.path.isdir(data_dir):
        print(f"resize_vspw: error: {data_dir} not found (expected a VSPW root)", file=sys.stderr)
        return 2
    os.makedirs(os.path.join(args.dst, "data"), exist_ok=True)
    for fname in os.listdir(args.src):
        if fname.endswith((".txt", ".json")):
            shutil.copy2(os.path.join(args.src, fname), os.path.join(args.dst, fname))
    names = sorted(n for n in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, n)))
    jobs = [(args.src, args.dst, n, args.height, args.quality, args.skip_existing) for n in names]
    start, total, failures = time.perf_counter(), 0, []
    if args.workers > 1:
        with Pool(args.workers) as pool:
            results = list(pool.imap_unordered(resize_video, jobs, chunksize=4))
    else:
        results = [resize_video(job) for job in jobs]
    for _, written, failed in results:
        total += written
        failures.extend(failed)
    print(
        f"resized {total} files of {len(names)} videos to height {args.height} in "
        f"{time.perf_counter() - start:.1f} s -> {args.dst}"
    )
    for line in failures[:20]:
        print(f"FAILED {line}", file=sys.stderr)
    if failures:
        print(f"{len(failures)} file(s) could not be resized", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
