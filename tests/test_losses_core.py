"""Cross-entropy with ignore, OHEM and MCIBI's representation-consistency loss."""

import math

import torch
import torch.nn.functional as F
from torch import nn

from vidseg.models.heads import Decoder
from vidseg.models.losses import OhemCrossEntropy, cross_entropy, rcl_loss


def test_cross_entropy_ignores_255_and_matches_hand_value():
    logits = torch.zeros(1, 2, 1, 2)
    logits[0, 0, 0, 0] = math.log(3.0)  # pixel 0: p(class 0) = 3/4
    labels = torch.tensor([[[0, 255]]])
    assert torch.isclose(cross_entropy(logits, labels), torch.tensor(-math.log(0.75)))


def test_cross_entropy_upsamples_logits_and_all_ignored_is_zero_not_nan():
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    labels = torch.randint(0, 3, (2, 16, 16))
    ref = F.cross_entropy(
        F.interpolate(logits, size=(16, 16), mode="bilinear", align_corners=False), labels
    )
    assert torch.isclose(cross_entropy(logits, labels), ref)
    zero = cross_entropy(logits, torch.full((2, 16, 16), 255))
    assert zero.item() == 0.0
    zero.backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_ohem_keeps_hard_pixels_and_at_least_min_kept():
    # true-class probabilities 0.9, 0.6, 0.3 and one ignored pixel
    probs = torch.tensor([0.9, 0.6, 0.3])
    logits = torch.stack([torch.log(probs), torch.log(1 - probs)])[None, :, None, :]
    logits = torch.cat([logits, torch.zeros(1, 2, 1, 1)], 3)
    labels = torch.tensor([[[0, 0, 0, 255]]])
    losses = -torch.log(probs)
    only_hard = OhemCrossEntropy(threshold=0.7, min_kept=1)(logits, labels)
    assert torch.isclose(only_hard, losses[1:].mean())
    all_three = OhemCrossEntropy(threshold=0.7, min_kept=3)(logits, labels)
    assert torch.isclose(all_three, losses.mean())
    assert OhemCrossEntropy()(logits, torch.full((1, 1, 4), 255)).item() == 0.0


def test_rcl_loss_does_not_touch_batchnorm_statistics():
    head = Decoder(8, 8, 4).train()
    bn = [m for m in head.modules() if isinstance(m, nn.BatchNorm2d)][0]
    before = (bn.running_mean.clone(), bn.running_var.clone(), int(bn.num_batches_tracked))
    rows = torch.randn(4, 8, 1, 1)
    loss = rcl_loss(head, rows)
    assert torch.isfinite(loss) and loss > 0
    assert torch.equal(bn.running_mean, before[0]) and torch.equal(bn.running_var, before[1])
    assert int(bn.num_batches_tracked) == before[2] and head.training and bn.training
    loss.backward()
    assert head.classifier.weight.grad is not None
