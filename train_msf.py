"""MSF, Mean Shift (Koohpayegani et al., ICCV 2021): BYOL whose target is not one point but the
mean of the target key's neighbourhood, a key and its nearest neighbours in a queue of past keys.

    python train_msf.py --dataset cifar10       # record cifar10_6: k=5, K=4096, m=0.99, weak view 2

BYOL's networks (train_byol.py): projection 512 -> 2048 BN ReLU -> 128, predictor
128 -> 2048 BN ReLU -> 128, EMA target (backbone + projection) moved at the start of every step and
fed a shuffled batch. The targets of sample i are its key (the target projection of the other
view) and the key's top-5 queue neighbours by cosine similarity; the loss is the mean over those
1 + k targets of 2 - 2 cos(prediction, target). View 2 is the weak view in every record.
Symmetric loss: the reversed term L(v2, v1) is computed first, without enqueueing, then L(v1, v2)
enqueues the keys of view 2, so a batch never retrieves its own keys. The purity of the neighbours
(fraction sharing the query's true label) is logged, never trained on.
"""
from functools import partial

import torch
import torch.nn.functional as F

from common import nets, train
from common.queue import Queue, symmetric_terms
from train_byol import BYOL


@nets.fp32
def msf_loss(p, targets):
    """Mean over samples i and their 1 + k targets t of 2 - 2 p_i . t, i.e. squared distances.

    p: (N, D) L2-normalised predictions; targets: (N, 1 + k, D) L2-normalised key followed by its
    k neighbours for each sample (no gradient expected).
    """
    return (2 - 2 * torch.einsum("nd,ntd->nt", p, targets)).mean()


class MSF(BYOL):
    def __init__(self, args):
        super().__init__(args)
        self.queue = Queue(args.queue_size, args.proj_dim)

    def term(self, x_q, x_k, enqueue, labels):
        """L(prediction of x_q, key of x_k and its neighbours) and the neighbours' purity."""
        p = F.normalize(self.predict(x_q), dim=1)
        key = F.normalize(self.target_projection(x_k), dim=1)
        found = self.queue.retrieve(key, self.args.topk, labels)
        loss = msf_loss(p, F.normalize(found.with_key, dim=2))
        if enqueue:
            self.queue.enqueue(key, labels)
        return loss, found.purity

    def forward(self, views, labels, **extra):
        """`extra`: further inputs passed to every `term` (CMSF's third view)."""
        self.update_target()
        im1, im2 = views
        return symmetric_terms(partial(self.term, labels=labels, **extra), im1, im2,
                               self.args.symmetric)


def add_args(parser):
    train.recipe_flags(parser, "momentum", "queue_size", "topk", "proj_dim", "symmetric", "weak")


Model = MSF

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
