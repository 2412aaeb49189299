"""ReSSL (Zheng et al., NeurIPS 2021): relational self-supervised learning. The student matches
the teacher's distribution of similarities to a queue of past keys, instead of picking out a
positive among negatives.

    python train_ressl.py --dataset cifar10     # record cifar10_4: K=4096, m=0.99, weak view 2

MoCo's networks (train_moco.py): projection 512 -> 2048 ReLU -> 128, EMA key encoder moved at the
start of every step and fed a shuffled batch, FIFO queue of keys. The teacher is the key encoder on
view 2, which is the weak view in every record; its sharp distribution (temperature 0.04, the
record's `temperature`) is the target of the student's query distribution on view 1 (temperature
0.1, --student-temperature). Keys of view 2 are enqueued after the queue has been read. Not
symmetric in the records; with --symmetric the reversed term is computed first without enqueueing
(as for every queue-based script here), whereas the reference computed it after the enqueue.
"""
import torch.nn.functional as F

from common import nets, train
from common.errors import UserError
from train_moco import MoCo


@nets.fp32
def relational_loss(q, k, queue, teacher_temperature, student_temperature):
    """Cross-entropy between the teacher's and the student's similarity distributions over the queue.

    q: (N, D) student queries, k: (N, D) teacher keys, queue: (K, D); all L2-normalised.
    loss = mean_i sum_j -softmax(k_i . queue / t_teacher)_j * log softmax(q_i . queue / t_student)_j.
    The teacher side is detached: gradients flow through q only. Computed in fp32 even under
    autocast: bf16 similarities divided by 0.04 would be off by ~0.1.
    """
    target = F.softmax(k.detach() @ queue.T / teacher_temperature, dim=1)
    log_p = F.log_softmax(q @ queue.T / student_temperature, dim=1)
    return -(target * log_p).sum(1).mean()


class ReSSL(MoCo):
    def __init__(self, args):
        if not args.student_temperature > 0:
            raise UserError(f"--student-temperature must be positive, got {args.student_temperature}")
        super().__init__(args)

    def queue_loss(self, q, k, queue):
        return relational_loss(q, k, queue, self.args.temperature, self.args.student_temperature)


def add_args(parser):
    train.recipe_flags(parser, "temperature", "momentum", "queue_size", "proj_dim", "symmetric",
                       "weak")
    parser.add_argument("--student-temperature", type=float, default=0.1,
                        help="temperature of the student (query) distribution")


Model = ReSSL

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
