"""PyAV random access: seeking gives exactly the frames of a sequential decode, and decodes few."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from vidseg.io.random_access import PyAVFrameReader, open_frame_reader

H, W = 48, 64


_PANORAMA = np.random.default_rng(0).integers(0, 256, (H, W + 200, 3), dtype=np.uint8)


def noise(k: int) -> np.ndarray:
    """Frame k pans 2 pixels across fixed noise: x264 then uses B-frames (dts < pts)."""
    return np.ascontiguousarray(_PANORAMA[:, 2 * k : 2 * k + W])


def write(
    path,
    n: int = 60,
    gop: int = 5,
    codec: str = "libx264",
    start_pts: int | None = None,
    variable_rate: bool = False,
):
    """Frames of noise with a keyframe every `gop`; explicit millisecond pts if `start_pts`."""
    with av.open(str(path), "w") as out:
        options = {"g": str(gop)} if codec == "libx264" else {}
        stream = out.add_stream(codec, rate=25, options=options)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        if codec != "libx264":
            stream.codec_context.gop_size = gop
        if start_pts is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        pts = start_pts
        for k in range(n):
            frame = av.VideoFrame.from_ndarray(noise(k), format="rgb24")
            if start_pts is not None:
                frame.pts, frame.time_base = pts, Fraction(1, 1000)
                pts += (90 if k % 3 == 0 else 40) if variable_rate else 40
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path


def sequential(path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def assert_exact(reader: PyAVFrameReader, reference: list[np.ndarray], trials: int = 25):
    rng = np.random.default_rng(0)
    for _ in range(trials):
        indices = rng.integers(0, len(reference), int(rng.integers(1, 5))).tolist()
        got = reader.get(indices)
        assert sorted(got) == sorted(set(indices))
        for i in indices:
            assert np.array_equal(got[i], reference[i]), f"frame {i} of {indices}"
    everything = reader.get(range(len(reference)))
    assert all(np.array_equal(everything[i], reference[i]) for i in range(len(reference)))


@pytest.fixture(scope="module")
def gop5(tmp_path_factory):
    path = write(tmp_path_factory.mktemp("ra") / "gop5.mp4", n=60, gop=5)
    return path, sequential(path)


def test_seeking_gives_the_frames_of_a_sequential_decode(gop5):
    path, reference = gop5
    reader = PyAVFrameReader(path)
    assert len(reader) == len(reference) == 60 and reader.seekable
    assert reader._keys == list(range(0, 60, 5))
    assert_exact(reader, reference)


def test_a_late_frame_does_not_decode_the_whole_file(gop5):
    path, reference = gop5
    reader = PyAVFrameReader(path)
    got = reader.get([58])
    assert np.array_equal(got[58], reference[58])
    assert reader.seeks == 1 and reader.frames_decoded == 4  # 55 (keyframe), 56, 57, 58
    reader.get([57, 58, 59])  # a clip inside one GOP: one seek, 55..59
    assert reader.seeks == 2 and reader.frames_decoded == 4 + 5


def test_a_clip_across_a_keyframe_decodes_on_instead_of_seeking_back(gop5):
    path, reference = gop5
    reader = PyAVFrameReader(path)
    got = reader.get([23, 24, 25, 26])
    assert reader.seeks == 1 and reader.frames_decoded == 7  # 20..26
    assert all(np.array_equal(got[i], reference[i]) for i in (23, 24, 25, 26))


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("offset.mp4", {"start_pts": 5000}),  # first pts far from 0
        ("vfr.mp4", {"start_pts": 0, "variable_rate": True}),  # the index is not pts * rate
        ("vfr.mkv", {"start_pts": 1234, "variable_rate": True}),
        ("gop7.ts", {"gop": 7}),  # MPEG-TS has no index: seeks land near, not on, the keyframe
        ("mpeg4.avi", {"codec": "mpeg4", "gop": 6}),
    ],
)
def test_exact_in_other_containers_and_timings(tmp_path, name, kwargs):
    path = write(tmp_path / name, n=40, **kwargs)
    reference = sequential(path)
    reader = PyAVFrameReader(path)
    assert len(reader) == len(reference) == 40
    assert_exact(reader, reference, trials=12)
    assert reader.seekable


def test_without_a_usable_packet_table_it_decodes_from_the_start(gop5):
    path, reference = gop5
    reader = PyAVFrameReader(path)
    assert reader.seekable  # builds the packet table
    reader._pts = reader._index = None  # as for a stream whose packets carry no pts
    got = reader.get([3, 40])
    assert reader.frames_decoded == 41 and reader.seeks == 0
    assert np.array_equal(got[40], reference[40]) and np.array_equal(got[3], reference[3])


def test_frames_past_the_end_of_a_truncated_file_are_left_out(tmp_path):
    from _video_fixtures import write_video

    path = write_video(tmp_path / "full.mp4", n=40, faststart=True, noise=True)
    reference = sequential(path)
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    reader = PyAVFrameReader(cut)
    got = reader.get([0, 5, 39])
    assert 0 in got and 39 not in got
    assert all(np.array_equal(got[i], reference[i]) for i in got)
    assert reader.get([100]) == {} and reader.get([]) == {}


def test_open_frame_reader_rejects_unknown_readers(gop5):
    assert isinstance(open_frame_reader(gop5[0]), PyAVFrameReader)
    with pytest.raises(ValueError, match="'opencv'"):
        open_frame_reader(gop5[0], "opencv")


def test_clip_loader_reads_a_late_clip_by_seeking(gop5):
    from vidseg.data.video_clips import VideoFileClips

    path, reference = gop5
    ds = VideoFileClips([(path, None)], history=2, mode="eval", backend="pyav")
    assert ds.reader_decision.choice == "pyav"
    frames = ds[57]["frames"]
    assert ds._reader(str(path)).frames_decoded == 3  # 55 (a keyframe), 56, 57; not 58 frames
    expected, _ = ds.transform(
        [reference[i] for i in (55, 56, 57)],
        [np.zeros((H, W), np.uint8)],
        rng=np.random.default_rng(0),
    )
    assert np.array_equal(frames.numpy(), expected.numpy())
