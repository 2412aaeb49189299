"""Shared test helpers: tiny configurations that run a whole script in seconds on a CPU."""
import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(min(2, os.cpu_count() or 1))

# a whole run in a few seconds: 40 demo images, 1 epoch, narrow network, no progress bars
TINY = ["--dataset", "demo", "--subset", "40", "--epochs", "1", "--batch-size", "16",
        "--bn-splits", "2", "--width", "8", "--hidden-dim", "32", "--linear-epochs", "1",
        "--workers", "0", "--no-progress", "--amp"]


def script(name):
    """Import a top-level train script (e.g. 'train_moco') as a module."""
    return importlib.import_module(name)


def train_tiny(name, tmp_path, *extra):
    """Run train script `name` in-process on the TINY configuration; returns its summary line.
    Outputs go under tmp_path/results and tmp_path/checkpoints."""
    from common import train
    mod = script(name)
    argv = TINY + ["--results-dir", str(tmp_path / "results"),
                   "--checkpoint-dir", str(tmp_path / "checkpoints"), *extra]
    return train.run(mod.Model, mod.add_args, mod.__doc__, mod.__file__, argv)


def run_cli(*args, cwd=ROOT):
    """Run `python *args` in a subprocess; returns the CompletedProcess (text output)."""
    return subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture
def results(tmp_path):
    return tmp_path / "results"


def tiny_model(name, *extra, seed=0):
    """Model(args) of train script `name` on the TINY configuration (32-px images, 10 classes),
    built under a fixed seed without loading data: for tests of single training steps."""
    from common import train
    mod = script(name)
    args = train.parse_args(mod.add_args, mod.__doc__, mod.__file__, TINY + list(extra))
    args.image_size, args.num_classes = 32, 10
    torch.manual_seed(seed)
    return mod.Model(args)


def check_ema_step(model, online, target, views, labels, momentum, updates=1):
    """One forward + backward of `model` in train mode, asserting that gradients reach every
    parameter of `online` and none of `target`, and that `target` moved only by the EMA rule,
    `updates` times: target' = online + m^updates * (target - online) (the online weights do not
    change within a step). The target is first pushed away from the online weights so that the
    update is visible. Returns the loss."""
    with torch.no_grad():
        for p in target.parameters():
            p.add_(torch.randn_like(p))
    before_t = [p.detach().clone() for p in target.parameters()]
    before_o = [p.detach().clone() for p in online.parameters()]
    model.train()
    out = model(views, labels)
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in online.parameters())
    assert all(not p.requires_grad and p.grad is None for p in target.parameters())
    decay = momentum ** updates
    for p, t, o in zip(target.parameters(), before_t, before_o):
        torch.testing.assert_close(p, o + decay * (t - o), rtol=1e-5, atol=1e-6)
    return loss
