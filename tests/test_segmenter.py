"""`vidseg.Segmenter`: the Python entry point, on the same per-frame path as stream and eval."""

from __future__ import annotations

import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch
from _video_fixtures import moving_square, write_video

TINY = Path(__file__).parent.parent / "configs" / "synthetic" / "tiny.yaml"
OVERRIDES = ["model.num_classes=5", "data.short_side=48", "model.iis_stages=1"]


@pytest.fixture(scope="module")
def seg():
    from vidseg import Segmenter

    with pytest.warns(UserWarning, match="UNTRAINED"):
        s = Segmenter(TINY, None, overrides=OVERRIDES)
    return s


def test_predict_labels_and_logits_at_the_input_size(seg):
    rgb = moving_square(3, h=60, w=100)
    labels = seg.predict(rgb)
    assert labels.shape == (60, 100) and labels.dtype == np.int64
    logits = seg.predict(rgb, return_logits=True)
    assert logits.shape == (5, 60, 100) and logits.dtype == np.float32
    assert np.array_equal(logits.argmax(0), labels)
    assert isinstance(seg.model, torch.nn.Module) and not seg.model.training


def test_predict_equals_the_stream_path(seg):
    """Same pre-processing, step() and upsampling as `vidseg stream` (`segment_frame`)."""
    from vidseg.engine.predict import segment_frame

    rgb = moving_square(5, h=60, w=100)
    expected, _ = segment_frame(seg.model, rgb, None, 48, seg.cfg.data.mean, seg.cfg.data.std)
    assert np.array_equal(seg.predict(rgb), expected.astype(np.int64))


def test_slide_mode_uses_the_config_windows():
    from vidseg import Segmenter

    with pytest.warns(UserWarning):
        s = Segmenter(
            TINY,
            None,
            overrides=OVERRIDES
            + ["eval.mode=slide", "eval.crop_size=[48, 48]", "eval.stride=[32, 32]"],
        )
    rgb = moving_square(2, h=60, w=100)
    probs = s.predict(rgb, return_logits=True, mode="slide")
    assert probs.shape == (5, 60, 100)
    assert np.allclose(probs.sum(0), 1.0, atol=1e-5)  # averaged probabilities (authors' rule)
    assert np.array_equal(s.predict(rgb, mode="slide"), probs.argmax(0))
    with pytest.raises(ValueError, match="mode='tiles'|mode="):
        s.predict(rgb, mode="tiles")


def test_slide_without_windows_in_the_config_is_a_clear_error(seg):
    with pytest.raises(ValueError, match="eval.crop_size"):
        seg.predict(moving_square(0), mode="slide")


def test_stream_keeps_the_history_and_reset_forgets_it(seg, tmp_path):
    video = tmp_path / "clip.mp4"
    write_video(video, n=6, h=64, w=96)
    results = list(seg.stream(str(video)))
    assert [r.index for r in results] == list(range(6))
    assert all(r.labels.shape == (64, 96) and r.labels.dtype == np.int64 for r in results)
    assert results[1].timestamp > results[0].timestamp
    # causal: frame by frame with step() from a reset gives the same labels
    seg.reset()
    from vidseg.io.sources import open_source

    again = [seg.step(rgb) for _, _, rgb in open_source(str(video))]
    assert all(np.array_equal(a, r.labels) for a, r in zip(again, results))
    assert seg._state is not None
    seg.reset()
    assert seg._state is None


def test_bad_frames_are_refused_in_one_line(seg):
    for bad in (np.zeros((10, 10), np.uint8), np.zeros((10, 10, 3), np.float32), "frame.png"):
        with pytest.raises(ValueError, match="RGB uint8"):
            seg.predict(bad)


def test_config_by_name():
    from vidseg.segmenter import resolve_config_path

    assert resolve_config_path("vspw/upernet_mcibipp_r50").is_file()
    assert resolve_config_path("synthetic/tiny.yaml").is_file()


def test_from_pretrained_offline_fails_in_one_line(tmp_path, monkeypatch):
    from vidseg import Segmenter
    from vidseg.zoo import ZooError

    monkeypatch.setenv("VIDSEG_CACHE", str(tmp_path / "cache"))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("network unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(ZooError) as info:
        Segmenter.from_pretrained("mcibiplusplus_upernet_resnet101os8_vspw")
    msg = str(info.value)
    assert "\n" not in msg
    assert (
        "https://github.com/SegmentationBLWX/modelstore" in msg and str(tmp_path / "cache") in msg
    )


def test_from_pretrained_converts_once_and_loads_from_the_cache(tmp_path, monkeypatch):
    """A zoo entry whose file is already in the cache (placed by hand): converted once, cached."""
    import json

    from test_ssseg_parity import load_fixture, vidseg_config_yaml

    import vidseg.zoo.download as download
    from vidseg import Segmenter
    from vidseg.zoo import ZooEntry, weights_path

    monkeypatch.setenv("VIDSEG_CACHE", str(tmp_path / "cache"))
    fx = load_fixture("fcn")
    cfg = vidseg_config_yaml(json.loads(fx["cfg"]), fx["image"].shape[:2], tmp_path)
    entry = ZooEntry(
        name="tiny_fixture_fcn",
        url="https://example.invalid/tiny_fixture_fcn.pth",
        dataset="vspw",
        num_classes=24,
        config=str(cfg),
        miou=1.0,
    )
    monkeypatch.setattr(download, "ZOO", download.ZOO + (entry,))
    raw = weights_path(entry)
    raw.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": fx["state_dict"]}, raw)
    s = Segmenter.from_pretrained("tiny_fixture_fcn")
    converted = tmp_path / "cache" / "converted" / "tiny_fixture_fcn.vidseg.pth"
    assert converted.is_file()
    image = fx["image"].numpy() if torch.is_tensor(fx["image"]) else fx["image"]
    first = s.predict(image)
    mtime = converted.stat().st_mtime_ns
    again = Segmenter.from_pretrained("tiny_fixture_fcn").predict(image)
    assert converted.stat().st_mtime_ns == mtime and np.array_equal(first, again)
