"""Step-by-step tests of the MCIBI++ distribution memory and the MCIBI vector memory."""

from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F
from test_memory_ddp import WORLD, _free_port

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
BATCH1_FEATS = pixels_to_features(
    [[[[1, 2, 3, 4], [0, 0, 4, 4]], [[3, 4, 5, 6], [100, 100, 100, 100]]]]
)
BATCH1_LABELS = torch.tensor([[[0, 1], [0, IGN]]])
# class 0 mean vector [2, 3, 4, 5]: mean 3.5, population variance (2.25+0.25+0.25+2.25)/4 = 1.25
# class 1 mean vector [0, 0, 4, 4]: mean 2, population variance 4 -> std 2
BATCH1_STATS = [[3.5, math.sqrt(1.25)], [2.0, 2.0]]

# Batch 2: 2 images of 1x2. Class 1: [1,1,1,1] and [3,3,3,3] -> mean vector [2,2,2,2]: mean 2, std 0.
# Class 0: [1,1,1,5]: mean 2, variance (1+1+1+9)/4 = 3. The [9,9,9,9] pixel is ignored.
BATCH2_FEATS = pixels_to_features([[[[1, 1, 1, 1], [9, 9, 9, 9]]], [[[3, 3, 3, 3], [1, 1, 1, 5]]]])
BATCH2_LABELS = torch.tensor([[[1, IGN]], [[1, 0]]])


def test_first_observation_initialises_then_ema():
    mem = DistributionMemory(num_classes=3, channels=4, momentum=0.1).train()
    assert mem.stats.tolist() == [[0.0, 1.0]] * 3
    mem.update(BATCH1_FEATS, BATCH1_LABELS)
    expected = torch.tensor(BATCH1_STATS + [[0.0, 1.0]])  # class 2 never seen: initial (0, 1)
    assert torch.allclose(mem.stats, expected, atol=1e-6)
    assert mem.seen.tolist() == [True, True, False]

    mem.update(BATCH2_FEATS, BATCH2_LABELS)
    expected = torch.tensor(
        [
            [0.9 * 3.5 + 0.1 * 2.0, 0.9 * math.sqrt(1.25) + 0.1 * math.sqrt(3.0)],
            [0.9 * 2.0 + 0.1 * 2.0, 0.9 * 2.0 + 0.1 * 0.0],
            [0.0, 1.0],
        ]
    )
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
    mem.update(
        torch.randn(1, 8, 2, 2, generator=torch.Generator().manual_seed(1)),
        torch.tensor([[[0, 1], [4, IGN]]]),
    )
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
        mem.update(BATCH1_FEATS, torch.zeros(2, 4, 4, dtype=torch.long))  # batch size differs
    with pytest.raises(ValueError, match="features must be"):
        mem.update(torch.zeros(1, 5, 2, 2), BATCH1_LABELS)


def test_half_precision_features_are_reduced_in_float32():
    mem = DistributionMemory(num_classes=3, channels=4).train()
    mem.update(BATCH1_FEATS.to(torch.bfloat16), BATCH1_LABELS)
    assert mem.stats.dtype == torch.float32
    assert torch.allclose(mem.stats[:2], torch.tensor(BATCH1_STATS), atol=1e-6)


@pytest.mark.parametrize(
    "make",
    [
        lambda: DistributionMemory(3, 4, update_rule="grid"),
        lambda: DistributionMemory(3, 4, update_rule="label"),
        lambda: VectorMemory(3, 4),
    ],
    ids=["distribution-grid", "distribution-label", "vector"],
)
def test_update_under_autocast_equals_the_float32_update(make):
    """AMP training calls update() inside autocast: the reductions must still run in fp32."""
    gen = torch.Generator().manual_seed(5)
    feats = torch.randn(2, 4, 3, 5, generator=gen)
    labels = torch.randint(0, 3, (2, 12, 20), generator=gen)
    plain, amp = make().train(), make().train()
    plain.update(feats, labels, 0.5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp.update(feats, labels, 0.5)
    for name, buf in plain.named_buffers():
        assert torch.equal(dict(amp.named_buffers())[name], buf), name


def test_labels_at_any_resolution_grid_rule_downsamples_them():
    """Rule "grid" with full-resolution labels = the same update with labels downsampled first."""
    gen = torch.Generator().manual_seed(2)
    feats = torch.randn(2, 4, 3, 5, generator=gen)
    labels = torch.randint(0, 3, (2, 12, 20), generator=gen)
    labels[0, :4] = IGN
    a = DistributionMemory(3, 4).train()
    b = DistributionMemory(3, 4).train()
    a.update(feats, labels)
    b.update(feats, downsample_labels(labels, (3, 5)))
    assert torch.equal(a.stats, b.stats) and torch.equal(a.seen, b.seen)
    va, vb = VectorMemory(3, 4).train(), VectorMemory(3, 4).train()
    va.update(feats, labels, progress=0.0)
    vb.update(feats, downsample_labels(labels, (3, 5)), progress=0.0)
    assert torch.equal(va.memory, vb.memory)


def test_constructor_rejects_unknown_choices():
    for kwargs in (
        {"update_rule": "nearest"},
        {"std": "sample"},
        {"first_update": "init"},
        {"noise": "global"},
    ):
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            DistributionMemory(3, 4, **kwargs)
    with pytest.raises(ValueError, match="noise_seed must be 0"):
        DistributionMemory(3, 4, noise="per_class", noise_seed=3)
    with pytest.raises(ValueError, match="channels >= 2"):
        DistributionMemory(3, 1, std="unbiased")


# ---------------------------------------------------------------- update rules "grid" / "label"

# 2x2 features, 4x4 labels. Bilinear (align_corners=False) 2 -> 4 reads the cells at positions
# u = (0, 0.25, 0.75, 1), and both channels are linear in the cell index (ch0 = 8i + 4j,
# ch1 = 4i - 8j), so the upsampled map is ch0 = 8u[Y] + 4u[X], ch1 = 4u[Y] - 8u[X]:
#   ch0  0  1  3  4      ch1  0 -2 -6 -8
#        2  3  5  6           1 -1 -5 -7
#        6  7  9 10           3  1 -3 -5
#        8  9 11 12           4  2 -2 -4
TINY_FEATS = torch.tensor([[[[0.0, 4.0], [8.0, 12.0]], [[0.0, -8.0], [4.0, -4.0]]]])
TINY_LABELS = torch.tensor([[[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, 1, 1], [IGN, 1, 1, 2]]])
# "label": class 0 mean vector [1.5, -0.5] -> mean 0.5, population std 1, unbiased std sqrt(2);
# class 1 (10 pixels): ch0 sum 70, ch1 sum -30 -> [7, -3] -> mean 2, std 5 / 5 sqrt(2);
# class 2 (1 pixel): [12, -4] -> mean 4, std 8 / 8 sqrt(2).
TINY_LABEL_RULE = {
    "population": [[0.5, 1.0], [2.0, 5.0], [4.0, 8.0]],
    "unbiased": [[0.5, math.sqrt(2)], [2.0, 5 * math.sqrt(2)], [4.0, 8 * math.sqrt(2)]],
}
# "grid": labels at the cell centres (rows/cols 1 and 3) = [[0, 1], [1, 2]]; class 0 = cell
# [0, 0] -> (0, 0); class 1 = cells [4, -8], [8, 4] -> [6, -2] -> (2, 4); class 2 -> (4, 8).
TINY_GRID_RULE = [[0.0, 0.0], [2.0, 4.0], [4.0, 8.0]]


def test_tiny_case_label_rule_hand_computed():
    up = F.interpolate(TINY_FEATS, size=(4, 4), mode="bilinear", align_corners=False)
    assert up[0, 0].tolist() == [[0, 1, 3, 4], [2, 3, 5, 6], [6, 7, 9, 10], [8, 9, 11, 12]]
    assert up[0, 1].tolist() == [[0, -2, -6, -8], [1, -1, -5, -7], [3, 1, -3, -5], [4, 2, -2, -4]]
    for std, expected in TINY_LABEL_RULE.items():
        mem = DistributionMemory(3, 2, update_rule="label", std=std).train()
        sums = mem.class_sums(TINY_FEATS, TINY_LABELS)
        assert torch.allclose(
            sums, torch.tensor([[6.0, -2.0, 4.0], [70.0, -30.0, 10.0], [12.0, -4.0, 1.0]])
        )
        mem.update(TINY_FEATS, TINY_LABELS)
        assert torch.allclose(mem.stats, torch.tensor(expected), atol=1e-6), std


def test_tiny_case_grid_rule_hand_computed():
    mem = DistributionMemory(3, 2, update_rule="grid").train()
    mem.update(TINY_FEATS, TINY_LABELS)
    assert torch.allclose(mem.stats, torch.tensor(TINY_GRID_RULE), atol=1e-6)


def _direct_label_rule_sums(features, labels, num_classes):
    """Materialise the bilinear upsampling and sum each class's pixels (the reference)."""
    up = F.interpolate(
        features.float(), size=labels.shape[-2:], mode="bilinear", align_corners=False
    )
    out = torch.zeros(num_classes, features.shape[1] + 1, dtype=torch.float64)
    for k in range(num_classes):
        mask = labels == k
        out[k, :-1] = up.permute(0, 2, 3, 1)[mask].double().sum(0)
        out[k, -1] = mask.sum()
    return out


@pytest.mark.parametrize(
    "grid,label_size", [((3, 4), (13, 9)), ((5, 7), (40, 56)), ((8, 8), (4, 4)), ((2, 2), (2, 2))]
)
def test_label_rule_sums_equal_materialised_upsampling(grid, label_size):
    """The adjoint (no upsampled map) equals upsample-then-sum for up-, down- and same-size."""
    gen = torch.Generator().manual_seed(7)
    feats = torch.randn(2, 5, *grid, generator=gen)
    labels = torch.randint(0, 4, (2, *label_size), generator=gen)
    labels[1, 0, :] = IGN
    mem = DistributionMemory(4, 5, update_rule="label").train()
    got = mem.class_sums(feats, labels)
    ref = _direct_label_rule_sums(feats, labels, 4).float()
    assert torch.allclose(got, ref, atol=1e-4, rtol=1e-5)


def test_one_pixel_object_updates_label_rule_only():
    feats = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(1, 16, 16, dtype=torch.long)
    labels[0, 0, 0] = 1  # not under a cell centre (rows/cols 4 and 12)
    grid = DistributionMemory(2, 4, update_rule="grid").train()
    label = DistributionMemory(2, 4, update_rule="label").train()
    grid.update(feats, labels)
    label.update(feats, labels)
    assert grid.seen.tolist() == [True, False] and grid.stats[1].tolist() == [0.0, 1.0]
    assert label.seen.tolist() == [True, True]
    # the pixel at (0, 0) reads cell (0, 0) with weight 1 (clamped border)
    cell = feats[0, :, 0, 0]
    assert torch.allclose(
        label.stats[1], torch.stack([cell.mean(), cell.std(unbiased=False)]), atol=1e-6
    )


# ---------------------------------------------------------------- the authors' rule, restated


def authors_update(
    memory: torch.Tensor,
    features: torch.Tensor,
    segmentation: torch.Tensor,
    momentum: float,
    ignore_index: int = IGN,
) -> None:
    """sssegmentation's FeaturesMemoryV2.update, restated line by line (single process): R
    upsampled to the label size, then per class: mean vector, its mean and torch.std
    (unbiased), EMA from the current entry (the initial (0, 1) included)."""
    features = F.interpolate(
        features, size=segmentation.shape[-2:], mode="bilinear", align_corners=False
    )
    batch_size, num_channels, h, w = features.size()
    segmentation = segmentation.long()
    features = features.permute(0, 2, 3, 1).contiguous().view(batch_size * h * w, num_channels)
    for clsid in segmentation.unique():
        if clsid == ignore_index:
            continue
        feats_cls = features[segmentation.view(-1) == clsid].mean(0)
        mean, std = feats_cls.mean(), feats_cls.std()
        memory[clsid][0] = (1 - momentum) * memory[clsid][0] + momentum * mean
        memory[clsid][1] = (1 - momentum) * memory[clsid][1] + momentum * std


def test_authors_statistic_and_ema_from_init():
    K, Z = 5, 16
    gen = torch.Generator().manual_seed(11)
    reference = torch.cat([torch.zeros(K, 1), torch.ones(K, 1)], dim=1)
    mem = DistributionMemory(
        K, Z, momentum=0.1, update_rule="label", std="unbiased", first_update="ema"
    ).train()
    for step in range(3):
        feats = torch.randn(2, Z, 6, 6, generator=gen) * 2.0 + step
        labels = torch.randint(0, K - 1, (2, 48, 48), generator=gen)  # class K-1 never present
        labels[0, :5, :] = IGN
        labels[1, 20, 30] = 3  # a 1-pixel object of class 3 in image 1
        authors_update(reference, feats, labels, 0.1)
        mem.update(feats, labels)
        assert torch.allclose(mem.stats, reference, atol=1e-5, rtol=1e-5), step
    assert mem.stats[K - 1].tolist() == [0.0, 1.0]
    # first_update="set" differs from the authors' EMA-from-init on the first observation
    other = DistributionMemory(K, Z, update_rule="label", std="unbiased").train()
    other.update(feats, labels)
    assert not torch.allclose(other.stats[: K - 1], mem.stats[: K - 1])


@pytest.mark.parametrize("channels", [8, 32])  # torch's scalar (< 16) and vectorised normal paths
def test_per_class_noise_equals_the_authors_global_rng_read(channels):
    K = 4
    before = torch.get_rng_state()
    mem = DistributionMemory(K, channels, noise="per_class")
    mem.stats.copy_(torch.tensor([[0.3, 1.7], [-2.0, 0.25], [0.0, 1.0], [5.5, 3.0]]))
    ours = mem.sample()
    assert torch.equal(torch.get_rng_state(), before)  # constructing and reading leave it alone
    with torch.random.fork_rng(devices=[]):
        means, stds = mem.stats[:, 0], mem.stats[:, 1]
        theirs = []
        for idx in range(K):  # sssegmentation FeaturesMemoryV2.forward
            torch.manual_seed(idx)
            theirs.append(
                torch.normal(
                    mean=torch.full((1, channels), means[idx]),
                    std=torch.full((1, channels), stds[idx]),
                )
            )
        theirs = torch.cat(theirs, dim=0)
    assert torch.equal(ours, theirs)
    assert torch.equal(torch.get_rng_state(), before)
    # the shared noise is a different draw
    assert not torch.equal(DistributionMemory(K, channels).noise, mem.noise)


# ---------------------------------------------------------------- DDP with the "label" rule


def _label_rule_batches():
    gen = torch.Generator().manual_seed(5)
    out = []
    for _ in range(2):
        feats = torch.randn(4, 6, 3, 4, generator=gen) + 0.5
        labels = torch.randint(0, 2, (4, 24, 32), generator=gen)
        labels[0, 2, 3] = 2  # class 2: one pixel, only on rank 0, not under a grid centre
        labels[2, :12] = 1
        labels[3, 5] = IGN
        out.append((feats, labels))
    return out


def _label_rule_run(batches):
    mem = DistributionMemory(
        3, 6, momentum=0.3, update_rule="label", std="unbiased", first_update="ema"
    ).train()
    for feats, labels in batches:
        mem.update(feats, labels)
    return {"stats": mem.stats, "seen": mem.seen}


def _label_rule_worker(rank: int, port: int, out_dir: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=WORLD
    )
    try:
        half = [
            (f[2 * rank : 2 * rank + 2], lab[2 * rank : 2 * rank + 2])
            for f, lab in _label_rule_batches()
        ]
        torch.save(_label_rule_run(half), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_label_rule_ddp_matches_single_process(tmp_path):
    import torch.multiprocessing as mp

    mp.spawn(_label_rule_worker, args=(_free_port(), str(tmp_path)), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(WORLD)]
    single = _label_rule_run(_label_rule_batches())
    assert single["seen"].tolist() == [True, True, True]
    for key in single:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
        assert torch.allclose(ranks[0][key].float(), single[key].float(), atol=1e-5), key


# ---------------------------------------------------------------- VectorMemory


def test_vector_memory_poly_momentum():
    mem = VectorMemory(num_classes=2, channels=2, base_momentum=0.9, power=0.9)
    assert mem.momentum_at(0.0) == pytest.approx(0.9)
    assert mem.momentum_at(0.5) == pytest.approx(0.9 * 0.5**0.9)
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
    m = 0.9 * 0.5**0.9
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
