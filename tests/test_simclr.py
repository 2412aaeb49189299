"""SimCLR's cross-view loss: N x N logits, positives on the diagonal, no intra-view negatives."""
import math

import torch
import torch.nn.functional as F

from conftest import script

simclr = script("train_simclr")


def test_cross_view_loss_hand_computed():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.6, 0.8], [0.0, 1.0]])
    t = 0.2
    # row 0: [0.6, 0] / t, positive 0.6 ; row 1: [0.8, 1] / t, positive 1
    row0 = -(0.6 / t - math.log(math.exp(0.6 / t) + math.exp(0)))
    row1 = -(1 / t - math.log(math.exp(0.8 / t) + math.exp(1 / t)))
    assert abs(simclr.cross_view_loss(z1, z2, t).item() - (row0 + row1) / 2) < 1e-5


def test_no_intra_view_negatives():
    # making two samples of view 1 identical changes nothing: view 1 is never contrasted with itself
    torch.manual_seed(0)
    z1, z2 = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    base = simclr.cross_view_loss(z1, z2, 0.2)
    z1_dup = z1.clone()
    z1_dup[1] = z1[0]
    # only row 1 changes; recompute that row by hand
    logits = z1_dup @ z2.T / 0.2
    expected = F.cross_entropy(logits, torch.arange(4))
    torch.testing.assert_close(simclr.cross_view_loss(z1_dup, z2, 0.2), expected)
    assert simclr.cross_view_loss(z1, z2, 0.2) == base


def test_perfect_alignment_minimises_loss():
    z = torch.eye(4)
    assert simclr.cross_view_loss(z, z, 0.2) < simclr.cross_view_loss(z, z.roll(1, 0), 0.2)
