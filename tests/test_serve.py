"""Live views of `vidseg stream`: the browser page (`--serve`, `io/serve.py`) and `--show`.

The server is tested with a fake frame producer and an HTTP client (page, MJPEG, /status,
/stop, several clients, a stalled client), then once through a real `vidseg stream` process.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest
from _video_fixtures import count_frames, moving_square, write_video

from vidseg.cli import main
from vidseg.io.palette import PALETTE
from vidseg.io.serve import LiveServer, ServeError, parse_address, source_title

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "synthetic" / "tiny.yaml")
NAMES = ["sky", "road & <lane>", "car"]


def labels_for(k: int, h: int = 64, w: int = 96) -> np.ndarray:
    labels = np.zeros((h, w), np.uint8)  # sky
    labels[h // 2 :] = 1  # road
    labels[h // 2 :, (4 * k) % w : (4 * k) % w + 8] = 2  # a small car
    return labels


class Producer:
    """Feeds `LiveServer.show()` moving-square frames until it returns False or `halt()`."""

    def __init__(self, live: LiveServer, period_s: float = 0.02):
        self.live, self.period_s = live, period_s
        self.frames, self.stopped_by_server = 0, False
        self._halt = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        while not self._halt.is_set():
            if not self.live.show(moving_square(self.frames), labels_for(self.frames), 12.5):
                self.stopped_by_server = True
                return
            self.frames += 1
            time.sleep(self.period_s)

    def halt(self):
        self._halt.set()
        self.thread.join(10)


def get(url: str, timeout: float = 20):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.headers["Content-Type"], r.read()


def post(url: str, headers: dict | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, method="POST", headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def mjpeg_frames(url: str, n: int, timeout: float = 60) -> list[bytes]:
    """The first `n` JPEG parts of a multipart/x-mixed-replace stream."""
    frames = []
    with urllib.request.urlopen(url, timeout=timeout) as r:
        assert r.headers["Content-Type"] == "multipart/x-mixed-replace; boundary=vidsegframe"
        assert r.readline() == b"--vidsegframe\r\n"
        while len(frames) < n:
            headers = {}
            while (line := r.readline()) != b"\r\n":
                key, _, value = line.decode().partition(":")
                headers[key.lower()] = value.strip()
            assert headers["content-type"] == "image/jpeg"
            frames.append(r.read(int(headers["content-length"])))
            assert r.readline() == b"\r\n" and r.readline() == b"--vidsegframe\r\n"
    return frames


@pytest.mark.parametrize(
    "text, expected",
    [
        ("8000", ("127.0.0.1", 8000)),
        (":0", ("127.0.0.1", 0)),
        ("0.0.0.0:80", ("0.0.0.0", 80)),
        ("localhost:9", ("localhost", 9)),
        ("[::1]:8000", ("::1", 8000)),
        ("http://127.0.0.1:8000/", ("127.0.0.1", 8000)),
    ],
)
def test_parse_address(text, expected):
    assert parse_address(text) == expected


@pytest.mark.parametrize(
    "source, title",
    [
        ("videos/clip.mp4", "clip.mp4"),
        ("frames/", "frames"),
        ("0", "camera 0"),
        ("rtsp://user:secret@cam.local:554/live", "rtsp://cam.local:554/live"),
    ],
)
def test_source_title_hides_paths_and_passwords(source, title):
    assert source_title(source) == title


@pytest.mark.parametrize("text", ["", "host:", "abc", "127.0.0.1:65536", ":-1", "::1:8000"])
def test_parse_address_rejects(text):
    with pytest.raises(ServeError, match=re.escape(repr(text))):
        parse_address(text)


def test_page_stream_status_and_stop():
    with LiveServer(port=0, title="clip <1>.mp4", class_names=NAMES) as live:
        assert live.local_only and live.url == f"http://127.0.0.1:{live.port}/"
        assert (
            get(live.url + "status")[2] == b'{"title": "clip <1>.mp4", "frames": 0, '
            b'"fps": 0.0, "stopping": false, "legend": []}'
        )
        producer = Producer(live)
        assert live.wait_for_frame(0, timeout=20)

        status, ctype, body = get(live.url)
        page = body.decode()
        assert status == 200 and ctype == "text/html; charset=utf-8"
        assert "<h1>clip &lt;1&gt;.mp4</h1>" in page and '<img id="view" src="/stream.mjpg"' in page
        assert '<button id="stop" type="button">Stop</button>' in page
        assert ">sky<" in page and ">road &amp; &lt;lane&gt;<" in page  # legend, escaped

        # Two clients at once, each sees distinct, decodable frames of the stream's size.
        results = {}
        clients = [
            threading.Thread(
                target=lambda i=i: results.__setitem__(i, mjpeg_frames(live.url + "stream.mjpg", 3))
            )
            for i in range(2)
        ]
        for c in clients:
            c.start()
        for c in clients:
            c.join(60)
        for frames in results.values():
            assert len(set(frames)) == 3
            images = [cv2.imdecode(np.frombuffer(f, np.uint8), cv2.IMREAD_COLOR) for f in frames]
            assert all(img.shape == (64, 96, 3) for img in images)
        assert len(results) == 2

        info = json.loads(get(live.url + "status")[2])
        assert info["frames"] >= 3 and info["fps"] == 12.5 and info["stopping"] is False
        legend = {row["name"]: row for row in info["legend"]}
        assert list(legend)[:2] == ["sky", "road & <lane>"] and "car" in legend
        assert legend["sky"]["share"] == 0.5
        assert legend["car"]["color"] == "#{:02x}{:02x}{:02x}".format(*PALETTE[2])

        assert post(live.url + "nope")[0] == 404 and get_status_code(live.url + "nope") == 404
        code, body = post(live.url + "stop", {"Origin": "http://evil.example"})
        assert code == 403 and "another site" in body["error"] and not live.stop_requested
        assert post(live.url + "stop", {"Origin": f"http://127.0.0.1:{live.port}"}) == (
            202,
            {"stopping": True},
        )
        producer.thread.join(10)
        assert producer.stopped_by_server and json.loads(get(live.url + "status")[2])["stopping"]
    # Closed: the port is free again.
    LiveServer(port=live.port).close()


def get_status_code(url: str) -> int:
    try:
        return get(url)[0]
    except urllib.error.HTTPError as exc:
        return exc.code


def test_only_loopback_counts_as_local():
    with LiveServer(host="0.0.0.0", port=0) as everywhere, LiveServer(host="localhost") as here:
        assert not everywhere.local_only and here.local_only
        assert get(f"http://127.0.0.1:{everywhere.port}/status")[0] == 200


def test_stalled_viewer_never_slows_the_producer():
    """A client that reads nothing: `show()` still returns at once, frame after frame."""
    with LiveServer(port=0) as live:
        stalled = socket.create_connection(("127.0.0.1", live.port))
        stalled.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: x\r\n\r\n")
        rgb = np.random.default_rng(0).integers(0, 255, (480, 640, 3), dtype=np.uint8)
        labels = np.zeros((480, 640), np.uint8)
        slowest = 0.0
        for _ in range(150):  # ~ 150 poorly compressible JPEGs: fills the socket buffers
            t0 = time.perf_counter()
            assert live.show(rgb, labels, 30.0)
            slowest = max(slowest, time.perf_counter() - t0)
            rgb[::7] += 1
            time.sleep(0.005)
        assert live.status()["frames"] == 150
        assert slowest < 1.0  # a copy of one frame; the stalled socket never blocks it
        stalled.close()


def test_port_in_use_is_one_error_before_any_work(tmp_path, capsys):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ServeError, match="port already in use"):
            LiveServer(port=port)
        out = tmp_path / "out"
        code = main(
            [
                "stream",
                TINY,
                str(tmp_path / "missing.mp4"),
                "--random-init",
                "--out",
                str(out),
                "--serve",
                f"127.0.0.1:{port}",
            ]
        )
    err = capsys.readouterr().err
    assert code == 2 and not out.exists()
    assert err.splitlines() == [
        f"vidseg stream: error: --serve 127.0.0.1:{port}: port already "
        "in use (another program listens there); choose another port, "
        "or 0 for any free one"
    ]


def test_show_without_display_says_so_and_runs_on(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    video = write_video(tmp_path / "clip.mp4", n=4, h=48, w=64)
    code = main(
        [
            "stream",
            TINY,
            str(video),
            "--random-init",
            "--quiet",
            "--show",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0 and count_frames(tmp_path / "o" / "clip_overlay.mp4") == (4, (48, 64))
    notices = [ln for ln in capsys.readouterr().err.splitlines() if "--show" in ln]
    assert (
        len(notices) == 1
        and notices[0].startswith(
            (
                "vidseg stream: --show: no window (no display",
                "vidseg stream: --show: no window (OpenCV is built without GUI",
            )
        )
        and "--serve PORT" in notices[0]
    )


def test_stream_cli_serves_and_stops_from_the_browser(tmp_path):
    """A real `vidseg stream --serve 127.0.0.1:0`: page, MJPEG, /status, Stop -> exit 3."""
    video = write_video(tmp_path / "long.mp4", n=1500, h=48, w=64)
    out = tmp_path / "out"
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "vidseg",
            "stream",
            TINY,
            str(video),
            "--random-init",
            "--quiet",
            "--out",
            str(out),
            "--serve",
            ":0",
            "--json",
            str(tmp_path / "s.json"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        seen = []
        while not seen or not seen[-1].startswith("live view: ") and seen[-1]:
            seen.append(proc.stderr.readline())
        match = re.fullmatch(r"live view: (http://127\.0\.0\.1:\d+/) \(.*Stop.*\)\n", seen[-1])
        assert match, "".join(seen) + proc.stderr.read()
        url = match[1]
        assert b">Stop</button>" in get(url)[2]
        frames = mjpeg_frames(url + "stream.mjpg", 2)
        assert len(set(frames)) == 2
        assert cv2.imdecode(np.frombuffer(frames[0], np.uint8), cv2.IMREAD_COLOR).shape == (
            48,
            64,
            3,
        )
        info = json.loads(get(url + "status")[2])
        assert info["frames"] >= 2 and info["fps"] > 0 and info["legend"]
        assert info["legend"][0]["name"].startswith("class ")  # tiny config: no dataset names
        assert post(url + "stop") == (202, {"stopping": True})
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 3, stderr
    assert "vidseg stream: partial: stopped from the browser (Stop button)" in stderr
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["stopped_early"] and summary["error"] == "stopped from the browser (Stop button)"
    n, size = count_frames(out / "long_overlay.mp4")
    assert 2 <= n == summary["frames"] < 1500 and size == (48, 64)
