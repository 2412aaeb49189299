"""MoCoV2: InfoNCE over [positive | queue] and the symmetric update order."""
import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from conftest import script

moco = script("train_moco")


def tiny_args(**kw):
    args = dict(image_size=32, bn_splits=2, width=8, hidden_dim=32, proj_dim=16, queue_size=32,
                temperature=0.2, momentum=0.99, symmetric=True)
    return SimpleNamespace(**{**args, **kw})


def test_infonce_hand_computed():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    queue = torch.tensor([[0.0, 1.0], [-1.0, 0.0], [0.8, 0.6]])
    t = 0.5
    # row 0: logits [1, 0, -1, 0.8] / t ; row 1: [0.8, 1, 0, 0.6] / t ; target column 0
    def nll(row):
        z = [v / t for v in row]
        return -(z[0] - math.log(sum(math.exp(v) for v in z)))
    expected = (nll([1, 0, -1, 0.8]) + nll([0.8, 1, 0, 0.6])) / 2
    assert moco.infonce_loss(q, k, queue, t).item() == pytest.approx(expected, abs=1e-5)


def test_temperature_sharpens():
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    k = F.normalize(q + 0.1 * k, dim=1)  # keys close to their queries
    queue = F.normalize(torch.randn(16, 8), dim=1)
    assert moco.infonce_loss(q, k, queue, 0.1) < moco.infonce_loss(q, k, queue, 1.0)


def test_reversed_term_first_and_batch_never_meets_its_own_keys(monkeypatch):
    torch.manual_seed(0)
    model = moco.MoCo(tiny_args())
    calls = []
    real = moco.infonce_loss

    def spy(q, k, queue, t):
        calls.append((k.detach().clone(), queue.clone()))
        return real(q, k, queue, t)

    monkeypatch.setattr(moco, "infonce_loss", spy)
    initial = model.queue.keys.clone()
    v1, v2 = torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)
    loss = model([v1, v2], torch.arange(8))
    assert len(calls) == 2 and torch.isfinite(loss)
    (k_21, queue_21), (k_12, queue_12) = calls
    # both terms read the queue as it was before this batch
    torch.testing.assert_close(queue_21, initial)
    torch.testing.assert_close(queue_12, initial)
    # only L(v1, v2) enqueued: its keys (from view 2) now head the queue, with their labels
    torch.testing.assert_close(model.queue.keys[:8], k_12)
    assert model.queue.labels[:8].tolist() == list(range(8)) and int(model.queue.ptr) == 8
    # and L(v2, v1)'s keys (from view 1) are in the queue nowhere
    assert torch.cdist(k_21, model.queue.keys).min() > 1e-4


def test_gradients_reach_only_the_online_encoder():
    torch.manual_seed(0)
    model = moco.MoCo(tiny_args())
    before = [p.clone() for p in model.encoder_k.parameters()]
    loss = model([torch.randn(8, 3, 32, 32), torch.randn(8, 3, 32, 32)], torch.arange(8))
    loss.backward()
    assert all(p.grad is not None for p in model.encoder_q.parameters())
    assert all(p.grad is None for p in model.encoder_k.parameters())
    # the key encoder moved only by the EMA update: 0.99 * itself + 0.01 * online
    for b, k, q in zip(before, model.encoder_k.parameters(), model.encoder_q.parameters()):
        torch.testing.assert_close(k, 0.99 * b + 0.01 * q)
