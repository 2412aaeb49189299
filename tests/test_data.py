"""Data sets in their real on-disk layouts load with the right labels and shapes; views have the
right size, normalisation and count."""
import numpy as np
import pytest
import torch

from fixtures import make_cifar_fixture, make_tin_fixture
from common.data import MEAN_STD, ViewLoader, balanced_subset, load_dataset, pil_transform


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_cifar_pickle_layout(tmp_path, name, classes):
    (train_x, train_y), (test_x, test_y) = make_cifar_fixture(tmp_path, name)
    # verify=False: torchvision's md5 check is for real downloads, which fixtures cannot match
    ds = load_dataset(name, tmp_path, download=False, verify=False)
    assert ds.num_classes == classes and ds.image_size == 32
    assert ds.train.images.shape == (len(train_y), 32, 32, 3) and ds.train.images.dtype == np.uint8
    np.testing.assert_array_equal(ds.train.labels, train_y)
    np.testing.assert_array_equal(ds.train.images, train_x)
    np.testing.assert_array_equal(ds.test.labels, test_y)
    assert (ds.mean, ds.std) == MEAN_STD[name]


def test_cifar_checksums_are_kept_for_real_downloads(tmp_path):
    from common.errors import UserError
    make_cifar_fixture(tmp_path, "cifar10")
    with pytest.raises(UserError, match="integrity check"):
        load_dataset("cifar10", tmp_path, download=False)


def test_tiny_imagenet_folder_layout(tmp_path):
    wnids, train_y, val_y = make_tin_fixture(tmp_path, classes=3, per_class=4, val_per_class=2)
    ds = load_dataset("tin", tmp_path)
    assert ds.num_classes == 3 and ds.image_size == 64
    assert ds.train.images.shape == (12, 64, 64, 3)
    assert ds.test.images.shape == (6, 64, 64, 3)
    # class index = position of the wnid in sorted order; val labels come from val_annotations.txt
    np.testing.assert_array_equal(ds.train.labels, train_y)
    np.testing.assert_array_equal(ds.test.labels, val_y)
    assert sorted(wnids) != wnids  # the fixture's wnids.txt is unsorted on purpose


def test_demo_set_is_balanced_real_cifar10():
    ds = load_dataset("demo")
    assert ds.train.images.shape == (5000, 32, 32, 3) and ds.test.images.shape == (1000, 32, 32, 3)
    assert np.bincount(ds.train.labels).tolist() == [500] * 10
    assert np.bincount(ds.test.labels).tolist() == [100] * 10
    # real photographs: per-channel means near CIFAR-10's published statistics
    mean = ds.train.images.reshape(-1, 3).mean(0) / 255
    np.testing.assert_allclose(mean, MEAN_STD["cifar10"][0], atol=0.03)


def test_subset_takes_the_first_images_of_each_class():
    ds = load_dataset("demo")
    sub = balanced_subset(ds.train, 40, 10)
    assert np.bincount(sub.labels).tolist() == [4] * 10
    first_cat = np.flatnonzero(ds.train.labels == 3)[:4]
    np.testing.assert_array_equal(sub.images[sub.labels == 3], ds.train.images[first_cat])


@pytest.mark.parametrize("kind", ["strong", "weak", "linear", "test"])
def test_pil_views_size_and_normalisation(kind):
    ds = load_dataset("demo", subset=20)
    from PIL import Image
    t = pil_transform(kind, 32, ds.mean, ds.std)
    img = ds.train.images[0]
    x = t(Image.fromarray(img))
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    if kind == "test":  # exactly (pixel/255 - mean) / std
        ref = (torch.from_numpy(img).permute(2, 0, 1).float() / 255
               - torch.tensor(ds.mean)[:, None, None]) / torch.tensor(ds.std)[:, None, None]
        torch.testing.assert_close(x, ref)


@pytest.mark.parametrize("kinds", [["strong", "strong"], ["strong", "weak", "weak"]])
def test_view_loader_counts_and_shapes(kinds):
    ds = load_dataset("demo", subset=40)
    loader = ViewLoader(ds, ds.train, kinds, batch_size=16, device="cpu", workers=0, seed=1)
    batches = list(loader.epoch(0))
    assert len(batches) == len(loader) == 2  # drop_last: 40 // 16
    views, labels = batches[0]
    assert len(views) == len(kinds) and labels.shape == (16,)
    assert all(v.shape == (16, 3, 32, 32) for v in views)
    assert not torch.equal(views[0], views[1])  # independent augmentations
    # an epoch is a permutation of the training set, not sampling with replacement
    assert sorted(loader._indices(0).tolist()) == list(range(40))
    again = list(loader.epoch(0))
    torch.testing.assert_close(again[0][0][0], views[0])  # same (seed, epoch) -> same views


def test_tin_views_are_64_px(tmp_path):
    make_tin_fixture(tmp_path, classes=2, per_class=4)
    ds = load_dataset("tin", tmp_path)
    loader = ViewLoader(ds, ds.train, ["strong", "weak"], batch_size=4, device="cpu", workers=0)
    views, _ = next(iter(loader.epoch(0)))
    assert [tuple(v.shape) for v in views] == [(4, 3, 64, 64)] * 2
