"""NNCLR: the two-way InfoNCE against nearest neighbours, its heads, and that all its state (the
queue) is in the state dict."""
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from conftest import script, tiny_model

nnclr = script("train_nnclr")


def log_softmax(row, j):
    return row[j] - math.log(sum(math.exp(v) for v in row))


def test_loss_hand_computed_with_two_neighbours():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    nb = torch.tensor([[[1.0, 0.0], [0.6, 0.8]],      # neighbours of sample 0
                       [[0.0, 1.0], [-1.0, 0.0]]])    # neighbours of sample 1
    t = 0.5
    flat = [[1.0, 0.0], [0.6, 0.8], [0.0, 1.0], [-1.0, 0.0]]
    owner = [0, 0, 1, 1]
    dot = lambda a, b: sum(x * y for x, y in zip(a, b)) / t
    # neighbours -> predictions: 4 rows over the 2 predictions, one positive each
    nn_to_p = -sum(log_softmax([dot(n, q) for q in p.tolist()], owner[j])
                   for j, n in enumerate(flat)) / 4
    # predictions -> neighbours: 2 rows over the 4 neighbours, the 2 positives' log-probs summed
    p_to_nn = -sum(log_softmax([dot(q, n) for n in flat], 2 * i)
                   + log_softmax([dot(q, n) for n in flat], 2 * i + 1)
                   for i, q in enumerate(p.tolist())) / 2
    expected = (nn_to_p + p_to_nn) / 2
    assert nnclr.nnclr_loss(p, nb, t).item() == pytest.approx(expected, abs=1e-5)


def test_one_neighbour_is_symmetric_infonce():
    torch.manual_seed(0)
    p, nb = F.normalize(torch.randn(5, 8), dim=1), F.normalize(torch.randn(5, 1, 8), dim=2)
    target = torch.arange(5)
    expected = (F.cross_entropy(nb[:, 0] @ p.T / 0.2, target)
                + F.cross_entropy(p @ nb[:, 0].T / 0.2, target)) / 2
    torch.testing.assert_close(nnclr.nnclr_loss(p, nb, 0.2), expected)


def test_heads_and_no_momentum_encoder():
    model = tiny_model("train_nnclr", "--queue-size", "32")
    proj = [m for m in model.encoder.projector if not isinstance(m, nn.ReLU)]
    # 512 -> h BN ReLU -> h BN ReLU -> 128 BN, Linear biases replaced by the BNs
    assert [type(m) for m in proj] == [nn.Linear, nn.BatchNorm1d] * 3
    assert all(m.bias is None for m in proj if isinstance(m, nn.Linear)) and proj[-1].affine
    assert isinstance(model.predictor[-1], nn.Linear) and model.predictor[-1].bias is not None
    assert all(p.requires_grad for p in model.parameters())   # no EMA copy
    assert model.args.temperature == 0.2 and model.args.topk == 1


def test_queue_state_is_in_the_state_dict_and_neighbours_carry_no_gradient():
    model = tiny_model("train_nnclr", "--queue-size", "32", "--topk", "3")
    torch.manual_seed(1)
    loss, purity = model([torch.randn(16, 3, 32, 32) for _ in range(2)], torch.arange(16))
    loss.backward()
    state = model.state_dict()
    assert int(state["queue.ptr"]) == 16 and state["queue.labels"][:16].tolist() == list(range(16))
    assert not model.queue.keys.requires_grad and model.queue.keys.grad is None
    fresh = tiny_model("train_nnclr", "--queue-size", "32", "--topk", "3", seed=5)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.queue.keys, model.queue.keys)
    assert int(fresh.queue.ptr) == 16
