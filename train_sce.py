"""SCE (Denize et al., WACV 2023): similarity contrastive estimation. The target of each query mixes
the one-hot positive with the teacher's similarity distribution over the queue, so that negatives
semantically close to the query are pushed away less.

    python train_sce.py --dataset cifar10       # record cifar10_8: K=4096, m=0.99, weak view 2

MoCo's networks (train_moco.py) with a 256-d projection: 512 -> 2048 ReLU -> 256, EMA key encoder
moved at the start of every step and fed a shuffled batch, FIFO queue of keys. The teacher is the
key encoder on the other view (weak in every record) at temperature 0.05 (the record's
`temperature`); the student's temperature is 0.1 (--student-temperature) and the one-hot weight
0.5 (--coeff). Symmetric: the reversed term L(v2, v1) is computed first without enqueueing, then
L(v1, v2) enqueues the keys of view 2.
"""
import torch
import torch.nn.functional as F

from common import nets, train
from common.errors import UserError
from train_moco import MoCo


@nets.fp32
def sce_target(k, queue, coeff, temperature):
    """Target distribution w over [positive key, queue entries], shape (N, 1 + K).

    w = normalise_L1(coeff * onehot(0) + (1 - coeff) * softmax([0, k . queue] / temperature)).
    The key's own column enters the teacher softmax with similarity 0 (not masked out, as in the
    reference), so the positive receives coeff + (1 - coeff) * exp(0) / Z.
    """
    sim = torch.cat([torch.zeros_like(k[:, :1]), k @ queue.T], dim=1)
    onehot = torch.zeros_like(sim)
    onehot[:, 0] = 1
    w = coeff * onehot + (1 - coeff) * F.softmax(sim / temperature, dim=1)
    return F.normalize(w, p=1, dim=1)


@nets.fp32
def sce_loss(q, k, queue, coeff, teacher_temperature, student_temperature):
    """Cross-entropy between sce_target(k, ...) and softmax([q . k, q . queue] / t_student).

    q: (N, D) student queries, k: (N, D) teacher keys of the other view, queue: (K, D); all
    L2-normalised. The target carries no gradient. Computed in fp32 even under autocast: bf16
    similarities divided by 0.05 would be off by ~0.1.
    """
    with torch.no_grad():
        w = sce_target(k, queue, coeff, teacher_temperature)
    logits = torch.cat([(q * k).sum(1, keepdim=True), q @ queue.T], dim=1) / student_temperature
    return -(w * F.log_softmax(logits, dim=1)).sum(1).mean()


class SCE(MoCo):
    def __init__(self, args):
        if not args.student_temperature > 0:
            raise UserError(f"--student-temperature must be positive, got {args.student_temperature}")
        if not 0 <= args.coeff <= 1:
            raise UserError(f"--coeff must be in [0, 1], got {args.coeff}")
        super().__init__(args)

    def queue_loss(self, q, k, queue):
        return sce_loss(q, k, queue, self.args.coeff, self.args.temperature,
                        self.args.student_temperature)


def add_args(parser):
    train.recipe_flags(parser, "temperature", "momentum", "queue_size", "proj_dim", "symmetric",
                       "weak")
    parser.add_argument("--student-temperature", type=float, default=0.1,
                        help="temperature of the student (query) distribution")
    parser.add_argument("--coeff", type=float, default=0.5,
                        help="weight of the one-hot positive in the target (lambda in the paper)")


Model = SCE

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
