"""Checkpoints released by the reference implementation load into our backbone.

The reference's backbone is an nn.Sequential of torchvision ResNet-18 children (conv1 replaced by a
3x3 stride-1 conv, max-pool kept only for 64-px data, fc replaced by Flatten) stored under
`net.net.` in {'model': state_dict, 'optimizer': ..., 'epoch': ...}. The tests build that network
from torchvision independently of common.nets, save it in that format, and check that our loader
gives the same features.
"""
import pytest
import torch
import torch.nn as nn
import torchvision

from common import checkpoint, data, knn, nets
from common.errors import UserError
from common.linear import _backbone_from


def reference_backbone(maxpool):
    tv = torchvision.models.resnet18()
    children = []
    for name, module in tv.named_children():
        if name == "conv1":
            module = nn.Conv2d(3, 64, 3, 1, 1, bias=False)
        elif name == "maxpool" and not maxpool:
            continue
        elif name == "fc":
            module = nn.Flatten(1)
        children.append(module)
    return nn.Sequential(*children)


class ReferenceModel(nn.Module):
    """The parts of a reference algorithm that shape its state dict: `net.net.*` for the online
    backbone, plus keys the loader must ignore (`backbone_momentum.net.*`, a head; both kept
    small here)."""

    def __init__(self, maxpool):
        super().__init__()
        self.net = nn.Module()
        self.net.net = reference_backbone(maxpool)
        self.backbone_momentum = nn.Module()
        self.backbone_momentum.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.projection_head = nn.Sequential(nn.Linear(512, 16), nn.ReLU(), nn.Linear(16, 8))


def randomise_bn(module, seed):
    """Non-trivial BatchNorm statistics and affine parameters, so eval-mode features depend on
    every buffer being mapped to the right layer."""
    g = torch.Generator().manual_seed(seed)
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
            m.num_batches_tracked.fill_(7)


@pytest.mark.parametrize("image_size,maxpool", [(32, False), (64, True)])
def test_reference_checkpoint_gives_the_same_features(tmp_path, image_size, maxpool):
    torch.manual_seed(0)
    ref = ReferenceModel(maxpool)
    randomise_bn(ref, 1)
    path = tmp_path / "moco-cifar10.pth"
    torch.save({"model": ref.state_dict(), "optimizer": {"state": {}}, "epoch": 199}, path)

    state = checkpoint.backbone_state(checkpoint.load(str(path)), str(path))
    ours = nets.resnet18(image_size, bn_splits=8)  # split BN: same parameters and buffers
    ours.load_state_dict(state)  # strict: every key mapped, none left over
    assert torch.equal(state["layer4.1.bn2.running_var"],
                       ref.net.net[7 if maxpool else 6][1].bn2.running_var)

    x = torch.randn(4, 3, image_size, image_size)
    ours.eval(), ref.eval()
    with torch.no_grad():
        assert torch.allclose(ours(x), ref.net.net(x), atol=1e-5, rtol=1e-5)


def to_reference_layout(backbone_state, maxpool):
    first = 4 if maxpool else 3
    index = {"conv1": 0, "bn1": 1, **{f"layer{i}": first + i - 1 for i in range(1, 5)}}
    return {f"net.net.{index[k.split('.', 1)[0]]}.{k.split('.', 1)[1]}": v
            for k, v in backbone_state.items()}


def test_knn_command_on_a_reference_checkpoint(tmp_path, capsys, monkeypatch):
    """`python -m common.knn` on a released-format checkpoint (no args inside: --dataset needed)
    reports exactly the kNN accuracy of the same weights built directly."""
    load = data.load_dataset
    torch.manual_seed(0)
    net = nets.resnet18(32, bn_splits=1, width=8)
    randomise_bn(net, 2)
    path = tmp_path / "ref.pth"
    torch.save({"model": to_reference_layout(net.state_dict(), False), "epoch": 199}, path)

    loaded = []  # the data set the command loads, to evaluate the same images directly

    def load_and_keep(*args, **kw):
        loaded.append(load(*args, **kw))
        return loaded[-1]
    monkeypatch.setattr(data, "load_dataset", load_and_keep)
    assert knn.main(["--checkpoint", str(path), "--device", "cpu", "--no-amp"]) == 2
    assert "--dataset is required" in capsys.readouterr().err
    assert knn.main(["--checkpoint", str(path), "--dataset", "demo", "--subset", "40",
                     "--device", "cpu", "--no-amp"]) == 0
    out = capsys.readouterr().out
    ds = loaded[0]
    direct = knn.knn_top1(net.eval(), ds, "cpu")
    assert out.startswith("ref.pth: 200-NN top-1 ") and f"{direct:.2f} on demo" in out
    # and the linear evaluator builds the same backbone (width read from the weights)
    built = _backbone_from(torch.load(path), ds, str(path))
    assert all(torch.equal(a, b) for a, b in zip(built.state_dict().values(),
                                                 net.state_dict().values()))


def test_unexpected_layout_is_one_clear_error(tmp_path, capsys):
    path = tmp_path / "odd.pth"
    torch.save({"model": {"net.net.0.weight": torch.zeros(1), "net.net.9.weight": torch.zeros(1)}},
               path)
    assert knn.main(["--checkpoint", str(path), "--dataset", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: reference checkpoint:") and err.count("\n") == 1
    with pytest.raises(UserError, match="holds no backbone weights"):
        checkpoint.backbone_state({"model": {"fc.weight": torch.zeros(1)}}, "x.pth")
