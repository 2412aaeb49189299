"""Data-parallel training under torchrun: 2 processes on CPU with the gloo backend.

Starting processes is the slow part, so a single launch runs every check, this file being its
own driver:

    python -m torch.distributed.run --nproc_per_node=2 --master_port=PORT tests/test_dist.py OUT

Each rank writes what it saw to OUT/<check>_rank<r>.pt; the tests below read those files (and, for
the equivalence checks, recompute one process with the whole batch in the pytest process). The
launch ends with a rank that dies mid-run, so torchrun itself must fail, and fast.
"""
import copy
import os
import socket
import subprocess
import sys
import time
import traceback
from functools import lru_cache
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import ROOT, TINY, script, tiny_model  # noqa: E402

SCRIPTS = sorted(p.stem for p in ROOT.glob("train_*.py"))
# scripts whose loss couples the samples of a batch (in-batch negatives, candidates) or whose
# target is shuffled across ranks
EQUIVALENT = [s for s in ("train_simclr", "train_byol", "train_nnclr", "train_snclr") if s in SCRIPTS]
B = 8  # per-rank batch of the hand-made checks
LAUNCH_TIMEOUT = 240  # seconds: a hang fails the test instead of blocking CI


# ============================================================================ the driver (2 ranks)
def _save(out, check, obj):
    from common import dist
    torch.save(obj, os.path.join(out, f"{check}_rank{dist.rank()}.pt"))


def _queue_flag(name):
    from common import train
    mod = script(name)
    flags = {o for a in train.build_parser(mod.add_args, mod.__doc__)._actions for o in a.option_strings}
    return ["--queue-size", "64"] if "--queue-size" in flags else []


def _argv(name, out, *extra, folder=None):
    folder = os.path.join(out, folder or name)
    return TINY + _queue_flag(name) + ["--device", "cpu", "--results-dir", os.path.join(folder, "results"),
                           "--checkpoint-dir", os.path.join(folder, "checkpoints"), *extra]


def check_queue(out):
    """One MoCo step under DDP; record the keys this rank enqueued and the queue afterwards."""
    from common import dist
    model = tiny_model("train_moco", "--queue-size", "32", seed=0)
    seen = []
    enqueue = model.queue.enqueue
    model.queue.enqueue = lambda keys, labels: (seen.append(keys.detach().clone()), enqueue(keys, labels))
    ddp = dist.wrap(model, torch.device("cpu"))
    g = torch.Generator().manual_seed(100 + dist.rank())  # each rank its own samples
    views = [torch.randn(B, 3, 32, 32, generator=g) for _ in range(2)]
    ddp(views, torch.full((B,), dist.rank())).backward()
    _save(out, "queue", {"enqueued": seen[0], "keys": model.queue.keys.clone(),
                         "labels": model.queue.labels.clone(), "ptr": int(model.queue.ptr)})


def check_shuffle(out):
    from common import dist, nets
    x = (torch.arange(B) + dist.rank() * B).float()[:, None]  # global sample ids
    shard, unshuffle = dist.shuffle_across_ranks(x)
    _save(out, "shuffle", {"shard": shard, "restored": dist.unshuffle_across_ranks(shard, unshuffle),
                           "via_nets": nets.shuffled_forward(torch.nn.Identity(), x), "x": x})


def check_equivalence(name, out):
    """One step of `name` with 2 ranks x B, every BatchNorm synchronised, plain split-free BN."""
    from common import dist
    model = _equivalence_model(name)  # the same weights (and queue) on both ranks
    init = copy.deepcopy(model.state_dict())
    dist.convert_sync_bn(model, "all")
    views, labels = _global_batch()
    r = dist.rank()
    ddp = dist.wrap(model, torch.device("cpu"))
    out_ = ddp([v[r * B:(r + 1) * B] for v in views], labels[r * B:(r + 1) * B])
    loss = out_[0] if isinstance(out_, tuple) else out_
    loss.backward()  # DDP averages the gradients over ranks
    _save(out, f"equiv_{name}", {"init": init, "loss": dist.mean(loss.item()),
                                 "grads": {n: p.grad.clone() for n, p in model.named_parameters()
                                           if p.grad is not None},
                                 "running": _running_stats(model)})


def _running_stats(model):
    return {n: b.clone() for n, b in model.named_buffers() if "running" in n}


def _equivalence_model(name):
    return tiny_model(name, "--bn-splits", "1", *_queue_flag(name), seed=0)


def _global_batch():
    g = torch.Generator().manual_seed(7)
    return [torch.randn(2 * B, 3, 32, 32, generator=g) for _ in range(2)], torch.arange(2 * B) % 10


def check_scripts(out):
    """Every train script: one TINY epoch + kNN + 1 linear epoch, as a user would run it."""
    from common import train
    cached = lru_cache(maxsize=None)(train.load_dataset)  # decode the demo set once per rank
    train.load_dataset = cached
    for name in SCRIPTS:
        mod = script(name)
        try:
            result = {"summary": train.run(mod.Model, mod.add_args, mod.__doc__, mod.__file__,
                                           _argv(name, out))}
        except Exception:
            result = {"error": traceback.format_exc()}
        _save(out, f"script_{name}", result)


def check_crash(out):
    """MoCo for 3 epochs whose rank 1 dies abruptly at the first step of epoch 2."""
    from common import dist, train
    mod = script("train_moco")
    calls = []

    class Dying(mod.Model):
        def forward(self, views, labels):
            calls.append(1)
            if dist.rank() == 1 and len(calls) == 3:  # 2 steps per epoch: epoch 2, step 1
                os._exit(13)
            return super().forward(views, labels)

    _save(out, "crash_started", {"time": time.time()})
    train.run(Dying, mod.add_args, mod.__doc__, mod.__file__,
              _argv("train_moco", out, "--epochs", "3", "--linear-epochs", "0", folder="crash"))
    _save(out, "crash_finished", {})  # must never happen


def driver(out):
    from common import dist
    torch.set_num_threads(1)
    dist.setup(torch.device("cpu"), timeout_minutes=1)
    check_shuffle(out)
    check_queue(out)
    for name in EQUIVALENT:
        check_equivalence(name, out)
    check_scripts(out)
    check_crash(out)


# ============================================================================ the tests (pytest)
def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    out = tmp_path_factory.mktemp("dist")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
           f"--master_port={_free_port()}", "--monitor_interval=0.5", __file__, str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=LAUNCH_TIMEOUT)
    proc.finished = time.time()
    return out, proc


def _load(launch, check, rank):
    out, proc = launch
    path = out / f"{check}_rank{rank}.pt"
    assert path.exists(), f"{check} did not run on rank {rank}:\n{proc.stderr[-3000:]}"
    return torch.load(path, weights_only=False)


def test_shuffle_across_ranks_is_undone_exactly(launch):
    s0, s1 = (_load(launch, "shuffle", r) for r in (0, 1))
    ids = torch.cat([s0["shard"], s1["shard"]]).flatten()
    assert sorted(ids.tolist()) == list(range(2 * B))  # a permutation of the global batch
    assert (s0["shard"] >= B).any()  # rank 0's key encoder sees samples of rank 1
    for s in (s0, s1):
        assert torch.equal(s["restored"], s["x"]) and torch.equal(s["via_nets"], s["x"])


def test_queue_identical_on_ranks_and_holds_both_ranks_keys(launch):
    q0, q1 = (_load(launch, "queue", r) for r in (0, 1))
    assert torch.equal(q0["keys"], q1["keys"]) and torch.equal(q0["labels"], q1["labels"])
    assert q0["ptr"] == q1["ptr"] == 2 * B
    assert not torch.equal(q0["enqueued"], q1["enqueued"])
    assert torch.allclose(q0["keys"][:2 * B], torch.cat([q0["enqueued"], q1["enqueued"]]))
    assert q0["labels"][:2 * B].tolist() == [0] * B + [1] * B


@pytest.mark.parametrize("name", EQUIVALENT)
def test_two_ranks_match_one_process_with_twice_the_batch(launch, name):
    res = _load(launch, f"equiv_{name}", 0)
    model = _equivalence_model(name)
    model.load_state_dict(res["init"])
    views, labels = _global_batch()
    out = model(views, labels)
    loss = out[0] if isinstance(out, tuple) else out
    loss.backward()
    assert res["loss"] == pytest.approx(loss.item(), rel=1e-5)
    grads = {n: p.grad for n, p in model.named_parameters() if p.grad is not None}
    assert grads.keys() == res["grads"].keys()
    for n, g in grads.items():  # fp32 sums in another order: close relative to each tensor's scale
        err = (res["grads"][n] - g).abs().max().item()
        assert err <= 1e-4 * g.abs().max().item() + 1e-7, (n, err)
    for n, b in _running_stats(model).items():  # BatchNorm running statistics too
        assert torch.allclose(res["running"][n], b, rtol=1e-4, atol=1e-6), n


def test_sync_bn_conversion_in_one_process():
    from common import dist, nets
    torch.manual_seed(0)
    model = nets.Encoder(nets.resnet18(32, 2, 8), nets.mlp([64, 32, 16], last_bn=True))
    target = nets.ema_copy(model)
    plain = copy.deepcopy(model)
    dist.convert_sync_bn(model, "heads")
    dist.convert_sync_bn(target, "heads")
    assert isinstance(model.projector[1], dist.SyncBatchNorm)
    assert isinstance(model.backbone.bn1, nets.SplitBatchNorm)  # split groups stay per rank
    assert not any(p.requires_grad for p in target.parameters())  # EMA copies stay frozen
    x = torch.randn(8, 3, 32, 32)
    assert torch.allclose(model(x), plain(x), atol=1e-5)  # alone, it is BatchNorm
    everything = dist.convert_sync_bn(nets.resnet18(32, 1, 8), "all")
    assert isinstance(everything.layer1[0].bn1, dist.SyncBatchNorm)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_runs_one_epoch_on_two_ranks(launch, name):
    out, _ = launch
    for rank in (0, 1):
        res = _load(launch, f"script_{name}", rank)
        assert "error" not in res, f"rank {rank}:\n{res.get('error')}"
    results = list((out / name / "results").glob("*_pretrain.csv"))
    assert len(results) == 1  # written once, by rank 0
    epochs = [line.split(",")[0] for line in results[0].read_text().splitlines()[1:]]
    assert epochs == ["0", "1"]
    assert len(list((out / name / "checkpoints").glob("*.pt"))) == 1


def test_crashed_rank_stops_the_others_and_keeps_the_last_checkpoint(launch):
    out, proc = launch
    started = _load(launch, "crash_started", 0)["time"]
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert not list(out.glob("crash_finished_rank*.pt"))
    assert proc.finished - started < 60  # torchrun stopped rank 0; it did not wait for it
    from common import checkpoint
    ckpts = list((out / "crash" / "checkpoints").iterdir())
    assert len(ckpts) == 1 and ckpts[0].suffix == ".pt"  # no half-written temporary file
    assert checkpoint.load(str(ckpts[0]))["epoch"] == 1


if __name__ == "__main__":
    driver(sys.argv[1])
