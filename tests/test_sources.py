"""Frame sources: video files, frame folders, cameras (fake capture, loopback MJPEG), bad input."""

from __future__ import annotations

import time

import cv2
import numpy as np
import pytest
from _video_fixtures import STEP, MjpegServer, moving_square, square_x, write_video

from vidseg.data.transforms import resize_short_side
from vidseg.io.camera import CameraSource
from vidseg.io.selftest import READER_ENV, decord_status
from vidseg.io.sources import FrameDirSource, SourceError, VideoFileSource, open_source


@pytest.fixture(scope="module")
def video(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("vid") / "square.mp4", n=20, fps=25)


@pytest.mark.parametrize("backend", ["pyav", "decord", "auto"])
def test_video_file_frames_in_order(video, backend, monkeypatch):
    # Whatever decord does on this machine: used only if it passes its self-test, else PyAV.
    monkeypatch.delenv(READER_ENV, raising=False)
    passed, why = decord_status()
    if backend == "decord":
        try:
            VideoFileSource(video, backend="decord").close()
        except SourceError as exc:  # asked for decord, which cannot read right here: say why
            assert (not passed and why in str(exc)) or "decord returned frames of shape" in str(exc)
            backend = "auto"  # what a caller should use instead: PyAV, as checked below
    with VideoFileSource(video, backend=backend) as src:
        if backend == "auto":
            assert src.backend in ("decord", "pyav") and (passed or src.backend == "pyav")
            assert src.reader_decision.choice == ("decord" if passed else "pyav")
            assert why in src.reader_decision.reason
        assert src.num_frames == 20 and src.fps == pytest.approx(25.0)
        frames = list(src)
    assert [i for i, _, _ in frames] == list(range(20))
    assert [t for _, t, _ in frames] == pytest.approx([i / 25 for i in range(20)], abs=1e-3)
    for i, _, rgb in frames:
        assert rgb.dtype == np.uint8 and rgb.shape == (64, 96, 3)
        assert square_x(rgb) == STEP * i
    # crf 0 yuv444: only the RGB<->YUV rounding separates the decoded frame from the source
    assert np.abs(frames[7][2].astype(int) - moving_square(7)).max() <= 3
    assert src.frames_read == 20 and src.error is None


def test_video_file_stride_max_frames_short_side(video):
    with VideoFileSource(video, stride=3, max_frames=4, short_side=32) as src:
        assert src.num_frames == 4
        frames = list(src)
    assert [i for i, _, _ in frames] == [0, 3, 6, 9]
    assert [t for _, t, _ in frames] == pytest.approx([0.0, 0.12, 0.24, 0.36], abs=1e-3)
    assert all(rgb.shape == (32, 48, 3) for _, _, rgb in frames)


def test_resize_short_side_keeps_aspect():
    rgb = np.zeros((50, 101, 3), np.uint8)
    assert resize_short_side(rgb, 25, None).shape == (25, 50, 3)  # sources' automatic interpolation
    assert resize_short_side(rgb, None) is rgb


def test_queue_is_bounded_when_consumer_is_slow(video):
    with VideoFileSource(video, queue_size=3) as src:
        src.start()  # prefetch before the consumer asks
        time.sleep(0.5)  # the decoder would finish all 20 frames in far less than this
        # 3 queued + 1 held by the blocked put()
        assert 3 <= src.frames_decoded <= 4
        it = iter(src)
        next(it)
        time.sleep(0.2)
        assert src.frames_decoded <= 5
        assert src._queue.qsize() <= 3
        rest = list(it)
    assert len(rest) == 19


def test_close_stops_the_decoder_thread(video):
    src = VideoFileSource(video, queue_size=2)
    it = iter(src)
    next(it)
    src.close()
    assert not src._thread.is_alive()


def test_truncated_video_stops_at_last_good_frame(tmp_path):
    path = write_video(tmp_path / "full.mp4", n=40, faststart=True, noise=True)
    data = path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])
    with VideoFileSource(cut) as src:
        frames = list(src)
    assert 0 < src.frames_read < 40 and len(frames) == src.frames_read
    assert src.error and str(cut) in src.error
    assert [square_x(rgb) for _, _, rgb in frames[:5]] == [STEP * k for k in range(5)]


def test_missing_and_not_a_video_raise_source_error(tmp_path):
    missing = tmp_path / "nope.mp4"
    with pytest.raises(SourceError, match="nope.mp4.*no such"):
        VideoFileSource(missing)
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 20)
    with pytest.raises(SourceError, match="notes.mp4.*not a readable video"):
        VideoFileSource(text)
    with pytest.raises(SourceError, match="notes.mp4"):
        open_source(str(text))
    assert issubclass(SourceError, RuntimeError)


def test_frame_dir_gray_rgba_and_unreadable(tmp_path):
    rgb0 = moving_square(0)
    cv2.imwrite(str(tmp_path / "00000.png"), cv2.cvtColor(rgb0, cv2.COLOR_RGB2BGR))
    gray = np.full((64, 96), 77, np.uint8)
    cv2.imwrite(str(tmp_path / "00001.png"), gray)
    rgba = np.dstack([moving_square(2), np.full((64, 96), 128, np.uint8)])
    cv2.imwrite(str(tmp_path / "00002.png"), cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGRA))
    (tmp_path / "00003.jpg").write_bytes(b"broken jpeg")
    deep = moving_square(4).astype(np.uint16) * 257 + 100  # 16-bit: the high byte is kept
    cv2.imwrite(str(tmp_path / "00004.png"), cv2.cvtColor(deep, cv2.COLOR_RGB2BGR))
    (tmp_path / "notes.txt").write_text("ignored: not an image extension")
    with open_source(str(tmp_path)) as src:
        assert isinstance(src, FrameDirSource) and src.num_frames == 5
        frames = list(src)
    assert [i for i, _, _ in frames] == [0, 1, 2, 4]
    assert np.array_equal(frames[0][2], rgb0)
    assert frames[1][2].shape == (64, 96, 3) and (frames[1][2] == 77).all()
    assert np.array_equal(frames[2][2], moving_square(2))
    assert np.array_equal(frames[3][2], (deep >> 8).astype(np.uint8))
    assert src.skipped == 1 and src.skipped_paths[0].name == "00003.jpg"


def test_empty_frame_dir_raises(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        FrameDirSource(tmp_path)


class FakeCapture:
    """Stands in for cv2.VideoCapture: each open serves ``per_open[n]`` frames then fails reads."""

    def __init__(self, per_open: list[int], read_delay: float = 0.0):
        self.per_open, self.read_delay = per_open, read_delay
        self.opens = 0
        self.total = 0

    def __call__(self, *args):
        fake = self
        budget = self.per_open[self.opens] if self.opens < len(self.per_open) else None
        self.opens += 1

        class Cap:
            left = budget

            def isOpened(self):  # noqa: N802 - cv2 API
                return budget is not None

            def read(self):
                time.sleep(fake.read_delay)
                if not self.left:
                    return False, None
                self.left -= 1
                fake.total += 1
                return True, cv2.cvtColor(moving_square(fake.total), cv2.COLOR_RGB2BGR)

            def get(self, prop):
                return 30.0

            def set(self, prop, value):
                return False

            def release(self):
                pass

        return Cap()


def test_camera_reconnects_then_stops_cleanly(monkeypatch):
    fake = FakeCapture([3, 4], read_delay=0.01)
    monkeypatch.setattr(cv2, "VideoCapture", fake)
    with CameraSource(0, reconnect_attempts=2, reconnect_delay_s=0.01) as cam:
        assert cam.fps == 30.0 and cam.num_frames is None
        frames = list(cam)
    assert fake.opens == 4  # initial, a good reopen, then two failed reopens
    assert cam.reconnects == 3 and cam.error and "camera 0" in cam.error
    assert cam.frames_decoded == 7 and cam.frames_read + cam.dropped == 7
    assert all(rgb.shape == (64, 96, 3) for _, _, rgb in frames)


def test_camera_latest_frame_policy_counts_drops(monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture([40], read_delay=0.002))
    with CameraSource(0, reconnect_attempts=0) as cam:
        frames = []
        for item in cam:
            frames.append(item)
            time.sleep(0.03)  # a slow model
    assert cam.dropped > 0 and cam.frames_read + cam.dropped == 40
    indices = [i for i, _, _ in frames]
    assert indices == sorted(indices) and len(set(indices)) == len(indices)
    times = [t for _, t, _ in frames]
    assert times == sorted(times)


def test_camera_max_frames_and_close(monkeypatch):
    monkeypatch.setattr(cv2, "VideoCapture", FakeCapture([10_000], read_delay=0.001))
    cam = open_source("0", max_frames=5)
    assert isinstance(cam, CameraSource)
    assert len(list(cam)) == 5
    cam.close()
    assert not cam._thread.is_alive()


def test_camera_index_that_does_not_open_fails_fast():
    start = time.monotonic()
    with pytest.raises(SourceError, match="camera 0.*could not open"):
        open_source("0")
    assert time.monotonic() - start < 5.0


def test_loopback_mjpeg_stream():
    with MjpegServer(n_frames=30, fps=60.0) as server:
        try:
            cam = CameraSource(server.url, reconnect_attempts=0)
        except SourceError:
            pytest.skip("cv2's FFMPEG backend cannot open the loopback MJPEG stream")
        with cam:
            frames = list(cam)
    assert cam.frames_read + cam.dropped == cam.frames_decoded
    assert 20 <= cam.frames_decoded <= 30
    assert frames[0][2].shape == (64, 96, 3)
    # JPEG is lossy, but the square's position survives
    assert square_x(frames[0][2]) in range(0, 96)
    assert not cam._thread.is_alive()


def test_url_that_does_not_answer_raises_source_error():
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: connection refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/stream.mjpg"
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}.*could not open stream URL"):
        open_source(url, reconnect_attempts=0)
