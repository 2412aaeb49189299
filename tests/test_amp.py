"""Mixed precision and channels-last change speed, not the loss: one fixed batch, same weights."""
import copy
import functools

import pytest
import torch

from conftest import TINY, script, train_tiny
from common import train
from common.data import load_dataset, normalized_batches


def tiny_model(name):
    mod = script(name)
    extra = ["--queue-size", "32"] if name == "train_moco" else []
    args = train.parse_args(mod.add_args, mod.__doc__, mod.__file__, TINY + extra)
    args.image_size, args.bn_splits = 32, 2
    torch.manual_seed(0)
    return mod.Model(args)


@functools.lru_cache(maxsize=1)
def fixed_views():
    ds = load_dataset("demo")
    x, _ = next(normalized_batches(ds.train, ds, "cpu", batch_size=32))
    return [x, x.flip(3)], torch.arange(32) % 10


def loss_of(model, views, labels, amp=False):
    torch.manual_seed(1)  # the key encoder's batch shuffle
    model = copy.deepcopy(model)  # queues, EMA and BN statistics start equal every time
    with torch.autocast("cpu", torch.bfloat16, enabled=amp):
        out = model(views, labels)
    return out[0] if isinstance(out, tuple) else out


@pytest.mark.parametrize("name", ["train_simclr", "train_moco"])
def test_bf16_autocast_keeps_the_loss(name):
    model = tiny_model(name)
    views, labels = fixed_views()
    fp32 = loss_of(model, views, labels)
    bf16 = loss_of(model, views, labels, amp=True)
    assert bf16.dtype == torch.float32  # the loss math runs in fp32 under autocast
    assert abs(bf16.item() - fp32.item()) < 0.02 * fp32.item()
    assert bf16.item() != fp32.item()  # autocast did run the network in bf16


def test_channels_last_keeps_the_loss():
    model = tiny_model("train_simclr")
    views, labels = fixed_views()
    ref = loss_of(model, views, labels)
    cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    out = loss_of(cl, [v.contiguous(memory_format=torch.channels_last) for v in views], labels)
    assert out.item() == pytest.approx(ref.item(), rel=1e-5)


def test_training_runs_with_batched_augmentation_and_channels_last(tmp_path):
    summary = train_tiny("train_simclr", tmp_path, "--aug", "gpu", "--channels-last",
                         "--linear-epochs", "0")
    assert "kNN top-1" in summary
