"""Data-parallel training under PyTorch's own launcher (torchrun); no launcher of our own.

    torchrun --nproc_per_node=8 train_moco.py --dataset tin

torchrun starts one process per GPU and sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR/PORT;
`setup` joins that process group (NCCL on CUDA, gloo on CPU). Outside torchrun every function
here is the single-process identity, so the scripts run unchanged on one device.

Cross-rank semantics (the choices, in one place):
- queues: keys of all ranks are gathered before they are written, so every rank holds the same
  queue (common.queue.Queue.enqueue calls `gather`);
- key encoders: the batch is shuffled across all ranks (MoCo's shuffle-BN), see
  `shuffle_across_ranks`;
- BatchNorm: the backbone's split BatchNorm stays per rank (its groups hold batch/8 samples when
  --bn-splits keeps its default); BatchNorm in the heads is synchronised over the global batch
  (`SyncBatchNorm`, --sync-bn heads), so head statistics are those of one process with the whole
  batch; --sync-bn all synchronises the backbone too (with --bn-splits 1);
- in-batch negatives and neighbours (SimCLR, NNCLR): `gather_with_grad`, whose backward sums the
  gradients of every rank into the local shard, so 2 ranks x B reproduce 1 process x 2B;
- kNN monitor and linear evaluation: run on every rank identically (the same weights, buffers
  broadcast from rank 0, the same seeds, the whole data set), which needs no barrier that a long
  evaluation could time out; only rank 0 writes CSVs, checkpoints and progress bars.
"""
import datetime
import inspect
import os

import torch
import torch.distributed as tdist
import torch.nn as nn

from common.errors import UserError


def is_dist():
    return tdist.is_available() and tdist.is_initialized()


def world_size():
    return tdist.get_world_size() if is_dist() else 1


def rank():
    return tdist.get_rank() if is_dist() else 0


def is_main():
    return rank() == 0


def in_torchrun():
    """True in a process started by torchrun (or anything else that sets its variables)."""
    return all(k in os.environ for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))


def setup(device, timeout_minutes=30):
    """Join torchrun's process group, if any; returns the device this process trains on.

    Under torchrun a CUDA device becomes cuda:LOCAL_RANK. A collective that waits longer than
    `timeout_minutes` (a rank died or hangs) raises instead of blocking forever.
    """
    if not in_torchrun() or is_dist():
        return device
    world, local = int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0))
    if device.type == "cuda":
        if device.index is not None and world > 1 and device.index != local:
            raise UserError(f"--device {device}: under torchrun each process uses cuda:LOCAL_RANK; "
                            f"pass --device cuda (or auto), and CUDA_VISIBLE_DEVICES to choose GPUs")
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but only {torch.cuda.device_count()} GPU(s) visible: "
                            f"--nproc_per_node must not exceed the GPUs of a node")
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    tdist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                             timeout=datetime.timedelta(minutes=timeout_minutes))
    return device


def cleanup():
    if is_dist():
        tdist.destroy_process_group()


def wrap(model, device):
    """`model` in DistributedDataParallel (gradients averaged over ranks); `model` itself when
    alone. Buffers are not re-broadcast every step: queues stay identical by construction and
    BatchNorm running statistics are broadcast before each evaluation (`broadcast_buffers`)."""
    if world_size() == 1:
        return model
    ids = [device.index] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel
    # newer PyTorch renamed the switch (parameters and buffers are still synced once, at init)
    no_sync = "forward_sync_buffers" if "forward_sync_buffers" in inspect.signature(ddp).parameters \
        else "broadcast_buffers"
    return ddp(model, device_ids=ids, **{no_sync: False})


# ----------------------------------------------------------------------------- collectives
@torch.no_grad()
def gather(x):
    """Concatenation of `x` from every rank along dim 0 (no gradient)."""
    if not is_dist():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    tdist.all_gather(out, x.contiguous())
    return torch.cat(out)


class _GatherWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.n = x.shape[0]
        return gather(x)

    @staticmethod
    def backward(ctx, grad):
        # every rank's loss depends on every shard: the local shard's gradient is the sum over
        # ranks (all_reduce rather than reduce_scatter, which gloo lacks)
        grad = grad.contiguous()
        tdist.all_reduce(grad)
        r = rank()
        return grad[r * ctx.n:(r + 1) * ctx.n]


def gather_with_grad(x):
    """Concatenation of `x` from every rank along dim 0, with the gradients of every rank's loss
    flowing back to this rank's shard: with DDP's gradient averaging, W ranks x B samples give the
    gradients of one process x W*B. Identity in one process. Call it on every rank."""
    if not is_dist():
        return x
    return _GatherWithGrad.apply(x)


class _AllReduceWithGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        x = x.clone()
        tdist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad):
        grad = grad.clone()
        tdist.all_reduce(grad)
        return grad


def all_reduce_with_grad(x):
    """Sum of `x` over ranks, differentiable (each input receives the sum of the gradients)."""
    return _AllReduceWithGrad.apply(x) if is_dist() else x


def mean(value):
    """Mean of a number (or scalar tensor) over ranks, as a float."""
    if not is_dist():
        return float(value)
    t = torch.as_tensor(value, dtype=torch.float64, device=_comm_device()).reshape(1).clone()
    tdist.all_reduce(t)
    return t.item() / world_size()


def all_true(flag):
    """True on every rank iff `flag` is true on every rank (e.g. 'the loss is finite'): ranks
    must agree on skipping a step, or the ones that run backward wait for the others forever."""
    if not is_dist():
        return bool(flag)
    t = torch.tensor([0.0 if bool(flag) else 1.0], device=_comm_device())
    tdist.all_reduce(t)
    return t.item() == 0


def broadcast_object(obj):
    """Rank 0's `obj` on every rank (e.g. the checkpoint to resume from)."""
    if not is_dist():
        return obj
    box = [obj if is_main() else None]
    tdist.broadcast_object_list(box, src=0, device=_comm_device())
    return box[0]


@torch.no_grad()
def broadcast_buffers(module):
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, so that evaluations
    run on every rank see identical networks."""
    if not is_dist():
        return
    for b in module.buffers():
        tdist.broadcast(b, src=0)


def _comm_device():
    return torch.device("cuda", torch.cuda.current_device()) \
        if tdist.get_backend() == "nccl" else torch.device("cpu")


# ----------------------------------------------------------------------------- shuffle-BN
@torch.no_grad()
def shuffle_across_ranks(x):
    """A random permutation of the global batch, cut back into per-rank shards (MoCo's
    shuffle-BN across GPUs). Returns this rank's shard and the inverse permutation, to be given to
    `unshuffle_across_ranks` with the encoder's output."""
    everything = gather(x)
    perm = torch.randperm(everything.shape[0], device=x.device)
    tdist.broadcast(perm, src=0)  # one permutation for all ranks
    n, r = x.shape[0], rank()
    return everything[perm[r * n:(r + 1) * n]], torch.argsort(perm)


@torch.no_grad()
def unshuffle_across_ranks(y, unshuffle):
    """This rank's rows, in its original order, of the outputs `y` of a shuffled batch."""
    n, r = y.shape[0], rank()
    return gather(y)[unshuffle[r * n:(r + 1) * n]]


# ----------------------------------------------------------------------------- SyncBatchNorm
class SyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm (1d or 2d) whose training statistics are those of the global batch.

    torch.nn.SyncBatchNorm only runs on GPUs; this one is plain autograd over a differentiable
    all_reduce of (sum, sum of squares, count), so it runs on the gloo backend (CPU tests) as
    well, and reduces to BatchNorm in one process. Parameter and buffer names are BatchNorm's.
    """

    def _check_input_dim(self, x):
        if x.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {x.dim()}D input)")

    def forward(self, x):
        if not (self.training and is_dist()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.full((1,), xf.numel() / xf.shape[1], device=x.device)
        stats = all_reduce_with_grad(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        c = x.shape[1]
        n = stats[2 * c]
        mu = stats[:c] / n
        var = (stats[c:2 * c] / n - mu * mu).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1 / self.num_batches_tracked.item()
                self.running_mean.mul_(1 - m).add_(mu.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(var.detach() * n / (n - 1).clamp_min(1), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (xf - mu.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out.to(x.dtype)


def convert_sync_bn(module, which="heads"):
    """Replace BatchNorm layers of `module` by SyncBatchNorm, in place; returns `module`.

    which='heads': BatchNorm1d only (projection/prediction heads); 'all': also the backbone's
    plain BatchNorm2d. Split BatchNorm (common.nets.SplitBatchNorm with several splits) always
    stays per rank. 'none': nothing.
    """
    from common.nets import SplitBatchNorm
    if which == "none":
        return module
    kinds = (nn.BatchNorm1d,) if which == "heads" else (nn.BatchNorm1d, nn.BatchNorm2d)
    for name, child in module.named_children():
        split = isinstance(child, SplitBatchNorm) and child.num_splits > 1
        if isinstance(child, kinds) and not split and not isinstance(child, SyncBatchNorm):
            sync = SyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine,
                                 child.track_running_stats)
            sync.load_state_dict(child.state_dict())
            sync.train(child.training)
            for p_new, p_old in zip(sync.parameters(), child.parameters()):
                p_new.requires_grad_(p_old.requires_grad)  # EMA copies stay frozen
            sync.to(next(iter(child.state_dict().values()), torch.empty(0)).device)
            setattr(module, name, sync)
        else:
            convert_sync_bn(child, which)
    return module
