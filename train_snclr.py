"""SNCLR (Ge et al., ICLR 2023): soft neighbours. Each prediction is contrasted with the keys and
the keys' queue neighbours of the whole batch; its own key is a positive with weight 1 and its
key's neighbours are positives weighted by how much its projection attends to them.

    python train_snclr.py --dataset cifar10     # record cifar10_7: k=5, K=4096, m=0.99, t=0.2

Projection 512 -> 2048 BN ReLU -> 2048 BN ReLU -> 128 BN(affine=False); predictor
128 -> 2048 BN ReLU -> 128 BN(affine=False); no Linear has a bias. EMA target (backbone +
projection) moved at the start of every step and fed a shuffled batch. Candidates of sample i are
its key (the target projection of the other view) and the key's top-5 queue neighbours (cosine
similarity); the N (1 + k) candidates of the batch are the columns of a soft cross-entropy at
t=0.2 (see `snclr_loss`, `snclr_targets`). As in the reference (and the SNCLR authors' code) the
attention weights are computed from the online projection and gradients flow through them.
--threshold zeroes attention weights not above 1/k, as the reference's option does. Symmetric
loss: the reversed term L(v2, v1) is computed first, without enqueueing, then L(v1, v2)
enqueues the keys of view 2, so a batch never retrieves its own keys. The purity of the
neighbours (fraction sharing the query's true label) is logged, never trained on.
"""
from functools import partial

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import dist, nets, train
from common.queue import Queue, symmetric_terms


@nets.fp32
def snclr_targets(z, neighbours, threshold=False):
    """Soft targets over the N (1 + k) candidates of the batch, shape (N, N (1 + k)).

    z: (N, D) online projections (the attention queries); neighbours: (N, k, D) the queue
    neighbours of each sample's key. Column block j = (key_j, its k neighbours). Row i is zero
    outside its own block i, 1 on its key, and softmax_r(cos(z_i, neighbours[i, r])) on its own
    neighbours (other samples' neighbours are masked out). With `threshold`, attention weights
    not above 1/k are set to zero.
    """
    n, k, _ = neighbours.shape
    attn = F.softmax(torch.einsum("nd,nkd->nk", F.normalize(z, dim=1),
                                  F.normalize(neighbours, dim=2)), dim=1)
    if threshold:
        attn = attn * (attn > 1.0 / k)
    own = torch.cat([torch.ones(n, 1, device=z.device, dtype=attn.dtype), attn], dim=1)
    targets = torch.zeros(n, n, 1 + k, device=z.device, dtype=attn.dtype)
    diagonal = torch.arange(n, device=z.device)
    targets[diagonal, diagonal] = own
    return targets.view(n, n * (1 + k))


@nets.fp32
def snclr_loss(p, candidates, targets, temperature):
    """Soft cross-entropy of each prediction against all candidates of the batch.

    p: (N, D) L2-normalised predictions; candidates: (N, 1 + k, D) L2-normalised key followed by
    its k neighbours for each sample (no gradient expected); targets: (N, N (1 + k)) from
    `snclr_targets`. loss = mean_i -sum_j targets_ij log softmax_j(p_i . candidates_j / t), the
    targets not renormalised (each row sums to 2, or less with a threshold).
    """
    logits = p @ candidates.reshape(-1, candidates.shape[-1]).T / temperature
    return -(targets * F.log_softmax(logits, dim=1)).sum(1).mean()


class SNCLR(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        head = partial(nets.mlp, last_bn=True, last_affine=False)
        self.online = nets.Encoder(
            nets.resnet18(args.image_size, args.bn_splits, args.width),
            head([8 * args.width, args.hidden_dim, args.hidden_dim, args.proj_dim]))
        self.predictor = head([args.proj_dim, args.hidden_dim, args.proj_dim])
        self.target = nets.ema_copy(self.online)
        self.queue = Queue(args.queue_size, args.proj_dim)

    @property
    def backbone(self):
        return self.online.backbone

    def term(self, x_q, x_k, enqueue, labels):
        """L(prediction of x_q, candidates from x_k) and the neighbours' purity."""
        z = self.online(x_q)
        p = F.normalize(self.predictor(z).float(), dim=1)
        with torch.no_grad():
            key = F.normalize(nets.shuffled_forward(self.target, x_k), dim=1)
        found = self.queue.retrieve(key, self.args.topk, labels)
        targets = snclr_targets(z, found.neighbours, self.args.threshold)
        # under torchrun the candidates are the global batch's; this rank's block of
        # columns starts at rank * N (1 + k)
        block, r = targets.shape[1], dist.rank()
        targets = F.pad(targets, (r * block, (dist.world_size() - 1 - r) * block))
        loss = snclr_loss(p, dist.gather(F.normalize(found.with_key, dim=2)), targets,
                          self.args.temperature)
        if enqueue:
            self.queue.enqueue(key, labels)
        return loss, found.purity

    def forward(self, views, labels):
        nets.ema_update(self.target, self.online, self.args.momentum)
        im1, im2 = views
        return symmetric_terms(partial(self.term, labels=labels), im1, im2, self.args.symmetric)


def add_args(parser):
    train.recipe_flags(parser, "temperature", "momentum", "queue_size", "topk", "proj_dim",
                       "symmetric", "weak")
    parser.add_argument("--threshold", action="store_true",
                        help="zero the soft-target weights of neighbours not above 1/topk")


Model = SNCLR

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
