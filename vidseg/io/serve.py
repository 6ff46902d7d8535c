"""`vidseg stream --serve`: the live overlay, FPS, class legend and a Stop button in a browser.

A standard-library `ThreadingHTTPServer` answers in daemon threads. The stream loop hands each
result to `LiveServer.show()`, which only puts it in a one-frame slot (the latest wins), so a
slow or stalled browser never slows the model. Blending and JPEG encoding happen in the client
threads, once per frame however many clients watch, and not at all while nobody watches.

Routes: ``GET /`` the page, ``GET /stream.mjpg`` the overlay as multipart JPEG (MJPEG),
``GET /status`` JSON (fps, frames, legend), ``POST /stop`` asks the run to stop: `show()` then
returns False and the stream loop ends as after q in the desktop window (outputs closed and
kept, exit code 3).
"""

from __future__ import annotations

import errno
import http.server
import ipaddress
import json
import logging
import socket
import socketserver
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

import cv2
import numpy as np

from vidseg.errors import VidsegError
from vidseg.io.palette import overlay
from vidseg.io.serve_page import legend_rows, render_page

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
BOUNDARY = "vidsegframe"
# A client that accepts nothing for this long is dropped, so its thread cannot hang forever.
CLIENT_TIMEOUT_S = 15.0


class ServeError(VidsegError):
    """A live-view address that cannot be parsed or bound; the message names it and the cause."""


def parse_address(text: str) -> tuple[str, int]:
    """``PORT``, ``:PORT``, ``HOST:PORT`` or ``[IPv6]:PORT`` -> ``(host, port)``.

    The host defaults to 127.0.0.1 (this machine only); port 0 asks the OS for a free port.
    A pasted page address (``http://127.0.0.1:8000/``) is accepted too.

    Raises:
        ServeError: naming the text and the expected form.
    """
    raw = text.strip().removeprefix("http://").rstrip("/")
    host, sep, port_text = raw.rpartition(":")
    if not sep:
        host, port_text = "", raw
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ServeError(f"{text!r}: write an IPv6 host in brackets, e.g. [::1]:8000")
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ServeError(
            f"{text!r}: expected PORT, :PORT or HOST:PORT with a port 0..65535 "
            "(0 = any free port), e.g. 8000 or 127.0.0.1:8000"
        )
    return host or DEFAULT_HOST, port


def source_title(source: str) -> str:
    """A page heading for a source: file or folder name, camera, or URL without its password."""
    if source.isdigit():
        return f"camera {source}"
    if "://" in source:
        parts = urlsplit(source)
        port = f":{parts.port}" if parts.port else ""
        return f"{parts.scheme}://{parts.hostname or ''}{port}{parts.path}"
    return Path(source.rstrip("/\\")).name or source


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], live: LiveServer):
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.live = live
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind also looks up the host's FQDN (for CGI only), which can stall
        # for seconds on a machine without DNS.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = self.server_address[:2]

    def handle_error(self, request, client_address) -> None:
        # A viewer closing its tab mid-response is routine; anything else is worth a line.
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return
        log.warning("live view: request from %s failed", client_address[0], exc_info=True)


class LiveServer:
    """Serves the live view of a stream over HTTP; a sink with the live window's interface.

    Binding happens in the constructor, so a port in use fails before any model or output
    exists; serving starts at once (the page says "frame 0" until the first result arrives).

    Args:
        host: interface to bind; 127.0.0.1 keeps the page on this machine (the page has no
            password, and its Stop button ends the run).
        port: TCP port; 0 picks a free one (see `port`).
        title: heading of the page, e.g. the source name.
        class_names: legend name of each train id; may be set later (after the config is read).
        alpha: weight of the class colours in the overlay; may be set later.
        jpeg_quality: 1..100.

    Raises:
        ServeError: the address does not resolve, the port is in use or not allowed.
    """

    stop_reason = "stopped from the browser (Stop button)"

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = 0,
        title: str = "vidseg",
        class_names: Sequence[str] | None = None,
        alpha: float = 0.5,
        jpeg_quality: int = 80,
    ):
        self.title, self.class_names, self.alpha = title, class_names, alpha
        self.jpeg_quality = int(jpeg_quality)
        self._cond = threading.Condition()
        self._frame: tuple[int, np.ndarray, np.ndarray, float] | None = None
        self._frames = 0
        self._encode_lock = threading.Lock()
        self._jpeg: tuple[int, bytes] = (0, b"")
        self._stop = threading.Event()
        self._closed = False
        try:
            self._httpd = _HTTPServer((host, port), self)
        except OSError as exc:
            raise ServeError(f"{_netloc(host, port)}: {_bind_problem(exc)}") from None
        self.host, self.port = host, int(self._httpd.server_address[1])
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, args=(0.2,), name=f"serve:{self.port}", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's address, e.g. ``http://127.0.0.1:8000/``."""
        return f"http://{_netloc(self.host, self.port)}/"

    @property
    def local_only(self) -> bool:
        """True when bound to a loopback address (unreachable from other machines)."""
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False

    @property
    def enabled(self) -> bool:
        """Still serving (False after `close()`)."""
        return not self._closed

    @property
    def stop_requested(self) -> bool:
        return self._stop.is_set()

    def request_stop(self) -> None:
        """What ``POST /stop`` does: the next `show()` returns False."""
        if not self._stop.is_set():
            log.info("%s: stop requested from the browser", self.url)
        self._stop.set()

    def show(self, rgb: np.ndarray, labels: np.ndarray, fps: float) -> bool:
        """Offer one result to the viewers (copied, so the caller may reuse its arrays).

        Args:
            rgb: the frame, uint8 ``(H, W, 3)``.
            labels: its train ids, uint8 ``(H, W)`` (255 = ignore).
            fps: the run's frames per second so far.

        Returns:
            False once a viewer pressed Stop, else True.
        """
        with self._cond:
            self._frames += 1
            self._frame = (self._frames, rgb.copy(), labels.copy(), float(fps))
            self._cond.notify_all()
        return not self._stop.is_set()

    def status(self) -> dict:
        """``{"title", "frames", "fps", "stopping", "legend": legend_rows(...)}`` of the latest frame."""
        frame = self._frame
        frames, fps = (frame[0], frame[3]) if frame is not None else (0, 0.0)
        legend = legend_rows(frame[2], self.class_names) if frame is not None else []
        return {
            "title": self.title,
            "frames": frames,
            "fps": round(fps, 2),
            "stopping": self._stop.is_set(),
            "legend": legend,
        }

    def wait_for_frame(self, after: int, timeout: float) -> bool:
        """Block until a frame newer than number ``after`` exists (True) or close / timeout."""
        with self._cond:
            return (
                self._cond.wait_for(
                    lambda: self._closed or (self._frame is not None and self._frame[0] > after),
                    timeout,
                )
                and not self._closed
            )

    def latest_jpeg(self) -> tuple[int, bytes] | None:
        """``(frame number, JPEG bytes)`` of the latest overlay; encoded once per frame."""
        frame = self._frame
        if frame is None:
            return None
        number, rgb, labels, _ = frame
        with self._encode_lock:
            if self._jpeg[0] != number:
                bgr = cv2.cvtColor(overlay(rgb, labels, self.alpha), cv2.COLOR_RGB2BGR)
                ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    raise RuntimeError(f"cv2.imencode failed on a {bgr.shape} frame")
                self._jpeg = (number, buf.tobytes())
            return self._jpeg

    def close(self) -> None:
        """Stop serving and release the port; open MJPEG streams end. Safe to call twice."""
        if self._closed:
            return
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def __enter__(self) -> LiveServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _netloc(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _bind_problem(exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return (
            "port already in use (another program listens there); choose another port, "
            "or 0 for any free one"
        )
    if exc.errno == errno.EACCES:
        return "permission denied (ports below 1024 need administrator rights)"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "this machine has no such address; use 127.0.0.1, or 0.0.0.0 for all interfaces"
    if isinstance(exc, socket.gaierror):
        return f"unknown host ({exc.strerror})"
    return f"cannot listen there ({exc.strerror or exc})"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _HTTPServer
    timeout = CLIENT_TIMEOUT_S
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args) -> None:
        log.debug("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, body: bytes, content_type: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, payload: dict) -> None:
        self._send(code, json.dumps(payload).encode(), "application/json")

    def do_GET(self) -> None:  # noqa: N802 - the name http.server dispatches to
        live = self.server.live
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(200, render_page(live.title, live.status()), "text/html; charset=utf-8")
        elif path == "/status":
            self._json(200, live.status())
        elif path == "/stream.mjpg":
            self._stream(live)
        else:
            self._json(404, {"error": f"no page {path}; try / , /stream.mjpg or /status"})

    def do_POST(self) -> None:  # noqa: N802
        if urlsplit(self.path).path != "/stop":
            self._json(404, {"error": "only POST /stop is accepted"})
            return
        # Another site open in the same browser must not stop the run: a browser always sends
        # Origin with a POST, and ours is the host the page was loaded from.
        origin = self.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != self.headers.get("Host"):
            self._json(403, {"error": f"stop refused: request from another site ({origin})"})
            return
        self.server.live.request_stop()
        self._json(202, {"stopping": True})

    def _stream(self, live: LiveServer) -> None:
        self.close_connection = True
        self.send_response(200)
        self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        sent = 0
        try:
            self.wfile.write(f"--{BOUNDARY}\r\n".encode())
            while live.enabled:
                if not live.wait_for_frame(sent, timeout=1.0):
                    continue
                item = live.latest_jpeg()
                if item is None or item[0] == sent:
                    continue
                sent, jpeg = item
                head = f"Content-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n\r\n"
                # The boundary right after the image lets a browser show it at once instead
                # of waiting for the next frame to learn that this one is complete.
                self.wfile.write(head.encode() + jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
                self.wfile.flush()
        except (ConnectionError, TimeoutError):
            return  # the viewer left or stalled; the run does not care
