"""Learning-rate schedule: linear warm-up from 0, then cosine towards 0 (reference values)."""
import math

import numpy as np
import pytest

from common.schedule import lr_at


def reference_schedule(base, epochs, steps, warmup_epochs):
    """The reference's precomputed array, written independently with numpy."""
    w = warmup_epochs * steps
    warm = np.linspace(0, base, w)
    i = np.arange(epochs * steps - w)
    return np.concatenate([warm, 0.5 * base * (1 + np.cos(np.pi * i / len(i)))])


def test_endpoints_and_warmup():
    base, epochs, steps, warm = 0.06, 10, 7, 5
    total = epochs * steps
    assert lr_at(0, total, warm * steps, base) == 0.0
    assert lr_at(warm * steps - 1, total, warm * steps, base) == pytest.approx(base)
    assert lr_at(warm * steps, total, warm * steps, base) == pytest.approx(base)  # cosine starts at base
    last = lr_at(total - 1, total, warm * steps, base)
    assert 0 < last < base * 1e-2
    # warm-up is linear
    assert lr_at(10, total, 35, base) == pytest.approx(base * 10 / 34)
    # halfway through the cosine the lr is half the base
    mid = warm * steps + (total - warm * steps) // 2
    assert lr_at(mid, total, warm * steps, base) == pytest.approx(base / 2, rel=0.05)


def test_matches_reference_array():
    ref = reference_schedule(0.06 * 512 / 256, 20, 13, 5)
    ours = [lr_at(s, 20 * 13, 5 * 13, 0.06 * 512 / 256) for s in range(20 * 13)]
    np.testing.assert_allclose(ours, ref, rtol=1e-12, atol=1e-15)


def test_no_warmup():
    assert lr_at(0, 100, 0, 1.0) == 1.0
    assert lr_at(50, 100, 0, 1.0) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))
