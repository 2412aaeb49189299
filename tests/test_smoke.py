"""Each foundation script runs one tiny epoch end to end and writes its three outputs."""
import csv
import json

import pytest

from conftest import train_tiny
from common.log import LINEAR_COLUMNS, PRETRAIN_COLUMNS


@pytest.mark.parametrize("name,record", [("train_simclr", "demo_2"), ("train_moco", "demo_1")])
def test_one_epoch_writes_outputs(tmp_path, name, record):
    extra = ["--queue-size", "32"] if name == "train_moco" else []
    summary = train_tiny(name, tmp_path, *extra)
    run = f"{record}_seed1339"
    assert run in summary
    res = tmp_path / "results"
    with open(res / f"{run}_pretrain.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0].keys()) == PRETRAIN_COLUMNS
    assert [r["epoch"] for r in rows] == ["0", "1"]
    assert rows[0]["knn_top1"] and rows[1]["loss"] and rows[1]["purity"] == ""
    with open(res / f"{run}_linear.csv") as f:
        lin = list(csv.DictReader(f))
    assert list(lin[0].keys()) == LINEAR_COLUMNS and len(lin) == 1
    config = json.loads((res / f"{run}_config.json").read_text())
    assert config["finished"] and config["record"] == record
    assert (tmp_path / "checkpoints" / f"{run}.pt").exists()
