"""ReSSL: the relational loss, which view teaches, what is enqueued and when, defaults, one epoch."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import check_ema_step, script, tiny_model, train_tiny
from common import train
from common.errors import UserError

ressl = script("train_ressl")


def test_relational_loss_by_hand():
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0]])  # teacher similarities [1, 0]
    q = torch.tensor([[0.0, 1.0]])  # student similarities [0, 1]
    e = math.e
    # temperatures 1: target (e, 1) / (1 + e); student log-probabilities -log(1+e), 1 - log(1+e)
    expected = -(e / (1 + e) * -math.log(1 + e) + 1 / (1 + e) * (1 - math.log(1 + e)))
    assert ressl.relational_loss(q, k, queue, 1.0, 1.0).item() == pytest.approx(expected)
    # temperatures divide the similarities: halving both equals doubling the vectors' scale
    assert ressl.relational_loss(q, k, queue, 0.5, 0.5).item() == pytest.approx(
        ressl.relational_loss(2 * q, 2 * k, queue, 1.0, 1.0).item())


def test_teacher_side_carries_no_gradient():
    torch.manual_seed(0)
    q = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    k = F.normalize(torch.randn(4, 8), dim=1).requires_grad_()
    queue = F.normalize(torch.randn(6, 8), dim=1)
    ressl.relational_loss(q, k, queue, 0.04, 0.1).backward()
    assert k.grad is None
    assert q.grad is not None and q.grad.abs().sum() > 0


def test_loss_stays_fp32_under_autocast():
    torch.manual_seed(0)
    q, k = (F.normalize(torch.randn(4, 8), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(64, 8), dim=1)
    exact = ressl.relational_loss(q, k, queue, 0.04, 0.1)
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(ressl.relational_loss(q, k, queue, 0.04, 0.1), exact)


def _step(*flags):
    # one BatchNorm split: the key encoder's output does not depend on the batch shuffle, so the
    # keys can be recomputed here
    model = tiny_model("train_ressl", "--queue-size", "32", "--bn-splits", "1", *flags)
    torch.manual_seed(1)
    v1, v2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    labels = torch.arange(8)
    old = model.queue.keys.clone()
    model.train()
    loss = model([v1, v2], labels)
    with torch.no_grad():
        q1, q2 = (F.normalize(model.encoder_q(v), dim=1) for v in (v1, v2))
        k1, k2 = (F.normalize(model.encoder_k(v), dim=1) for v in (v1, v2))
    return model, loss, old, (q1, q2, k1, k2), labels


def test_weak_view_teaches_and_its_keys_are_enqueued_after_the_read():
    model, loss, old, (q1, q2, k1, k2), labels = _step()
    assert model.args.symmetric is False
    torch.testing.assert_close(loss, ressl.relational_loss(q1, k2, old, 0.04, 0.1))
    torch.testing.assert_close(model.queue.keys[:8], k2)
    assert torch.equal(model.queue.keys[8:], old[8:])
    assert torch.equal(model.queue.labels[:8], labels) and model.queue.ptr.item() == 8


def test_symmetric_flag_reads_the_queue_before_the_enqueue():
    model, loss, old, (q1, q2, k1, k2), _ = _step("--symmetric")
    expected = (ressl.relational_loss(q1, k2, old, 0.04, 0.1)
                + ressl.relational_loss(q2, k1, old, 0.04, 0.1)) / 2
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model.queue.keys[:8], k2)  # only view 2's keys, once
    assert model.queue.ptr.item() == 8


def test_gradients_reach_only_the_online_network():
    model = tiny_model("train_ressl", "--queue-size", "32", "--momentum", "0.9")
    views = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    check_ema_step(model, model.encoder_q, model.encoder_k, views, torch.zeros(8, dtype=torch.long),
                   momentum=0.9)


def test_defaults_come_from_the_record():
    def parsed(*argv):
        return train.parse_args(ressl.add_args, ressl.__doc__, ressl.__file__, list(argv))
    args = parsed("--dataset", "cifar10")
    assert (args.record, args.temperature, args.student_temperature, args.momentum,
            args.queue_size, args.proj_dim, args.symmetric, args.weak) == \
        ("cifar10_4", 0.04, 0.1, 0.99, 4096, 128, False, True)
    assert train.view_kinds(args) == ["strong", "weak"]
    tin = parsed("--dataset", "tin")
    assert (tin.momentum, tin.queue_size) == (0.996, 16384)
    with pytest.raises(UserError, match="student-temperature"):
        tiny_model("train_ressl", "--queue-size", "32", "--student-temperature", "0")


def test_one_epoch_writes_outputs(tmp_path):
    summary = train_tiny("train_ressl", tmp_path, "--queue-size", "32")
    assert "demo_4_seed1339" in summary
    res = tmp_path / "results"
    assert (res / "demo_4_seed1339_pretrain.csv").read_text().count("\n") == 3
    assert (res / "demo_4_seed1339_linear.csv").exists()
    config = json.loads((res / "demo_4_seed1339_config.json").read_text())
    assert config["finished"] and config["weak"] is True and config["temperature"] == 0.04
