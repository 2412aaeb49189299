"""CMSF: constrained neighbours read from the main queue at the auxiliary queue's positions,
the average of the two MSF losses, and three views."""
import pytest
import torch
import torch.nn.functional as F

from common import train
from conftest import script, tiny_model

cmsf = script("train_cmsf")
msf = script("train_msf")


def test_constrained_neighbours_come_from_main_queue_at_auxiliary_indices():
    model = tiny_model("train_cmsf", "--queue-size", "32", "--proj-dim", "8")
    torch.manual_seed(3)
    model.queue.keys.copy_(F.normalize(torch.randn(32, 8), dim=1))
    model.aux_queue.keys.copy_(F.normalize(torch.randn(32, 8), dim=1))
    key, key_aux = F.normalize(torch.randn(4, 8), dim=1), F.normalize(torch.randn(4, 8), dim=1)
    targets, constrained, purity = model.neighbour_targets(key, key_aux, torch.zeros(4).long())
    aux_index = (key_aux @ model.aux_queue.keys.T).argsort(dim=1, descending=True)[:, :5]
    main_index = (key @ model.queue.keys.T).argsort(dim=1, descending=True)[:, :5]
    torch.testing.assert_close(constrained[:, 0], key)
    torch.testing.assert_close(constrained[:, 1:], model.queue.keys[aux_index])
    torch.testing.assert_close(targets[:, 1:], model.queue.keys[main_index])
    assert not torch.equal(aux_index, main_index)
    assert purity.item() == 0.0        # the initial entries carry label -1


def test_loss_is_the_average_of_two_msf_losses():
    p = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    a = torch.tensor([[[1.0, 0.0], [0.0, 1.0]], [[0.0, 1.0], [0.6, 0.8]]])
    b = torch.tensor([[[1.0, 0.0], [-1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]])
    # cosines: a -> 1, 0, 1, 0.8 ; b -> 1, -1, 1, 1
    expected = (sum(2 - 2 * c for c in [1, 0, 1, 0.8]) / 4
                + sum(2 - 2 * c for c in [1, -1, 1, 1]) / 4) / 2
    assert cmsf.cmsf_loss(p, a, b).item() == pytest.approx(expected)
    both = (msf.msf_loss(p, a) + msf.msf_loss(p, b)) / 2
    torch.testing.assert_close(cmsf.cmsf_loss(p, a, b), both)


def test_three_views_strong_weak_weak():
    model = tiny_model("train_cmsf", "--queue-size", "32")
    assert model.args.views == 3 and model.args.record == "demo_9"
    assert train.view_kinds(model.args) == ["strong", "weak", "weak"]
    assert len(model.aux_queue) == len(model.queue) == 32
