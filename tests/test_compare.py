"""common.compare and common.plot on a hand-made results directory: several seeds, an unfinished
run, a record without runs, a demo record without published values, and broken files."""
import csv
import math
import sys

import pandas as pd
import pytest

from conftest import ROOT, run_cli
from common import compare, log, plot, recipes


def write_run(d, record, seed, knn, linear=None, epochs=None, finished=True,
              algorithm="MoCoV2", dataset="cifar10"):
    """A run as the train scripts leave it: kNN top-1 per epoch `knn` (epoch 0 first), linear
    top-1 per linear epoch, and the config; `epochs` is the planned number of epochs."""
    run = f"{record}_seed{seed}"
    epochs = epochs if epochs is not None else len(knn) - 1
    log.write_json(str(d / f"{run}_config.json"), {"record": record, "algorithm": algorithm,
                                             "dataset": dataset, "epochs": epochs, "seed": seed,
                                             "finished": finished})
    pre = log.CSVLog(str(d / f"{run}_pretrain.csv"), log.PRETRAIN_COLUMNS)
    best = 0.0
    for e, acc in enumerate(knn):
        best = max(best, acc) if e else best
        pre.write(epoch=e, loss=None if e == 0 else 5.0 - e, knn_top1=float(acc),
                  best_knn_top1=best if e else None, lr=0.1, epoch_seconds=1.0)
    if linear:
        lin = log.CSVLog(str(d / f"{run}_linear.csv"), log.LINEAR_COLUMNS)
        for e, acc in enumerate(linear, 1):
            lin.write(epoch=e, top1=float(acc), top5=99.0, best_top1=None)


@pytest.fixture
def results(tmp_path):
    d = tmp_path / "results"
    d.mkdir()
    # three finished seeds; the best epoch is not always the last (best kNN = 80, 82, 84)
    write_run(d, "cifar10_1", 1, [10, 50, 80, 79, 78], [84, 85, 83])
    write_run(d, "cifar10_1", 2, [10, 60, 70, 82, 81], [86, 85])
    write_run(d, "cifar10_1", 3, [10, 84, 70, 83, 84], [87])
    # one finished seed and one that stopped after 2 of its 4 epochs (must not be averaged in)
    write_run(d, "cifar10_2", 1, [10, 50, 70, 80, 86.3], [88.72], algorithm="SimCLR")
    write_run(d, "cifar10_2", 2, [10, 99, 99], [99], epochs=4, finished=False, algorithm="SimCLR")
    write_run(d, "demo_1", 1339, [10, 20], [30], dataset="demo")
    (d / "notes.txt").write_text("not a run\n")
    return d


def test_means_stds_and_differences(results):
    table = compare.summarize(compare.load_runs(results), compare.load_published(),
                              ["cifar10_1", "cifar10_2", "tin_5a", "demo_1"]).set_index("record")
    r = table.loc["cifar10_1"]
    assert (r["seeds"], r["seed_list"], r["epochs"]) == (3, "1 2 3", 4)
    assert r["knn_mean"] == pytest.approx(82) and r["knn_std"] == pytest.approx(2)
    assert r["linear_mean"] == pytest.approx(86) and r["linear_std"] == pytest.approx(1)
    assert r["knn_diff"] == pytest.approx(82 - 88.05) and r["linear_diff"] == pytest.approx(86 - 89.7)
    r = table.loc["cifar10_2"]  # only seed 1 counts; seed 2 is named, not averaged
    assert r["seeds"] == 1 and r["knn_mean"] == pytest.approx(86.3) and math.isnan(r["knn_std"])
    assert r["knn_diff"] == pytest.approx(1.0) and r["linear_diff"] == pytest.approx(1.0)
    assert r["unfinished"] == "seed 2: 2/4 epochs"
    r = table.loc["tin_5a"]  # asked for, never run
    assert r["seeds"] == 0 and r["unfinished"] == "no runs" and math.isnan(r["knn_mean"])
    assert (r["algorithm"], r["published_knn200"]) == ("NNCLR", 34.44)
    r = table.loc["demo_1"]
    assert r["knn_mean"] == 20 and math.isnan(r["published_knn200"]) and math.isnan(r["knn_diff"])


def test_printed_table_and_csv(results, tmp_path, capsys):
    out = tmp_path / "table.csv"
    assert compare.main(["--results-dir", str(results), "--csv", str(out)]) == 0
    text = capsys.readouterr().out
    lines = {line.split()[0]: line for line in text.splitlines()}
    assert "82.00 ± 2.00" in lines["cifar10_1"] and "-6.05" in lines["cifar10_1"]
    assert "86.00 ± 1.00" in lines["cifar10_1"] and "-3.70" in lines["cifar10_1"]
    assert "86.30" in lines["cifar10_2"] and "seed 2: 2/4 epochs" in lines["cifar10_2"]
    assert "tin_5a" not in lines  # without --records: only records that have runs
    with open(out) as f:
        rows = {r["record"]: r for r in csv.DictReader(f)}
    assert list(rows) == ["cifar10_1", "cifar10_2", "demo_1"]  # published order, then others
    assert float(rows["cifar10_1"]["knn_diff"]) == pytest.approx(-6.05)


def test_fail_below(results, capsys):
    args = ["--results-dir", str(results), "--records", "cifar10_1", "--fail-below"]
    assert compare.main(args + ["7"]) == 0  # 6.05 and 3.70 points under: within 7
    assert compare.main(args + ["5"]) == 1  # the kNN mean is 6.05 under
    err = capsys.readouterr().err
    assert "FAIL cifar10_1: 200-NN top-1 82.00 is 6.05 points under the published 88.05" in err
    assert "linear" not in err
    # a record with published values but no finished run cannot pass; demo records are not checked
    assert compare.main(["--results-dir", str(results), "--records", "tin_5a", "--fail-below", "100"]) == 1
    assert "tin_5a: no finished run" in capsys.readouterr().err
    assert compare.main(["--results-dir", str(results), "--records", "demo_1", "--fail-below", "0"]) == 0


def test_command_line_exit_status(results):
    r = run_cli("-m", "common.compare", "--results-dir", results, "--fail-below", "0")
    assert r.returncode == 1 and "FAIL cifar10_1" in r.stderr and "cifar10_2" not in r.stderr
    assert "82.00 ± 2.00" in r.stdout


def break_knn_value(d):
    p = d / "cifar10_1_seed2_pretrain.csv"
    p.write_text(p.read_text().replace("82", "eighty-two"))


def break_columns(d):
    (d / "cifar10_1_seed2_pretrain.csv").write_text("epoch,loss\n0,1.0\n")


def break_empty(d):
    (d / "cifar10_1_seed2_linear.csv").write_text("")


def break_config(d):
    (d / "cifar10_1_seed2_config.json").write_text("{not json")


def lose_config(d):
    (d / "cifar10_1_seed2_config.json").unlink()


@pytest.mark.parametrize("breakage,message", [
    (break_knn_value, "cifar10_1_seed2_pretrain.csv is malformed: column 'knn_top1' has a non-numeric value"),
    (break_columns, "cifar10_1_seed2_pretrain.csv is malformed: no column 'knn_top1'"),
    (break_empty, "cifar10_1_seed2_linear.csv is malformed"),
    (break_config, "cifar10_1_seed2_config.json is malformed"),
    (lose_config, "has no cifar10_1_seed2_config.json beside it"),
])
def test_malformed_files(results, capsys, breakage, message):
    breakage(results)
    assert compare.main(["--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


@pytest.mark.parametrize("args,message", [
    (["--records", "cifar10_1", "cifar10_99"], "unknown record cifar10_99"),
    (["--results-dir", "EMPTY"], "no runs in"),
    (["--results-dir", "MISSING"], "does not exist"),
])
def test_bad_input(results, tmp_path, capsys, args, message):
    (tmp_path / "EMPTY").mkdir()
    (tmp_path / "EMPTY" / "other_linear.csv").write_text("epoch,top1,top5,best_top1\n")
    args = [str(tmp_path / a) if a in ("EMPTY", "MISSING") else a for a in args]
    argv = args if "--results-dir" in args else ["--results-dir", str(results)] + args
    assert compare.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and err.count("\n") == 1


def test_published_table_matches_the_recipes():
    published = pd.read_csv(ROOT / "results" / "published.csv").set_index("record")
    rows = recipes.records()
    assert list(published.index) == list(rows)
    for record, row in rows.items():
        assert published.loc[record, "published_knn200"] == row["published_knn200"]
        assert published.loc[record, "published_linear"] == row["published_linear"]
        assert published.loc[record, "algorithm"] == row["algorithm"]


def test_plot_without_matplotlib(results, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import now raises ImportError
    assert plot.main(["--results-dir", str(results)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: plotting needs matplotlib") and err.count("\n") == 1
    assert not (results / "plots").exists()


def test_plot_writes_pngs(results, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots"
    assert plot.main(["--results-dir", str(results), "--records", "cifar10_1", "cifar10_2",
                      "tin_5a", "--out", str(out)]) == 0
    for name in ("knn_curves.png", "vs_published.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
