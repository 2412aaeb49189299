"""Backbone, split BatchNorm, heads, EMA update and batch shuffling."""
import torch
import torch.nn as nn

from common import nets


def test_backbone_shapes_and_stem():
    net = nets.resnet18(32)
    assert net(torch.randn(16, 3, 32, 32)).shape == (16, 512)
    assert net.conv1.kernel_size == (3, 3) and net.conv1.stride == (1, 1) and net.conv1.bias is None
    assert isinstance(net.maxpool, nn.Identity)              # removed for 32 px
    assert isinstance(nets.resnet18(64).maxpool, nn.MaxPool2d)  # kept for 64 px
    assert isinstance(net.bn1, nets.SplitBatchNorm) and net.bn1.num_splits == 8


def test_split_bn_normalises_each_split_separately():
    torch.manual_seed(0)
    bn = nets.SplitBatchNorm(3, num_splits=2)
    x = torch.randn(8, 3, 4, 4)
    x[1::2] += 5  # samples 1, 3, 5, 7 form split 1 (sample n belongs to split n % 2)
    out = bn(x)
    for s in range(2):
        part = out[s::2]
        torch.testing.assert_close(part.mean((0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    # running mean = mean of the two splits' updates (momentum 0.1 from zeros)
    split_means = torch.stack([x[s::2].mean((0, 2, 3)) for s in range(2)])
    torch.testing.assert_close(bn.running_mean, 0.1 * split_means.mean(0))
    bn.eval()  # eval mode uses the running statistics like a plain BatchNorm2d
    plain = nn.BatchNorm2d(3)
    plain.load_state_dict(bn.state_dict())
    plain.eval()
    torch.testing.assert_close(bn(x), plain(x))


def test_mlp_layouts():
    moco = nets.mlp([512, 2048, 128], hidden_bn=False)
    assert [type(m).__name__ for m in moco] == ["Linear", "ReLU", "Linear"]
    assert moco[0].bias is not None
    simclr = nets.mlp([512, 2048, 128], last_bn=True)
    assert [type(m).__name__ for m in simclr] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "BatchNorm1d"]
    assert simclr[0].bias is None and simclr[3].bias is None  # BN follows: no bias
    byol = nets.mlp([512, 2048, 128])
    assert byol[3].bias is not None
    snclr = nets.mlp([512, 2048, 2048, 128], last_bn=True, last_affine=False)
    assert not snclr[-1].affine and snclr[1].affine


def test_ema_update_against_hand_computed_values():
    online, target = nn.Linear(2, 1), None
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[1.0, 2.0]]))
        online.bias.fill_(3.0)
    target = nets.ema_copy(online)
    assert not any(p.requires_grad for p in target.parameters())
    with torch.no_grad():
        online.weight.copy_(torch.tensor([[3.0, 4.0]]))
        online.bias.fill_(0.0)
    nets.ema_update(target, online, 0.9)
    torch.testing.assert_close(target.weight, torch.tensor([[1.2, 2.2]]))  # 0.9*1 + 0.1*3, ...
    torch.testing.assert_close(target.bias, torch.tensor([2.7]))


def test_ema_leaves_buffers_alone():
    online = nn.BatchNorm1d(2)
    target = nets.ema_copy(online)
    online.running_mean.fill_(5.0)
    nets.ema_update(target, online, 0.5)
    assert target.running_mean.tolist() == [0.0, 0.0]


def test_shuffled_forward_returns_original_order():
    torch.manual_seed(0)
    x = torch.randn(6, 3)
    seen = []
    def encoder(b):
        seen.append(b.clone())
        return b * 2
    out = nets.shuffled_forward(encoder, x)
    torch.testing.assert_close(out, x * 2)
    assert not torch.equal(seen[0], x)  # the encoder saw a permuted batch
