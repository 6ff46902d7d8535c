"""Step-by-step tests of the MCIBI++ distribution memory and the MCIBI vector memory."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from vidseg.models.memory import DistributionMemory, VectorMemory, downsample_labels

IGN = 255


def pixels_to_features(pixels: list) -> torch.Tensor:
    """Nested list (B, h, w, Z) -> features (B, Z, h, w)."""
    return torch.tensor(pixels, dtype=torch.float32).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- downsample_labels

def test_downsample_labels_takes_the_centre_pixel():
    labels = torch.arange(16).reshape(1, 4, 4)
    out = downsample_labels(labels, (2, 2))
    # centres of the 2x2 cells of a 4x4 grid fall on rows/cols 1 and 3
    assert out.tolist() == [[[5, 7], [13, 15]]]
    assert out.dtype == torch.int64


def test_downsample_labels_matches_nearest_exact_for_odd_ratios():
    gen = torch.Generator().manual_seed(3)
    labels = torch.randint(0, 6, (2, 7, 5), generator=gen)
    labels[0, 0, :] = IGN
    out = downsample_labels(labels, (3, 2))
    ref = F.interpolate(labels[:, None].float(), size=(3, 2), mode="nearest-exact")[:, 0].long()
    assert torch.equal(out, ref)
    assert torch.equal(downsample_labels(labels, (7, 5)), labels)


def test_downsample_labels_rejects_bad_shape():
    with pytest.raises(ValueError, match="labels must be"):
        downsample_labels(torch.zeros(4, 4, dtype=torch.long), (2, 2))


# ---------------------------------------------------------------- DistributionMemory

# Batch 1: 1 image, 2x2 grid, Z = 4. Class 0 at (0,0), (1,0); class 1 at (0,1); (1,1) ignored.
BATCH1_FEATS = pixels_to_features([[[[1, 2, 3, 4], [0, 0, 4, 4]],
                                    [[3, 4, 5, 6], [100, 100, 100, 100]]]])
BATCH1_LABELS = torch.tensor([[[0, 1], [0, IGN]]])
# class 0 mean vector [2, 3, 4, 5]: mean 3.5, population variance (2.25+0.25+0.25+2.25)/4 = 1.25
# class 1 mean vector [0, 0, 4, 4]: mean 2, population variance 4 -> std 2
BATCH1_STATS = [[3.5, math.sqrt(1.25)], [2.0, 2.0]]

# Batch 2: 2 images of 1x2. Class 1: [1,1,1,1] and [3,3,3,3] -> mean vector [2,2,2,2]: mean 2, std 0.
# Class 0: [1,1,1,5]: mean 2, variance (1+1+1+9)/4 = 3. The [9,9,9,9] pixel is ignored.
BATCH2_FEATS = pixels_to_features([[[[1, 1, 1, 1], [9, 9, 9, 9]]],
                                   [[[3, 3, 3, 3], [1, 1, 1, 5]]]])
BATCH2_LABELS = torch.tensor([[[1, IGN]], [[1, 0]]])


def test_first_observation_initialises_then_ema():
    mem = DistributionMemory(num_classes=3, channels=4, momentum=0.1).train()
    assert mem.stats.tolist() == [[0.0, 1.0]] * 3
    mem.update(BATCH1_FEATS, BATCH1_LABELS)
    expected = torch.tensor(BATCH1_STATS + [[0.0, 1.0]])  # class 2 never seen: initial (0, 1)
    assert torch.allclose(mem.stats, expected, atol=1e-6)
    assert mem.seen.tolist() == [True, True, False]

    mem.update(BATCH2_FEATS, BATCH2_LABELS)
    expected = torch.tensor([[0.9 * 3.5 + 0.1 * 2.0, 0.9 * math.sqrt(1.25) + 0.1 * math.sqrt(3.0)],
                             [0.9 * 2.0 + 0.1 * 2.0, 0.9 * 2.0 + 0.1 * 0.0],
                             [0.0, 1.0]])
    assert torch.allclose(mem.stats, expected, atol=1e-6)


def test_absent_classes_are_untouched_and_all_ignore_is_safe():
    mem = DistributionMemory(num_classes=3, channels=4, momentum=0.1).train()
    mem.update(BATCH1_FEATS, BATCH1_LABELS)
    before = mem.stats.clone()
    only_class1 = torch.tensor([[[1, IGN], [IGN, IGN]]])
    mem.update(BATCH1_FEATS, only_class1)  # class 1 pixel [0,0,4,4] again: stat (2, 2) = old value
    assert torch.equal(mem.stats[0], before[0]) and torch.equal(mem.stats[2], before[2])
    all_ignore = torch.full((1, 2, 2), IGN)
    mem.update(BATCH1_FEATS, all_ignore)
    assert torch.equal(mem.stats[0], before[0]) and torch.equal(mem.stats[2], before[2])
    assert torch.isfinite(mem.stats).all()
    assert mem.seen.tolist() == [True, True, False]

    fresh = DistributionMemory(num_classes=3, channels=4).train()
    fresh.update(BATCH1_FEATS, all_ignore)
    assert fresh.stats.tolist() == [[0.0, 1.0]] * 3 and not fresh.seen.any()


def test_momentum_zero_and_eval_mode_freeze_the_memory():
    frozen = DistributionMemory(num_classes=3, channels=4, momentum=0.0).train()
    frozen.update(BATCH1_FEATS, BATCH1_LABELS)
    assert frozen.stats.tolist() == [[0.0, 1.0]] * 3 and not frozen.seen.any()

    mem = DistributionMemory(num_classes=3, channels=4).train()
    mem.update(BATCH1_FEATS, BATCH1_LABELS)
    snapshot = {k: v.clone() for k, v in mem.state_dict().items()}
    mem.eval()
    mem.update(BATCH2_FEATS, BATCH2_LABELS)
    for k, v in mem.state_dict().items():
        assert torch.equal(v, snapshot[k]), k


def test_global_rng_untouched():
    cpu_state = torch.get_rng_state()
    mem = DistributionMemory(num_classes=5, channels=8, noise_seed=7).train()
    mem.sample()
    mem.update(torch.randn(1, 8, 2, 2, generator=torch.Generator().manual_seed(1)),
               torch.tensor([[[0, 1], [4, IGN]]]))
    mem.sample()
    assert torch.equal(torch.get_rng_state(), cpu_state)


def test_sample_is_deterministic_and_uses_the_noise():
    a = DistributionMemory(num_classes=3, channels=6, noise_seed=11)
    b = DistributionMemory(num_classes=3, channels=6, noise_seed=11)
    c = DistributionMemory(num_classes=3, channels=6, noise_seed=12)
    assert torch.equal(a.sample(), a.sample()) and torch.equal(a.sample(), b.sample())
    assert not torch.equal(a.sample(), c.sample())
    a.stats.copy_(torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 0.0]]))
    out = a.sample()
    assert out.shape == (3, 6) and out.dtype == torch.float32
    assert torch.allclose(out[0], 1.0 + 2.0 * a.noise[0])
    assert torch.allclose(out[1], -1.0 + 0.5 * a.noise[1])
    assert torch.equal(out[2], torch.zeros(6))


def test_state_dict_round_trip():
    mem = DistributionMemory(num_classes=3, channels=4, noise_seed=5).train()
    mem.update(BATCH1_FEATS, BATCH1_LABELS)
    sd = mem.state_dict()
    assert set(sd) == {"stats", "seen", "noise"}
    other = DistributionMemory(num_classes=3, channels=4, noise_seed=99)
    other.load_state_dict(sd)
    assert torch.equal(other.stats, mem.stats) and torch.equal(other.seen, mem.seen)
    assert torch.equal(other.noise, mem.noise) and torch.equal(other.sample(), mem.sample())


def test_update_rejects_bad_inputs():
    mem = DistributionMemory(num_classes=3, channels=4).train()
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        mem.update(BATCH1_FEATS, torch.tensor([[[0, 7], [0, IGN]]]))
    with pytest.raises(ValueError, match="labels must be"):
        mem.update(BATCH1_FEATS, torch.zeros(1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="features must be"):
        mem.update(torch.zeros(1, 5, 2, 2), BATCH1_LABELS)


def test_half_precision_features_are_reduced_in_float32():
    mem = DistributionMemory(num_classes=3, channels=4).train()
    mem.update(BATCH1_FEATS.to(torch.bfloat16), BATCH1_LABELS)
    assert mem.stats.dtype == torch.float32
    assert torch.allclose(mem.stats[:2], torch.tensor(BATCH1_STATS), atol=1e-6)


# ---------------------------------------------------------------- VectorMemory

def test_vector_memory_poly_momentum():
    mem = VectorMemory(num_classes=2, channels=2, base_momentum=0.9, power=0.9)
    assert mem.momentum_at(0.0) == pytest.approx(0.9)
    assert mem.momentum_at(0.5) == pytest.approx(0.9 * 0.5 ** 0.9)
    assert mem.momentum_at(1.0) == 0.0
    with pytest.raises(ValueError, match="progress"):
        mem.momentum_at(1.5)


def test_vector_memory_cosine_weighted_update():
    mem = VectorMemory(num_classes=3, channels=2).train()
    # Batch 1: class 0 pixels [1,0], [0,1] -> first observation = mean [0.5, 0.5]; class 1 = [0,-2].
    feats = pixels_to_features([[[[1, 0], [0, 1]], [[0, -2], [50, 50]]]])
    labels = torch.tensor([[[0, 0], [1, IGN]]])
    mem.update(feats, labels, progress=0.0)
    assert torch.allclose(mem.memory, torch.tensor([[0.5, 0.5], [0.0, -2.0], [0.0, 0.0]]))
    assert mem.seen.tolist() == [True, True, False]

    # Batch 2: class 0 pixels a=[1,0], b=[2,2], c=[0,3]. cos to [0.5,0.5]: 1/sqrt2, 1, 1/sqrt2
    # -> weights (1-1/sqrt2, 0, 1-1/sqrt2) normalise to (0.5, 0, 0.5) -> M' = [0.5, 1.5].
    feats = pixels_to_features([[[[1, 0], [2, 2]], [[0, 3], [50, 50]]]])
    labels = torch.tensor([[[0, 0], [0, IGN]]])
    mem.update(feats, labels, progress=0.5)
    m = 0.9 * 0.5 ** 0.9
    expected0 = torch.tensor([(1 - m) * 0.5 + m * 0.5, (1 - m) * 0.5 + m * 1.5])
    assert torch.allclose(mem.memory[0], expected0, atol=1e-6)
    assert torch.equal(mem.memory[1], torch.tensor([0.0, -2.0]))  # absent: untouched
    assert torch.equal(mem.memory[2], torch.zeros(2))


def test_vector_memory_parallel_pixels_fall_back_to_class_mean():
    mem = VectorMemory(num_classes=1, channels=2).train()
    mem.update(pixels_to_features([[[[1, 1]]]]), torch.tensor([[[0]]]), progress=0.0)
    # every pixel parallel to [1,1]: all weights 0 -> target = class mean [2.5, 2.5]
    mem.update(pixels_to_features([[[[2, 2], [3, 3]]]]), torch.tensor([[[0, 0]]]), progress=0.0)
    assert torch.allclose(mem.memory[0], torch.tensor([0.1 * 1 + 0.9 * 2.5] * 2))
    assert torch.isfinite(mem.memory).all()


def test_vector_memory_freeze_rules_and_state():
    feats = pixels_to_features([[[[1, 0], [0, 1]]]])
    labels = torch.tensor([[[0, 1]]])
    mem = VectorMemory(num_classes=2, channels=2).train()
    mem.update(feats, labels, progress=1.0)  # momentum 0 at the end of training: frozen
    assert not mem.seen.any() and torch.equal(mem.memory, torch.zeros(2, 2))
    mem.eval()
    mem.update(feats, labels, progress=0.0)
    assert not mem.seen.any()
    mem.train()
    mem.update(feats, torch.full((1, 1, 2), IGN), progress=0.0)
    assert not mem.seen.any() and torch.isfinite(mem.memory).all()
    mem.update(feats, labels, progress=0.0)
    assert set(mem.state_dict()) == {"memory", "seen"}
    assert mem.sample().shape == (2, 2) and mem.rcl_inputs().shape == (2, 2, 1, 1)
    assert torch.equal(mem.rcl_inputs()[:, :, 0, 0], mem.memory)


@pytest.mark.parametrize("kind", ["distribution", "vector"])
def test_update_after_forward_does_not_break_backward(kind):
    """The segmentor updates the memory at the end of forward, before backward."""
    mem = (DistributionMemory(3, 4) if kind == "distribution" else VectorMemory(3, 4)).train()
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    out = torch.einsum("bkhw,kz->bzhw", logits.softmax(1), mem.sample())
    if kind == "distribution":
        mem.update(BATCH1_FEATS, BATCH1_LABELS)
    else:
        mem.update(BATCH1_FEATS, BATCH1_LABELS, progress=0.0)
    out.square().sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()
    assert all(not b.requires_grad and b.grad is None for b in mem.buffers())
