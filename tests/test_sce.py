"""SCE: the target distribution and the loss, the symmetric update order, the weak second view,
defaults, one epoch."""
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import check_ema_step, script, tiny_model, train_tiny
from common import train

sce = script("train_sce")
byol = script("train_byol")
moco = script("train_moco")


def test_target_mixes_the_onehot_with_the_teacher_softmax():
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k = torch.tensor([[1.0, 0.0]])
    # teacher similarities [0 (the key's own column), 1, 0]; temperature 1
    e = math.e
    w = sce.sce_target(k, queue, 0.5, 1.0)
    expected = torch.tensor([[0.5 + 0.5 / (2 + e), 0.5 * e / (2 + e), 0.5 / (2 + e)]])
    torch.testing.assert_close(w, expected)


def test_target_rows_sum_to_one_with_half_plus_half_softmax_on_the_positive():
    torch.manual_seed(0)
    k = F.normalize(torch.randn(5, 8), dim=1)
    queue = F.normalize(torch.randn(7, 8), dim=1)
    w = sce.sce_target(k, queue, 0.5, 0.05)
    torch.testing.assert_close(w.sum(1), torch.ones(5))
    teacher = F.softmax(torch.cat([torch.zeros(5, 1), k @ queue.T], 1) / 0.05, dim=1)
    torch.testing.assert_close(w[:, 0], 0.5 + 0.5 * teacher[:, 0])
    torch.testing.assert_close(w[:, 1:], 0.5 * teacher[:, 1:])


def test_loss_by_hand_and_limits():
    queue = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    k, q = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    w = sce.sce_target(k, queue, 0.5, 1.0)
    log_p = F.log_softmax(torch.tensor([[0.0, 0.0, 1.0]]), dim=1)  # [q.k, q.queue] / 1
    assert sce.sce_loss(q, k, queue, 0.5, 1.0, 1.0).item() == pytest.approx(-(w * log_p).sum().item())
    # coeff 1 keeps only the one-hot: MoCo's InfoNCE at the student temperature
    torch.manual_seed(0)
    q, k = (F.normalize(torch.randn(4, 8), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(6, 8), dim=1)
    torch.testing.assert_close(sce.sce_loss(q, k, queue, 1.0, 0.05, 0.1),
                               moco.infonce_loss(q, k, queue, 0.1))


def test_loss_stays_fp32_under_autocast():
    torch.manual_seed(0)
    q, k = (F.normalize(torch.randn(4, 8), dim=1) for _ in range(2))
    queue = F.normalize(torch.randn(64, 8), dim=1)
    exact = sce.sce_loss(q, k, queue, 0.5, 0.05, 0.1)
    with torch.autocast("cpu", torch.bfloat16):
        assert torch.equal(sce.sce_loss(q, k, queue, 0.5, 0.05, 0.1), exact)


def test_symmetric_update_order_and_enqueued_keys():
    # one BatchNorm split: the key encoder's output does not depend on the batch shuffle
    model = tiny_model("train_sce", "--queue-size", "32", "--bn-splits", "1")
    assert model.args.symmetric and model.encoder_q.projector[-1].out_features == 256
    torch.manual_seed(1)
    v1, v2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    old = model.queue.keys.clone()
    model.train()
    loss = model([v1, v2], torch.arange(8))
    with torch.no_grad():
        q1, q2 = (F.normalize(model.encoder_q(v), dim=1) for v in (v1, v2))
        k1, k2 = (F.normalize(model.encoder_k(v), dim=1) for v in (v1, v2))
    # both terms read the queue as it was before this batch's keys entered it
    expected = (sce.sce_loss(q1, k2, old, 0.5, 0.05, 0.1) + sce.sce_loss(q2, k1, old, 0.5, 0.05, 0.1)) / 2
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(model.queue.keys[:8], k2)
    assert model.queue.ptr.item() == 8


def test_gradients_reach_only_the_online_network():
    model = tiny_model("train_sce", "--queue-size", "32", "--momentum", "0.9")
    views = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    check_ema_step(model, model.encoder_q, model.encoder_k, views, torch.zeros(8, dtype=torch.long),
                   momentum=0.9)


def test_weak_records_use_the_weak_transform_for_view_two():
    def kinds(mod, *argv):
        args = train.parse_args(mod.add_args, mod.__doc__, mod.__file__, list(argv))
        return args.record, train.view_kinds(args)
    assert kinds(sce, "--dataset", "cifar10") == ("cifar10_8", ["strong", "weak"])
    assert kinds(byol, "--dataset", "cifar10") == ("cifar10_3", ["strong", "strong"])
    assert kinds(sce, "--dataset", "tin", "--no-weak") == ("tin_8", ["strong", "strong"])


def test_defaults_come_from_the_record():
    args = train.parse_args(sce.add_args, sce.__doc__, sce.__file__, ["--dataset", "cifar100"])
    assert (args.record, args.temperature, args.student_temperature, args.coeff, args.momentum,
            args.queue_size, args.proj_dim, args.symmetric) == \
        ("cifar100_8", 0.05, 0.1, 0.5, 0.99, 4096, 256, True)


def test_one_epoch_writes_outputs(tmp_path):
    summary = train_tiny("train_sce", tmp_path, "--queue-size", "32")
    assert "demo_8_seed1339" in summary
    res = tmp_path / "results"
    assert (res / "demo_8_seed1339_pretrain.csv").read_text().count("\n") == 3
    assert (res / "demo_8_seed1339_linear.csv").exists()
    config = json.loads((res / "demo_8_seed1339_config.json").read_text())
    assert config["finished"] and config["weak"] is True and config["proj_dim"] == 256
