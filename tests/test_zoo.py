"""Model zoo: table facts, class lists, and the downloader against a local HTTP server."""

from __future__ import annotations

import hashlib
import re
import socket
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vidseg.zoo import (
    CLASS_NAMES,
    ZOO,
    ZooEntry,
    ZooError,
    cache_dir,
    class_names,
    fetch,
    fetch_converted,
    list_entries,
    markdown_table,
    resolve,
    weights_path,
)

PAYLOAD = hashlib.sha256(b"seed").digest() * 6000  # 192000 bytes, not a multiple of any chunk
REPO = Path(__file__).resolve().parents[1]


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.payload` at /w.pth; `server.mode` picks the behaviour under test."""

    def do_GET(self):
        srv = self.server
        srv.requests.append(self.headers.get("Range"))
        if self.path == "/moved.pth":
            self.send_response(302)
            self.send_header("Location", "/w.pth")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        if self.path != "/w.pth" or srv.mode == "404":
            self.send_error(404)
            return
        data, start = srv.payload, 0
        wanted = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if wanted and srv.mode != "ignore_range":
            start = int(wanted.group(1))
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if srv.cuts > 0:  # send half the body, then drop the connection
            srv.cuts -= 1
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own cache; nothing is written to the real ~/.cache."""
    monkeypatch.setenv("VIDSEG_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.payload, srv.mode, srv.cuts, srv.requests = PAYLOAD, "range", 0, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}/w.pth"
    thread = threading.Thread(target=srv.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _entry(url: str, **kw) -> ZooEntry:
    return ZooEntry(
        name="local_test_model",
        url=url,
        dataset="voc",
        num_classes=21,
        config="voc/local_test_model",
        miou=0.0,
        **kw,
    )


def _no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the network was used")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)


def test_table_entries_are_unique_https_and_consistent():
    names = [e.name for e in ZOO]
    assert len(names) == len(set(names)) == 37
    assert len({e.url for e in ZOO}) == len(ZOO)
    for e in ZOO:
        assert e.url.startswith("https://github.com/SegmentationBLWX/modelstore/releases/"), e
        assert e.url.endswith(".pth")
        # the packaged config that builds it (VSPW: the configs/vspw names)
        assert (Path(__file__).parent.parent / "configs" / f"{e.config}.yaml").is_file(), e.config
        assert e.num_classes == len(class_names(e.dataset))
        assert e.name.startswith(("mcibiplusplus_", "mcibi_"))
        assert not e.verified and e.size_bytes is None  # nothing recorded from a real download
        assert 0 < e.miou < 100
    assert {e.dataset for e in ZOO} == set(CLASS_NAMES)
    assert [e.name for e in list_entries("vspw")] == [
        "mcibiplusplus_upernet_resnet101os8_vspw",
        "mcibiplusplus_upernet_swinlarge_vspw",
    ]


@pytest.mark.parametrize(
    "dataset, n",
    [
        ("vspw", 124),
        ("ade20k", 150),
        ("cityscapes", 19),
        ("cocostuff10k", 182),
        ("lip", 20),
        ("pascalcontext59", 59),
        ("voc", 21),
    ],
)
def test_class_lists_have_declared_lengths(dataset, n):
    names = class_names(dataset)
    assert len(names) == n and len(set(names)) == n


def test_class_names_spot_checks():
    assert class_names("vspw")[0] == "wall" and class_names("vspw")[-1] == "train"
    assert class_names("cityscapes")[:2] == ["road", "sidewalk"]
    assert class_names("voc")[0] == "background"
    with pytest.raises(KeyError, match="known datasets"):
        class_names("kitti")


def test_docs_table_is_generated_from_the_zoo():
    text = (REPO / "docs" / "MODELS.md").read_text(encoding="utf-8")
    assert markdown_table() in text, (
        "regenerate the table: python -c 'import vidseg.zoo as z; print(z.markdown_table())'"
    )


def test_resolve_by_name_and_by_file_name():
    assert resolve("mcibiplusplus_upernet_swinlarge_vspw").dataset == "vspw"
    v1 = resolve("mcibi_deeplabv3_r50_ade20k.pth")  # MCIBI file names differ from config names
    assert v1.name == "mcibi_deeplabv3_resnet50os8_ade20k"


def test_unknown_name_suggests_the_closest():
    with pytest.raises(ZooError) as err:
        resolve("mcibiplusplus_upernet_resnet101os8_vspv")
    msg = str(err.value)
    assert "\n" not in msg
    assert "did you mean 'mcibiplusplus_upernet_resnet101os8_vspw'" in msg


def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("VIDSEG_CACHE", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    monkeypatch.setenv("VIDSEG_CACHE", "")
    assert cache_dir() == tmp_path / "xdg" / "vidseg"
    monkeypatch.delenv("VIDSEG_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "vidseg"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/dir")  # ignored, as the XDG spec says
    assert cache_dir() == tmp_path / "home" / ".cache" / "vidseg"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == tmp_path / "home" / ".cache" / "vidseg"
    assert cache_dir().is_absolute()


def test_full_download(server):
    path = fetch(server.url, progress=False)
    assert path == cache_dir() / "weights" / "w.pth"
    assert path.read_bytes() == PAYLOAD
    assert not path.with_name("w.pth.part").exists()
    assert server.requests == [None]


def test_redirect_is_followed(server):
    assert fetch(server.url.replace("w.pth", "moved.pth"), progress=True).read_bytes() == PAYLOAD


def test_resume_after_a_cut(server):
    server.cuts = 1
    with pytest.raises(ZooError) as err:
        fetch(server.url, progress=False, retries=0)
    part = cache_dir() / "weights" / "w.pth.part"
    half = len(PAYLOAD) // 2
    msg = str(err.value)
    assert "\n" not in msg and server.url in msg and str(part) in msg
    assert part.stat().st_size == half
    path = fetch(server.url, progress=False)
    assert path.read_bytes() == PAYLOAD
    assert server.requests == [None, f"bytes={half}-"]


def test_cut_is_resumed_within_one_call(server):
    server.cuts = 1
    assert fetch(server.url, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [None, f"bytes={len(PAYLOAD) // 2}-"]


def test_restart_when_the_server_ignores_range(server):
    server.mode = "ignore_range"
    part = cache_dir() / "weights" / "w.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * 1000)  # a stale partial file that must not be kept as a prefix
    assert fetch(server.url, progress=False).read_bytes() == PAYLOAD
    assert server.requests == ["bytes=1000-"]


def test_restart_when_the_part_is_larger_than_the_file(server):
    part = cache_dir() / "weights" / "w.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(PAYLOAD) + 10))
    assert fetch(server.url, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [f"bytes={len(PAYLOAD) + 10}-", None]  # 416, then from zero


def test_restart_without_asking_when_the_known_size_is_smaller(server):
    part = cache_dir() / "weights" / "w.pth.part"
    part.parent.mkdir(parents=True)
    part.write_bytes(b"x" * (len(PAYLOAD) + 10))
    entry = _entry(server.url, size_bytes=len(PAYLOAD))
    assert fetch(entry, progress=False).read_bytes() == PAYLOAD
    assert server.requests == [None]


def test_size_mismatch_is_an_error(server):
    entry = _entry(server.url, size_bytes=len(PAYLOAD) + 1)
    with pytest.raises(ZooError) as err:
        fetch(entry, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and server.url in msg
    assert str(len(PAYLOAD) + 1) in msg and str(len(PAYLOAD)) in msg
    assert not list((cache_dir() / "weights").glob("w.pth*"))


def test_sha256_mismatch_is_an_error_and_the_file_is_deleted(server):
    wrong = "0" * 64
    with pytest.raises(ZooError) as err:
        fetch(_entry(server.url, sha256=wrong), progress=False)
    msg = str(err.value)
    assert "\n" not in msg and server.url in msg
    assert wrong in msg and hashlib.sha256(PAYLOAD).hexdigest() in msg
    assert not list((cache_dir() / "weights").glob("w.pth*"))
    right = _entry(server.url, sha256=hashlib.sha256(PAYLOAD).hexdigest().upper())
    assert fetch(right, progress=False).read_bytes() == PAYLOAD


def test_offline_error_names_the_url_and_the_manual_path():
    with socket.socket() as s:  # a port that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}/w.pth"
    with pytest.raises(ZooError) as err:
        fetch(url, progress=False, timeout=2)
    msg = str(err.value)
    assert "\n" not in msg and url in msg
    assert str(cache_dir() / "weights" / "w.pth") in msg


def test_offline_zoo_name_names_the_authors_url(monkeypatch):
    def refused(*args, **kwargs):
        raise urllib.error.URLError(ConnectionRefusedError(111, "Connection refused"))

    monkeypatch.setattr(urllib.request, "urlopen", refused)
    entry = resolve("mcibiplusplus_upernet_resnet101os8_vspw")
    with pytest.raises(ZooError) as err:
        fetch(entry.name, progress=False)
    msg = str(err.value)
    assert "\n" not in msg and entry.url in msg and str(weights_path(entry)) in msg
    assert weights_path(entry) == cache_dir() / "weights" / entry.filename


def test_http_error_is_a_zoo_error(server):
    server.mode = "404"
    with pytest.raises(ZooError, match=r"HTTP 404.*put it at"):
        fetch(server.url, progress=False)


def test_cached_file_is_used_without_network(monkeypatch, tmp_path):
    entry = _entry(
        "https://example.invalid/files/w.pth",
        sha256=hashlib.sha256(PAYLOAD).hexdigest(),
        size_bytes=len(PAYLOAD),
    )
    path = weights_path(entry)
    path.parent.mkdir(parents=True)
    path.write_bytes(PAYLOAD)  # as a user would place it by hand
    _no_network(monkeypatch)
    assert fetch(entry, progress=False) == path
    bad = _entry(entry.url, sha256="f" * 64)
    with pytest.raises(ZooError, match="sha256 mismatch"):
        fetch(bad, progress=False)
    assert path.exists()  # a hand-placed file is reported, never deleted
    empty = _entry("https://example.invalid/files/empty.pth")
    weights_path(empty).write_bytes(b"")
    with pytest.raises(ZooError, match="expected a non-empty file, found 0 bytes"):
        fetch(empty, progress=False)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "w.pth").write_bytes(b"anything")
    assert fetch(entry.url, dest_dir=other, progress=False) == other / "w.pth"


def test_fetch_converted_calls_convert_once(server):
    calls = []

    def convert(raw: Path, dst: Path, entry: ZooEntry) -> None:
        calls.append((raw, dst, entry.name))
        dst.write_bytes(b"converted:" + raw.read_bytes()[:8])

    entry = _entry(server.url)
    first = fetch_converted(entry, convert, progress=False)
    second = fetch_converted(entry, convert, progress=False)
    assert first == second == cache_dir() / "converted" / "local_test_model.vidseg.pth"
    assert first.read_bytes() == b"converted:" + PAYLOAD[:8]
    assert len(calls) == 1 and calls[0][0] == weights_path(entry) and calls[0][1] != first
    assert sorted(p.name for p in first.parent.iterdir() if not p.name.startswith(".")) == [
        first.name
    ]


def test_fetch_converted_failures_leave_nothing(server):
    entry = _entry(server.url)

    def broken(raw: Path, dst: Path, entry: ZooEntry) -> None:
        dst.write_bytes(b"half")
        raise RuntimeError("layout not recognised")

    with pytest.raises(RuntimeError, match="layout not recognised"):
        fetch_converted(entry, broken, progress=False)
    with pytest.raises(ZooError, match="did not write"):
        fetch_converted(entry, lambda raw, dst, e: None, progress=False)
    leftovers = [p for p in (cache_dir() / "converted").iterdir() if not p.name.startswith(".")]
    assert leftovers == []


def test_concurrent_fetches_download_once(server):
    results, errors = [], []

    def worker():
        try:
            results.append(fetch(server.url, progress=False))
        except Exception as exc:  # reported below, a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert not errors and len(results) == 3 and len(set(results)) == 1
    assert results[0].read_bytes() == PAYLOAD
    assert server.requests == [None]
