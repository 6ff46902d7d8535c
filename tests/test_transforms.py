"""Clip-consistent transforms: same geometry and jitter for every frame, nearest labels, cat cap."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidseg.data.transforms import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipTransform,
    prepare_frame,
    resize_short_side,
)


def pattern(h=32, w=48, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_resize_short_side_keeps_aspect():
    img = np.zeros((32, 48, 3), np.uint8)
    assert resize_short_side(img, 64).shape == (64, 96, 3)
    assert resize_short_side(np.zeros((48, 32), np.uint8), 16).shape == (24, 16)
    assert resize_short_side(img, None) is img


def test_prepare_frame_normalises_and_converts():
    rgb = np.full((20, 30, 3), 255, np.uint8)
    x = prepare_frame(rgb, short_side=10)
    assert x.shape == (1, 3, 10, 15) and x.dtype == torch.float32
    expected = (1 - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(x[0, :, 0, 0], expected, atol=1e-5)
    grey = prepare_frame(np.full((20, 30), 255, np.uint8))
    rgba = prepare_frame(np.full((20, 30, 4), 255, np.uint8))
    assert torch.equal(grey, prepare_frame(rgb)) and torch.equal(rgba, prepare_frame(rgb))


DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(37, 53, 3), (20, 30), (21, 17, 4)])
def test_prepare_frame_on_a_device_equals_the_host_path(device, shape):
    """The GPU stream path (uint8 upload, table lookup on the device) gives the host tensor."""
    rgb = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    mean, std = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
    for short_side in (None, 16):
        host = prepare_frame(rgb, short_side, mean, std)
        on = prepare_frame(rgb, short_side, mean, std, device)
        assert on.device.type == device and on.dtype == torch.float32
        assert torch.equal(on.cpu(), host)


@pytest.mark.parametrize("seed", range(6))
def test_identical_frames_get_identical_geometry_and_jitter(seed):
    frame = pattern(seed=seed)
    label = np.random.default_rng(seed + 100).integers(0, 5, (32, 48), dtype=np.uint8)
    tf = ClipTransform(
        train=True,
        short_side=40,
        scale_range=(0.5, 2.0),
        crop_size=(36, 36),
        cat_max_ratio=0.75,
        flip_prob=0.5,
        jitter=True,
    )
    frames, labels = tf(
        [frame.copy() for _ in range(3)],
        [label.copy() for _ in range(3)],
        rng=np.random.default_rng(seed),
    )
    assert frames.shape == (3, 3, 36, 36) and labels.shape == (3, 36, 36)
    assert labels.dtype == torch.int64
    for t in (0, 1):
        assert torch.equal(frames[t], frames[2])
        assert torch.equal(labels[t], labels[2])


def test_shifted_frames_stay_shifted_after_crop_and_scale():
    # history frame = current frame shifted right by 4 px; with scale 1 (short side equal) and no
    # flip the crop must move both by the same offset, so the shift survives exactly
    base = pattern(32, 64, seed=1)
    shifted = np.zeros_like(base)
    shifted[:, 4:] = base[:, :-4]
    tf = ClipTransform(
        train=True,
        short_side=32,
        scale_range=(1.0, 1.0),
        crop_size=(32, 40),
        cat_max_ratio=1.0,
        flip_prob=0.0,
        jitter=False,
    )
    for seed in range(4):
        frames, _ = tf([shifted, base], None, rng=np.random.default_rng(seed))
        assert torch.equal(frames[0][:, :, 4:], frames[1][:, :, :-4])
    crops = {
        tuple(tf([base], None, rng=np.random.default_rng(s))[0][0, 0, 0, :3].tolist())
        for s in range(8)
    }
    assert len(crops) > 1  # the crop position really is random


def test_flip_applies_to_frames_and_labels():
    frame = pattern(seed=2)
    label = np.tile(np.arange(48, dtype=np.uint8)[None] % 7, (32, 1))
    tf = ClipTransform(
        train=True,
        short_side=None,
        scale_range=(1.0, 1.0),
        crop_size=(32, 48),
        cat_max_ratio=1.0,
        flip_prob=1.0,
        jitter=False,
    )
    frames, labels = tf([frame], [label], rng=np.random.default_rng(0))
    ref, _ = ClipTransform(train=False, short_side=None)([frame[:, ::-1]])
    assert torch.allclose(frames, ref)
    assert labels[0].numpy().tolist() == label[:, ::-1].tolist()


def test_labels_use_nearest_and_padding_uses_ignore():
    label = np.zeros((32, 48), np.uint8)
    label[:, 24:] = 7
    tf = ClipTransform(
        train=True,
        short_side=16,
        scale_range=(1.0, 1.0),
        crop_size=(20, 30),
        cat_max_ratio=1.0,
        flip_prob=0.0,
        jitter=False,
    )
    frames, labels = tf([pattern()], [label], rng=np.random.default_rng(0))
    assert frames.shape == (1, 3, 20, 30)
    assert set(torch.unique(labels).tolist()) == {0, 7, 255}
    assert bool((labels[0, 16:] == 255).all()) and bool((frames[0, :, 16:] == 0).all())
    assert bool((labels[0, :16, :24] != 255).all())


def test_cat_max_ratio_redraws_dominated_crops():
    # class 1 fills the whole image except a 10 px strip of class 2 on the right: a crop that
    # misses the strip is all one class and must be redrawn
    label = np.ones((40, 200), np.uint8)
    label[:, 190:] = 2

    def share_of_main(cat_max_ratio, seed):
        tf = ClipTransform(
            train=True,
            short_side=None,
            scale_range=(1.0, 1.0),
            crop_size=(40, 40),
            cat_max_ratio=cat_max_ratio,
            flip_prob=0.0,
            jitter=False,
        )
        _, labels = tf([np.zeros((40, 200, 3), np.uint8)], [label], rng=np.random.default_rng(seed))
        return float((labels[0] == 1).float().mean())

    capped = [share_of_main(0.9, s) for s in range(30)]
    free = [share_of_main(1.0, s) for s in range(30)]
    assert sum(r < 0.9 for r in capped) > sum(r < 0.9 for r in free)
    assert sum(r < 0.9 for r in free) < 10  # without the cap most crops miss the strip


def test_eval_mode_resizes_and_never_randomises():
    frame = pattern(seed=3)
    label = np.random.default_rng(3).integers(0, 3, (32, 48), dtype=np.uint8)
    tf = ClipTransform(train=False, short_side=16)
    a = tf([frame, frame], [label], rng=np.random.default_rng(0))
    b = tf([frame, frame], [label], rng=np.random.default_rng(1))
    assert a[0].shape == (2, 3, 16, 24) and a[1].shape == (1, 16, 24)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert torch.allclose(a[0][1:], prepare_frame(frame, 16))


def test_owned_generator_is_seeded_not_global():
    frame = pattern(seed=4)
    runs = []
    for _ in range(2):
        np.random.seed(123)
        tf = ClipTransform(train=True, short_side=32, crop_size=24, seed=7)
        np.random.seed(999)  # the global RNG must not matter
        runs.append(tf([frame], None)[0])
    assert torch.equal(runs[0], runs[1])


def test_bad_inputs():
    tf = ClipTransform(train=True, short_side=32, crop_size=24)
    with pytest.raises(ValueError, match="differ in size"):
        tf([pattern(), pattern(16, 16)])
    with pytest.raises(ValueError, match="label"):
        tf([pattern()], [np.zeros((5, 5), np.uint8)])
