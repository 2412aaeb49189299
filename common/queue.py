"""FIFO queue ("memory bank") of keys with the true labels of its entries.

The labels are never used for training: they only measure the purity of retrieved neighbours.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from common import dist


class Queue(nn.Module):
    """K entries of dimension `dim`, initialised with random unit vectors and label -1."""

    def __init__(self, size, dim):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def __len__(self):
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue(self, keys, labels):
        """Write the batch at the pointer, wrapping around the end; keys of all ranks under DDP."""
        keys, labels = dist.gather(keys.detach().to(self.keys.dtype)), dist.gather(labels)
        n, size = keys.shape[0], len(self)
        if n > size:
            raise ValueError(f"a batch of {n} keys does not fit a queue of {size}")
        pos = (self.ptr + torch.arange(n, device=keys.device)) % size
        self.keys[pos] = keys
        self.labels[pos] = labels
        self.ptr.copy_((self.ptr + n) % size)
