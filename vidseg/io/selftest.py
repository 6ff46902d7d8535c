"""Optional native dependencies are tested on this machine before they are used.

decord (fast random access), OpenCV's GUI (the live window) and CUDA can be installed and still
not work: decord 3.4.0 returns 4-channel frames for some frame widths, depending on the CPU's
SIMD alignment (a 48-pixel-wide frame on AVX2, a 96-pixel-wide one on AVX-512). Each check here
returns a `Decision` (what is used and why); `vidseg info` prints them all.

The video reader for random access is decord only when its self-test passes on a tiny H.264
clip written with PyAV; otherwise PyAV with seeking. `VIDSEG_VIDEO_READER=pyav|decord|auto`
overrides the choice (`decord` failing its self-test is then an error, not a silent fallback).
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass

import numpy as np

from vidseg.errors import VidsegError

log = logging.getLogger(__name__)

READER_ENV = "VIDSEG_VIDEO_READER"
READERS = ("auto", "pyav", "decord")
# Observed: decord 3.4.0 pads a row to the SIMD width (32 pixels with AVX2, 64 with AVX-512) and
# reports 4 channels where the padded row is a whole multiple of the width; 48 pixels wide fails
# under both (96 wide only under AVX-512), so the test clip is 48 wide.
TEST_SIZE = (32, 48)
TEST_FRAMES = 6
# Mean |decoded - written| per frame of flat colour blocks through yuv420p H.264 at crf 12 is
# about 2.5 (chroma subsampling at block edges); a misread layout is tens.
TEST_TOLERANCE = 6.0
# Hides the Qt warnings opencv-python's Qt prints on every window (fonts it does not ship);
# Qt's real failures (e.g. "could not connect to display") have their own category and still show.
QT_QUIET = "default.warning=false"
WINDOW_PROBE_TIMEOUT_S = 20.0
_WINDOW_PROBE = (
    "import cv2, numpy as np\n"
    "cv2.imshow('vidseg-probe', np.zeros((8, 8, 3), np.uint8))\n"
    "cv2.waitKey(1)\n"
    "cv2.destroyAllWindows()\n"
    "print('ok')\n"
)


class SelfTestError(VidsegError, RuntimeError):
    """A dependency was required (by argument or environment) but failed its self-test."""


@dataclass(frozen=True)
class Decision:
    """What is used and why, e.g. `Decision("pyav", "decord 3.4.0 returned 4 channels")`."""

    choice: str
    reason: str
    label: str = ""

    def __str__(self) -> str:
        return f"{self.label or self.choice} ({self.reason})"

    def as_dict(self) -> dict:
        return {"choice": self.choice, "reason": self.reason, "summary": str(self)}


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= 200 else text[:197] + "..."


def selftest_frame(k: int, size: tuple[int, int] = TEST_SIZE) -> np.ndarray:
    """Frame k of the self-test clip: four flat colour blocks, different per frame. (H, W, 3)."""
    h, w = size
    palette = np.array(
        [
            [230, 30, 30],
            [30, 200, 40],
            [40, 50, 220],
            [240, 240, 240],
            [20, 20, 20],
            [200, 120, 40],
            [120, 40, 200],
        ],
        np.uint8,
    )
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[: h // 2, : w // 2] = palette[k % 7]
    rgb[: h // 2, w // 2 :] = palette[(k + 1) % 7]
    rgb[h // 2 :, : w // 2] = palette[(k + 3) % 7]
    rgb[h // 2 :, w // 2 :] = palette[(k + 5) % 7]
    return rgb


def write_test_clip(
    path: str, size: tuple[int, int] = TEST_SIZE, frames: int = TEST_FRAMES, gop: int = 2
) -> list[np.ndarray]:
    """Write an ordinary yuv420p H.264 mp4 of `selftest_frame` frames; returns what was written."""
    import av

    written = [selftest_frame(k, size) for k in range(frames)]
    with av.open(path, "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "12", "g": str(gop)})
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for rgb in written:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        out.mux(stream.encode(None))
    return written


def _check_decord(decord, path: str, written: list[np.ndarray]) -> str | None:
    """None if decord reads the clip right, else why not (one line)."""
    version = getattr(decord, "__version__", "?")
    h, w = written[0].shape[:2]
    reader = decord.VideoReader(path, ctx=decord.cpu(0), num_threads=1)
    if len(reader) != len(written):
        return f"decord {version} counted {len(reader)} frames in a {len(written)}-frame test clip"
    singles = []
    for k in range(len(written)):
        rgb = np.asarray(reader[k].asnumpy())
        if rgb.shape != (h, w, 3):
            channels = rgb.shape[2] if rgb.ndim == 3 else "no"
            return (
                f"decord {version} returned {channels} channels for a {h}x{w} yuv420p H.264 "
                f"frame (shape {tuple(rgb.shape)})"
            )
        error = float(np.abs(rgb.astype(np.int16) - written[k]).mean())
        if error > TEST_TOLERANCE:
            return (
                f"decord {version} returned wrong pixels for frame {k} of a {h}x{w} test clip "
                f"(mean error {error:.1f}, tolerance {TEST_TOLERANCE})"
            )
        singles.append(rgb)
    indices = [1, 2, len(written) - 1]
    try:
        batch = np.asarray(reader.get_batch(indices).asnumpy())
    except Exception as exc:  # noqa: BLE001 - DECORDError is not exported consistently
        return f"decord {version} get_batch failed on a {h}x{w} test clip ({_first_line(exc)})"
    if batch.shape != (len(indices), h, w, 3):
        return f"decord {version} get_batch returned shape {tuple(batch.shape)} for {indices}"
    if any(not np.array_equal(batch[n], singles[i]) for n, i in enumerate(indices)):
        return f"decord {version} get_batch{indices} differs from single-frame reads"
    return None


def decord_self_test() -> tuple[bool, str]:
    """Run decord's self-test now (uncached).

    Returns:
        `(passed, reason)`: reason is "self-test passed" or one line saying what went wrong.
    """
    try:
        import decord
    except ImportError:
        return False, "not installed"
    except Exception as exc:  # noqa: BLE001 - a wheel may fail at import (missing libraries)
        return False, f"import failed ({type(exc).__name__}: {_first_line(exc)})"
    with tempfile.TemporaryDirectory(prefix="vidseg-selftest-") as tmp:
        path = os.path.join(tmp, "selftest.mp4")
        try:
            written = write_test_clip(path)
        except Exception as exc:  # noqa: BLE001 - no reference clip: do not trust decord
            why = _first_line(exc)
            return False, f"self-test could not run: PyAV could not write H.264 ({why})"
        try:
            problem = _check_decord(decord, path, written)
        except Exception as exc:  # noqa: BLE001
            version = getattr(decord, "__version__", "?")
            problem = f"decord {version} failed on a test clip ({_first_line(exc)})"
    return (False, problem) if problem else (True, "self-test passed")


_lock = threading.Lock()
_decord_result: tuple[bool, str] | None = None
_warned = False
_window_results: dict[tuple[str, str], str | None] = {}


def decord_status() -> tuple[bool, str]:
    """`decord_self_test()`, run once per process."""
    global _decord_result
    with _lock:
        if _decord_result is None:
            _decord_result = decord_self_test()
            log.debug("decord self-test: %s", _decord_result)
        return _decord_result


def reset() -> None:
    """Forget the cached self-test results (tests; after installing another decord)."""
    global _decord_result, _warned
    with _lock:
        _decord_result, _warned = None, False
        _window_results.clear()


def _pyav(reason: str) -> Decision:
    return Decision("pyav", reason, "PyAV with seeking")


def _pyav_instead_of_decord(reason: str) -> Decision:
    return _pyav(reason if reason.startswith("decord") else f"decord: {reason}")


def video_reader(requested: str = "auto", warn: bool = True) -> Decision:
    """Choose the random-access video reader.

    Args:
        requested: "pyav", "decord" (must pass the self-test) or "auto" (`$VIDSEG_VIDEO_READER`
            if set, else decord if it passes its self-test, else PyAV).
        warn: log once per process, as a warning, why decord is not used (when installed).

    Returns:
        `Decision` with choice "decord" or "pyav" and the reason.

    Raises:
        ValueError: `requested` or `$VIDSEG_VIDEO_READER` is not one of pyav, decord, auto.
        SelfTestError: decord was required but fails its self-test (the message says why).
    """
    global _warned
    if requested not in READERS:
        raise ValueError(f"video reader {requested!r}; expected one of {', '.join(READERS)}")
    how = "requested"
    if requested == "auto":
        raw = os.environ.get(READER_ENV, "").strip()
        if raw.lower() not in ("",) + READERS:
            raise ValueError(f"{READER_ENV}={raw!r}; expected pyav, decord or auto")
        requested = raw.lower() or "auto"
        how = f"set by {READER_ENV}={requested}"
    if requested == "pyav":
        return _pyav(how)
    ok, reason = decord_status()
    if requested == "decord":
        if not ok:
            fix = f"set {READER_ENV}=auto or pyav" if how != "requested" else "use 'auto' or 'pyav'"
            raise SelfTestError(
                f"decord is {how} but fails its self-test on this machine: "
                f"{reason}; {fix} (PyAV with seeking reads every file)"
            )
        return Decision("decord", f"self-test passed, {how}")
    if ok:
        return Decision("decord", reason)
    with _lock:
        warn, _warned = warn and not _warned and reason != "not installed", _warned or warn
    if warn:
        log.warning("decord is not used: %s; reading video files with PyAV (seeking)", reason)
    return _pyav_instead_of_decord(reason)


def opencv_gui_backend() -> str:
    """OpenCV's GUI backend as its build information names it ("NONE" in a headless build)."""
    import cv2

    for line in cv2.getBuildInformation().splitlines():
        if line.strip().startswith("GUI:"):
            return line.split(":", 1)[1].strip()
    return "UNKNOWN"


def _window_probe() -> str | None:
    """Open and close a tiny window in a child process: None if that worked, else why not."""
    env = dict(os.environ, QT_LOGGING_RULES=os.environ.get("QT_LOGGING_RULES", QT_QUIET))
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _WINDOW_PROBE],
            capture_output=True,
            text=True,
            env=env,
            timeout=WINDOW_PROBE_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"a test window did not open within {WINDOW_PROBE_TIMEOUT_S:.0f} s"
    if proc.returncode == 0 and proc.stdout.strip() == "ok":
        return None
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    return f"a test window failed to open ({lines[0] if lines else f'exit {proc.returncode}'})"


def live_window() -> Decision:
    """Can `cv2.imshow` work here: a GUI build, a display, and a test window that opens.

    The test window opens in a child process, once per process and display, because OpenCV's
    Qt backend aborts the whole process (no exception) when the display cannot be reached.
    """
    try:
        backend = opencv_gui_backend()
    except Exception as exc:  # noqa: BLE001 - a broken cv2 import is a reason, not a crash
        return Decision("unavailable", f"OpenCV does not import ({_first_line(exc)})")
    if backend == "NONE":
        return Decision("unavailable", "OpenCV is built without GUI support (a headless build)")
    display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
    if sys.platform.startswith("linux") and not display:
        return Decision(
            "unavailable",
            f"no display: DISPLAY and WAYLAND_DISPLAY are unset (OpenCV GUI {backend} present)",
        )
    key = (backend, display or "")
    with _lock:
        if key not in _window_results:
            _window_results[key] = _window_probe()
        problem = _window_results[key]
    where = f"OpenCV GUI {backend}" + (f", display {display}" if display else "")
    if problem is not None:
        return Decision("unavailable", f"{where}: {problem}")
    return Decision("available", f"{where}, a test window opened")


def cuda_device() -> Decision:
    """ "cuda" only if torch sees a GPU and a tiny convolution actually runs on it, else "cpu"."""
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda
        if built is None:
            return Decision("cpu", f"torch {torch.__version__} is built without CUDA")
        return Decision(
            "cpu",
            f"no usable CUDA GPU or driver; torch {torch.__version__} is built for CUDA {built}",
        )
    try:
        name = torch.cuda.get_device_name(0)
        # small integers: exact under TF32; FFT/Winograd rounding stays far below 0.01
        x = (torch.arange(2 * 3 * 8 * 8) % 7).float().reshape(2, 3, 8, 8)
        w = torch.ones(4, 3, 3, 3)
        y = torch.nn.functional.conv2d(x.cuda(), w.cuda(), padding=1).cpu()
        if not torch.allclose(y, torch.nn.functional.conv2d(x, w, padding=1), rtol=0, atol=0.01):
            return Decision("cpu", f"a test convolution on {name} gave wrong numbers")
    except Exception as exc:  # noqa: BLE001 - any CUDA failure means: do not use the GPU
        why = _first_line(exc)
        return Decision("cpu", f"torch sees a GPU but a test convolution failed ({why})")
    return Decision("cuda", f"{name}, test convolution ran")


def report() -> dict[str, Decision]:
    """Every decision, for `vidseg info`: video reader, live window, compute device."""
    try:
        reader = video_reader("auto", warn=False)  # the decision is shown, not logged
    except (ValueError, SelfTestError) as exc:
        reader = Decision("error", str(exc))
    return {"video_reader": reader, "live_window": live_window(), "device": cuda_device()}
