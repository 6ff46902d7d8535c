"""Synthetic videos, images and a loopback MJPEG server for the io tests."""

from __future__ import annotations

import http.server
import threading
import time
from pathlib import Path

import av
import cv2
import numpy as np

SQUARE = 12
STEP = 4


def moving_square(k: int, h: int = 64, w: int = 96, noise: bool = False) -> np.ndarray:
    """Frame k: dark background (seeded noise if asked), a white square at x = STEP * k."""
    if noise:
        rgb = np.random.default_rng(k).integers(0, 80, (h, w, 3), dtype=np.uint8)
    else:
        rgb = np.full((h, w, 3), 40, np.uint8)
    x = (STEP * k) % (w - SQUARE)
    rgb[20 : 20 + SQUARE, x : x + SQUARE] = 255
    return rgb


def square_x(rgb: np.ndarray) -> int:
    """Left edge of the bright square (inverse of ``moving_square``)."""
    cols = np.nonzero((rgb[..., 0] > 150).any(axis=0))[0]
    return int(cols[0])


def write_video(
    path: Path,
    n: int = 20,
    h: int = 64,
    w: int = 96,
    fps: int = 25,
    faststart: bool = False,
    noise: bool = False,
) -> Path:
    """Lossless-ish H.264 (crf 0, yuv444p) mp4 of ``n`` moving-square frames."""
    options = {"crf": "0"}
    container_opts = {"movflags": "faststart"} if faststart else {}
    with av.open(str(path), "w", options=container_opts) as out:
        stream = out.add_stream("libx264", rate=fps, options=options)
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv444p"
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(moving_square(k, h, w, noise), format="rgb24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def count_frames(path: Path) -> tuple[int, tuple[int, int]]:
    """Decode a file with PyAV; returns (frames, (H, W))."""
    n, size = 0, (0, 0)
    with av.open(str(path)) as c:
        for frame in c.decode(video=0):
            n += 1
            size = (frame.height, frame.width)
    return n, size


class MjpegServer:
    """A multipart/x-mixed-replace JPEG stream on 127.0.0.1, ``n_frames`` per connection."""

    def __init__(self, n_frames: int = 30, fps: float = 60.0):
        frames = [
            cv2.imencode(".jpg", cv2.cvtColor(moving_square(k), cv2.COLOR_RGB2BGR))[1].tobytes()
            for k in range(n_frames)
        ]
        period = 1.0 / fps

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    for jpg in frames:
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\n")
                        self.wfile.write(f"Content-Length: {len(jpg)}\r\n\r\n".encode())
                        self.wfile.write(jpg + b"\r\n")
                        time.sleep(period)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/stream.mjpg"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> MjpegServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


TINY_CONFIG = str(Path(__file__).resolve().parents[1] / "configs" / "synthetic" / "tiny.yaml")


def tiny_checkpoint_and_clip(tmp: Path, frames: int, h: int = 48, w: int = 64) -> dict:
    """A seeded random tiny model saved as `tmp/tiny.pth` and a `frames`-frame `tmp/clip.mp4`.

    Returns `{"ckpt": Path, "video": Path, "tmp": tmp}`.
    """
    import torch

    from vidseg.engine.inference import load_inference_model

    _, model = load_inference_model(TINY_CONFIG, random_init=True)
    ckpt = tmp / "tiny.pth"
    torch.save(model.state_dict(), ckpt)
    return {"ckpt": ckpt, "video": write_video(tmp / "clip.mp4", n=frames, h=h, w=w), "tmp": tmp}
