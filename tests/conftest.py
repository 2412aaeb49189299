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
