"""The experiment records of the reference protocol (common/recipes.csv, a copy of the spec).

Each train script takes its per-dataset defaults from its record: `--dataset cifar10` in
train_moco.py is record cifar10_1. The demo data set borrows the CIFAR-10 record under the name
demo_<n> so that demo runs never mix with real CIFAR-10 results.
"""
import csv
import os

from common.errors import UserError

PATH = os.path.join(os.path.dirname(__file__), "recipes.csv")
HYPER = ("symmetric", "temperature", "momentum", "queue_size", "topk", "weak_second_view",
         "views", "proj_dim")


def _parse(value):
    if value == "":
        return None
    if value in ("true", "false"):
        return value == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def records():
    """{record name: row dict with typed values}, in file order."""
    with open(PATH, newline="") as f:
        return {r["record"]: {k: _parse(v) for k, v in r.items()} for r in csv.DictReader(f)}


def find(script, dataset, given=None):
    """The record of `script` for `dataset`; among several (NNCLR topk 1 / 5), the first whose
    hyperparameters agree with the most of the explicitly `given` ones."""
    rows = [r for r in records().values()
            if r["script"] == script and r["dataset"] == ("cifar10" if dataset == "demo" else dataset)]
    if not rows:
        raise UserError(f"no record for {script} on dataset '{dataset}'")
    given = {k: v for k, v in (given or {}).items() if v is not None}
    # most, not all: --topk 5 --queue-size 32 is still record 5a
    row = max(rows, key=lambda r: sum(r.get(k) in (None, v) for k, v in given.items()))
    row = dict(row)
    if dataset == "demo":
        row["record"] = "demo_" + row["record"].split("_", 1)[1]
        row["published_knn200"] = row["published_linear"] = None
    return row
