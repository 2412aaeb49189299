"""CMSF, Constrained Mean Shift (Navaneet et al., 2021): MSF whose neighbours are also drawn under
a constraint from a second view: the neighbours of a third view's key in a queue of third-view
keys, read from the main queue at those positions.

    python train_cmsf.py --dataset cifar10      # record cifar10_9: k=5, K=4096, m=0.99, 3 views

MSF's networks and targets (train_msf.py, BYOL heads with an EMA target fed shuffled batches),
three views: strong, weak, weak. Two queues filled in step: the main queue holds the target keys
of view 2 and the auxiliary queue those of view 3. For a prediction of view 1 and the key of view
2 the loss averages two MSF losses: against the key and its top-5 main-queue neighbours, and
against the key and the constrained neighbours, the main-queue entries at the positions of the
top-5 auxiliary-queue neighbours of view 3's key. Symmetric loss: the reversed term L(v2, v1)
(view 3 stays the constraint) is computed first, without enqueueing, then L(v1, v2) enqueues both
queues, so a batch never retrieves its own keys; as in the reference, view 3's key is computed in
each term (with its own shuffle). The purity of the main-queue neighbours is logged, never trained
on.
"""
import torch
import torch.nn.functional as F

from common import nets, train
from common.queue import Queue
from train_msf import MSF


@nets.fp32
def cmsf_loss(p, targets, constrained):
    """The average of the MSF losses against two target sets: mean over samples i, over the two
    sets and over their 1 + k targets t of 2 - 2 p_i . t.

    p: (N, D) L2-normalised predictions; targets: (N, 1 + k, D) key + its queue neighbours;
    constrained: (N, 1 + k, D) key + constrained neighbours; all L2-normalised, no gradient
    expected through the targets.
    """
    both = torch.stack([targets, constrained])
    return (2 - 2 * torch.einsum("nd,sntd->snt", p, both)).mean()


class CMSF(MSF):
    def __init__(self, args):
        super().__init__(args)
        self.aux_queue = Queue(args.queue_size, args.proj_dim)

    def neighbour_targets(self, key, key_aux, labels):
        """(key + its top-k main-queue neighbours, key + constrained neighbours, purity of the
        former): the constrained neighbours are the main-queue entries at the positions of the
        top-k auxiliary-queue neighbours of key_aux. Both queues are read, not written."""
        found = self.queue.retrieve(key, self.args.topk, labels)
        index = self.aux_queue.retrieve(key_aux, self.args.topk).index
        constrained = torch.cat([key[:, None], self.queue.keys[index]], dim=1)
        return found.with_key, constrained, found.purity

    def term(self, x_q, x_k, enqueue, labels, x_aux):
        """L(prediction of x_q, both target sets of x_k constrained by x_aux) and the purity."""
        p = F.normalize(self.predict(x_q), dim=1)
        key = F.normalize(self.target_projection(x_k), dim=1)
        key_aux = F.normalize(self.target_projection(x_aux), dim=1)
        targets, constrained, purity = self.neighbour_targets(key, key_aux, labels)
        loss = cmsf_loss(p, F.normalize(targets, dim=2), F.normalize(constrained, dim=2))
        if enqueue:
            self.queue.enqueue(key, labels)
            self.aux_queue.enqueue(key_aux, labels)
        return loss, purity

    def forward(self, views, labels):
        im1, im2, im3 = views
        return super().forward([im1, im2], labels, x_aux=im3)


def add_args(parser):
    train.recipe_flags(parser, "momentum", "queue_size", "topk", "proj_dim", "symmetric", "weak")


Model = CMSF

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
