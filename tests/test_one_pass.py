"""Each view goes through the network once per step: the same loss and gradients as the
reference's recomputation of both views for the reversed term (SimCLR, NNCLR)."""
import copy

import torch
import torch.nn.functional as F

from conftest import TINY, script
from common import train


def tiny_symmetric_model(name, *flags):
    """(module, args, train-mode model, two views of 16 real images, labels) for a script."""
    mod = script(name)
    args = train.parse_args(mod.add_args, mod.__doc__, mod.__file__, TINY + list(flags))
    args.image_size, args.bn_splits = 32, 2
    assert args.symmetric
    torch.manual_seed(0)
    model = mod.Model(args).train()
    from test_amp import fixed_views
    (x, _), labels = fixed_views()
    x, labels = x[:16], labels[:16]
    return mod, args, model, [x, x.flip(3) * 0.9], labels


def test_simclr_one_pass_equals_double_computation():
    mod, args, model, views, labels = tiny_symmetric_model("train_simclr")

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


def test_nnclr_one_pass_equals_double_computation():
    """NNCLR: the reversed term L(v2, v1) retrieves from the queue as it was before the step and
    does not enqueue; L(v1, v2) then enqueues view 2's keys. Computing each view once gives the
    loss, purity, gradients and queue of the reference's four network passes."""
    mod, args, model, views, labels = tiny_symmetric_model("train_nnclr", "--queue-size", "32",
                                                            "--topk", "2")
    x = views[0]
    with torch.no_grad():  # half the queue holds keys of related images, with their labels
        model.queue.enqueue(F.normalize(model.encoder(x.flip(2)), dim=1), labels)
    ref_model = copy.deepcopy(model)
    passes = []
    for m in (model, ref_model):
        m.encoder.register_forward_hook(lambda *_: passes.append(1))

    loss, purity = model(views, labels)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    assert len(passes) == 2

    # the reference: each term passes both of its views through the network
    def term(im_q, im_k, update):
        p_q = F.normalize(ref_model.predictor(ref_model.encoder(im_q)).float(), dim=1)
        key = F.normalize(ref_model.encoder(im_k), dim=1)
        found = ref_model.queue.retrieve(key, args.topk, labels)
        term_loss = mod.nnclr_loss(p_q, F.normalize(found.neighbours, dim=2), args.temperature)
        if update:
            ref_model.queue.enqueue(key, labels)
        return term_loss, found.purity
    loss_21, purity_21 = term(views[1], views[0], update=False)
    loss_12, purity_12 = term(views[0], views[1], update=True)
    ref, ref_purity = (loss_12 + loss_21) / 2, (purity_12 + purity_21) / 2
    ref_grads = torch.autograd.grad(ref, list(ref_model.parameters()))
    assert len(passes) == 2 + 4

    assert abs(loss.item() - ref.item()) < 1e-6
    assert purity.item() == ref_purity.item() and 0 < purity.item() < 1
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, atol=1e-5, rtol=1e-3)
    for name in ("keys", "labels", "ptr"):  # view 2's keys enqueued once, by the second term
        assert torch.equal(getattr(model.queue, name), getattr(ref_model.queue, name))
    assert int(model.queue.ptr) == 0  # 16 pre-filled + 16 enqueued, wrapped around
    # and the test is not trivially symmetric: the two terms differ
    assert abs(loss_12.item() - loss_21.item()) > 1e-4
