"""Checkpoints and logs are written atomically: a process killed mid-write, or a full disk, leaves
the previous file intact and no partial file behind; unreadable checkpoints are one clear error."""
import errno
import random
import textwrap

import numpy as np
import pytest
import torch

from conftest import ROOT, run_cli
from common import checkpoint, log
from common.errors import UserError


def test_killed_during_write_keeps_the_previous_checkpoint(tmp_path):
    # a child writes checkpoint 1, then is SIGKILLed half-way through writing checkpoint 2
    path = tmp_path / "run.pt"
    child = textwrap.dedent(f"""
        import os, signal, sys, torch
        sys.path.insert(0, {str(ROOT)!r})
        from common import checkpoint
        checkpoint.save({str(path)!r}, {{"epoch": 1, "w": torch.arange(1000.)}})
        def dying_save(obj, f):
            f.write(b"PK" + bytes(5000))  # the beginning of a zip archive, then nothing
            f.flush()
            os.kill(os.getpid(), signal.SIGKILL)
        torch.save = dying_save
        checkpoint.save({str(path)!r}, {{"epoch": 2, "w": torch.zeros(1000)}})
    """)
    proc = run_cli("-c", child)
    assert proc.returncode == -9, proc.stderr
    ckpt = checkpoint.load(path)
    assert ckpt["epoch"] == 1 and torch.equal(ckpt["w"], torch.arange(1000.))
    stale = [p for p in tmp_path.iterdir() if p != path]
    assert len(stale) == 1 and stale[0].name.startswith("run.pt.tmp")
    checkpoint.save(path, {"epoch": 3})  # the next save clears what the killed one left
    assert list(tmp_path.iterdir()) == [path] and checkpoint.load(path)["epoch"] == 3


def test_disk_full_keeps_the_previous_checkpoint_and_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    checkpoint.save(path, {"epoch": 1})

    def full_disk(obj, f):
        f.write(bytes(100))
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(UserError, match=r"cannot write checkpoint .*run\.pt: No space left on "
                                        r"device \(the previous checkpoint is kept\)"):
        checkpoint.save(path, {"epoch": 2})
    assert list(tmp_path.iterdir()) == [path]
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 1


@pytest.mark.parametrize("content", [b"", b"not a checkpoint\n", "truncated"])
def test_unreadable_checkpoint_is_one_clear_line(tmp_path, content):
    path = tmp_path / "bad.pt"
    if content == "truncated":
        checkpoint.save(path, {"w": torch.randn(1000)})
        content = path.read_bytes()[:2000]
    path.write_bytes(content)
    with pytest.raises(UserError, match=r"cannot read checkpoint .*bad\.pt") as e:
        checkpoint.load(path)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="does not exist"):
        checkpoint.load(tmp_path / "missing.pt")


def test_rng_state_restores_every_generator():
    state = checkpoint.rng_state()
    first = (random.random(), np.random.rand(), torch.rand(()).item())
    checkpoint.set_rng_state(state)
    assert (random.random(), np.random.rand(), torch.rand(()).item()) == first


def test_csv_row_that_fails_to_write_leaves_no_half_row(tmp_path, monkeypatch):
    path = tmp_path / "log.csv"
    out = log.CSVLog(str(path), log.PRETRAIN_COLUMNS)
    out.write(epoch=0, knn_top1=10.0)
    before = path.read_bytes()
    monkeypatch.setattr(log.os, "fsync", _enospc)
    with pytest.raises(UserError, match="cannot write .*log.csv: No space left on device"):
        out.write(epoch=1, loss=1.5)
    assert path.read_bytes() == before and len(out.rows) == 1


def test_json_that_fails_to_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "config.json"
    log.write_json(str(path), {"finished": True})
    monkeypatch.setattr(log.os, "fsync", _enospc)
    with pytest.raises(UserError, match="No space left on device"):
        log.write_json(str(path), {"finished": False})
    assert log.read_json(path) == {"finished": True} and list(tmp_path.iterdir()) == [path]


def test_resumed_csv_holds_exactly_the_checkpoint_rows(tmp_path):
    # the file went further than the checkpoint (rows 2, 3 written after it): they are dropped
    path = tmp_path / "log.csv"
    out = log.CSVLog(str(path), log.LINEAR_COLUMNS)
    rows = [out.write(epoch=e, top1=float(e)) for e in range(4)]
    again = log.CSVLog(str(path), log.LINEAR_COLUMNS, rows=rows[:2])
    assert path.read_text().splitlines() == ["epoch,top1,top5,best_top1", "0,0,,", "1,1,,"]
    assert again.rows == rows[:2]


def _enospc(fd):
    raise OSError(errno.ENOSPC, "No space left on device")
