"""Verify a VSPW download (or a synthetic VSPW-format root) before training on it.

The other layouts (`data.format: video | frames`) are checked by `vidseg.data.check_layouts`,
which reports through the same `CheckReport`.


Checks split files, video folders, frame/mask pairing, empty or undecodable images, mask values
outside {0..124, 255}, RGB masks and frame/mask size mismatches, and compares counts with the
expected ones. Each mask is decoded once; JPEG frames are validated from their headers (size,
turned upright by an EXIF orientation as the readers turn the frame; markers) unless
`decode_frames=True`, so a full VSPW check is I/O-bound. Videos are checked in a
thread pool (OpenCV releases the GIL while decoding).
"""

from __future__ import annotations

import json
import os
import struct
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import cv2
import numpy as np

from vidseg.data.vspw import (
    CLASS_FILE,
    FRAME_EXTENSIONS,
    NUM_RAW_CLASSES,
    SPLITS,
    UnreadableImageError,
    invalid_raw_values,
    load_class_names,
    read_mask,
)

# official VSPW counts (vspw-metrics.md section 1); the 480p release differs slightly in frames
OFFICIAL_COUNTS = {
    "train": {"videos": 2806, "frames": 198244},
    "val": {"videos": 343, "frames": 24502},
    "test": {"videos": 387, "frames": 28887},
}
MANIFEST = "vidseg_synthetic.json"


@dataclass
class Problem:
    """One finding: `severity` is "error" (layout unusable) or "warning"."""

    severity: str
    path: str
    message: str


@dataclass
class CheckReport:
    """Result of a check: counts per split, expected counts, problems, refused videos.

    `refused` names the videos whose frames and masks do not pair up (count, names, missing
    folder): training and evaluation refuse such a dataset, or leave these videos out with
    `data.bad_videos: skip`.
    """

    root: str
    layout: str = "vspw"
    counts: dict = field(default_factory=dict)  # split -> {"videos", "frames", "masks"}
    expected: dict = field(default_factory=dict)  # split -> {"videos", "frames"}
    expected_source: str = "official VSPW"
    problems: list[Problem] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """False when any error was found (the layout cannot be trained/evaluated on as is)."""
        return not self.errors

    def to_dict(self) -> dict:
        return {
            "root": self.root,
            "layout": self.layout,
            "ok": self.ok,
            "counts": self.counts,
            "expected": self.expected,
            "refused_videos": self.refused,
            "expected_source": self.expected_source,
            "num_errors": len(self.errors),
            "num_warnings": len(self.warnings),
            "problems": [p.__dict__ for p in self.problems],
        }

    def format(self, max_problems: int = 50) -> str:
        """Human-readable report: a count table, then up to `max_problems` problems."""
        name = "VSPW" if self.layout == "vspw" else f"data.format={self.layout}"
        head = f"{'split':<6} {'videos':>8} {'frames':>9} {'masks':>9}"
        lines = [
            f"{name} check of {self.root}",
            head + (f"   expected ({self.expected_source})" if self.expected else ""),
        ]
        for split, c in self.counts.items():
            row = f"{split:<6} {c['videos']:>8} {c['frames']:>9} {c['masks']:>9}"
            if self.expected:
                exp = self.expected.get(split, {})
                row += f"   {exp.get('videos', '-')} videos, {exp.get('frames', '-')} frames"
            lines.append(row)
        for p in self.problems[:max_problems]:
            lines.append(f"{p.severity.upper():<7} {p.path}: {p.message}")
        if len(self.problems) > max_problems:
            lines.append(
                f"... {len(self.problems) - max_problems} more problems (use --json for all)"
            )
        if self.refused:
            listed = ", ".join(self.refused[:20]) + (" ..." if len(self.refused) > 20 else "")
            lines.append(
                f"REFUSED {len(self.refused)} video(s), their masks do not pair with their "
                f"frames: {listed}. Training and eval stop on them (data.bad_videos: "
                "refuse, the default); data.bad_videos: skip leaves them out"
            )
        verdict = "OK" if self.ok else "NOT USABLE"
        lines.append(f"{verdict}: {len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        return "\n".join(lines)


def _jpeg_segments(data: bytes):
    """`(marker, payload start, payload end)` of each header segment of a JPEG, up to its first
    scan (the segment lengths are walked; fill bytes and stand-alone markers are skipped)."""
    i = 2
    while i + 3 < len(data):
        if data[i] != 0xFF:
            return
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            i += 2
            continue
        (length,) = struct.unpack(">H", data[i + 2 : i + 4])
        yield marker, i + 4, min(i + 2 + length, len(data))
        if marker == 0xDA:
            return
        i += 2 + length


def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(H, W) as stored, from a JPEG's SOF marker, or None if the header is not a valid JPEG."""
    if data[:2] != b"\xff\xd8":
        return None
    for marker, start, _ in _jpeg_segments(data):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if start + 5 > len(data):
                return None
            h, w = struct.unpack(">HH", data[start + 1 : start + 5])
            return h, w
    return None


def jpeg_orientation(data: bytes) -> int:
    """The EXIF orientation (1..8) of a JPEG from its APP1 segment; 1 when absent or unreadable.

    5..8 turn the picture by 90 degrees, so a reader that applies the tag (OpenCV's
    `IMREAD_COLOR`, hence `vidseg.io.images.read_rgb`) gives a frame with H and W swapped.
    """
    if data[:2] != b"\xff\xd8":
        return 1
    for marker, start, end in _jpeg_segments(data):
        if marker != 0xE1 or data[start : start + 6] != b"Exif\x00\x00":
            continue
        tiff = data[start + 6 : end]
        order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
        if order is None or len(tiff) < 8:
            return 1
        (ifd,) = struct.unpack(order + "I", tiff[4:8])
        count = struct.unpack(order + "H", tiff[ifd : ifd + 2])[0] if ifd + 2 <= len(tiff) else 0
        for k in range(count):
            entry = tiff[ifd + 2 + 12 * k : ifd + 14 + 12 * k]
            if len(entry) < 12:
                return 1
            tag, kind = struct.unpack(order + "HH", entry[:4])
            if tag == 0x0112 and kind == 3:  # Orientation, a SHORT in the value field's start
                (value,) = struct.unpack(order + "H", entry[8:10])
                return value if 1 <= value <= 8 else 1
        return 1
    return 1


def frame_size(path: str, decode: bool) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """Return (size, error, warning) for one frame file.

    The size is the upright `(H, W)` the readers give (`vidseg.io.images.read_rgb` applies the
    EXIF orientation), since masks are drawn on the upright frame; from a JPEG's header it is
    the stored size, swapped for the orientations 5..8.
    """
    with open(path, "rb") as f:
        data = f.read()
    if not data:
        return None, "empty file (0 bytes)", None
    if not decode and path.lower().endswith((".jpg", ".jpeg")):
        size = jpeg_size(data)
        if size is None:
            return None, "not a readable JPEG (bad header)", None
        if jpeg_orientation(data) >= 5:
            size = size[::-1]
        # encoders may pad after the end-of-image marker, so look near the end only
        warning = None if b"\xff\xd9" in data[-64:] else "no JPEG end marker: possibly truncated"
        return size, None, warning
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None:
        return None, "cannot be decoded", None
    return img.shape[:2], None, None


def _check_video(root: str, split: str, name: str, decode_frames: bool):
    """Check one video folder; returns (frames, masks, problems, refused).

    `refused` is True when frames and masks do not pair up, so training refuses the video.
    """
    problems: list[Problem] = []
    video_dir = os.path.join(root, "data", name)
    origin_dir, mask_dir = os.path.join(video_dir, "origin"), os.path.join(video_dir, "mask")
    if not os.path.isdir(video_dir):
        return (
            0,
            0,
            [Problem("error", video_dir, f"video listed in {split}.txt has no folder")],
            True,
        )
    frames = {
        os.path.splitext(n)[0]: os.path.join(origin_dir, n)
        for n in _listdir(origin_dir)
        if os.path.splitext(n)[1].lower() in FRAME_EXTENSIONS
    }
    masks = {
        os.path.splitext(n)[0]: os.path.join(mask_dir, n)
        for n in _listdir(mask_dir)
        if n.lower().endswith(".png")
    }
    if not frames:
        problems.append(Problem("error", origin_dir, "no frames (expected origin/<8 digits>.jpg)"))
    needs_masks = split != "test" or bool(masks)
    sizes = {}
    for stem in sorted(frames):
        size, error, warning = frame_size(frames[stem], decode_frames)
        if error:
            problems.append(Problem("error", frames[stem], error))
        if warning:
            problems.append(Problem("warning", frames[stem], warning))
        sizes[stem] = size
        if needs_masks and stem not in masks:
            problems.append(
                Problem(
                    "error",
                    frames[stem],
                    f"frame without mask (expected {os.path.join(mask_dir, stem + '.png')})",
                )
            )
    for stem in sorted(masks):
        path = masks[stem]
        if stem not in frames:
            problems.append(Problem("error", path, "mask without frame"))
        try:
            mask = read_mask(path)
        except (UnreadableImageError, ValueError, OSError) as exc:
            problems.append(Problem("error", path, str(exc).replace(f"mask {path} ", "").strip()))
            continue
        bad = invalid_raw_values(mask)
        if bad.size:
            problems.append(
                Problem(
                    "error",
                    path,
                    f"values {bad[:10].tolist()} outside {{0..{NUM_RAW_CLASSES}, 255}}",
                )
            )
        size = sizes.get(stem)
        if size is not None and tuple(mask.shape) != tuple(size):
            problems.append(
                Problem(
                    "error",
                    path,
                    f"mask is {mask.shape[1]}x{mask.shape[0]} but the "
                    f"frame is {size[1]}x{size[0]} (WxH)",
                )
            )
    unpaired = ("no frames", "frame without mask", "mask without frame")
    refused = any(p.message.startswith(unpaired) for p in problems)
    return len(frames), len(masks), problems, refused


def _listdir(folder: str) -> list[str]:
    return os.listdir(folder) if os.path.isdir(folder) else []


def _expected_from_manifest(root: str) -> dict | None:
    """Expected counts from a synthetic root's manifest, whatever its exact nesting."""
    path = os.path.join(root, MANIFEST)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        manifest = json.load(f)
    for key in ("expected", "counts", "splits"):
        if isinstance(manifest.get(key), dict):
            manifest = manifest[key]
            break
    out = {}
    for split in SPLITS:
        entry = manifest.get(split)
        if isinstance(entry, dict):
            found = {k: entry.get(k, entry.get(f"num_{k}")) for k in ("videos", "frames", "masks")}
            if isinstance(found["videos"], list):
                found["videos"] = len(found["videos"])
            out[split] = {k: v for k, v in found.items() if isinstance(v, int)}
    return out or None


def check_vspw(
    root: str | os.PathLike,
    splits=SPLITS,
    expected: dict | None = None,
    decode_frames: bool = False,
    workers: int | None = None,
) -> CheckReport:
    """Check a VSPW root and return a report (`report.ok` False when the layout is unusable).

    Args:
        root: folder holding `data/`, the split files and `label_num_dic_final.json`.
        splits: splits to check.
        expected: split -> {"videos": n, "frames": n}; default: the root's `vidseg_synthetic.json`
            manifest if present, else the official VSPW counts. Count differences are warnings.
        decode_frames: fully decode every frame instead of validating JPEG headers (slower).
        workers: thread-pool size (default: 2 x CPU count, at most 16).
    """
    root = os.fspath(root)
    report = CheckReport(root=root)
    if not os.path.isdir(os.path.join(root, "data")):
        report.problems.append(
            Problem(
                "error",
                os.path.join(root, "data"),
                "missing: not a VSPW root (expected data/<video>/origin, mask)",
            )
        )
        return report
    if expected is None:
        expected = _expected_from_manifest(root)
        if expected is not None:
            report.expected_source = MANIFEST
    else:
        report.expected_source = "given"
    report.expected = expected if expected is not None else OFFICIAL_COUNTS
    try:
        load_class_names(root)
    except (FileNotFoundError, ValueError) as exc:
        report.problems.append(Problem("error", os.path.join(root, CLASS_FILE), str(exc)))
    split_videos: dict[str, list[str]] = {}
    for split in splits:
        split_file = os.path.join(root, f"{split}.txt")
        if not os.path.isfile(split_file):
            report.problems.append(Problem("error", split_file, "split file missing"))
            continue
        with open(split_file, encoding="utf-8") as f:
            names = [line.strip() for line in f if line.strip()]
        report.counts[split] = {"videos": len(names), "frames": 0, "masks": 0}
        split_videos[split] = names
    # a video listed in several splits is checked once (and flagged: it leaks between splits)
    owner: dict[str, str] = {}
    for split, names in split_videos.items():
        for name in names:
            if name in owner:
                report.problems.append(
                    Problem(
                        "warning",
                        os.path.join(root, f"{split}.txt"),
                        f"video {name} is also listed in {owner[name]}.txt",
                    )
                )
            else:
                owner[name] = split
    workers = workers or min(16, 2 * (os.cpu_count() or 1))
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = dict(
            zip(
                owner,
                pool.map(lambda name: _check_video(root, owner[name], name, decode_frames), owner),
            )
        )
    for name, (_, _, problems, refused) in results.items():
        report.problems.extend(problems)
        if refused:
            report.refused.append(name)
    for split, names in split_videos.items():
        for name in names:
            report.counts[split]["frames"] += results[name][0]
            report.counts[split]["masks"] += results[name][1]
    for split, counts in report.counts.items():
        exp = report.expected.get(split, {})
        for key in ("videos", "frames", "masks"):
            if key in exp and exp[key] != counts[key]:
                report.problems.append(
                    Problem(
                        "warning",
                        os.path.join(root, f"{split}.txt"),
                        f"{counts[key]} {key} in split {split}, expected {exp[key]} ({report.expected_source})",
                    )
                )
    return report
