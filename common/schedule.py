"""Per-iteration learning rate: linear warm-up from 0, then cosine decay towards 0.

Matches the reference's precomputed schedule value for value: the warm-up is
linspace(0, base_lr, warmup_steps) (step 0 uses lr 0, the last warm-up step uses base_lr), and
the cosine part over the remaining C steps is base_lr * (1 + cos(pi * i / C)) / 2 for i = 0..C-1,
so it starts at base_lr and its last step is just above 0.
"""
import math


def lr_at(step, total_steps, warmup_steps, base_lr):
    """Learning rate for iteration `step` (0-based) of `total_steps`."""
    if step < warmup_steps:
        return base_lr * step / (warmup_steps - 1) if warmup_steps > 1 else 0.0
    i = step - warmup_steps
    return base_lr * 0.5 * (1 + math.cos(math.pi * i / (total_steps - warmup_steps)))
