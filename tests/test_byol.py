"""BYOL: the 2 - 2cos loss, the recipe's heads, the EMA target, per-dataset defaults, one epoch."""
import json
import math

import pytest
import torch
import torch.nn as nn

from conftest import check_ema_step, script, tiny_model, train_tiny
from common import train

byol = script("train_byol")


def test_loss_is_two_minus_two_cosine():
    p = torch.tensor([[3.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    z = torch.tensor([[1.0, 0.0], [1.0, 0.0], [5.0, 0.0]])
    # cosines 1, 0 and 1/sqrt(2): the norms do not matter
    expected = ((2 - 2) + (2 - 0) + (2 - 2 / math.sqrt(2))) / 3
    assert byol.byol_loss(p, z).item() == pytest.approx(expected)
    assert byol.byol_loss(p, -p).item() == pytest.approx(4.0)


def test_heads_follow_the_recipe():
    model = tiny_model("train_byol")  # width 8 -> 64-d features, hidden 32, proj_dim 128
    kinds = [type(m) for m in model.online.projector]
    assert kinds == [nn.Linear, nn.BatchNorm1d, nn.ReLU, nn.Linear]
    assert kinds == [type(m) for m in model.predictor]
    first, last = model.online.projector[0], model.online.projector[3]
    assert (first.in_features, first.out_features, first.bias) == (64, 32, None)
    assert (last.in_features, last.out_features) == (32, 128) and last.bias is not None
    assert (model.predictor[0].in_features, model.predictor[3].out_features) == (128, 128)
    assert model.backbone is model.online.backbone


def test_gradients_reach_only_the_online_network():
    model = tiny_model("train_byol", "--momentum", "0.9")
    torch.manual_seed(1)
    views = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    loss = check_ema_step(model, model.online, model.target, views,
                          torch.zeros(8, dtype=torch.long), momentum=0.9, updates=1)
    assert 0 <= loss.item() <= 4
    assert all(p.grad is not None for p in model.predictor.parameters())


def test_momentum_defaults_per_dataset():
    def parsed(*argv):
        return train.parse_args(byol.add_args, byol.__doc__, byol.__file__, list(argv))
    assert parsed("--dataset", "cifar10").momentum == 0.99
    assert parsed("--dataset", "tin").momentum == 0.996
    assert parsed("--dataset", "tin", "--momentum", "0.9").momentum == 0.9
    args = parsed("--dataset", "cifar100")
    assert (args.record, args.symmetric, args.weak, args.proj_dim) == ("cifar100_3", True, False, 128)


def test_one_epoch_writes_outputs(tmp_path):
    # fp32: bf16 is slow on CPUs (the amp path runs in the ReSSL and SCE tests)
    summary = train_tiny("train_byol", tmp_path, "--no-amp")
    assert "demo_3_seed1339" in summary
    res = tmp_path / "results"
    assert (res / "demo_3_seed1339_pretrain.csv").read_text().count("\n") == 3  # header, epochs 0-1
    assert (res / "demo_3_seed1339_linear.csv").exists()
    config = json.loads((res / "demo_3_seed1339_config.json").read_text())
    assert config["finished"] and config["momentum"] == 0.99 and config["algorithm"] == "BYOL"
