"""Upright input: video display matrices (phone rotation, mirror), EXIF orientation, cut-off JPEGs.

The expected pictures are written with numpy alone, as a player shows them; the video table was
checked once against the ffmpeg command line's autorotation (ffmpeg 5.1, all 12 cases below).
"""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from vidseg.cli import main
from vidseg.data.vspw import read_frame
from vidseg.io.images import UnreadableImageError, jpeg_is_truncated, read_rgb
from vidseg.io.orientation import (
    UPRIGHT,
    Orientation,
    frame_orientation,
    from_display_matrix,
    probe_orientation,
)
from vidseg.io.random_access import PyAVFrameReader, open_frame_reader
from vidseg.io.selftest import Decision
from vidseg.io.sources import FrameDirSource, SourceError, VideoFileSource

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT / "configs" / "synthetic" / "tiny.yaml")
H, W = 32, 64  # stored size; 64 wide is read right by decord 3.4.0 on AVX2 and AVX-512


def picture(k: int = 0, h: int = H, w: int = W) -> np.ndarray:
    """An asymmetric test picture (k shifts a bright bar): any turn or mirror changes it."""
    rgb = np.zeros((h, w, 3), np.uint8)
    rgb[: h // 2, : w // 2] = (200, 40, 40)
    rgb[: h // 2, w // 2 :] = (40, 200, 40)
    rgb[h // 2 :, : w // 2] = (40, 40, 200)
    rgb[h // 2 :, w // 2 :] = (220, 220, 60)
    rgb[2:6, 4 + 4 * k : 12 + 4 * k] = 255
    return rgb


def as_player_shows(rgb: np.ndarray, ccw_degrees: int, hflip: bool, vflip: bool) -> np.ndarray:
    """PyAV's set_display_rotation semantics: turn counter-clockwise, then mirror."""
    out = np.rot90(rgb, ccw_degrees // 90)
    if hflip:
        out = out[:, ::-1]
    if vflip:
        out = out[::-1]
    return out


def write_rotated(
    path: Path, ccw_degrees: int = 0, hflip: bool = False, vflip: bool = False, n: int = 4
) -> Path:
    """Lossless-ish H.264 mp4 (crf 0, yuv444p) whose display matrix asks for the given turn."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "0"})
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv444p"
        if ccw_degrees or hflip or vflip:
            stream.set_display_rotation(ccw_degrees, hflip=hflip, vflip=vflip)
        for k in range(n):
            out.mux(stream.encode(av.VideoFrame.from_ndarray(picture(k), format="rgb24")))
        out.mux(stream.encode(None))
    return path


def close_to(a: np.ndarray, b: np.ndarray, tol: float = 3) -> bool:
    return a.shape == b.shape and np.abs(a.astype(int) - b.astype(int)).max() <= tol


CASES = [
    (d, hf, vf)
    for d in (0, 90, 180, 270)
    for hf, vf in ((False, False), (True, False), (False, True))
]


@pytest.mark.parametrize("degrees,hflip,vflip", CASES)
def test_display_matrix_maps_to_the_players_picture(degrees, hflip, vflip):
    rgb = picture()
    a = np.deg2rad(degrees)  # FFmpeg's av_display_rotation_set / _matrix_flip layout, 16.16
    c, s = round(np.cos(a) * 65536), round(np.sin(a) * 65536)
    matrix = [c, -s, 0, s, c, 0, 0, 0, 1 << 30]
    if hflip:
        matrix[0], matrix[3] = -matrix[0], -matrix[3]
    if vflip:
        matrix[1], matrix[4] = -matrix[1], -matrix[4]
    orientation = from_display_matrix(matrix)
    assert np.array_equal(orientation.apply(rgb), as_player_shows(rgb, degrees, hflip, vflip))
    assert orientation.apply(rgb).flags.c_contiguous


def test_odd_angles_and_identity():
    a = np.deg2rad(30)
    c, s = round(np.cos(a) * 65536), round(np.sin(a) * 65536)
    assert from_display_matrix([c, -s, 0, s, c, 0, 0, 0, 1 << 30]) is None
    assert from_display_matrix([0] * 9) is None
    rgb = picture()
    assert UPRIGHT.identity and UPRIGHT.apply(rgb) is rgb
    # 90 degrees plus fixed-point rounding residue still counts as exact
    assert from_display_matrix([3, 65536, 0, -65536, 2, 0, 0, 0, 1 << 30]) == Orientation(
        True, True, False
    )
    assert str(Orientation(True, True, False)) == "rotated 90 degrees clockwise"


def test_rotate_tag_of_older_ffmpeg_builds():
    class Frame:  # no display-matrix side data, as FFmpeg < 7 decoded frames
        side_data: dict = {}

    class Stream:
        def __init__(self, rotate):
            self.metadata = {"rotate": rotate}

    rgb = picture()
    clockwise = {"90": np.rot90(rgb, -1), "180": rgb[::-1, ::-1], "270": np.rot90(rgb, 1), "0": rgb}
    for tag, expected in clockwise.items():
        assert np.array_equal(frame_orientation(Frame(), Stream(tag)).apply(rgb), expected)
    assert frame_orientation(Frame(), Stream("45")) is None
    assert frame_orientation(Frame(), None) == UPRIGHT


@pytest.mark.parametrize(
    "degrees,hflip,vflip",
    [
        (90, False, False),
        (270, False, False),
        (180, False, False),
        (0, True, False),
        (90, True, False),
    ],
)
def test_video_file_source_yields_upright_frames(tmp_path, degrees, hflip, vflip):
    path = write_rotated(tmp_path / "phone.mp4", degrees, hflip, vflip)
    with VideoFileSource(path) as src:
        assert src.num_frames == 4
        frames = list(src)
    assert len(frames) == 4 and src.error is None
    for k, (_, _, rgb) in enumerate(frames):
        assert close_to(rgb, as_player_shows(picture(k), degrees, hflip, vflip)), k
    if degrees in (90, 270):
        assert frames[0][2].shape == (W, H, 3)
    with VideoFileSource(path, short_side=16) as src:  # resizing happens on the upright frame
        assert next(iter(src))[2].shape[:2] == ((32, 16) if degrees in (90, 270) else (16, 32))


def test_random_access_reader_is_upright(tmp_path):
    path = write_rotated(tmp_path / "phone.mp4", 90, n=6)
    reader = PyAVFrameReader(path)
    assert len(reader) == 6
    got = reader.get([1, 4])
    for k in (1, 4):
        assert close_to(got[k], as_player_shows(picture(k), 90, False, False))


def test_decord_never_reads_a_file_with_a_display_matrix(tmp_path, monkeypatch, caplog):
    pytest.importorskip("decord")
    from vidseg.io.random_access import DecordFrameReader

    plain = write_rotated(tmp_path / "plain.mp4")
    try:
        DecordFrameReader(plain)
    except ValueError as exc:
        pytest.skip(f"decord cannot read even the plain file here: {exc}")
    rotated = write_rotated(tmp_path / "rotated.mp4", 0, hflip=True)  # decord 3.4.0 turns it 180
    assert probe_orientation(rotated) == Orientation(False, True, False)
    with pytest.raises(ValueError, match="display matrix.*mirrored left-right"):
        DecordFrameReader(rotated)
    with caplog.at_level(logging.WARNING):
        reader = open_frame_reader(rotated, "decord")
    assert isinstance(reader, PyAVFrameReader) and "reading it with PyAV" in caplog.text
    assert close_to(reader.get([2])[2], picture(2)[:, ::-1])
    # VideoFileSource: "auto" (decord chosen) falls back to PyAV, "decord" says why it cannot
    import vidseg.io.selftest as selftest

    monkeypatch.setattr(selftest, "video_reader", lambda requested: Decision("decord", "test"))
    with VideoFileSource(rotated, backend="auto") as src:
        assert src.backend == "pyav"
        assert close_to(next(iter(src))[2], picture(0)[:, ::-1])
    with pytest.raises(SourceError, match="rotated.mp4.*display matrix"):
        VideoFileSource(rotated, backend="decord")


def test_stream_writes_overlay_and_labels_upright(tmp_path):
    path = write_rotated(tmp_path / "phone.mp4", 270, n=3)
    out = tmp_path / "out"
    assert (
        main(["stream", TINY, str(path), "--random-init", "--quiet", "--labels", "--out", str(out)])
        == 0
    )
    labels = sorted((out / "labels" / "phone").glob("*.png"))
    assert len(labels) == 3
    assert cv2.imread(str(labels[0]), cv2.IMREAD_UNCHANGED).shape == (W, H)
    with av.open(str(out / "phone_overlay.mp4")) as c:
        frame = next(c.decode(video=0))
        assert (frame.height, frame.width) == (W, H)


# ---------------------------------------------------------------- EXIF orientation, truncation


def exif_segment(orientation: int, big_endian: bool = True, extra: bytes = b"") -> bytes:
    """An APP1 segment whose TIFF IFD0 holds only the Orientation tag (0x0112, SHORT)."""
    e = ">" if big_endian else "<"
    tiff = (b"MM" if big_endian else b"II") + struct.pack(e + "HI", 42, 8)
    tiff += struct.pack(e + "H", 1) + struct.pack(e + "HHIHH", 0x0112, 3, 1, orientation, 0)
    payload = b"Exif\x00\x00" + tiff + struct.pack(e + "I", 0) + extra
    return b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload


def jpeg_bytes(
    rgb: np.ndarray, orientation: int | None = None, extra: bytes = b"", params=()
) -> bytes:
    data = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 100, *params]
    )[1].tobytes()
    if orientation is None:
        return data
    return data[:2] + exif_segment(orientation, orientation % 2 == 0, extra) + data[2:]


# EXIF 2.3 Orientation: how the stored rows / columns are shown
EXIF_SHOWN = {
    1: lambda s: s,
    2: lambda s: s[:, ::-1],
    3: lambda s: s[::-1, ::-1],
    4: lambda s: s[::-1],
    5: lambda s: s.swapaxes(0, 1),
    6: lambda s: np.rot90(s, -1),
    7: lambda s: s.swapaxes(0, 1)[::-1, ::-1],
    8: lambda s: np.rot90(s, 1),
}


def test_frame_folder_and_dataset_frames_follow_exif_orientation(tmp_path):
    stored = picture()
    for o in EXIF_SHOWN:
        (tmp_path / f"{o:05d}.jpg").write_bytes(jpeg_bytes(stored, o))
    with FrameDirSource(tmp_path) as src:
        frames = list(src)
    assert len(frames) == 8 and src.skipped == 0
    for (_, _, rgb), o in zip(frames, EXIF_SHOWN):
        expected = EXIF_SHOWN[o](stored)
        assert rgb.shape == expected.shape, o
        assert np.abs(rgb.astype(int) - expected).mean() < 3, o
        assert np.array_equal(read_frame(tmp_path / f"{o:05d}.jpg"), rgb)  # datasets agree


def test_jpeg_truncation_is_found_past_thumbnails_and_trailers():
    rgb = np.random.default_rng(0).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    thumb = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()  # own FFD9 inside
    for params in ((), (cv2.IMWRITE_JPEG_PROGRESSIVE, 1), (cv2.IMWRITE_JPEG_RST_INTERVAL, 1)):
        data = jpeg_bytes(rgb, 6, extra=thumb, params=params)
        assert not jpeg_is_truncated(data)
        assert not jpeg_is_truncated(data + b"MotionPhoto_Data" + thumb)  # trailer after EOI
        for cut in (1, 2, 100, len(data) // 2, len(data) - 300, 3):
            assert jpeg_is_truncated(data[:-cut]), (params, cut)
    assert not jpeg_is_truncated(b"\x89PNG\r\n\x1a\n")  # not a JPEG: the decoder judges it


def test_truncated_jpeg_is_an_unreadable_frame(tmp_path, caplog):
    for k in range(3):
        data = jpeg_bytes(picture(k))
        (tmp_path / f"{k:05d}.jpg").write_bytes(data if k != 1 else data[: len(data) - 40])
    cut = tmp_path / "00001.jpg"
    with caplog.at_level(logging.WARNING), FrameDirSource(tmp_path) as src:
        frames = list(src)
    assert [i for i, _, _ in frames] == [0, 2]
    assert src.skipped == 1 and src.skipped_paths == [cut]
    assert str(cut) in caplog.text and "truncated JPEG" in caplog.text
    with pytest.raises(UnreadableImageError, match="00001.jpg.*truncated"):
        read_frame(cut)
    with pytest.raises(UnreadableImageError, match="empty"):
        (tmp_path / "empty.jpg").write_bytes(b"")
        read_rgb(tmp_path / "empty.jpg")
