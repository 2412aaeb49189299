"""Our runs against the published table, one row per record:

    python -m common.compare [--results-dir results] [--records cifar10_1 ...] [--csv OUT]
                             [--fail-below X]

Reads every run in --results-dir (<record>_seed<seed>_config.json, _pretrain.csv and, once
evaluated, _linear.csv, as the train scripts write them), groups the runs by record (and by the
number of epochs, so that a short trial never averages with full runs) and prints: the record,
algorithm, data set, number of seeds, epochs, our best 200-NN top-1 and linear top-1 as
mean ± std over seeds (sample standard deviation; none for one seed), the published values
(results/published.csv) and our mean minus the published one.

Only finished runs enter the means. A run that stopped early (or is still going) is named in the
`unfinished` column with the epochs it logged. Records without a published value (demo_*, custom
--record names) show '-' there.

--fail-below X exits with status 1 when a record's mean (kNN or linear) is more than X points
under the published value, or when a record with published values has no finished run; records
without published values are not checked. Bad input (unknown record, no runs, malformed files)
exits with status 2.
"""
import argparse
import json
import math
import os
import re
import sys

import pandas as pd

from common.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PUBLISHED = os.path.join(ROOT, "results", "published.csv")
RUN_FILE = re.compile(r"^(?P<run>(?P<record>.+)_seed(?P<seed>-?\d+))_"
                      r"(?P<kind>pretrain\.csv|linear\.csv|config\.json)$")
CSV_COLUMNS = ["record", "algorithm", "dataset", "seeds", "seed_list", "epochs",
               "knn_mean", "knn_std", "published_knn200", "knn_diff",
               "linear_mean", "linear_std", "published_linear", "linear_diff", "unfinished"]


def load_published(path=PUBLISHED):
    """The published table, indexed by record."""
    df = _read_csv(path, ["record", "algorithm", "dataset", "published_knn200", "published_linear"],
                   numeric=["published_knn200", "published_linear"])
    return df.set_index("record")


def read_pretrain(path):
    """A run's pre-training log as a DataFrame (numeric columns), validated."""
    df = _read_csv(path, ["epoch", "knn_top1"], numeric=["epoch", "knn_top1"])
    if df["epoch"].isna().any() or (df["epoch"] % 1 != 0).any():
        raise UserError(f"{path} is malformed: column 'epoch' has a missing or non-integer value")
    return df


def load_runs(results_dir):
    """One row per run found in `results_dir`: run, record, seed, algorithm, dataset, epochs
    (planned), epochs_done (logged), finished, best_knn (best kNN top-1 over epochs >= 1),
    linear_top1 (best linear top-1), pretrain_csv."""
    if not os.path.isdir(results_dir):
        raise UserError(f"results directory {results_dir} does not exist")
    found = {}
    for name in sorted(os.listdir(results_dir)):
        m = RUN_FILE.match(name)
        if m:
            found.setdefault(m["run"], {"record": m["record"], "seed": int(m["seed"])})[m["kind"]] = \
                os.path.join(results_dir, name)
    # a lone *_linear.csv comes from `python -m common.linear` on some checkpoint: not a run
    runs = [_read_run(run, files) for run, files in found.items()
            if "pretrain.csv" in files or "config.json" in files]
    if not runs:
        raise UserError(f"no runs in {results_dir} (expected <record>_seed<seed>_config.json and "
                        f"_pretrain.csv files written by the train scripts)")
    return pd.DataFrame(runs)


def _read_run(run, files):
    for kind in ("config.json", "pretrain.csv"):
        if kind not in files:
            other = next(iter(v for k, v in files.items() if k in ("config.json", "pretrain.csv")))
            raise UserError(f"{other} has no {run}_{kind} beside it")
    path = files["config.json"]
    try:
        with open(path) as f:
            config = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is malformed: {e}") from None
    if not isinstance(config, dict) or not isinstance(config.get("epochs"), int):
        raise UserError(f"{path} is malformed: no integer 'epochs' setting")
    pre = read_pretrain(files["pretrain.csv"])
    trained = pre.loc[pre["epoch"] >= 1, "knn_top1"].dropna()
    linear = math.nan
    if "linear.csv" in files:
        lin = _read_csv(files["linear.csv"], ["epoch", "top1"], numeric=["top1"])
        linear = lin["top1"].max() if len(lin) else math.nan
    elif config.get("linear_top1") is not None:
        linear = float(config["linear_top1"])
    epochs_done = int(pre["epoch"].max()) if len(pre) else 0
    return {"run": run, "record": files["record"], "seed": files["seed"],
            "algorithm": config.get("algorithm", "?"), "dataset": config.get("dataset", "?"),
            "epochs": config["epochs"], "epochs_done": epochs_done,
            "finished": bool(config.get("finished")) and epochs_done >= config["epochs"],
            "best_knn": trained.max() if len(trained) else math.nan, "linear_top1": linear,
            "pretrain_csv": files["pretrain.csv"]}


def _read_csv(path, columns, numeric=()):
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise UserError(f"{path} does not exist") from None
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is malformed: {str(e).splitlines()[0]}") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise UserError(f"{path} is malformed: no column {', '.join(map(repr, missing))}")
    for c in numeric:
        try:
            df[c] = pd.to_numeric(df[c])
        except (ValueError, TypeError):
            raise UserError(f"{path} is malformed: column '{c}' has a non-numeric value") from None
    return df


def select(runs, published, records=None):
    """Order the records (published table order, then the others by name) and check `records`."""
    known = list(published.index) + sorted(set(runs["record"]) - set(published.index))
    if not records:
        return [r for r in known if r in set(runs["record"])]
    unknown = [r for r in records if r not in known]
    if unknown:
        raise UserError(f"unknown record {', '.join(unknown)}: neither in the published table nor "
                        f"a run in the results directory (records look like cifar10_1, tin_5a)")
    return list(dict.fromkeys(records))


def summarize(runs, published, records=None):
    """The comparison table: one row per (record, planned epochs); columns CSV_COLUMNS."""
    rows = []
    for record in select(runs, published, records):
        pub = published.loc[record] if record in published.index else None
        mine = runs[runs["record"] == record]
        groups = list(mine.groupby("epochs", sort=True)) if len(mine) else [(None, mine)]
        for epochs, g in groups:
            done = g[g["finished"]].sort_values("seed")
            rest = g[~g["finished"]].sort_values("seed")
            row = {"record": record,
                   "algorithm": g["algorithm"].iloc[0] if len(g) else pub["algorithm"],
                   "dataset": g["dataset"].iloc[0] if len(g) else pub["dataset"],
                   "seeds": len(done), "seed_list": " ".join(map(str, done["seed"])),
                   "epochs": epochs,
                   "published_knn200": pub["published_knn200"] if pub is not None else math.nan,
                   "published_linear": pub["published_linear"] if pub is not None else math.nan,
                   "unfinished": "; ".join(f"seed {s}: {d}/{e} epochs" for s, d, e in
                                           zip(rest["seed"], rest["epochs_done"], rest["epochs"]))
                   or ("no runs" if not len(g) else "")}
            for key, col, pub_col in (("knn", "best_knn", "published_knn200"),
                                      ("linear", "linear_top1", "published_linear")):
                values = done[col].dropna()
                row[f"{key}_mean"] = values.mean() if len(values) else math.nan
                row[f"{key}_std"] = values.std(ddof=1) if len(values) > 1 else math.nan
                row[f"{key}_diff"] = row[f"{key}_mean"] - row[pub_col]
            rows.append(row)
    return pd.DataFrame(rows, columns=CSV_COLUMNS)


def failures(table, below):
    """Lines naming each record whose mean is more than `below` points under the published value
    (or that has published values but no finished run)."""
    out = []
    for _, r in table.iterrows():
        if pd.isna(r["published_knn200"]) and pd.isna(r["published_linear"]):
            continue
        if r["seeds"] == 0:
            out.append(f"{r['record']}: no finished run to compare")
            continue
        for key, name, pub in (("knn", "200-NN", "published_knn200"),
                               ("linear", "linear", "published_linear")):
            if r[f"{key}_diff"] < -below:
                out.append(f"{r['record']}: {name} top-1 {r[f'{key}_mean']:.2f} is "
                           f"{-r[f'{key}_diff']:.2f} points under the published {r[pub]:.2f}")
    return out


def format_table(table):
    def num(x, fmt="{:.2f}"):
        return "-" if pd.isna(x) else fmt.format(x)

    def mean_std(m, s):
        return num(m) + ("" if pd.isna(s) else f" ± {s:.2f}")

    shown = pd.DataFrame({
        "record": table["record"], "algorithm": table["algorithm"], "dataset": table["dataset"],
        "seeds": table["seeds"], "epochs": [num(e, "{:.0f}") for e in table["epochs"]],
        "kNN top-1": [mean_std(m, s) for m, s in zip(table["knn_mean"], table["knn_std"])],
        "published": [num(x) for x in table["published_knn200"]],
        "diff": [num(x, "{:+.2f}") for x in table["knn_diff"]],
        "linear top-1": [mean_std(m, s) for m, s in zip(table["linear_mean"], table["linear_std"])],
        "published ": [num(x) for x in table["published_linear"]],
        "diff ": [num(x, "{:+.2f}") for x in table["linear_diff"]],
        "unfinished": table["unfinished"]})
    left = ("record", "algorithm", "dataset", "unfinished")
    cols = [[name.strip()] + list(map(str, shown.iloc[:, i])) for i, name in enumerate(shown.columns)]
    widths = [max(map(len, c)) for c in cols]
    lines = ["  ".join(c[j].ljust(w) if name in left else c[j].rjust(w)
                       for c, w, name in zip(cols, widths, shown.columns))
             for j in range(len(shown) + 1)]
    return "\n".join(line.rstrip() for line in lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m common.compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--records", nargs="+", metavar="RECORD", help="default: every record with runs")
    p.add_argument("--published", default=PUBLISHED, help="the published table (CSV)")
    p.add_argument("--csv", metavar="OUT", help="also write the table to this CSV file")
    p.add_argument("--fail-below", type=float, metavar="X",
                   help="exit 1 when a record's mean is more than X points under the published value")
    args = p.parse_args(argv)
    try:
        table = summarize(load_runs(args.results_dir), load_published(args.published), args.records)
        if args.csv:
            try:
                table.round(4).to_csv(args.csv, index=False)
            except OSError as e:
                raise UserError(f"cannot write {args.csv}: {e.strerror}") from None
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(table))
    if args.fail_below is not None:
        bad = failures(table, args.fail_below)
        for line in bad:
            print(f"FAIL {line}", file=sys.stderr)
        if bad:
            return 1
        checked = table[table[["published_knn200", "published_linear"]].notna().any(axis=1)]
        print(f"{len(checked)} row(s) checked: none more than {args.fail_below:g} points under "
              f"the published values")
    return 0


if __name__ == "__main__":
    sys.exit(main())
