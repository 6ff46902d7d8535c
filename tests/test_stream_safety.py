"""`vidseg stream` never loses written work: SIGKILL, a full disk, SIGINT, an unwritable --json.

Light config, random weights, 48x64 videos at 5 fps (one overlay fragment = 1 s = 5 frames),
model input short side 32.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import cv2
import pytest
from test_sinks import FullDiskFile

from tests._video_fixtures import count_frames, write_video
from vidseg.cli import main

ROOT = Path(__file__).resolve().parents[1]
LIGHT = str(ROOT / "configs" / "synthetic" / "stream_light.yaml")
FPS = 5
FAST = ("--random-init", "--quiet", "--short-side", "32")
# Runs `python -m vidseg ARGS` under a file size limit. Python already ignores SIGXFSZ (so that
# write() fails with EFBIG instead of the signal killing the process); set here to say so.
_LIMITED = (
    "import resource, runpy, signal, sys; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); "
    "limit = int(sys.argv.pop(1)); "
    "resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)); "
    "sys.argv[0] = 'vidseg'; runpy.run_module('vidseg', run_name='__main__')"
)


def env() -> dict:
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")


def decodable(path: Path) -> tuple[int, float, tuple[int, int]]:
    """Frames PyAV decodes before the first error, the container's duration (s), frame size."""
    n, size = 0, (0, 0)
    with av.open(str(path)) as container:
        duration = (container.duration or 0) / 1e6
        try:
            for frame in container.decode(video=0):
                n, size = n + 1, (frame.height, frame.width)
        except av.FFmpegError:
            pass  # a fragment cut by the kill: the frames before it count
    return n, duration, size


def pngs(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png")) if folder.is_dir() else []


@pytest.fixture(scope="module")
def long_video(tmp_path_factory) -> Path:
    return write_video(
        tmp_path_factory.mktemp("vid") / "long.mp4", n=300, h=48, w=64, fps=FPS, noise=True
    )


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return write_video(
        tmp_path_factory.mktemp("vid") / "clip.mp4", n=30, h=48, w=64, fps=FPS, noise=True
    )


def test_sigkill_leaves_playable_fragments_and_whole_pngs(long_video, tmp_path):
    out = tmp_path / "out"
    mp4, labels = out / "long_overlay.mp4", out / "labels" / "long"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidseg",
            "stream",
            LIGHT,
            str(long_video),
            *FAST,
            "--out",
            str(out),
            "--labels",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    sizes = set()  # the file grows only when a fragment is flushed (after the header)
    deadline = time.monotonic() + 120
    try:
        while len(sizes) < 3 and time.monotonic() < deadline and proc.poll() is None:
            if mp4.exists():
                sizes.add(mp4.stat().st_size)
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1]
        assert len(sizes) >= 3, f"the mp4 did not grow fragment by fragment: sizes {sizes}"
        proc.kill()
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    done = pngs(labels)
    n, duration, size = decodable(mp4)
    # Lost: the unflushed fragment (5 frames), the encoder's lookahead (about 8 frames at this
    # size; 12-13 frames were lost in all, measured) and at most the writer queue (8).
    assert n >= 2 * FPS and n >= len(done) - (FPS + 12 + 8), (n, len(done))
    assert duration == pytest.approx(n / FPS, abs=1.5 / FPS) and size == (48, 64)
    for path in done:  # atomic PNGs: every one under its final name is whole
        img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        assert img is not None and img.shape == (48, 64), path
    assert len(list(labels.glob(".*.tmp"))) <= 1


def test_file_size_limit_stops_with_exit_3_and_playable_output(long_video, tmp_path):
    out, summary_path, limit = tmp_path / "out", tmp_path / "s.json", 20_000
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            _LIMITED,
            str(limit),
            "stream",
            LIGHT,
            str(long_video),
            *FAST,
            "--out",
            str(out),
            "--labels",
            "--json",
            str(summary_path),
        ],
        capture_output=True,
        text=True,
        env=env(),
        timeout=300,
    )
    assert proc.returncode == 3, proc.stderr
    mp4 = out / "long_overlay.mp4"
    last = proc.stderr.strip().splitlines()[-1]
    assert str(mp4) in last and "File too large [EFBIG]" in last and "Traceback" not in proc.stderr
    summary = json.loads(summary_path.read_text())
    assert summary["stopped_early"] and str(mp4) in summary["error"]
    assert 0 < summary["frames"] < 300  # the model loop stopped at the failure
    written = summary["frames_written"]
    n, _, _ = decodable(mp4)
    assert mp4.stat().st_size <= limit and n == written["overlay"] > 0
    assert count_frames(mp4)[0] == n  # decodes to the end without an error
    # the frame whose overlay write failed got no PNG either: the run stopped there
    assert written["labels"] == summary["frames"] - 1 == len(pngs(out / "labels" / "long"))


def test_label_png_full_disk_stops_cleanly(clip, tmp_path, monkeypatch):
    """ENOSPC half-way through the 4th label PNG: the run stops, every output stays valid."""
    import vidseg.io.sinks as sinks
    from vidseg.engine.inference import load_inference_model
    from vidseg.engine.stream import StreamRunner
    from vidseg.engine.stream_outputs import StreamOutputs
    from vidseg.io.sources import open_source

    opened = []

    def open_until_full(path, mode="r", *args, **kwargs):
        f = open(path, mode, *args, **kwargs)
        opened.append(path)
        return FullDiskFile(f) if len(opened) == 4 else f

    monkeypatch.setattr(sinks, "open", open_until_full, raising=False)
    cfg, model = load_inference_model(LIGHT, random_init=True)
    overlay = sinks.OverlayVideoWriter(tmp_path / "o.mp4", fps=FPS, threaded=True)
    labels = sinks.LabelPngWriter(tmp_path / "labels")
    outputs = StreamOutputs("clip", overlay, labels)
    runner = StreamRunner(model, cfg, short_side=32, outputs=outputs)
    summary = runner.run(open_source(str(clip)))
    assert summary.stopped_early and summary.frames == 4
    assert str(tmp_path / "labels" / "clip" / "000003.png") in summary.error
    assert "No space left on device [ENOSPC]" in summary.error
    assert summary.frames_written == {"overlay": 4, "labels": 3}
    assert count_frames(tmp_path / "o.mp4") == (4, (48, 64))
    # the cut temporary file is gone; no PNG is half written
    assert sorted(p.name for p in (tmp_path / "labels" / "clip").iterdir()) == [
        "000000.png",
        "000001.png",
        "000002.png",
    ]


class FullDiskContainer:
    """An output container on a full disk: ``mux`` (every fragment) or ``close`` (the last one)."""

    def __init__(self, container, fail: str):
        self._container, self._fail = container, fail

    def __getattr__(self, name):
        return getattr(self._container, name)

    def mux(self, packets):
        if self._fail == "mux" and packets:
            raise av.error.OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._container.mux(packets)

    def close(self):
        if self._fail == "close":
            self._fail = None  # the writer closes again after the failure
            raise av.error.OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._container.close()


def fill_the_disk(monkeypatch, fail: str) -> None:
    real_open = av.open

    def open_full(file, mode="r", **kwargs):
        container = real_open(file, mode, **kwargs)
        return FullDiskContainer(container, fail) if mode == "w" else container

    monkeypatch.setattr(av, "open", open_full)


def test_overlay_full_disk_from_the_start_exit_2(clip, tmp_path, monkeypatch, capsys):
    """Nothing written at all (the disk was full from the first fragment): exit 2, no mp4."""
    fill_the_disk(monkeypatch, "mux")
    out = tmp_path / "out"
    assert (
        main(
            [
                "stream",
                LIGHT,
                str(clip),
                *FAST,
                "--out",
                str(out),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 2
    )
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("vidseg stream: error: ") and "nothing written" in last
    assert str(out / "clip_overlay.mp4") in last and "No space left on device" in last
    assert json.loads((tmp_path / "s.json").read_text())["frames_written"] == {"overlay": 0}
    assert not (out / "clip_overlay.mp4").exists()


def test_full_disk_at_the_last_fragment_exit_3(clip, tmp_path, monkeypatch, capsys):
    """Every frame processed, the final fragment fails at close: the earlier fragments stay."""
    fill_the_disk(monkeypatch, "close")
    out = tmp_path / "out"
    mp4 = out / "clip_overlay.mp4"
    assert (
        main(
            [
                "stream",
                LIGHT,
                str(clip),
                *FAST,
                "--out",
                str(out),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
        == 3
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("vidseg stream: partial: ") and str(mp4) in err[-1]
    assert "No space left on device [ENOSPC]" in err[-1]
    assert not any("closing" in line for line in err)  # reported once, not logged as well
    summary = json.loads((tmp_path / "s.json").read_text())
    kept = summary["frames_written"]["overlay"]
    assert summary["frames"] == 30 and summary["stopped_early"] and 0 < kept < 30
    assert count_frames(mp4) == (kept, (48, 64))


def test_full_disk_for_the_json_prints_the_summary_on_stderr(clip, tmp_path, capsys, monkeypatch):
    import vidseg.commands.stream_io as command

    def full_disk_open(path, mode="r", *args, **kwargs):
        return FullDiskFile(open(path, mode, *args, **kwargs))

    monkeypatch.setattr(command, "open", full_disk_open, raising=False)
    out, target = tmp_path / "out", tmp_path / "s.json"
    assert (
        main(
            [
                "stream",
                LIGHT,
                str(clip),
                *FAST,
                "--out",
                str(out),
                "--max-frames",
                "6",
                "--json",
                str(target),
            ]
        )
        == 3
    )
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "--json" in x)
    assert str(target) in line and "No space left on device" in line
    assert not target.exists() and list(tmp_path.glob("s.json*")) == []  # no cut JSON file
    summary = json.loads(err[err.index("{") : err.rindex("}") + 1])
    assert summary["frames"] == 6 and summary["frames_written"] == {"overlay": 6}
    assert count_frames(out / "clip_overlay.mp4")[0] == 6


def test_sigint_exit_3_with_complete_outputs(long_video, tmp_path):
    out, summary_path = tmp_path / "out", tmp_path / "s.json"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidseg",
            "stream",
            LIGHT,
            str(long_video),
            *FAST,
            "--out",
            str(out),
            "--labels",
            "--json",
            str(summary_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
    )
    labels = out / "labels" / "long"
    deadline = time.monotonic() + 120
    try:
        while len(pngs(labels)) < 8 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 3, stderr
    summary = json.loads(summary_path.read_text())
    assert "interrupted (received SIGINT)" in summary["error"]
    n = summary["frames"]
    assert summary["frames_written"] == {"overlay": n, "labels": n}
    assert count_frames(out / "long_overlay.mp4") == (n, (48, 64)) and len(pngs(labels)) == n
