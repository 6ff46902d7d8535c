"""Network sources that stall: connect / read timeouts, Ctrl-C during a stall, a camera that dies.

The servers are raw loopback sockets: one accepts and never answers (a hung camera, a firewall
that swallows packets), one sends a few MJPEG frames on its first connection and then goes
silent while holding every connection open.
"""

from __future__ import annotations

import _thread
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import cv2
import pytest
from _video_fixtures import moving_square

from vidseg.cli import main
from vidseg.io.camera import CameraSource
from vidseg.io.sources import SourceError, open_source

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "synthetic" / "tiny.yaml")


class SilentServer:
    """Accepts TCP connections on 127.0.0.1 and holds them; sends ``frames`` MJPEG frames on
    the first connection only (after reading its request), nothing ever after."""

    def __init__(self, frames: int = 0):
        self.jpegs = [
            cv2.imencode(".jpg", cv2.cvtColor(moving_square(k), cv2.COLOR_RGB2BGR))[1].tobytes()
            for k in range(frames)
        ]
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/cam.mjpg"
        self.accepted = threading.Event()
        self.connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed by __exit__
                return
            self.connections.append(conn)
            first = not self.accepted.is_set()
            self.accepted.set()
            if first and self.jpegs:
                threading.Thread(target=self._send, args=(conn,), daemon=True).start()

    def _send(self, conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        conn.sendall(
            b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=frame\r\n\r\n"
        )
        for jpg in self.jpegs:
            conn.sendall(
                b"--frame\r\nContent-Type: image/jpeg\r\n"
                + f"Content-Length: {len(jpg)}\r\n\r\n".encode()
                + jpg
                + b"\r\n"
            )
            time.sleep(0.02)

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.sock.close()
        for conn in self.connections:
            conn.close()


def test_open_times_out_and_says_so():
    with SilentServer() as server:
        start = time.monotonic()
        with pytest.raises(SourceError, match=r"cam\.mjpg: could not open stream URL: timed out"):
            open_source(server.url, timeout_s=1.0)
        assert time.monotonic() - start < 3.0
        assert server.accepted.is_set()
    with pytest.raises(ValueError, match="timeout_s"):
        CameraSource("http://127.0.0.1:9/x.mjpg", timeout_s=0)


def test_ctrl_c_interrupts_a_blocked_open():
    with SilentServer() as server:
        threading.Timer(0.5, _thread.interrupt_main).start()  # Ctrl-C, as the terminal sends it
        start = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            open_source(server.url, timeout_s=30.0)
        assert time.monotonic() - start < 1.5


def test_stalled_stream_keeps_its_frames_and_close_does_not_wait():
    with SilentServer(frames=12) as server:
        cam = CameraSource(server.url, timeout_s=1.0, reconnect_attempts=0)
        start = time.monotonic()
        frames = list(cam)  # ends once a read has waited timeout_s
        assert 0 < len(frames) <= 12 and frames[0][2].shape == (64, 96, 3)
        assert cam.error and "disconnected" in cam.error
        assert time.monotonic() - start < 5.0
        cam.close()
    with SilentServer(frames=12) as server:
        cam = CameraSource(server.url, timeout_s=30.0, reconnect_attempts=0)
        frames = iter(cam)
        next(frames)
        time.sleep(0.5)  # every frame sent; the reader now waits on the silent socket
        start = time.monotonic()
        cam.close()
        assert time.monotonic() - start < 1.0


def test_cli_timeout_is_one_line_exit_2(tmp_path, capsys):
    with SilentServer() as server:
        start = time.monotonic()
        code = main(
            [
                "stream",
                TINY,
                server.url,
                "--random-init",
                "--quiet",
                "--timeout",
                "1",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        elapsed = time.monotonic() - start
    assert code == 2 and elapsed < 4.0
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("vidseg stream: error: ") and server.url in lines[0]
    assert "timed out" in lines[0]
    assert main(["stream", TINY, server.url, "--random-init", "--timeout", "0"]) == 2
    assert "--timeout must be a positive number" in capsys.readouterr().err


def test_cli_camera_that_goes_silent_exits_3_with_frames_kept(tmp_path, capsys):
    out = tmp_path / "out"
    with SilentServer(frames=10) as server:
        code = main(
            [
                "stream",
                TINY,
                server.url,
                "--random-init",
                "--quiet",
                "--timeout",
                "1",
                "--out",
                str(out),
                "--json",
                str(tmp_path / "s.json"),
            ]
        )
    assert code == 3
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["frames"] > 0 and summary["stopped_early"]
    assert "disconnected" in summary["error"]
    with av.open(str(out / "stream_overlay.mp4")) as kept:  # a URL's outputs are named "stream"
        assert sum(1 for _ in kept.decode(video=0)) == summary["frames"]
    assert "partial" in capsys.readouterr().err


def test_sigint_during_a_stalled_open_ends_the_cli_promptly(tmp_path):
    pythonpath = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = dict(os.environ, PYTHONPATH=pythonpath, HF_HUB_OFFLINE="1")
    with SilentServer() as server:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "vidseg",
                "stream",
                TINY,
                server.url,
                "--random-init",
                "--quiet",
                "--timeout",
                "60",
                "--out",
                str(tmp_path / "out"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        try:
            assert server.accepted.wait(60), "the command never connected"
            time.sleep(0.3)  # well inside the 60 s open
            start = time.monotonic()
            proc.send_signal(signal.SIGINT)
            # The verdict is printed as soon as the interrupt is handled; the process exit after
            # it is the interpreter's teardown of torch (1-3 s on a busy machine), not ours.
            for line in proc.stderr:
                if line.startswith("vidseg stream:"):
                    break
            answered = time.monotonic() - start
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert line.strip() == "vidseg stream: interrupted" and proc.returncode == 130
    assert answered < 1.0
