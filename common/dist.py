"""torch.distributed helpers. Outside torchrun every function is the single-process identity."""
import torch
import torch.distributed as tdist


def is_dist():
    return tdist.is_available() and tdist.is_initialized()


def world_size():
    return tdist.get_world_size() if is_dist() else 1


def rank():
    return tdist.get_rank() if is_dist() else 0


def is_main():
    return rank() == 0


@torch.no_grad()
def gather(x):
    """Concatenation of `x` from every rank along dim 0 (no gradient)."""
    if not is_dist():
        return x
    out = [torch.empty_like(x) for _ in range(world_size())]
    tdist.all_gather(out, x.contiguous())
    return torch.cat(out)


def shuffle_across_ranks(x):
    raise NotImplementedError("cross-rank batch shuffle")


def gather_with_grad(x):
    """Concatenation of `x` from every rank along dim 0, with gradients flowing back to this
    rank's shard (for negatives/neighbours shared across ranks). Identity in one process."""
    if not is_dist():
        return x
    raise NotImplementedError("gather_with_grad across ranks")
