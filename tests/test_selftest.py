"""Self-tests of optional dependencies: decord (fake modules), live window, CUDA, `vidseg info`."""

from __future__ import annotations

import json
import logging
import re
import sys
import types

import av
import numpy as np
import pytest
import torch
from _video_fixtures import write_video

from vidseg.io import selftest
from vidseg.io.selftest import READER_ENV, Decision, SelfTestError, video_reader

BATCH_ERROR = (
    "[12:00:00] /project/src/runtime/ndarray.cc:171: Check failed: from_size == "
    "to_size (6144 vs. 4608) DECORDArrayCopyFromTo: The size must exactly match\n"
    "Stack trace:\n  0x1"
)


class FakeArray:
    def __init__(self, array: np.ndarray):
        self.array, self.shape = array, array.shape

    def asnumpy(self) -> np.ndarray:
        return self.array


def fake_decord(mode: str, counter: list | None = None) -> types.ModuleType:
    """A module standing in for decord; frames come from PyAV, then `mode` breaks them.

    Modes: good, four_channels, four_channels_if_96_wide, batch_raises, wrong_values,
    batch_differs.
    """
    module = types.ModuleType("decord")
    module.__version__ = "9.9-fake"
    module.cpu = lambda i=0: f"cpu({i})"

    class VideoReader:
        def __init__(self, path, ctx=None, num_threads=0):
            if counter is not None:
                counter.append(path)
            with av.open(str(path)) as container:
                self.frames = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
            if mode == "wrong_values":
                self.frames = [255 - f for f in self.frames]
            width = self.frames[0].shape[1]
            self.four = mode == "four_channels" or (mode.endswith("96_wide") and width == 96)

        def __len__(self):
            return len(self.frames)

        def _frame(self, i):
            rgb = self.frames[i]
            return np.dstack([rgb, np.full(rgb.shape[:2], 255, np.uint8)]) if self.four else rgb

        def __getitem__(self, i):
            return FakeArray(self._frame(i))

        def get_batch(self, indices):
            if mode == "batch_raises" or self.four:
                raise RuntimeError(BATCH_ERROR)
            batch = np.stack([self._frame(i) for i in indices])
            if mode == "batch_differs":
                batch[0] ^= 1
            return FakeArray(batch)

        def seek(self, i):
            pass

        def get_avg_fps(self):
            return 25.0

        def get_frame_timestamp(self, i):
            return np.array([i / 25.0, (i + 1) / 25.0])

    module.VideoReader = VideoReader
    return module


@pytest.fixture
def use_decord(monkeypatch):
    """`use_decord(mode)` installs a fake decord (None: not installed) with a fresh self-test."""
    monkeypatch.delenv(READER_ENV, raising=False)

    def install(mode: str | None, counter: list | None = None) -> None:
        module = None if mode is None else fake_decord(mode, counter)
        monkeypatch.setitem(sys.modules, "decord", module)
        selftest.reset()

    yield install
    selftest.reset()  # the next user re-tests the real decord


def test_working_decord_is_chosen(use_decord):
    use_decord("good")
    decision = video_reader()
    assert decision == Decision("decord", "self-test passed")
    assert str(decision) == "decord (self-test passed)"
    assert video_reader("decord").choice == "decord"
    assert video_reader("pyav").choice == "pyav"


@pytest.mark.parametrize(
    "mode, reason",
    [
        ("four_channels", r"decord 9\.9-fake returned 4 channels for a 32x48 yuv420p H\.264 frame"),
        (
            "batch_raises",
            r"get_batch failed on a 32x48 test clip \(.*The size must exactly match\)$",
        ),
        ("wrong_values", r"wrong pixels for frame 0 .*mean error"),
        ("batch_differs", r"get_batch\[1, 2, 5\] differs from single-frame reads"),
        (None, r"^not installed$"),
    ],
)
def test_failing_decord_falls_back_to_pyav_with_the_reason(
    use_decord, monkeypatch, caplog, mode, reason
):
    use_decord(mode)
    with caplog.at_level(logging.WARNING, logger="vidseg.io.selftest"):
        decision = video_reader()
        assert video_reader() == decision  # cached: same decision, logged once
    assert decision.choice == "pyav"
    assert str(decision).startswith("PyAV with seeking (")
    passed, why = selftest.decord_status()
    assert not passed and why in decision.reason
    assert re.search(reason, why), why
    warnings = [r.getMessage() for r in caplog.records]
    expected = f"decord is not used: {why}; reading video files with PyAV (seeking)"
    assert warnings == ([] if mode is None else [expected])
    with pytest.raises(SelfTestError, match="requested but fails its self-test") as err:
        video_reader("decord")
    assert why in str(err.value) and "'auto' or 'pyav'" in str(err.value)
    monkeypatch.setenv(READER_ENV, "decord")
    with pytest.raises(SelfTestError, match=f"set by {READER_ENV}=decord"):
        video_reader()


def test_import_error_other_than_missing_is_a_reason(use_decord, monkeypatch, tmp_path):
    use_decord(None)
    monkeypatch.delitem(sys.modules, "decord")
    (tmp_path / "decord").mkdir()
    init = tmp_path / "decord" / "__init__.py"
    init.write_text("raise OSError('libavcodec.so.58: cannot open')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert video_reader().reason == "decord: import failed (OSError: libavcodec.so.58: cannot open)"


def test_self_test_runs_once_per_process_and_env_var_forces(use_decord, monkeypatch):
    opened: list = []
    use_decord("good", opened)
    monkeypatch.setenv(READER_ENV, "pyav")
    assert video_reader() == Decision("pyav", f"set by {READER_ENV}=pyav", "PyAV with seeking")
    assert opened == []  # forcing PyAV never touches decord
    monkeypatch.setenv(READER_ENV, "decord")
    assert video_reader().choice == "decord"
    monkeypatch.setenv(READER_ENV, " AUTO ")
    assert video_reader().reason == "self-test passed"
    assert len(opened) == 1
    monkeypatch.setenv(READER_ENV, "ffmpeg")
    with pytest.raises(ValueError, match=f"{READER_ENV}='ffmpeg'; expected pyav, decord or auto"):
        video_reader()
    with pytest.raises(ValueError, match="'opencv'"):
        video_reader("opencv")


def test_the_real_decord_decision_is_consistent(monkeypatch):
    """Whatever decord does on this machine, the decision follows its self-test."""
    monkeypatch.delenv(READER_ENV, raising=False)
    passed, why = selftest.decord_status()
    decision = video_reader(warn=False)
    assert decision.choice == ("decord" if passed else "pyav")
    assert why in decision.reason


def test_video_source_falls_back_when_decord_misreads_one_file(use_decord, tmp_path, caplog):
    from vidseg.io.sources import SourceError, VideoFileSource

    use_decord("four_channels_if_96_wide")  # the 32x48 self-test passes, 96-wide files fail
    video = write_video(tmp_path / "v.mp4", n=5)  # 64x96
    with (
        caplog.at_level(logging.WARNING, logger="vidseg.io.sources"),
        VideoFileSource(video, backend="auto") as src,
    ):
        assert src.backend == "pyav" and src.reader_decision.choice == "decord"
        assert len(list(src)) == 5
    assert "decord returned frames of shape (64, 96, 4)" in caplog.text
    with pytest.raises(SourceError, match=r"v\.mp4: decord returned frames of shape \(64, 96, 4\)"):
        VideoFileSource(video, backend="decord")


def test_clip_loader_uses_the_decided_reader(use_decord, tmp_path):
    from vidseg.data.video_clips import VideoFileClips
    from vidseg.io.random_access import DecordFrameReader, PyAVFrameReader

    video = write_video(tmp_path / "v.mp4", n=8)
    use_decord("four_channels")
    ds = VideoFileClips([(video, None)], history=1, mode="eval", backend="auto")
    assert ds.backend == "pyav" and "4 channels" in ds.reader_decision.reason
    reference = [ds[i]["frames"] for i in range(8)]
    with pytest.raises(SelfTestError):
        VideoFileClips([(video, None)], backend="decord")

    use_decord("good")
    ds = VideoFileClips([(video, None)], history=1, mode="eval", backend="auto")
    assert ds.backend == "decord" and isinstance(ds._reader(str(video)), DecordFrameReader)
    assert all(torch.equal(ds[i]["frames"], reference[i]) for i in range(8))

    use_decord("four_channels_if_96_wide")  # passes the self-test, misreads this 96-wide file
    ds = VideoFileClips([(video, None)], history=1, mode="eval", backend="auto")
    assert isinstance(ds._reader(str(video)), PyAVFrameReader)
    assert torch.equal(ds[5]["frames"], reference[5])


def test_live_window_decision(monkeypatch):
    """Headless build, no display, a display where the test window fails / opens; probed once."""
    probes = []

    def probe(result):
        def run():
            probes.append(result)
            return result

        return run

    selftest.reset()
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setattr(selftest, "opencv_gui_backend", lambda: "NONE")
    assert selftest.live_window() == Decision(
        "unavailable", "OpenCV is built without GUI support (a headless build)"
    )
    monkeypatch.setattr(selftest, "opencv_gui_backend", lambda: "QT5")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert str(selftest.live_window()) == (
        "unavailable (no display: DISPLAY and WAYLAND_DISPLAY are unset (OpenCV GUI QT5 present))"
    )
    failure = "a test window failed to open (qt.qpa.xcb: could not connect to display :9)"
    monkeypatch.setattr(selftest, "_window_probe", probe(failure))
    monkeypatch.setenv("DISPLAY", ":9")
    assert selftest.live_window() == Decision(
        "unavailable", f"OpenCV GUI QT5, display :9: {failure}"
    )
    monkeypatch.setattr(selftest, "_window_probe", probe(None))
    monkeypatch.setenv("DISPLAY", ":1")
    for _ in range(2):
        assert selftest.live_window() == Decision(
            "available", "OpenCV GUI QT5, display :1, a test window opened"
        )
    assert probes == [failure, None]  # once per display, not once per call
    selftest.reset()


def test_window_probe_on_an_unreachable_display(monkeypatch):
    """The real child-process probe: a dead display is a reason, never a crash of this process."""
    if selftest.opencv_gui_backend() == "NONE" or not sys.platform.startswith("linux"):
        pytest.skip("needs an OpenCV GUI build on Linux (X11 display names)")
    monkeypatch.setenv("DISPLAY", ":987")
    problem = selftest._window_probe()
    assert problem is not None and problem.startswith("a test window failed to open (")


def test_cuda_decision():
    decision = selftest.cuda_device()
    assert decision.choice == ("cuda" if torch.cuda.is_available() else "cpu")
    assert decision.reason


def test_cuda_that_is_seen_but_does_not_run_means_cpu(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("a working GPU is present: the failure path needs a broken one")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Fake GPU")
    decision = selftest.cuda_device()
    assert decision.choice == "cpu"
    assert decision.reason.startswith("torch sees a GPU but a test convolution failed (")


def test_info_shows_each_decision(use_decord, capsys):
    from vidseg.cli import main

    use_decord("four_channels")
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert "checks:" in lines
    assert any(
        ln.startswith("  video reader: PyAV with seeking (decord 9.9-fake returned 4 channels")
        for ln in lines
    )
    assert any(ln.startswith("  live window: ") for ln in lines)
    assert any(ln.startswith(("  device: cpu (", "  device: cuda (")) for ln in lines)
    use_decord("good")
    assert main(["info", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["checks"]["video_reader"] == {
        "choice": "decord",
        "reason": "self-test passed",
        "summary": "decord (self-test passed)",
    }
    assert info["device"] == info["checks"]["device"]["choice"]
