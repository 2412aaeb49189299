"""Same seed, device and flags on CPU: two runs write the same numbers (all but the timings).

MoCo exercises every source of randomness a run has: data order, PIL augmentations, the random
initial queue, batch shuffling for the key encoder, and the linear classifier's initialisation.
"""
import csv
import json

import torch

from conftest import train_tiny

RUN = "demo_1_seed1339"
TIMINGS = {"epoch_seconds"}
# settings that name the run's own directories or time it, not its numbers
NOT_NUMBERS = {"results_dir", "checkpoint_dir", "checkpoint", "train_seconds", "command"}


def outputs(d):
    res = d / "results"
    with open(res / f"{RUN}_pretrain.csv") as f:
        pre = [{k: v for k, v in row.items() if k not in TIMINGS} for row in csv.DictReader(f)]
    with open(res / f"{RUN}_linear.csv") as f:
        lin = list(csv.DictReader(f))
    config = {k: v for k, v in json.loads((res / f"{RUN}_config.json").read_text()).items()
              if k not in NOT_NUMBERS}
    ckpt = torch.load(d / "checkpoints" / f"{RUN}.pt", weights_only=False)
    return pre, lin, config, ckpt["model"]


def test_two_runs_with_the_same_seed_agree(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for d in (a, b):
        train_tiny("train_moco", d, "--queue-size", "32", "--device", "cpu")
    pre_a, lin_a, config_a, model_a = outputs(a)
    pre_b, lin_b, config_b, model_b = outputs(b)
    assert pre_a[1]["loss"] and lin_a[0]["top1"]  # the numbers compared are there
    assert pre_a == pre_b
    assert lin_a == lin_b
    assert config_a == config_b and config_a["finished"]
    assert model_a.keys() == model_b.keys()
    for k in model_a:  # weights, EMA copies, queue contents: bit for bit
        assert torch.equal(model_a[k], model_b[k]), k
