"""CSV logs and run configuration, written so that a crash never leaves a half-written row."""
import csv
import json
import os

PRETRAIN_COLUMNS = ["epoch", "loss", "purity", "knn_top1", "best_knn_top1", "lr", "epoch_seconds"]
LINEAR_COLUMNS = ["epoch", "top1", "top5", "best_top1"]


class CSVLog:
    """Append-only CSV with a fixed header; every row is flushed and fsynced as it is written.

    `keep_until=e` (on resume) first drops rows with epoch > e, so a resumed run has no duplicated
    or missing epochs.
    """

    def __init__(self, path, columns, keep_until=None):
        self.path, self.columns = path, columns
        rows = []
        if keep_until is not None and os.path.exists(path):
            with open(path, newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_until]
        tmp = path + ".tmp"
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(rows)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def write(self, **row):
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, self.columns).writerow({k: _fmt(row.get(k)) for k in self.columns})
            f.flush()
            os.fsync(f.fileno())


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return v


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True, default=str)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_json(path):
    with open(path) as f:
        return json.load(f)
