"""SNCLR: soft targets from the attention over each sample's own neighbours, the soft
cross-entropy over all N (1 + k) candidates, and heads without biases or a last affine."""
import math

import pytest
import torch
import torch.nn as nn

from conftest import script, tiny_model

snclr = script("train_snclr")

Z = torch.tensor([[1.0, 0.0], [0.0, 2.0]])                  # online projections (not normalised)
NB = torch.tensor([[[1.0, 0.0], [0.0, 1.0]],                 # neighbours of sample 0: cos 1, 0
                   [[0.6, 0.8], [-1.0, 0.0]]])               # neighbours of sample 1: cos 0.8, 0


def softmax(xs):
    e = [math.exp(x) for x in xs]
    return [v / sum(e) for v in e]


def test_target_rows_key_one_own_neighbours_softmax_zero_elsewhere():
    a, b = softmax([1.0, 0.0]), softmax([0.8, 0.0])
    expected = torch.tensor([[1.0, a[0], a[1], 0.0, 0.0, 0.0],
                             [0.0, 0.0, 0.0, 1.0, b[0], b[1]]])
    torch.testing.assert_close(snclr.snclr_targets(Z, NB), expected)


def test_threshold_keeps_weights_above_one_over_k():
    a, b = softmax([1.0, 0.0]), softmax([0.8, 0.0])   # a[0], b[0] > 1/2 > a[1], b[1]
    expected = torch.tensor([[1.0, a[0], 0.0, 0.0, 0.0, 0.0],
                             [0.0, 0.0, 0.0, 1.0, b[0], 0.0]])
    torch.testing.assert_close(snclr.snclr_targets(Z, NB, threshold=True), expected)


def test_loss_hand_computed():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    cand = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [0.6, 0.8]],
                         [[0.8, 0.6], [0.0, -1.0], [-1.0, 0.0]]])
    w = torch.tensor([[1.0, 0.7, 0.3, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 0.4, 0.6]])
    t = 0.2
    flat = cand.reshape(6, 2).tolist()
    loss = 0.0
    for i, q in enumerate(p.tolist()):
        logits = [(q[0] * c[0] + q[1] * c[1]) / t for c in flat]
        lse = math.log(sum(math.exp(v) for v in logits))
        loss -= sum(w[i, j].item() * (logits[j] - lse) for j in range(6))
    assert snclr.snclr_loss(p, cand, w, t).item() == pytest.approx(loss / 2, rel=1e-5)


def test_attention_targets_pass_gradient_to_the_online_projection():
    z = Z.clone().requires_grad_()
    (snclr.snclr_targets(z, NB) * torch.arange(6.0)).sum().backward()
    assert z.grad.abs().sum() > 0


def test_heads_have_no_bias_and_an_affine_free_last_batchnorm():
    model = tiny_model("train_snclr", "--queue-size", "32")
    for head in (model.online.projector, model.predictor):
        assert all(m.bias is None for m in head if isinstance(m, nn.Linear))
        assert isinstance(head[-1], nn.BatchNorm1d) and not head[-1].affine
    assert sum(isinstance(m, nn.Linear) for m in model.online.projector) == 3
    assert model.args.temperature == 0.2 and model.args.topk == 5 and not model.args.threshold
