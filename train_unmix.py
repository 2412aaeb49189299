"""Un-Mix (Shen et al., AAAI 2022): BYOL plus image mixtures. View 2 is mixed with its batch-
reversed self, and the mixture's target is the view-1 images of both sources, weighted by their
share of the mixture.

    python train_unmix.py --dataset cifar10     # record cifar10_10: BYOL, m=0.99 (tin_10: 0.996)

The networks and the pair loss L are BYOL's (train_byol.py). Each step draws lam ~ Beta(1, 1) and,
with p = 0.5 each, mixup (lam * x + (1 - lam) * reversed x) or cutmix (a box of area ~ (1 - lam)
pasted from the reversed batch, lam then set to the exact kept-pixel ratio) of view 2, and
minimises L(v1, v2) + lam * L(v1, mixed) + (1 - lam) * L(v1, mixed reversed). As in the reference,
the target network is moved before each of the three L terms (three EMA updates per step);
--one-ema-update moves it once per step. The random draws come from torch's global generator,
which the training loop seeds per epoch, so runs are reproducible.
"""
import math

import torch

from common import train
from common.errors import UserError
from train_byol import BYOL


def mixup(x, lam):
    """lam * x + (1 - lam) * x with its batch reversed."""
    return lam * x + (1 - lam) * x.flip(0)


def cutmix(x, lam, center):
    """Paste into x the box of the batch-reversed x centred at `center` = (row, col), with sides
    int(side * sqrt(1 - lam)) (clipped at the border). Returns the mixture and the exact fraction
    of pixels kept from x, which replaces lam."""
    h, w = x.shape[-2:]
    cut_h, cut_w = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
    r0, r1 = min(max(center[0] - cut_h // 2, 0), h), min(max(center[0] + cut_h // 2, 0), h)
    c0, c1 = min(max(center[1] - cut_w // 2, 0), w), min(max(center[1] + cut_w // 2, 0), w)
    mixed = x.clone()
    mixed[..., r0:r1, c0:c1] = x.flip(0)[..., r0:r1, c0:c1]
    return mixed, 1 - (r1 - r0) * (c1 - c0) / (h * w)


def random_mixture(x, alpha=1.0):
    """Mixup or cutmix (p = 0.5 each) of x with its reversed self, lam ~ Beta(alpha, alpha), from
    torch's global generator. Returns (mixture, lam) with lam a float in [0, 1]."""
    use_mixup = torch.rand(()).item() < 0.5
    lam = torch.distributions.Beta(alpha, alpha).sample().item()
    if use_mixup:
        return mixup(x, lam), lam
    h, w = x.shape[-2:]
    center = (torch.randint(h, ()).item(), torch.randint(w, ()).item())
    return cutmix(x, lam, center)


def unmix_loss(loss_plain, loss_mixed, loss_mixed_reversed, lam):
    """L(v1, v2) + lam * L(v1, mixed) + (1 - lam) * L(v1, mixed reversed). Row i of the mixture
    holds a share lam of image i, row i of the reversed mixture a share 1 - lam, hence the weights
    of their terms against view 1's image i."""
    return loss_plain + lam * loss_mixed + (1 - lam) * loss_mixed_reversed


class UnMix(BYOL):
    def __init__(self, args):
        if not args.mix_alpha > 0:
            raise UserError(f"--mix-alpha must be positive, got {args.mix_alpha}")
        super().__init__(args)

    def forward(self, views, labels):
        v1, v2 = views
        mixed, lam = random_mixture(v2, self.args.mix_alpha)
        # the reference recomputes v1's online prediction in each term; same weights and batch
        # give the same prediction and gradients, so it is computed once
        p1 = self.predict(v1)
        losses = []
        for i, x in enumerate((v2, mixed, mixed.flip(0))):
            if i == 0 or not self.args.one_ema_update:
                self.update_target()
            losses.append(self.pair_loss(v1, x, p1))
        return unmix_loss(*losses, lam)


def add_args(parser):
    train.recipe_flags(parser, "momentum", "proj_dim", "symmetric", "weak")
    parser.add_argument("--mix-alpha", type=float, default=1.0,
                        help="lam ~ Beta(alpha, alpha) for the mixtures")
    parser.add_argument("--one-ema-update", action="store_true",
                        help="move the target once per step (the reference moves it before each "
                             "of the three loss terms)")


Model = UnMix

if __name__ == "__main__":
    train.main(Model, add_args, __doc__, __file__)
