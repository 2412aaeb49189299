"""NNCLR (Dwibedi et al., ICCV 2021): contrast each prediction with the nearest neighbours, in a
queue of past keys, of the other view's key instead of with that key itself.

    python train_nnclr.py --dataset cifar10             # record cifar10_5:  k=1, K=4096, t=0.2
    python train_nnclr.py --dataset cifar10 --topk 5    # record cifar10_5a: k=5

Projection 512 -> 2048 BN ReLU -> 2048 BN ReLU -> 128 BN; predictor 128 -> 2048 BN ReLU -> 128.
No momentum encoder: keys are the online projections, used only to look up their top-k queue
neighbours (cosine similarity) and to be enqueued; the neighbours carry no gradient. InfoNCE at
t=0.2 in both directions, averaged (see `nnclr_loss`). Symmetric loss: the reversed term
L(v2, v1) is computed first, without enqueueing, then L(v1, v2) enqueues the keys of view 2, so a
batch never retrieves its own keys. The reference recomputes both views' features for the
reversed term; here each view goes through the network once per step, which gives the same loss
and gradients (only BatchNorm running statistics see the batch once, not twice). The purity of
the neighbours (fraction sharing the query's true label) is logged, never trained on.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import dist, nets, train
from common.queue import Queue, symmetric_terms


@nets.fp32
def nnclr_loss(p, neighbours, temperature):
    """NNCLR's two-way InfoNCE between predictions and nearest neighbours.

    p: (N, D) L2-normalised predictions of one view; neighbours: (N, k, D) L2-normalised queue
    neighbours of the other view's keys, neighbours[i, r] being a positive of p[i] (no gradient
    expected).
    - neighbours -> predictions: each of the N*k rows neighbours[i, r] . p^T / t has its one
      positive at column i; cross-entropy, mean over the N*k rows;
    - predictions -> neighbours: each of the N rows p[i] . (all N*k neighbours)^T / t has k
      positives; minus the sum of their log-probabilities (unnormalised), mean over the N rows.
    loss = the average of the two. All of the batch contrast is here, so gathered tensors can
    be passed in unchanged.
    """
    n, k, d = neighbours.shape
    flat = neighbours.reshape(n * k, d)
    owner = torch.arange(n, device=p.device).repeat_interleave(k)
    loss_nn_to_p = F.cross_entropy(flat @ p.T / temperature, owner)
    log_prob = F.log_softmax(p @ flat.T / temperature, dim=1).view(n, n, k)
    diagonal = torch.arange(n, device=p.device)
    loss_p_to_nn = -log_prob[diagonal, diagonal].sum(1).mean()
    return (loss_nn_to_p + loss_p_to_nn) / 2


class NNCLR(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        dims = [8 * args.width, args.hidden_dim, args.hidden_dim, args.proj_dim]
        self.encoder = nets.Encoder(nets.resnet18(args.image_size, args.bn_splits, args.width),
                                    nets.mlp(dims, last_bn=True))
        self.predictor = nets.mlp([args.proj_dim, args.hidden_dim, args.proj_dim])
        self.queue = Queue(args.queue_size, args.proj_dim)

    @property
    def backbone(self):
        return self.encoder.backbone

    def term(self, query, key, enqueue, labels):
        """L(predictions of the query view, neighbours of the key view's key) and the purity of
        those neighbours; query and key are the (prediction, projection) pairs of two views."""
        p, z = query[0], F.normalize(key[1].detach(), dim=1)
        found = self.queue.retrieve(z, self.args.topk, labels)
        # under torchrun: the loss of the global batch on every rank (see common.dist)
        loss = nnclr_loss(dist.gather_with_grad(p),
                          dist.gather(F.normalize(found.neighbours, dim=2)),
                          self.args.temperature)
        if enqueue:
            self.queue.enqueue(z, labels)
        return loss, found.purity

    def forward(self, views, labels):
        z1, z2 = (self.encoder(v) for v in views)
        p1, p2 = (F.normalize(self.predictor(z).float(), dim=1) for z in (z1, z2))
        return symmetric_terms(partial(self.term, labels=labels), (p1, z1), (p2, z2),
                               self.args.symmetric)


def add_args(parser):
    train.recipe_flags(parser, "temperature", "queue_size", "topk", "proj_dim", "symmetric", "weak")


Model = NNCLR

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
