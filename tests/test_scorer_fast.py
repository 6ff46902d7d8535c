"""The fast scoring path (own PNG decoder, run-based pair counts, uint8 run lengths, reader
threads) against OpenCV / PIL and a straightforward per-window rendering of the official
procedure (VSPW `test.py` confusion matrix + `VC_perclip.py` windows)."""

from __future__ import annotations

import io
import json
import struct
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from vidseg.io.label_png import decode_label_png
from vidseg.metrics.consistency import VideoConsistency
from vidseg.metrics.scorer import read_prediction, score_prediction_dir
from vidseg.metrics.segmentation import pair_counts

K = 6  # train ids 0..5 = raw 1..6
H, W = 9, 13


def _chunk(kind: bytes, payload: bytes) -> bytes:
    body = kind + payload
    return struct.pack(">I", len(payload)) + body + struct.pack(">I", zlib.crc32(body))


def _encode(arr: np.ndarray, filters: list[int], colour: int = 0, interlace: int = 0) -> bytes:
    """A PNG of (h, w) uint8 `arr` with the given row filters (0 None, 1 Sub, 2 Up)."""
    h, w = arr.shape
    a = arr.astype(np.int16)
    rows = []
    for y, f in enumerate(filters):
        if f == 1:
            row = a[y] - np.concatenate(([0], a[y, :-1]))
        elif f == 2:
            row = a[y] - (a[y - 1] if y else 0)
        else:
            row = a[y]
        rows.append(bytes([f]) + (row % 256).astype(np.uint8).tobytes())
    head = struct.pack(">IIBBBBB", w, h, 8, colour, 0, 0, interlace)
    extra = _chunk(b"PLTE", bytes(range(256)) * 3) if colour == 3 else b""
    data = zlib.compress(b"".join(rows))
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", head)
        + extra
        + _chunk(b"IDAT", data[:5])
        + _chunk(b"IDAT", data[5:])
        + _chunk(b"IEND", b"")
    )


def _labels(seed: int = 0, shape=(H, W)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape).astype(np.uint8)


@pytest.mark.parametrize(
    "filters",
    [[0] * H, [1] * H, [2] * H, [2, 1, 1, 0, 2, 2, 2, 1, 0], [1, 2, 0, 2, 1, 2, 0, 1, 2]],
)
@pytest.mark.parametrize("colour", [0, 3])
def test_decoder_matches_opencv_and_pil(filters, colour):
    arr = _labels(len(filters) + colour + sum(filters))
    data = _encode(arr, filters, colour)
    got = decode_label_png(data)
    assert got is not None and got.dtype == np.uint8
    assert np.array_equal(got, arr)
    assert np.array_equal(got, np.array(Image.open(io.BytesIO(data))))
    if colour == 0:
        assert np.array_equal(got, cv2.imdecode(np.frombuffer(data, np.uint8), -1))


@pytest.mark.parametrize("mode", ["L", "P"])
def test_decoder_on_files_written_by_pil_and_opencv(tmp_path, mode):
    arr = np.kron(_labels(3, (6, 7)), np.ones((20, 30), np.uint8))  # blocky, like label maps
    path = tmp_path / "a.png"
    im = Image.fromarray(arr, "L")
    if mode == "P":
        im = im.convert("P")
        im.putpalette(list(range(256)) * 3)
    im.save(path)
    got = decode_label_png(path.read_bytes())  # PIL "L" may use Paeth rows: None is fine
    assert got is None or np.array_equal(got, arr)
    assert np.array_equal(read_prediction(str(path)), arr)
    cv2.imwrite(str(path), arr)
    assert np.array_equal(decode_label_png(path.read_bytes()), arr)


@pytest.mark.parametrize("inflate", ["zlib_ng", "zlib"])
def test_decoder_with_each_inflate(monkeypatch, inflate):
    """zlib-ng (declared) and the zlib fallback decode the same bytes and decline the same."""
    import vidseg.io.label_png as label_png

    module = pytest.importorskip("zlib_ng").zlib_ng if inflate == "zlib_ng" else zlib
    monkeypatch.setattr(label_png, "_inflate", module)
    arr = np.kron(_labels(7, (6, 7)), np.ones((20, 30), np.uint8))
    data = cv2.imencode(".png", arr)[1].tobytes()
    assert np.array_equal(decode_label_png(data), arr)
    head = struct.pack(">IIBBBBB", 13, 9, 8, 0, 0, 0, 0)
    deflate = zlib.compress((b"\x00" + bytes(13)) * 9)  # a valid 13x9 image, then broken:
    for payload in (deflate[:-6], b"\x78\x9c\xff\xff"):  # checksums right, stream broken
        png = _chunk(b"IHDR", head) + _chunk(b"IDAT", payload) + _chunk(b"IEND", b"")
        assert decode_label_png(b"\x89PNG\r\n\x1a\n" + png) is None


def test_decoder_declines_what_it_does_not_handle():
    arr = _labels(5)
    good = _encode(arr, [0] * H)
    assert decode_label_png(_encode(arr, [0] * H, interlace=1)) is None
    assert decode_label_png(_encode(arr, [4] + [0] * (H - 1))) is None  # Paeth row
    assert decode_label_png(good[:-20]) is None  # truncated
    bad_crc = bytearray(good)
    bad_crc[40] ^= 1
    assert decode_label_png(bytes(bad_crc)) is None
    assert decode_label_png(cv2.imencode(".png", np.dstack([arr] * 3))[1].tobytes()) is None
    assert decode_label_png(cv2.imencode(".png", arr.astype(np.uint16))[1].tobytes()) is None
    assert decode_label_png(b"not a png") is None


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (5, 1), (48, 85)])
def test_pair_counts_equals_bincount(shape):
    rng = np.random.default_rng(sum(shape))
    blocky = np.kron(rng.integers(0, 256, (4, 4)), np.ones(shape)).astype(np.uint8)[: shape[0]]
    for a, b in ((_labels(1, shape), _labels(2, shape)), (blocky, blocky[::-1].copy())):
        want = np.bincount(a.ravel().astype(np.int64) * 256 + b.ravel(), minlength=65536)
        got = pair_counts(a, b)
        assert got.dtype == np.int64 and got.shape == (256, 256)
        assert np.array_equal(got.ravel(), want)


def test_uint8_run_lengths_match_the_general_path():
    rng = np.random.default_rng(7)
    seq = [rng.integers(0, 3, (2, H, W)).astype(np.uint8) for _ in range(25)]
    results = []
    # a window above 254 makes the runs uint16, which takes the general numpy path
    for windows in ((2, 4, 16), (2, 4, 16, 300)):
        vc = VideoConsistency(windows)
        assert vc._dtype == (np.uint8 if len(windows) == 3 else np.uint16)
        vc.start_video("v")
        for g, p in seq:
            vc.add(g, p)
        vc.end_video()
        results.append(vc.state()["scores"])
    for c in (2, 4, 16):  # NaN windows included: equal positions, equal values
        np.testing.assert_array_equal(results[0][c], results[1][c])
    assert not np.isnan(results[0][4]).all()


def _reference(root, pred_dir, videos, windows) -> dict:
    """Official procedure written plainly: global test.py confusion matrix, VC_perclip windows."""
    conf = np.zeros((K, K))
    frames = {}
    for v in videos:
        names = sorted(p.name for p in (root / "data" / v / "mask").iterdir())
        gl = [np.array(Image.open(root / "data" / v / "mask" / n)) for n in names]
        pl = [np.array(Image.open(pred_dir / v / n)) for n in names]
        frames[v] = (gl, pl)
        for g, p in zip(gl, pl):
            g = g.astype(np.int64)
            g[g == 0] = 255
            g -= 1
            g[g == 254] = 255
            keep = (g >= 0) & (g < K)
            conf += np.bincount(K * g[keep] + p[keep], minlength=K * K).reshape(K, K)
    diag = np.diag(conf)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = diag / (conf.sum(1) + conf.sum(0) - diag)
    isval = conf.sum(1) > 0
    out = {"miou": float(np.nansum(iou * isval) / isval.sum())}
    for c in windows:
        accs = []
        for gl, pl in frames.values():
            for i in range(len(gl) - c):  # starts 0..N-C-1; N <= C: no window
                gc = np.ones(gl[0].shape, bool)
                pc = np.ones(gl[0].shape, bool)
                for j in range(1, c):
                    gc &= gl[i] == gl[i + j]
                    pc &= pl[i] == pl[i + j]
                with np.errstate(divide="ignore", invalid="ignore"):
                    accs.append((pc & gc).sum() / gc.sum())
        out[f"mvc{c}"] = float(np.nanmean(accs)) if accs else float("nan")
    return out


def _write_split(tmp_path, lengths, writer):
    root, pred = tmp_path / "VSPW", tmp_path / "pred"
    (root / "data").mkdir(parents=True)
    classes = {"others": 0, **{f"c{k}": k for k in range(1, K + 1)}}
    (root / "label_num_dic_final.json").write_text(json.dumps(classes))
    videos = [f"{i + 1}_v{i}" for i in range(len(lengths))]
    (root / "val.txt").write_text("".join(v + "\n" for v in videos))
    rng = np.random.default_rng(11)
    for v, n in zip(videos, lengths):
        for sub in ("origin", "mask"):
            (root / "data" / v / sub).mkdir(parents=True)
        (pred / v).mkdir(parents=True)
        gt = rng.integers(1, K + 1, (H, W)).astype(np.uint8)
        gt[0, :] = 0  # "others": ignored in mIoU, constant in mVC
        gt[-1, :] = 255  # void
        pr = np.where(gt == 0, 0, gt - 1).clip(0, K - 1).astype(np.uint8)
        for t in range(n):
            flip = rng.random((H, W)) < 0.1
            gt = np.where(flip, rng.integers(0, K + 1, (H, W)), gt).astype(np.uint8)
            if t % 3 == 0:
                gt[2, 2:5] = 255  # flickering void patch
            pr = np.where(rng.random((H, W)) < 0.15, rng.integers(0, K, (H, W)), pr)
            pr = pr.astype(np.uint8)
            stem = f"{100 + t:08d}"
            cv2.imwrite(str(root / "data" / v / "origin" / f"{stem}.jpg"), np.zeros((H, W, 3)))
            writer(root / "data" / v / "mask" / f"{stem}.png", gt)
            writer(pred / v / f"{stem}.png", pr)
    return root, pred, videos


def _write_cv2(path, arr):
    cv2.imwrite(str(path), arr)


def _write_palette(path, arr):
    im = Image.fromarray(arr, "L").convert("P")
    im.putpalette(list(range(256)) * 3)
    im.save(path)


@pytest.mark.parametrize("writer", [_write_cv2, _write_palette])
@pytest.mark.parametrize("io_threads", [0, 3])
def test_fast_path_equals_per_window_reference(tmp_path, writer, io_threads):
    # lengths around the windows: shorter than C, exactly C (no window: starts 0..N-C-1),
    # C + 1 (one window), longer
    windows = (2, 4)
    root, pred, videos = _write_split(tmp_path, [1, 2, 3, 4, 5, 9], writer)
    want = _reference(root, pred, videos, windows)
    got = score_prediction_dir(root, pred, tc=False, windows=windows, io_threads=io_threads)
    for key, value in want.items():
        assert got[key] == value, key  # bit-identical, not approximately
    assert got["mvc_windows"] == {"mvc2": 0 + 0 + 1 + 2 + 3 + 7, "mvc4": 0 + 1 + 5}
