"""SimCLR (Chen et al., ICML 2020), in the reference's cross-view form.

    python train_simclr.py --dataset cifar10    # record cifar10_2: t=0.2

Projection 512 -> 2048 BN ReLU -> 128 BN. The loss only contrasts across views: logits
z1 . z2^T / t (N x N), positives on the diagonal, no intra-view negatives. Each view goes through
the network once per step; the reference recomputes both views for the reversed term, which gives
the same loss and gradients (only BatchNorm running statistics see the batch once, not twice).
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import dist, nets, train


@nets.fp32
def cross_view_loss(z1, z2, temperature, offset=0):
    """Cross-entropy of each row of z1 . z2^T / temperature against its diagonal entry.

    z1, z2: (N, D) L2-normalised projections of views 1 and 2; sample i of z2 is the only
    positive of sample i of z1, the other N-1 samples of view 2 are its negatives. Under
    torchrun z2 is the global batch (M >= N rows) and sample i of z1 is row offset + i of z2.
    """
    logits = z1 @ z2.T / temperature
    return F.cross_entropy(logits, torch.arange(z1.shape[0], device=z1.device) + offset)


class SimCLR(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.encoder = nets.Encoder(nets.resnet18(args.image_size, args.bn_splits, args.width),
                                    nets.mlp([8 * args.width, args.hidden_dim, args.proj_dim], last_bn=True))

    @property
    def backbone(self):
        return self.encoder.backbone

    def forward(self, views, labels):
        z1, z2 = (F.normalize(self.encoder(v), dim=1) for v in views)
        # under torchrun the negatives are the whole global batch, as in one process
        offset = dist.rank() * z1.shape[0]
        loss_12 = cross_view_loss(z1, dist.gather_with_grad(z2), self.args.temperature, offset)
        if not self.args.symmetric:
            return loss_12
        loss_21 = cross_view_loss(z2, dist.gather_with_grad(z1), self.args.temperature, offset)
        return (loss_12 + loss_21) / 2


def add_args(parser):
    train.recipe_flags(parser, "temperature", "proj_dim", "symmetric", "weak")


Model = SimCLR

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
