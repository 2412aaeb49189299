"""Linear evaluation learns a linearly separable toy problem with the reference protocol."""
import numpy as np
import torch
import torch.nn as nn

from common.data import DataSet, Split
from common.linear import _lr, linear_eval


class MeanColour(nn.Module):
    """A 'backbone' whose features are the mean of each colour channel."""
    feature_dim = 3

    def forward(self, x):
        return x.mean((2, 3))


def colour_dataset(n, seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)
    images = rng.integers(0, 40, (n, 32, 32, 3)).astype(np.uint8)
    for c in range(3):  # class c: channel c is bright
        images[labels == c, :, :, c] += 200
    return Split(images, labels.astype(np.int64))


def test_learns_separable_problem(tmp_path):
    torch.manual_seed(0)
    ds = DataSet("toy", 3, 32, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25),
                 colour_dataset(256, 0), colour_dataset(90, 1))
    top1, top5 = linear_eval(MeanColour(), ds, "cpu", epochs=5, batch_size=64, workers=0,
                             csv_path=str(tmp_path / "lin.csv"), progress=False)
    assert top1 == 100.0 and top5 == 100.0
    lines = (tmp_path / "lin.csv").read_text().splitlines()
    assert lines[0] == "epoch,top1,top5,best_top1" and len(lines) == 6


def test_step_schedule_is_reference_milestones():
    assert [_lr(30, e, 100, 0, 1, False) for e in (0, 59, 60, 79, 80, 99)] == \
        [30, 30, 30 * 0.1, 30 * 0.1, 30 * 0.1 ** 2, 30 * 0.1 ** 2]
