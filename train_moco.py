"""MoCoV2 (He et al., CVPR 2020; Chen et al., 2020): contrast each query against its momentum-
encoder key and a FIFO queue of past keys.

    python train_moco.py --dataset cifar10      # record cifar10_1: K=4096, m=0.99, t=0.2

Projection 512 -> 2048 ReLU -> 128 (no BN). The key encoder is an EMA copy of backbone + head,
moved at the start of every step, fed a shuffled batch. Symmetric loss: the reversed term
L(v2, v1) is computed first, without enqueueing, then L(v1, v2) enqueues its keys, so a batch is
never contrasted with its own keys.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import nets, train
from common.queue import Queue


@nets.fp32
def infonce_loss(q, k, queue, temperature):
    """InfoNCE over [positive key | queue negatives].

    q, k: (N, D) L2-normalised queries and their keys; queue: (K, D) L2-normalised negatives.
    Row i of the logits is [q_i.k_i, q_i.queue_1, ..., q_i.queue_K] / temperature and the target
    is column 0: loss = mean_i -log softmax(logits_i)[0].
    """
    l_pos = (q * k).sum(1, keepdim=True)
    l_neg = q @ queue.T
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    return F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long, device=q.device))


class MoCo(nn.Module):
    def __init__(self, args):
        super().__init__()
        self.args = args
        self.encoder_q = nets.Encoder(nets.resnet18(args.image_size, args.bn_splits, args.width),
                                      nets.mlp([8 * args.width, args.hidden_dim, args.proj_dim], hidden_bn=False))
        self.encoder_k = nets.ema_copy(self.encoder_q)
        self.queue = Queue(args.queue_size, args.proj_dim)

    @property
    def backbone(self):
        return self.encoder_q.backbone

    def contrastive_loss(self, im_q, im_k, labels, enqueue):
        q = F.normalize(self.encoder_q(im_q), dim=1)
        with torch.no_grad():
            k = F.normalize(nets.shuffled_forward(self.encoder_k, im_k), dim=1)
        loss = self.queue_loss(q, k, self.queue.keys.clone())
        if enqueue:
            self.queue.enqueue(k, labels)
        return loss

    def queue_loss(self, q, k, queue):
        """Loss of queries q against their keys k and the queue (ReSSL and SCE override it)."""
        return infonce_loss(q, k, queue, self.args.temperature)

    def forward(self, views, labels):
        im1, im2 = views
        nets.ema_update(self.encoder_k, self.encoder_q, self.args.momentum)
        if not self.args.symmetric:
            return self.contrastive_loss(im1, im2, labels, enqueue=True)
        loss_21 = self.contrastive_loss(im2, im1, labels, enqueue=False)
        loss_12 = self.contrastive_loss(im1, im2, labels, enqueue=True)
        return (loss_12 + loss_21) / 2


def add_args(parser):
    train.recipe_flags(parser, "temperature", "momentum", "queue_size", "proj_dim", "symmetric",
                       "weak")


Model = MoCo

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
