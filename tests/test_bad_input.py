"""Every bad input gets one clear line and a non-zero exit (2), and leaves existing results alone.

A few cases run the script as a user would (subprocess: exit status and stderr); the rest call
train.run in-process and check the UserError, which train.main prints as `error: <message>`.
Data sets are tiny fixtures in the real layouts; nothing here touches the network.
"""
import errno
import os
import shutil
import urllib.error

import pytest
import torch

from conftest import run_cli, script
from fixtures import make_cifar_fixture, make_tin_fixture
from common import checkpoint, log, train
from common.errors import UserError

RUNS = ("tin_1_seed1339", "cifar10_1_seed1339")


@pytest.fixture(autouse=True)
def one_thread():
    # on a busy 2-core machine one thread per process is several times faster than two
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tin_master(tmp_path_factory):
    root = tmp_path_factory.mktemp("tin")
    make_tin_fixture(root, classes=3, per_class=4, val_per_class=2)
    return root


@pytest.fixture
def tin(tmp_path, tin_master):
    """A private copy of the Tiny-ImageNet fixture (12 train, 6 val images), free to damage."""
    shutil.copytree(tin_master, tmp_path / "data")
    return tmp_path / "data" / "tiny-imagenet-200"


@pytest.fixture
def results(tmp_path):
    """A results folder already holding another run's CSVs under the names a run would use:
    whatever fails must leave them byte for byte."""
    out = tmp_path / "results"
    out.mkdir()
    files = {}
    for run in RUNS:
        for kind in ("pretrain.csv", "linear.csv"):
            path = out / f"{run}_{kind}"
            path.write_text(f"epoch,top1\n1,{len(files)}\n")
            files[path] = path.read_text()
    yield out
    assert {p: p.read_text() for p in files} == files
    assert not [p for p in out.iterdir() if p not in files and not p.name.endswith("config.json")]


def argv(tmp_path, *extra, dataset="tin"):
    return ["--dataset", dataset, "--data-dir", str(tmp_path / "data"), "--epochs", "1",
            "--batch-size", "4", "--bn-splits", "2", "--width", "8", "--hidden-dim", "32",
            "--queue-size", "8", "--knn-every", "0", "--linear-epochs", "0", "--workers", "0",
            "--no-progress", "--no-amp", "--no-download", "--results-dir", str(tmp_path / "results"),
            "--checkpoint-dir", str(tmp_path / "ckpt"), *map(str, extra)]


def run_moco(tmp_path, *extra, dataset="tin", script_name="train_moco"):
    mod = script(script_name)
    return train.run(mod.Model, mod.add_args, mod.__doc__, mod.__file__,
                     argv(tmp_path, *extra, dataset=dataset))


def cli_error(proc):
    """The one stderr line of a script that refused its input."""
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


# ----------------------------------------------------------------------------- flags
def test_unknown_dataset_cli(tmp_path, results):
    line = cli_error(run_cli("train_moco.py", *argv(tmp_path, dataset="imagenet")))
    assert "unknown dataset 'imagenet' (choose from cifar10, cifar100, tin, demo)" in line


@pytest.mark.parametrize("extra,message", [
    (["--epochs", "0"], "--epochs must be a positive integer, got 0"),
    (["--temperature", "0"], "--temperature must be a positive number, got 0.0"),
    (["--temperature", "-0.2"], "--temperature must be a positive number, got -0.2"),
    (["--queue-size", "2"], "--queue-size 2 is smaller than one batch (4)"),
    (["--skip-nonfinite", "-1"], "--skip-nonfinite must be >= 0"),
])
def test_bad_flag_values(tmp_path, results, extra, message):
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")):
        run_moco(tmp_path, *extra)


def test_more_neighbours_than_queue_entries_cli(tmp_path, results):
    # refused before any data is read: retrieval would fail only at the first training step
    line = cli_error(run_cli("train_nnclr.py", *argv(tmp_path, "--topk", "9")))
    assert line == "error: --topk 9 exceeds --queue-size 8"
    assert not (tmp_path / "ckpt").exists() or not any((tmp_path / "ckpt").iterdir())


def test_unknown_record(tmp_path, results):
    mod = script("train_moco")
    with pytest.raises(UserError, match="no record for train_nosuch.py on dataset 'tin'"):
        train.run(mod.Model, mod.add_args, mod.__doc__, "train_nosuch.py", argv(tmp_path))


# ----------------------------------------------------------------------------- data sets
def test_missing_cifar_offline_cli(tmp_path, results):
    line = cli_error(run_cli("train_moco.py", *argv(tmp_path, dataset="cifar10")))
    assert line == (f"error: cifar10 not found at {tmp_path / 'data' / 'cifar-10-batches-py'}: "
                    f"download https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz and "
                    f"extract it into {tmp_path / 'data'}")


def test_failed_cifar_download_says_what_to_fetch(tmp_path, results, monkeypatch):
    import torchvision.datasets.cifar as cifar

    def offline(*a, **k):
        raise urllib.error.URLError("network is unreachable")
    monkeypatch.setattr(cifar, "download_and_extract_archive", offline)
    args = [a for a in argv(tmp_path, dataset="cifar10") if a != "--no-download"]
    mod = script("train_moco")
    with pytest.raises(UserError, match=r"could not download cifar10 .*network is unreachable.*; "
                                        r"download https://www.cs.toronto.edu/~kriz/cifar-10-"
                                        r"python.tar.gz by hand"):
        train.run(mod.Model, mod.add_args, mod.__doc__, mod.__file__, args)


def test_partial_cifar_lists_missing_files(tmp_path, results):
    make_cifar_fixture(tmp_path / "data", "cifar10")
    for name in ("data_batch_2", "test_batch"):
        os.remove(tmp_path / "data" / "cifar-10-batches-py" / name)
    with pytest.raises(UserError, match="incomplete: missing data_batch_2, test_batch"):
        run_moco(tmp_path, dataset="cifar10")


def test_missing_tiny_imagenet(tmp_path, results):
    with pytest.raises(UserError, match=r"Tiny-ImageNet not found at .*tiny-imagenet-200: download "
                                        r"http://cs231n.stanford.edu/tiny-imagenet-200.zip"):
        run_moco(tmp_path)


def test_tiny_imagenet_without_annotations(tmp_path, tin, results):
    os.remove(tin / "val" / "val_annotations.txt")
    with pytest.raises(UserError, match="incomplete: missing val/val_annotations.txt"):
        run_moco(tmp_path)


def test_tiny_imagenet_val_reorganised_into_class_folders(tmp_path, tin, results):
    # what many ImageFolder recipes do: val/<wnid>/images/*.JPEG, no val/images
    for line in (tin / "val" / "val_annotations.txt").read_text().splitlines():
        name, wnid = line.split("\t")[:2]
        (tin / "val" / wnid / "images").mkdir(parents=True, exist_ok=True)
        shutil.move(tin / "val" / "images" / name, tin / "val" / wnid / "images" / name)
    (tin / "val" / "images").rmdir()
    with pytest.raises(UserError, match="val has been reorganised into class folders; this loader "
                                        "reads the original layout"):
        run_moco(tmp_path)


def test_tiny_imagenet_class_without_images(tmp_path, tin, results):
    wnid = sorted((tin / "wnids.txt").read_text().split())[1]
    shutil.rmtree(tin / "train" / wnid)
    with pytest.raises(UserError, match=rf"no images in 1 of 3 class folders \(train/{wnid}/images\)"):
        run_moco(tmp_path)


@pytest.mark.parametrize("damage", ["corrupt", "truncated"])
def test_broken_tiny_imagenet_image_is_named(tmp_path, tin, results, damage):
    image = sorted((tin / "train").glob("*/images/*.JPEG"))[5]
    data = image.read_bytes()
    image.write_bytes(b"\x00garbage" * 50 if damage == "corrupt" else data[:len(data) // 2])
    with pytest.raises(UserError, match=rf"cannot read image {image} \(corrupt or truncated\?\)"):
        run_moco(tmp_path)


def test_batch_larger_than_the_data_set(tmp_path, tin, results):
    with pytest.raises(UserError, match=r"--batch-size 16 is larger than the training set "
                                        r"\(12 images\)"):
        run_moco(tmp_path, "--batch-size", "16", "--queue-size", "16")


# ----------------------------------------------------------------------------- checkpoints
def fake_checkpoint(path, algorithm="MoCoV2", **args):
    saved = {"algorithm": algorithm, "dataset": "tin", "batch_size": 4, "queue_size": 8,
             "epochs": 1, **args}
    checkpoint.save(path, {"format": "mini-ssl/1", "algorithm": algorithm, "args": saved})
    return path


def test_checkpoint_of_another_algorithm_cli(tmp_path, tin, results):
    ckpt = fake_checkpoint(tmp_path / "simclr.pt", "SimCLR")
    line = cli_error(run_cli("train_moco.py", *argv(tmp_path, "--resume", ckpt)))
    assert line == (f"error: cannot resume from {ckpt}: it is a SimCLR checkpoint and "
                    f"train_moco.py trains MoCoV2 (choose a matching checkpoint)")


def test_resume_with_incompatible_flags_names_them(tmp_path, tin, results):
    ckpt = fake_checkpoint(tmp_path / "other.pt", batch_size=8, queue_size=64)
    with pytest.raises(UserError, match=r"settings differ: batch_size 8 there, 4 here; queue_size "
                                        r"64 there, 8 here"):
        run_moco(tmp_path, "--resume", ckpt)


def test_unreadable_checkpoint(tmp_path, tin, results):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04 this is not a checkpoint")
    with pytest.raises(UserError, match=f"cannot read checkpoint {bad}"):
        run_moco(tmp_path, "--resume", bad)
    with pytest.raises(UserError, match=f"checkpoint {tmp_path / 'none.pt'} does not exist"):
        run_moco(tmp_path, "--resume", tmp_path / "none.pt")


# ----------------------------------------------------------------------------- results
def test_unwritable_results_directory(tmp_path, tin):
    (tmp_path / "file").write_text("a file where a folder should be")
    with pytest.raises(UserError, match=r"cannot write to directory .*file/results: Not a directory"):
        run_moco(tmp_path, "--results-dir", tmp_path / "file" / "results")


def test_finished_run_is_not_overwritten(tmp_path, tin, results):
    config = results / "tin_1_seed1339_config.json"
    log.write_json(str(config), {"finished": True, "dataset": "tin"})
    with pytest.raises(UserError, match="run tin_1_seed1339 has finished results in .*; pass "
                                        "--overwrite to run it again"):
        run_moco(tmp_path)
    assert log.read_json(config) == {"finished": True, "dataset": "tin"}


def test_unfinished_results_of_other_settings_are_not_overwritten(tmp_path, tin, results):
    config = results / "tin_1_seed1339_config.json"
    log.write_json(str(config), {"finished": False, "dataset": "tin", "batch_size": 256})
    with pytest.raises(UserError, match=r"unfinished results of another run named tin_1_seed1339 "
                                        r"\(batch_size 256 there, 4 here\)"):
        run_moco(tmp_path)
    assert log.read_json(config)["batch_size"] == 256


def test_disk_full_while_saving_a_checkpoint(tmp_path, tin, capsys, monkeypatch):
    def full_disk(obj, f):
        f.write(bytes(4096))
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(torch, "save", full_disk)
    mod = script("train_moco")
    with pytest.raises(SystemExit) as e:
        train.main(mod.Model, mod.add_args, mod.__doc__, mod.__file__, argv(tmp_path))
    assert e.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line == (f"error: cannot write checkpoint {tmp_path / 'ckpt' / 'tin_1_seed1339.pt'}: "
                    f"No space left on device")
    assert list((tmp_path / "ckpt").iterdir()) == []  # no partial file left behind
