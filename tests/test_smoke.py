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


def test_tiny_imagenet_layout_end_to_end(tmp_path):
    """64-px data (max-pool kept) through a whole run, read from the real folder layout."""
    from fixtures import make_tin_fixture
    make_tin_fixture(tmp_path / "data", classes=4, per_class=4, val_per_class=2)
    summary = train_tiny("train_moco", tmp_path, "--dataset", "tin", "--data-dir",
                         str(tmp_path / "data"), "--subset", "16", "--batch-size", "8",
                         "--queue-size", "16")
    assert summary.startswith("tin_1_seed1339 (MoCoV2, tin, 1 epochs)")
    config = json.loads((tmp_path / "results" / "tin_1_seed1339_config.json").read_text())
    assert config["image_size"] == 64 and config["num_classes"] == 4 and config["momentum"] == 0.996
