"""Plots of the runs in a results directory, as PNG files:

    python -m common.plot [--results-dir results] [--records cifar10_1 ...] [--out DIR]

  knn_curves.png    kNN top-1 per epoch of every chosen run (one panel per data set, one colour
                    per record, the published 200-NN as a dashed line of the same colour)
  vs_published.png  our mean ± std over finished seeds next to the published value, per record,
                    for 200-NN and linear top-1 (the numbers of `python -m common.compare`)

matplotlib is optional (pip install -r requirements-plot.txt); nothing else needs it.
"""
import argparse
import os
import sys

import pandas as pd

from common import compare
from common.errors import UserError


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise UserError("plotting needs matplotlib, which is not installed; it is optional: "
                        "pip install -r requirements-plot.txt (or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


def knn_curves(runs, published, path):
    plt = _pyplot()
    datasets = list(dict.fromkeys(runs["dataset"]))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6 * len(datasets), 4.5), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    records = list(dict.fromkeys(runs["record"]))
    for ax, dataset in zip(axes[0], datasets):
        for _, run in runs[runs["dataset"] == dataset].iterrows():
            colour = colours[records.index(run["record"]) % len(colours)]
            curve = compare.read_pretrain(run["pretrain_csv"]).dropna(subset=["knn_top1"])
            label = run["run"] + ("" if run["finished"] else " (unfinished)")
            ax.plot(curve["epoch"], curve["knn_top1"], color=colour, label=label,
                    linestyle="-" if run["finished"] else ":")
        for record in dict.fromkeys(runs.loc[runs["dataset"] == dataset, "record"]):
            value = published["published_knn200"].get(record)
            if value is not None and pd.notna(value):
                ax.axhline(value, linestyle="--", linewidth=1,
                           color=colours[records.index(record) % len(colours)])
        ax.set(title=dataset, xlabel="epoch", ylabel="kNN top-1 (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def vs_published(table, path):
    plt = _pyplot()
    x = range(len(table))
    fig, axes = plt.subplots(1, 2, figsize=(max(6, 1.2 * len(table) + 2) * 2, 4.5), squeeze=False)
    for ax, key, pub, name in ((axes[0][0], "knn", "published_knn200", "200-NN top-1 (%)"),
                               (axes[0][1], "linear", "published_linear", "linear top-1 (%)")):
        ax.bar([i - 0.2 for i in x], table[f"{key}_mean"], 0.4, yerr=table[f"{key}_std"].fillna(0),
               capsize=3, label="ours (mean ± std)")
        ax.bar([i + 0.2 for i in x], table[pub], 0.4, label="published")
        ax.set_xticks(list(x))
        ax.set_xticklabels([f"{r}\n({s} seeds)" for r, s in zip(table["record"], table["seeds"])],
                           fontsize=8)
        ax.set(ylabel=name)
        ax.grid(axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m common.plot", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--records", nargs="+", metavar="RECORD", help="default: every record with runs")
    p.add_argument("--published", default=compare.PUBLISHED, help="the published table (CSV)")
    p.add_argument("--out", help="output directory (default: <results-dir>/plots)")
    args = p.parse_args(argv)
    out = args.out or os.path.join(args.results_dir, "plots")
    try:
        _pyplot()  # before any work: a missing extra is the likeliest problem
        runs = compare.load_runs(args.results_dir)
        published = compare.load_published(args.published)
        table = compare.summarize(runs, published, args.records)
        runs = runs[runs["record"].isin(table["record"])]
        try:
            os.makedirs(out, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create {out}: {e.strerror}") from None
        paths = [os.path.join(out, "knn_curves.png"), os.path.join(out, "vs_published.png")]
        if len(runs):
            knn_curves(runs, published, paths[0])
        else:
            paths.pop(0)
        vs_published(table, paths[-1])
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
