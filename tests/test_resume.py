"""Exact resume: a run stopped (at an epoch boundary, mid-epoch, or by a real SIGTERM) and started
again with the same command ends bit-identical to an uninterrupted run; a non-finite loss stops the
run and keeps the last good checkpoint."""
import csv
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from conftest import ROOT, TINY, script
from fixtures import demo, make_tin_fixture
from common import data, train

RUN = "demo_{}_seed1339"
# 2 epochs of 2 steps; kNN at epoch 0 and at the end; one linear-evaluation epoch
FLAGS = ["--epochs", "2", "--knn-every", "0", "--linear-epochs", "1", "--no-amp",
         "--queue-size", "32"]
RESUMABLE = [pytest.param("train_moco", "1", id="moco"),
             pytest.param("train_nnclr", "5", id="nnclr", marks=pytest.mark.skipif(
                 not (ROOT / "train_nnclr.py").exists(), reason="train_nnclr.py not written yet"))]


@pytest.fixture(autouse=True)
def fast(monkeypatch):
    """One thread (faster than two on a busy 2-core machine) and a 100-image test split for the
    kNN monitor; the training images are the real TINY subset."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ds = demo()
    test = data.Split(ds.test.images[::10], ds.test.labels[::10])
    monkeypatch.setattr(data, "_load_demo", lambda: (ds.train, test, 10))
    yield
    torch.set_num_threads(threads)


def run(name, out, *extra, model=None):
    mod = script(name)
    argv = TINY + FLAGS + ["--results-dir", str(out / "results"),
                           "--checkpoint-dir", str(out / "checkpoints"), *extra]
    return train.run(model or mod.Model, mod.add_args, mod.__doc__, mod.__file__, argv)


def outputs(out, record):
    """(checkpoint, pretrain rows without epoch_seconds, linear rows) of a finished run."""
    ckpt = torch.load(out / "checkpoints" / f"{RUN.format(record)}.pt", weights_only=False)
    rows = {}
    for kind in ("pretrain", "linear"):
        with open(out / "results" / f"{RUN.format(record)}_{kind}.csv") as f:
            rows[kind] = [{k: v for k, v in r.items() if k != "epoch_seconds"}
                          for r in csv.DictReader(f)]
    return ckpt, rows["pretrain"], rows["linear"]


def assert_same_state(a, b):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name,record", RESUMABLE)
def test_stopped_twice_and_resumed_equals_uninterrupted(tmp_path, capsys, name, record):
    run(name, tmp_path / "straight")
    # stop at the end of epoch 1, then after step 1 of epoch 2, then let it finish
    with pytest.raises(train.Interrupted, match="after epoch 1") as stop:
        run(name, tmp_path / "stopped", "--stop-after", "1")
    assert stop.value.signum == signal.SIGTERM
    with pytest.raises(train.Interrupted, match="after step 1/2 of epoch 2"):
        run(name, tmp_path / "stopped", "--stop-after", "2:1")
    mid = torch.load(tmp_path / "stopped" / "checkpoints" / f"{RUN.format(record)}.pt",
                     weights_only=False)
    # everything needed to continue: online + EMA weights, queue keys/labels/pointer, optimiser,
    # position, random generators, best accuracy, the CSV rows written so far
    assert (mid["epoch"], mid["step"]) == (1, 1)
    assert any(k.startswith("queue.") for k in mid["model"])
    assert mid["optimizer"]["state"] and mid["rng"][0].keys() >= {"python", "numpy", "torch"}
    assert [r["epoch"] for r in mid["rows"]] == ["0", "1"] and "best_knn" in mid
    run(name, tmp_path / "stopped")
    log = capsys.readouterr().err
    assert "at the end of epoch 1 (automatically" in log and "at step 1/2 of epoch 2" in log

    ckpt_a, pre_a, lin_a = outputs(tmp_path / "straight", record)
    ckpt_b, pre_b, lin_b = outputs(tmp_path / "stopped", record)
    assert_same_state(ckpt_a["model"], ckpt_b["model"])
    assert [r["epoch"] for r in pre_b] == ["0", "1", "2"]  # no duplicated or missing epoch
    assert pre_a == pre_b and lin_a == lin_b


def test_sigterm_writes_a_checkpoint_and_the_rerun_resumes(tmp_path, capsys):
    """A real SIGTERM to a running script: exit status 143, one line saying where it stopped, a
    loadable checkpoint, no temporary files; the same command resumes from it."""
    make_tin_fixture(tmp_path / "data", classes=3, per_class=4, val_per_class=2)
    argv = ["--dataset", "tin", "--data-dir", tmp_path / "data", "--epochs", "100000",
            "--batch-size", "4", "--bn-splits", "2", "--width", "8", "--hidden-dim", "32",
            "--queue-size", "8", "--knn-every", "0", "--linear-epochs", "0", "--workers", "0",
            "--no-progress", "--no-amp", "--results-dir", tmp_path / "results",
            "--checkpoint-dir", tmp_path / "ckpt"]
    ckpt_path = tmp_path / "ckpt" / "tin_1_seed1339.pt"
    proc = subprocess.Popen([sys.executable, ROOT / "train_moco.py", *map(str, argv)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 120
    while not ckpt_path.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("stopped: SIGTERM after") and "run the same command again" in last
    assert list(ckpt_path.parent.iterdir()) == [ckpt_path]
    ckpt = torch.load(ckpt_path, weights_only=False)
    done = ckpt["epoch"] + (1 if ckpt["step"] else 0)

    mod = script("train_moco")
    with pytest.raises(train.Interrupted):
        train.run(mod.Model, mod.add_args, mod.__doc__, mod.__file__,
                  [str(a) for a in argv] + ["--stop-after", str(done + 1)])
    assert "(automatically: the run's own checkpoint exists" in capsys.readouterr().err
    with open(tmp_path / "results" / "tin_1_seed1339_pretrain.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(done + 2))


def nan_at(name, calls):
    """The script's Model, returning a NaN loss on the given forward calls (1-based)."""
    base = script(name).Model

    class Poisoned(base):
        count = 0

        def forward(self, views, labels):
            out = super().forward(views, labels)  # moves the EMA copy and the queue first
            Poisoned.count += 1
            if Poisoned.count in calls:
                return out * float("nan") if torch.is_tensor(out) else (out[0] * float("nan"), out[1])
            return out
    return Poisoned


def test_nonfinite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    path = tmp_path / "checkpoints" / f"{RUN.format(1)}.pt"
    with pytest.raises(SystemExit) as e:
        mod = script("train_moco")
        argv = TINY + FLAGS + ["--results-dir", str(tmp_path / "results"),
                               "--checkpoint-dir", str(tmp_path / "checkpoints")]
        train.main(nan_at("train_moco", {3}), mod.add_args, mod.__doc__, mod.__file__, argv)
    assert e.value.code == 3
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: non-finite loss (nan) at epoch 2 step 1/2;")
    assert f"last good checkpoint {path} (epoch 1) is kept" in err
    ckpt = torch.load(path, weights_only=False)
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0)
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values() if v.is_floating_point())


def test_skip_nonfinite_undoes_the_bad_step(tmp_path):
    """With --skip-nonfinite 1 a NaN at the last step is skipped without a trace: the final
    weights, EMA copy and queue are those after the step before."""
    with pytest.raises(train.Interrupted):
        run("train_moco", tmp_path / "a", "--stop-after", "2:1")
    run("train_moco", tmp_path / "b", "--skip-nonfinite", "1", model=nan_at("train_moco", {4}))
    before = torch.load(tmp_path / "a" / "checkpoints" / f"{RUN.format(1)}.pt", weights_only=False)
    after = torch.load(tmp_path / "b" / "checkpoints" / f"{RUN.format(1)}.pt", weights_only=False)
    assert after["skipped"] == 1
    assert_same_state(before["model"], after["model"])


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    """Weights can turn NaN while the loss is still finite (here the EMA copy): the epoch's
    checkpoint is refused rather than written over the last good one."""
    base = script("train_moco").Model

    class Diverging(base):
        calls = 0

        def forward(self, views, labels):
            loss = super().forward(views, labels)
            Diverging.calls += 1
            if Diverging.calls == 2:  # the epoch's last step
                with torch.no_grad():
                    next(self.encoder_k.parameters()).fill_(float("inf"))
            return loss
    with pytest.raises(train.NonFiniteLoss, match=r"non-finite weights at epoch 1 \(loss still "
                                                  r"finite\); no checkpoint was written yet"):
        run("train_moco", tmp_path, "--epochs", "1", model=Diverging)
    assert not (tmp_path / "checkpoints" / f"{RUN.format(1)}.pt").exists()
