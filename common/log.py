"""CSV logs and run configuration, written so that a crash never leaves a half-written row or file.

A write that fails (disk full, quota, read-only file system) undoes itself and raises a UserError
naming the file: the CSV is cut back to its last complete row, a JSON file keeps its old content.
"""
import csv
import io
import json
import os
import sys

from common.errors import UserError

PRETRAIN_COLUMNS = ["epoch", "loss", "purity", "knn_top1", "best_knn_top1", "lr", "epoch_seconds"]
LINEAR_COLUMNS = ["epoch", "top1", "top5", "best_top1"]


class CSVLog:
    """Append-only CSV with a fixed header; every row is flushed and fsynced as it is written.

    The file is (re)started with the header and `rows` (formatted rows, as `write` returns them):
    a resumed run passes the rows its checkpoint recorded, so the CSV has exactly the epochs the
    checkpoint has seen, whatever the file held. `keep_until=e` instead keeps the file's own rows
    with epoch <= e. The attribute `rows` is every row the file holds (what a checkpoint saves).
    """

    def __init__(self, path, columns, keep_until=None, rows=None):
        self.path, self.columns = path, columns
        if rows is None:
            rows = []
            if keep_until is not None and os.path.exists(path):
                with open(path, newline="") as f:
                    rows = [r for r in csv.DictReader(f) if int(r["epoch"]) <= keep_until]
        text = io.StringIO()
        w = csv.DictWriter(text, columns)
        w.writeheader()
        self.rows = [{k: r.get(k, "") for k in columns} for r in rows]
        w.writerows(self.rows)
        _atomic_write(path, text.getvalue(), newline="")

    def write(self, **row):
        """Append one row (missing columns empty, floats to 6 significant digits); returns the
        row as written."""
        row = {k: _fmt(row.get(k)) for k in self.columns}
        text = io.StringIO()
        csv.DictWriter(text, self.columns).writerow(row)
        data = text.getvalue().encode()
        try:
            # unbuffered: a failed write must not leave bytes in a buffer flushed later
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
            try:
                size = os.fstat(fd).st_size
                try:
                    view = memoryview(data)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                except OSError:
                    os.ftruncate(fd, size)  # no half row, even if the disk filled mid-line
                    raise
            finally:
                os.close(fd)
        except OSError as e:
            raise UserError(f"cannot write {self.path}: {e.strerror or e}") from None
        self.rows.append(row)
        return row


def _fmt(v):
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.6g}"
    return str(v)  # rows kept in checkpoints are then exactly what the file holds


def _atomic_write(path, text, newline=None):
    tmp = path + ".tmp"
    try:
        with open(tmp, "w", newline=newline) as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.remove(tmp)
        except OSError:
            pass
        raise UserError(f"cannot write {path}: {e.strerror or e}") from None


def write_json(path, obj):
    _atomic_write(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def read_json(path):
    with open(path) as f:
        return json.load(f)


def say(msg):
    """A progress message on stderr, from rank 0 only under torchrun."""
    from common import dist
    if dist.is_main():
        print(msg, file=sys.stderr, flush=True)
