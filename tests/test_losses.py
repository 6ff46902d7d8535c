"""Losses beyond the core cases (tests/test_losses_core.py): which pixels OHEM keeps, where
gradients go, and that rcl_loss restores every BatchNorm mode it found."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.heads import Decoder
from vidseg.models.losses import OhemCrossEntropy, cross_entropy, rcl_loss


def _logits_for(true_probs):
    """`(1, 2, 1, n)` logits whose class-0 probability is `true_probs[i]` at pixel i."""
    p = torch.tensor(true_probs)
    return torch.stack([torch.log(p), torch.log(1 - p)])[None, :, None, :].clone()


def test_ohem_gradient_reaches_exactly_the_kept_pixels():
    # true-class probabilities; pixel 5 ignored. threshold 0.7 -> hard = {1, 3} (0.5, 0.2)
    logits = _logits_for([0.9, 0.5, 0.8, 0.2, 0.95, 0.1]).requires_grad_()
    labels = torch.tensor([[[0, 0, 0, 0, 0, 255]]])
    loss = OhemCrossEntropy(threshold=0.7, min_kept=2)(logits, labels)
    assert math.isclose(loss.item(), (-math.log(0.5) - math.log(0.2)) / 2, rel_tol=1e-6)
    loss.backward()
    touched = (logits.grad.abs().sum(1)[0, 0] > 0).nonzero()[:, 0].tolist()
    assert touched == [1, 3]


def test_ohem_min_kept_raises_the_threshold_to_the_hardest_pixels():
    logits = _logits_for([0.9, 0.5, 0.8, 0.2, 0.95, 0.1])
    labels = torch.tensor([[[0, 0, 0, 0, 0, 255]]])
    # 3 hardest valid pixels: 0.2, 0.5, 0.8
    kept3 = OhemCrossEntropy(threshold=0.7, min_kept=3)(logits, labels)
    assert math.isclose(
        kept3.item(), -(math.log(0.2) + math.log(0.5) + math.log(0.8)) / 3, rel_tol=1e-6
    )
    # more than the valid count: every valid pixel, i.e. plain CE
    all_valid = OhemCrossEntropy(threshold=0.7, min_kept=100)(logits, labels)
    assert torch.isclose(all_valid, cross_entropy(logits, labels))


def test_ohem_upsamples_like_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 2)
    labels = torch.randint(0, 3, (1, 8, 8))
    ohem = OhemCrossEntropy(threshold=1.0 + 1e-6, min_kept=1)(logits, labels)  # keeps all pixels
    assert torch.isclose(ohem, cross_entropy(logits, labels))
    up = F.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    assert torch.isclose(ohem, F.cross_entropy(up, labels))


def test_cross_entropy_gives_no_gradient_to_ignored_pixels():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    labels = torch.tensor([[[0, 255], [2, 255]]])
    cross_entropy(logits, labels).backward()
    assert torch.equal(logits.grad[0, :, :, 1], torch.zeros(3, 2))
    assert logits.grad[0, :, :, 0].abs().sum() > 0


def test_rcl_loss_restores_eval_mode_and_matches_ce_on_rows():
    head = Decoder(4, 6, 3, dropout=0.0).eval()
    rows = torch.randn(3, 4, 1, 1)
    loss = rcl_loss(head, rows)
    assert not head.training and not head.block[1].training
    with torch.no_grad():
        expected = F.cross_entropy(head(rows).flatten(1), torch.arange(3))
    assert torch.isclose(loss, expected)
    mixed = nn.Sequential(
        nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4), nn.BatchNorm2d(4), nn.Conv2d(4, 3, 1)
    )
    mixed.train()
    mixed[2].eval()
    rcl_loss(mixed, rows)
    assert mixed[1].training and not mixed[2].training
