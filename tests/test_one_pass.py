"""Each view goes through the network once per step: the same loss and gradients as the
reference's recomputation of both views for the reversed term (SimCLR)."""
import torch
import torch.nn.functional as F

from conftest import TINY, script
from common import train


def test_simclr_one_pass_equals_double_computation():
    mod = script("train_simclr")
    args = train.parse_args(mod.add_args, mod.__doc__, mod.__file__, TINY)
    args.image_size, args.bn_splits = 32, 2
    assert args.symmetric
    torch.manual_seed(0)
    model = mod.Model(args).train()
    from test_amp import fixed_views
    (x, _), labels = fixed_views()
    x, labels = x[:16], labels[:16]
    views = [x, x.flip(3) * 0.9]

    loss = model(views, labels)
    grads = torch.autograd.grad(loss, list(model.parameters()))

    # the reference: every term computes both views' features afresh (batch statistics are those
    # of the same batches, so each recomputation returns the same features)
    def z(v):
        return F.normalize(model.encoder(v), dim=1)
    t = args.temperature
    ref = (mod.cross_view_loss(z(views[0]), z(views[1]), t)
           + mod.cross_view_loss(z(views[1]), z(views[0]), t)) / 2
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))

    assert loss.item() == ref.item() or abs(loss.item() - ref.item()) < 1e-6
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-3)
    # and the loss is not trivially symmetric: the two directions differ
    z1, z2 = z(views[0]), z(views[1])
    assert abs(mod.cross_view_loss(z1, z2, t).item() - mod.cross_view_loss(z2, z1, t).item()) > 1e-4
