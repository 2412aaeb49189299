"""MSF: the mean of 2 - 2 cos over the key and its neighbours, on BYOL's networks."""
import pytest
import torch
import torch.nn.functional as F

from conftest import script, tiny_model
from common import train

msf = script("train_msf")


def test_loss_hand_computed():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    targets = torch.tensor([[[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]],     # key 0, 2 neighbours
                            [[0.8, 0.6], [0.0, -1.0], [0.0, 1.0]]])   # key 1, 2 neighbours
    # cosines: sample 0: 1, 0.6, 0; sample 1: 0.6, -1, 1
    expected = sum(2 - 2 * c for c in [1, 0.6, 0, 0.6, -1, 1]) / 6
    assert msf.msf_loss(p, targets).item() == pytest.approx(expected)


def test_targets_all_equal_to_the_key_is_byol():
    byol = script("train_byol")
    torch.manual_seed(0)
    p, k = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    targets = k[:, None].expand(4, 6, 8)
    torch.testing.assert_close(msf.msf_loss(p, targets), byol.byol_loss(p, k))


def test_record_defaults_weak_second_view():
    model = tiny_model("train_msf", "--queue-size", "32")
    assert model.args.record == "demo_6" and model.args.topk == 5 and model.args.momentum == 0.99
    assert train.view_kinds(model.args) == ["strong", "weak"]
    assert not any(p.requires_grad for p in model.target.parameters())
