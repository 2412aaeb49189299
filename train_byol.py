"""BYOL (Grill et al., NeurIPS 2020): an online network predicts the projection that a slowly
moving (EMA) target network gives of another view; no negatives.

    python train_byol.py --dataset cifar10      # record cifar10_3: m=0.99 (tin_3: m=0.996)

Online: backbone -> projection 512 -> 2048 BN ReLU -> 128 -> predictor 128 -> 2048 BN ReLU -> 128.
Target: an EMA copy of backbone + projection, moved at the start of every step and fed a shuffled
batch. Loss 2 - 2 cos(prediction, target projection), symmetric over the two views.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import nets, train


@nets.fp32
def byol_loss(p, z):
    """Mean over the batch of 2 - 2 cos(p_i, z_i), i.e. the squared distance of the unit vectors.

    p: (N, D) online predictions; z: (N, D) target projections of the other view (no gradient is
    expected through z). Neither needs to be normalised.
    """
    p, z = F.normalize(p, dim=1), F.normalize(z, dim=1)
    return (2 - 2 * (p * z).sum(1)).mean()


class BYOL(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        width = 8 * args.width
        self.online = nets.Encoder(nets.resnet18(args.image_size, args.bn_splits, args.width),
                                   nets.mlp([width, args.hidden_dim, args.proj_dim]))
        self.predictor = nets.mlp([args.proj_dim, args.hidden_dim, args.proj_dim])
        self.target = nets.ema_copy(self.online)

    @property
    def backbone(self):
        return self.online.backbone

    def update_target(self):
        nets.ema_update(self.target, self.online, self.args.momentum)

    def predict(self, x):
        return self.predictor(self.online(x)).float()

    @torch.no_grad()
    def target_projection(self, x):
        return nets.shuffled_forward(self.target, x)

    def pair_loss(self, x1, x2, p1=None):
        """BYOL loss of the pair (x1, x2), symmetric when args.symmetric; the target is not moved
        here. `p1`: the online prediction of x1 when the caller already has it."""
        p1 = self.predict(x1) if p1 is None else p1
        loss = byol_loss(p1, self.target_projection(x2))
        if not self.args.symmetric:
            return loss
        return (loss + byol_loss(self.predict(x2), self.target_projection(x1))) / 2

    def forward(self, views, labels):
        self.update_target()
        return self.pair_loss(*views)


def add_args(parser):
    train.recipe_flags(parser, "momentum", "proj_dim", "symmetric", "weak")


Model = BYOL

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
