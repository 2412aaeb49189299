"""The batched tensor augmentation (common.augment) is faithful to the per-image PIL pipeline.

Three levels: the sampled parameters follow torchvision's distributions (KS / rate tests), each
pixel operation reproduces its PIL counterpart on real images for given parameters, and whole
strong views of real demo images have the PIL pipeline's output statistics.
"""
import itertools

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from scipy import stats
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from common import augment as A
from common.data import ViewLoader, load_dataset, normalized_batches, pil_transform


@pytest.fixture(scope="module")
def ds():
    return load_dataset("demo")


def nchw(images):
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous()


def batched_params(kind, n, seed=0, size=32):
    g = torch.Generator().manual_seed(seed)
    return A.BatchAugment(kind, size, (0.5,) * 3, (0.5,) * 3).sample(n, size, size, "cpu", g)


def torchvision_crops(scale, n, seed=0):
    torch.manual_seed(seed)
    img = torch.zeros(3, 32, 32)
    return np.array([T.RandomResizedCrop.get_params(img, scale, (3 / 4, 4 / 3)) for _ in range(n)])


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("kind,scale", [("strong", (0.2, 1.0)), ("linear", (0.08, 1.0))])
def test_crop_boxes_follow_torchvision(kind, scale):
    p = batched_params(kind, 4000)
    ours = {"area": (p["height"] * p["width"]).numpy(), "aspect": (p["width"] / p["height"]).numpy(),
            "top": p["top"].numpy(), "height": p["height"].numpy()}
    i, j, h, w = torchvision_crops(scale, 4000, seed=1).T
    ref = {"area": h * w, "aspect": w / h, "top": i, "height": h}
    for key in ours:
        assert stats.ks_2samp(ours[key], ref[key]).pvalue > 1e-3, key
    assert (p["top"] + p["height"] <= 32).all() and (p["left"] + p["width"] <= 32).all()
    # the test has power: the other scale range is told apart at once
    other = torchvision_crops((0.08, 1.0) if kind == "strong" else (0.2, 1.0), 4000, seed=2)
    assert stats.ks_2samp(ours["area"], other[:, 2] * other[:, 3]).pvalue < 1e-6


def test_crop_falls_back_like_torchvision():
    # a 4:1 image: many draws fit none of their 10 tries; the fallback is the central crop at 4/3
    g = torch.Generator().manual_seed(0)
    p = A.crop_params(2000, 8, 32, (0.2, 1.0), (3 / 4, 4 / 3),
                      lambda *s, dtype=torch.float32: torch.rand(*s, generator=g, dtype=dtype))
    torch.manual_seed(0)
    ref = np.array([T.RandomResizedCrop.get_params(torch.zeros(3, 8, 32), (0.2, 1.0), (3 / 4, 4 / 3))
                    for _ in range(2000)])
    fallback = (p["height"] == 8) & (p["width"] == 11) & (p["left"] == 10) & (p["top"] == 0)
    ref_fallback = (ref == [0, 10, 8, 11]).all(1)
    assert fallback.float().mean().item() == pytest.approx(ref_fallback.mean(), abs=0.03)
    assert 0.05 < ref_fallback.mean() < 0.95
    assert stats.ks_2samp((p["height"] * p["width"]).numpy(), ref[:, 2] * ref[:, 3]).pvalue > 1e-3


@pytest.mark.parametrize("kind,rates", [
    ("strong", {"flip": 0.5, "jitter": 0.8, "gray": 0.2, "blur": 0.5}),
    ("weak", {"flip": 0.9}), ("linear", {"flip": 0.5})])
def test_application_rates(kind, rates):
    n = 20000
    p = batched_params(kind, n)
    for key, rate in rates.items():
        tol = 4 * (rate * (1 - rate) / n) ** 0.5
        assert p[key].float().mean().item() == pytest.approx(rate, abs=tol), key
    assert set(p) & {"jitter", "gray", "blur"} == set(rates) - {"flip"}


def test_jitter_factors_order_and_sigma_distributions():
    n = 20000
    p = batched_params("strong", n)
    on = p["jitter"]
    f = p["factors"][on]
    for col, (lo, hi) in enumerate([(0.6, 1.4)] * 3 + [(-0.1, 0.1)]):
        assert stats.kstest(f[:, col].numpy(), stats.uniform(lo, hi - lo).cdf).pvalue > 1e-3
    assert (p["factors"][~on] == torch.tensor([1.0, 1.0, 1.0, 0.0])).all()
    # every one of the 24 orders, equally often (torchvision draws randperm(4) per image)
    perms = {q: i for i, q in enumerate(itertools.permutations(range(4)))}
    counts = np.bincount([perms[tuple(o)] for o in p["order"].tolist()], minlength=24)
    assert stats.chisquare(counts).pvalue > 1e-3
    assert stats.kstest(p["sigma"].numpy(), stats.uniform(0.1, 1.9).cdf).pvalue > 1e-3


# ----------------------------------------------------------------------------- pixel operations
def test_crop_and_flip_match_pil_resize(ds):
    imgs = ds.train.images[:64]
    p = batched_params("strong", 64, seed=3)
    out = A.resized_crop(nchw(imgs), p, 32).permute(0, 2, 3, 1).numpy() * 255
    for k, img in enumerate(imgs):
        ref = TF.resized_crop(Image.fromarray(img), *(int(p[q][k]) for q in ("top", "left", "height", "width")),
                              [32, 32])
        ref = np.asarray(TF.hflip(ref) if p["flip"][k] else ref, dtype=np.float64)
        assert np.abs(ref - out[k]).max() <= 1.01  # PIL rounds to uint8


@pytest.mark.parametrize("op,factor,pil_fn", [
    (0, 1.35, TF.adjust_brightness), (0, 0.62, TF.adjust_brightness),
    (1, 1.38, TF.adjust_contrast), (1, 0.61, TF.adjust_contrast),
    (2, 1.4, TF.adjust_saturation), (2, 0.6, TF.adjust_saturation),
    (3, 0.08, TF.adjust_hue), (3, -0.09, TF.adjust_hue)])
def test_each_jitter_op_matches_pil(ds, op, factor, pil_fn):
    imgs = ds.train.images[:64]
    factors = torch.tensor([1.0, 1.0, 1.0, 0.0]).repeat(64, 1)
    factors[:, op] = factor
    order = torch.tensor([op] + [o for o in range(4) if o != op]).repeat(64, 1)
    out = A.color_jitter(nchw(imgs).float() / 255, factors, order).permute(0, 2, 3, 1).numpy() * 255
    ref = np.stack([np.asarray(pil_fn(Image.fromarray(im), factor)) for im in imgs]).astype(np.float64)
    diff = np.abs(ref - out)
    if op < 3:
        assert diff.max() <= 1.5  # PIL also rounds the mean luma / luma image to uint8
    else:  # PIL rotates hue in 8-bit HSV: a few levels on saturated pixels, <1 level on average
        assert diff.mean() < 0.6 and diff.max() <= 12


def test_jitter_order_matters_and_is_per_image(ds):
    x = nchw(ds.train.images[:2]).float() / 255
    factors = torch.tensor([[1.4, 0.6, 1.0, 0.0]] * 2)
    out = A.color_jitter(x, factors, torch.tensor([[0, 1, 2, 3], [1, 0, 2, 3]]))
    bc = A.color_jitter(x[:1], factors[:1], torch.tensor([[0, 1, 2, 3]]))
    cb = A.color_jitter(x[1:], factors[1:], torch.tensor([[1, 0, 2, 3]]))
    assert torch.equal(out, torch.cat([bc, cb]))
    assert not torch.allclose(bc, A.color_jitter(x[:1], factors[:1], torch.tensor([[1, 0, 2, 3]])))


def test_grayscale_and_blur_match_pil(ds):
    imgs = ds.train.images[:64]
    x = nchw(imgs).float() / 255
    gray = A.grayscale(x)[:, 0].numpy() * 255
    ref = np.stack([np.asarray(Image.fromarray(im).convert("L")) for im in imgs])
    assert np.abs(gray - ref).max() <= 1.01
    sigma = torch.linspace(0.1, 2.0, 64)
    blurred = A.pil_gaussian_blur(x, sigma, torch.ones(64, dtype=torch.bool)).permute(0, 2, 3, 1)
    ref = np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(float(s))))
                    for im, s in zip(imgs, sigma)]).astype(np.float64)
    assert np.abs(blurred.numpy() * 255 - ref).max() <= 3  # PIL rounds after each of its passes
    # images not drawn for the blur pass through untouched
    assert torch.equal(A.pil_gaussian_blur(x, sigma, sigma > 1)[sigma <= 1], x[sigma <= 1])


# ----------------------------------------------------------------------------- whole views
def view_stats(v, mean, std):
    u = v * torch.tensor(std).view(1, 3, 1, 1) + torch.tensor(mean).view(1, 3, 1, 1)
    return {"mean": v.mean((0, 2, 3)), "std": v.std((0, 2, 3)),
            "gray": ((u.amax(1) - u.amin(1)).amax((1, 2)) < 1.5 / 255).float().mean(),
            "sharpness": (u[..., 1:] - u[..., :-1]).abs().mean(),
            "brightness_spread": A.grayscale(u).mean((1, 2, 3)).std()}


def agree(a, b):
    # tolerances ~3x the spread between seeds of the same pipeline (1200 views)
    return ((a["mean"] - b["mean"]).abs().max() < 0.1 and (a["std"] - b["std"]).abs().max() < 0.05
            and abs(a["gray"] - b["gray"]) < 0.05
            and abs(a["sharpness"] / b["sharpness"] - 1) < 0.08
            and abs(a["brightness_spread"] / b["brightness_spread"] - 1) < 0.08)


def test_strong_views_have_the_pil_pipelines_statistics(ds):
    imgs = ds.train.images[::5][:600]  # all ten classes
    torch.manual_seed(0)
    pil = pil_transform("strong", 32, ds.mean, ds.std)
    ref = view_stats(torch.stack([pil(Image.fromarray(im)) for im in imgs for _ in range(2)]),
                     ds.mean, ds.std)
    x = nchw(imgs).repeat_interleave(2, 0)
    aug = A.BatchAugment("strong", 32, ds.mean, ds.std)
    ours = view_stats(aug(x, generator=torch.Generator().manual_seed(0)), ds.mean, ds.std)
    assert agree(ours, ref), (ours, ref)
    # the tolerances are tight enough to catch a missing blur or colour jitter
    for off in ("blur", "jitter"):
        wrong = A.BatchAugment("strong", 32, ds.mean, ds.std)
        wrong.p = dict(wrong.p, **{off: 0.0})
        assert not agree(view_stats(wrong(x, generator=torch.Generator().manual_seed(0)),
                                    ds.mean, ds.std), ref), off


# ----------------------------------------------------------------------------- interface
def test_same_generator_same_views_and_test_kind(ds):
    x = nchw(ds.train.images[:32])
    aug = A.BatchAugment("strong", 32, ds.mean, ds.std)
    a = aug(x, generator=torch.Generator().manual_seed(7))
    b = aug(x, generator=torch.Generator().manual_seed(7))
    c = aug(x, generator=torch.Generator().manual_seed(8))
    assert a.dtype == torch.float32 and a.shape == (32, 3, 32, 32)
    assert torch.equal(a, b) and not torch.equal(a, c)
    test = A.BatchAugment("test", 32, ds.mean, ds.std)(x)
    ref, _ = next(normalized_batches(ds.train, ds, "cpu", batch_size=32))
    assert torch.allclose(test, ref, atol=1e-6)
    pil = pil_transform("test", 32, ds.mean, ds.std)(Image.fromarray(ds.train.images[0]))
    assert torch.allclose(test[0], pil, atol=1e-5)


def test_view_loader_gpu_path_is_reproducible(ds):
    from common.data import Split
    split = Split(ds.train.images[:64], ds.train.labels[:64])
    loader = ViewLoader(ds, split, ["strong", "weak"], 16, "cpu", aug="gpu", seed=3)
    first = list(loader.epoch(0))
    again = list(loader.epoch(0))
    assert len(first) == 4 and all(len(v) == 2 for v, _ in first)
    assert all(torch.equal(a, b) for (va, _), (vb, _) in zip(first, again) for a, b in zip(va, vb))
    assert not torch.equal(first[0][0][0], next(iter(loader.epoch(1)))[0][0])
