"""Presenting a scorer result: a readable table and a strict-JSON `metrics.json`."""

from __future__ import annotations

import json
import math
import os

import numpy as np


def _pct(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return f"{100.0 * value:6.2f}"


def format_table(result: dict, per_class: bool = False) -> str:
    """A readable table of a `result()` dict, metrics as percentages."""
    windows = sorted(int(k[3:]) for k in result if k.startswith("mvc") and k[3:].isdigit())
    rows = [
        ("pixel accuracy", result["pixel_acc"]),
        ("mean class accuracy", result["mean_class_acc"]),
        ("mIoU (VSPW: classes in GT)", result["miou"]),
        ("mIoU (all classes, mmseg-style)", result["miou_all_classes"]),
    ]
    last = " +last" if result.get("include_last_window") else ""
    for c in windows:
        n = result.get("mvc_windows", {}).get(f"mvc{c}", "?")
        rows.append((f"mVC_{c} ({n} windows{last})", result[f"mvc{c}"]))
    if result.get("tc_method"):
        rows.append(
            (
                f"{result['tc_method']} ({result.get('tc_videos', '?')} videos, "
                f"{result.get('tc_pairs', '?')} pairs)",
                result.get("tc"),
            )
        )
    width = max(len(r[0]) for r in rows)
    lines = [f"{'metric':<{width}}  {'%':>6}", "-" * (width + 8)]
    lines += [f"{label:<{width}}  {_pct(value):>6}" for label, value in rows]
    lines.append("-" * (width + 8))
    lines.append(
        f"{result['videos']} videos, {result['frames']} frames scored, "
        f"{result.get('classes_present', '?')} classes in GT, "
        f"{result.get('missing_predictions', 0)} missing predictions"
    )
    if per_class and result.get("per_class"):
        lines.append("")
        lines.append(f"{'id':>3}  {'class':<24} {'IoU %':>6} {'acc %':>6} {'GT pixels':>12}")
        for row in result["per_class"]:
            lines.append(
                f"{row['id']:>3}  {row['name'][:24]:<24} {_pct(row['iou']):>6} "
                f"{_pct(row['acc']):>6} {row['gt_pixels']:>12}"
            )
    return "\n".join(lines)


def _jsonable(obj):
    """NaN -> null and numpy scalars -> Python, so metrics.json is strict JSON."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def write_metrics(result: dict, path: str | os.PathLike) -> None:
    """Write a scorer result as JSON (NaN -> null), atomically (temp file, then rename)."""
    path = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(_jsonable(result), f, indent=2)
        f.write("\n")
    os.replace(tmp, path)
