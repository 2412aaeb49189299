"""FIFO queue ("memory bank") of keys with the true labels of its entries, and nearest-neighbour
retrieval from it (NNCLR, MSF, SNCLR, CMSF).

The labels are never used for training: they only measure the purity of retrieved neighbours.
"""
from typing import NamedTuple, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from common import dist


class Neighbours(NamedTuple):
    """The top-k entries of a queue for each of N queries (D: feature dimension)."""
    index: torch.Tensor            # (N, k) queue positions, most similar first
    neighbours: torch.Tensor       # (N, k, D) the entries at those positions (no gradient)
    with_key: torch.Tensor         # (N, 1 + k, D) the query followed by its k neighbours
    purity: Optional[torch.Tensor]  # () fraction of neighbours whose label is the query's


def nearest_neighbours(query, bank, k, labels=None, bank_labels=None):
    """Top-k rows of `bank` by cosine similarity to each row of `query`.

    query: (N, D); bank: (K, D), neither needs to be normalised. With `labels` (N,) and
    `bank_labels` (K,) the purity is mean over queries and neighbours of [bank label == label].
    The similarities are computed in fp32 even under autocast: bf16 would tie close neighbours.
    Gradients flow through the query into `with_key` only.
    """
    if not 0 < k <= bank.shape[0]:
        raise ValueError(f"cannot retrieve {k} neighbours from a bank of {bank.shape[0]}")
    with torch.no_grad(), torch.autocast(query.device.type, enabled=False):
        sim = F.normalize(query.detach().float(), dim=1) @ F.normalize(bank.float(), dim=1).T
        index = sim.topk(k, dim=1).indices
        neighbours = bank[index].to(query.dtype)
        purity = None
        if labels is not None and bank_labels is not None:
            purity = (bank_labels[index] == labels[:, None]).float().mean()
    with_key = torch.cat([query[:, None], neighbours], dim=1)
    return Neighbours(index, neighbours, with_key, purity)


class Queue(nn.Module):
    """K entries of dimension `dim`, initialised with random unit vectors and label -1.

    Everything (keys, labels, pointer) is a registered buffer, so state_dict() captures it.
    """

    def __init__(self, size, dim):
        super().__init__()
        self.register_buffer("keys", F.normalize(torch.randn(size, dim), dim=1))
        self.register_buffer("labels", torch.full((size,), -1, dtype=torch.long))
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def __len__(self):
        return self.keys.shape[0]

    def retrieve(self, query, k, labels=None):
        """The k nearest entries of each query (see `nearest_neighbours`), with their purity
        against `labels`. The result is a copy: a later enqueue does not change it, so retrieving
        before enqueueing the batch guarantees a batch never retrieves its own keys."""
        return nearest_neighbours(query, self.keys, k, labels, self.labels)

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


def symmetric_terms(term, first, second, symmetric=True):
    """The loss of a queue method over two views, in the order that keeps a batch away from its
    own keys: the reversed term `term(second, first, enqueue=False)` first, then
    `term(first, second, enqueue=True)`, which enqueues. term returns (loss, purity); the result
    is the mean of both (only the enqueueing term when not `symmetric`)."""
    if not symmetric:
        return term(first, second, enqueue=True)
    loss_21, purity_21 = term(second, first, enqueue=False)
    loss_12, purity_12 = term(first, second, enqueue=True)
    return (loss_12 + loss_21) / 2, (purity_12 + purity_21) / 2
