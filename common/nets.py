"""Networks shared by every algorithm: the CIFAR-stem ResNet-18, split BatchNorm, MLP heads,
EMA (momentum) copies and batch shuffling for key encoders."""
import copy
import functools
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are computed over `num_splits` sub-batches.

    Emulates the small per-GPU batches the recipes were tuned for on a single device: sample n
    belongs to split n % num_splits. Running statistics are the mean over the splits, so the
    parameters and buffers are exactly those of a plain BatchNorm2d (checkpoints interchange).
    """

    def __init__(self, num_features, num_splits=8, **kw):
        super().__init__(num_features, **kw)
        self.num_splits = num_splits

    def forward(self, x):
        if not self.training or self.num_splits == 1:
            return super().forward(x)
        n, c, h, w = x.shape
        s = self.num_splits
        if n % s:
            raise ValueError(f"split BatchNorm: batch {n} is not divisible by {s} splits")
        mean = self.running_mean.repeat(s)
        var = self.running_var.repeat(s)
        # (n, c) -> (n/s, s*c): channel block j of row i holds sample i*s + j
        out = F.batch_norm(x.reshape(n // s, c * s, h, w), mean, var,
                           self.weight.repeat(s), self.bias.repeat(s),
                           True, self.momentum, self.eps)
        with torch.no_grad():
            self.running_mean.copy_(mean.view(s, c).mean(0))
            self.running_var.copy_(var.view(s, c).mean(0))
            self.num_batches_tracked += 1
        return out.view(n, c, h, w)


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm(c_out)
        self.downsample = None
        if stride != 1 or c_in != c_out:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), norm(c_out))

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet18(nn.Module):
    """ResNet-18 (BasicBlock, [2, 2, 2, 2]) with the CIFAR stem, returning the pooled feature.

    conv1 is 3x3 stride 1 without bias; the max-pool is removed for 32-px inputs and kept for
    64-px inputs (Tiny-ImageNet). Parameter names are torchvision's (conv1, bn1, layer1.0.conv1,
    ..., layer4.1.bn2), so torchvision-style state dicts load directly. `width` is the channel
    count of layer1 (64 in every recipe; smaller only for fast tests).
    """

    def __init__(self, image_size=32, bn_splits=8, width=64):
        super().__init__()
        norm = partial(SplitBatchNorm, num_splits=bn_splits) if bn_splits > 1 else nn.BatchNorm2d
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1) if image_size > 32 else nn.Identity()
        widths = [width, 2 * width, 4 * width, 8 * width]
        c_in = width
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(BasicBlock(c_in, w, stride, norm),
                                                         BasicBlock(w, w, 1, norm)))
            c_in = w
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.feature_dim = c_in
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


def resnet18(image_size=32, bn_splits=8, width=64):
    return ResNet18(image_size, bn_splits, width)


def mlp(dims, last_bn=False, last_affine=True, hidden_bn=True):
    """Projection/prediction head: Linear layers through `dims`, with BN + ReLU between them.

    mlp([512, 2048, 128]) is 512->2048 BN ReLU ->128. A Linear followed by a BatchNorm has no
    bias (the BN's shift replaces it). `last_bn` adds BatchNorm1d after the last Linear
    (`last_affine=False` makes it affine-free); `hidden_bn=False` drops the hidden BNs (MoCoV2).
    """
    layers = []
    for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
        last = i == len(dims) - 2
        bn = last_bn if last else hidden_bn
        layers.append(nn.Linear(d_in, d_out, bias=not bn))
        if bn:
            layers.append(nn.BatchNorm1d(d_out, affine=last_affine if last else True))
        if not last:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class Encoder(nn.Module):
    """Backbone followed by a projection head. `forward` returns the projection in fp32."""

    def __init__(self, backbone, projector):
        super().__init__()
        self.backbone = backbone
        self.projector = projector

    def forward(self, x):
        return self.projector(self.backbone(x)).float()


def ema_copy(module):
    """A frozen copy of `module` to be moved by `ema_update` only."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target, online, m):
    """target = m * target + (1 - m) * online, over parameters only (buffers are not touched)."""
    for t, o in zip(target.parameters(), online.parameters()):
        t.mul_(m).add_(o.detach(), alpha=1 - m)


@torch.no_grad()
def batch_shuffle(x):
    """Shuffle the batch (so BatchNorm in the key encoder cannot leak the positive pair).

    Returns the shuffled batch and the permutation that restores the original order. Under
    torch.distributed the batch is shuffled across all ranks (see common.dist).
    """
    from common import dist
    if dist.world_size() > 1:
        return dist.shuffle_across_ranks(x)
    perm = torch.randperm(x.shape[0], device=x.device)
    return x[perm], torch.argsort(perm)


def shuffled_forward(encoder, x):
    """encoder(x) computed on a shuffled batch, returned in the original order."""
    x, unshuffle = batch_shuffle(x)
    from common import dist
    if dist.world_size() > 1:  # the outputs of this rank's samples live on several ranks
        return dist.unshuffle_across_ranks(encoder(x), unshuffle)
    return encoder(x)[unshuffle]


def fp32(loss_fn):
    """Decorator: run a loss function in fp32 even inside a bf16 autocast region.

    Autocast would run the loss's matrix products in bf16 even on fp32 inputs; similarities
    divided by small temperatures (0.04-0.2) need the full precision, so every loss computes
    in fp32 while the networks run in bf16.
    """
    @functools.wraps(loss_fn)
    def wrapper(*args, **kwargs):
        args = [a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args]
        with torch.autocast("cpu", enabled=False), torch.autocast("cuda", enabled=False):
            return loss_fn(*args, **kwargs)
    return wrapper
