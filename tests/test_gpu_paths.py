"""What the CUDA defaults rely on, checked without a GPU.

A tensor made on the host and mixed into device arithmetic (a torch.zeros without device=, a
lookup table built per call) passes every CPU test and fails on the GPU. PyTorch's "meta" device
stands in for the GPU here: it computes shapes only, and refuses host tensors mixed into its ops
just as CUDA does. (It cannot stand in for the GPU's random generators, nor for ops whose output
size depends on the data, such as nonzero in the colour jitter and blur: those paths were checked
by reading.)
"""
import pytest
import torch

from conftest import tiny_model
from common import augment, train
from common.data import MEAN_STD

META = torch.device("meta")
SCRIPTS = [("train_simclr", 2), ("train_moco", 2), ("train_byol", 2), ("train_ressl", 2),
           ("train_sce", 2), ("train_unmix", 2), ("train_nnclr", 2), ("train_msf", 2),
           ("train_snclr", 2), ("train_cmsf", 3)]
NO_QUEUE = ("train_simclr", "train_byol", "train_unmix")
NO_NEIGHBOURS = ("train_moco", "train_ressl", "train_sce")


def test_meta_device_refuses_host_tensors_like_cuda():
    # the premise of this file: a host tensor in device arithmetic is an error on "meta" too
    with pytest.raises(RuntimeError, match="device"):
        torch.zeros(4, 3, device=META) + torch.ones(3)


@pytest.mark.parametrize("name,views", SCRIPTS, ids=[s for s, _ in SCRIPTS])
def test_training_step_makes_no_host_tensors(name, views, monkeypatch):
    """Forward and backward of every script with the model and the batch on a non-CPU device:
    the loss, the purity and every gradient stay there (queues and EMA copies move too)."""
    real_autocast = torch.autocast  # autocast has no "meta" backend; the retrieval disables it
    monkeypatch.setattr(torch, "autocast", lambda device_type, *a, **k: real_autocast(
        "cpu" if device_type == "meta" else device_type, *a, **k))
    extra = [] if name in NO_QUEUE else ["--queue-size", "32"]
    extra += [] if name in NO_QUEUE + NO_NEIGHBOURS else ["--topk", "2"]
    model = tiny_model(name, *extra).to(META).train()
    out = model([torch.randn(16, 3, 32, 32, device=META) for _ in range(views)],
                torch.arange(16, device=META) % 10)
    loss, purity = out if isinstance(out, tuple) else (out, None)
    assert loss.device == META and loss.dtype == torch.float32 and loss.dim() == 0
    assert purity is None or purity.device == META
    loss.backward()
    assert all(p.grad.device == META for p in model.parameters() if p.grad is not None)
    assert all(b.device == META for b in model.buffers())


@pytest.mark.parametrize("kind", ["weak", "linear", "test"])
def test_batch_augment_stays_on_the_device(kind):
    aug = augment.BatchAugment(kind, 32, *MEAN_STD["cifar10"])
    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8, device=META)
    out, params = aug(x, return_params=True)
    assert out.device == META and out.shape == (8, 3, 32, 32) and out.dtype == torch.float32
    assert all(v.device == META for v in params.values())


def test_strong_augment_parameters_and_crop_stay_on_the_device():
    aug = augment.BatchAugment("strong", 32, *MEAN_STD["cifar10"])
    params = aug.sample(8, 32, 32, META)
    assert set(params) >= {"top", "factors", "order", "gray", "sigma"}
    assert all(v.device == META for v in params.values())
    x = torch.zeros(8, 3, 32, 32, dtype=torch.uint8, device=META)
    assert augment.resized_crop(x, params, 32).device == META
    assert augment.pil_box_kernel(params["sigma"]).device == META


def test_augment_constants_are_made_once_per_device():
    # a host-to-device copy per batch blocks the host on CUDA: the jitter bounds, the luma weights
    # and the normalisation are copied to each device once
    first = augment._constant(augment.LUMA, META)
    assert first.device == META and augment._constant(augment.LUMA, META) is first
    aug = augment.BatchAugment("test", 32, *MEAN_STD["cifar10"])
    x = torch.zeros(2, 3, 32, 32, dtype=torch.uint8)
    torch.testing.assert_close(aug(x), aug(x))
    mean_std = aug._mean_std[x.device]
    aug(x)
    assert aug._mean_std[x.device] is mean_std


@pytest.mark.parametrize("capability,expected", [((7, 0), False), ((7, 5), False),
                                                 ((8, 0), True), ((9, 0), True)])
def test_amp_default_only_where_bf16_is_native(monkeypatch, capability, expected):
    """bf16 autocast is on by default only on GPUs that run bf16 natively (Ampere and later):
    V100 and T4 only emulate it (torch.cuda.is_bf16_supported() still says yes there)."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability",
                        lambda device=None: asked.append(device) or capability)
    assert train.default_amp(torch.device("cuda", 1)) is expected
    assert asked == [torch.device("cuda", 1)]  # the training device's, not the current one
