"""Small data sets in the real on-disk formats, built from the embedded demo set's real images.

make_cifar_fixture: torchvision's cifar-10-batches-py / cifar-100-python pickle layout.
make_tin_fixture:   the Tiny-ImageNet-200 folder layout (train/<wnid>/images, val/images +
                    val/val_annotations.txt), images upscaled to 64 px JPEG.
"""
import os
import pickle
from functools import lru_cache

import numpy as np
from PIL import Image


@lru_cache(maxsize=1)
def demo():
    from common.data import load_dataset
    return load_dataset("demo")


def make_cifar_fixture(root, name="cifar10", per_class=3, test_per_class=2):
    """Write a tiny CIFAR in torchvision's pickle layout under root; returns (train, test)
    label arrays in file order. CIFAR-100's 100 classes reuse the 10 demo classes' images."""
    ds = demo()
    classes = 10 if name == "cifar10" else 100

    def pick(split, n):
        idx = [np.flatnonzero(split.labels == c % 10)[c // 10 * n:(c // 10 + 1) * n]
               for c in range(classes)]
        idx = np.concatenate(idx)
        labels = np.repeat(np.arange(classes), n)
        return split.images[idx], labels

    def entry(images, labels):
        key = "labels" if name == "cifar10" else "fine_labels"
        data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # CHW rows, as CIFAR stores
        return {"data": data, key: labels.tolist(),
                "coarse_labels": (labels // 5).tolist()}

    tr_x, tr_y = pick(ds.train, per_class)
    te_x, te_y = pick(ds.test, test_per_class)
    if name == "cifar10":
        folder = os.path.join(root, "cifar-10-batches-py")
        os.makedirs(folder, exist_ok=True)
        parts = np.array_split(np.arange(len(tr_y)), 5)
        for i, p in enumerate(parts):
            _dump(os.path.join(folder, f"data_batch_{i + 1}"), entry(tr_x[p], tr_y[p]))
        _dump(os.path.join(folder, "test_batch"), entry(te_x, te_y))
        _dump(os.path.join(folder, "batches.meta"),
              {"label_names": ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog",
                               "horse", "ship", "truck"]})
    else:
        folder = os.path.join(root, "cifar-100-python")
        os.makedirs(folder, exist_ok=True)
        _dump(os.path.join(folder, "train"), entry(tr_x, tr_y))
        _dump(os.path.join(folder, "test"), entry(te_x, te_y))
        _dump(os.path.join(folder, "meta"), {"fine_label_names": [f"class{i}" for i in range(100)],
                                             "coarse_label_names": [f"super{i}" for i in range(20)]})
    return (tr_x, tr_y), (te_x, te_y)


def _dump(path, obj):
    # CIFAR's python files are pickles of dicts (torchvision reads them with encoding='latin1')
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def make_tin_fixture(root, classes=3, per_class=4, val_per_class=2):
    """Write a tiny tiny-imagenet-200 folder under root; returns (wnids, train labels, val labels)
    where labels are indices into sorted(wnids), in the order the loader returns them."""
    ds = demo()
    base = os.path.join(root, "tiny-imagenet-200")
    wnids = [f"n0{1000 + 7 * c:07d}" for c in reversed(range(classes))]  # unsorted on purpose
    os.makedirs(os.path.join(base, "val", "images"), exist_ok=True)
    with open(os.path.join(base, "wnids.txt"), "w") as f:
        f.write("\n".join(wnids) + "\n")
    with open(os.path.join(base, "words.txt"), "w") as f:
        f.writelines(f"{w}\tclass {w}\n" for w in wnids)
    train_labels = []
    for c, w in enumerate(wnids):
        folder = os.path.join(base, "train", w, "images")
        os.makedirs(folder)
        imgs = ds.train.images[ds.train.labels == c][:per_class]
        for i, img in enumerate(imgs):
            _jpeg(img, os.path.join(folder, f"{w}_{i}.JPEG"))
        with open(os.path.join(base, "train", w, f"{w}_boxes.txt"), "w") as f:
            f.writelines(f"{w}_{i}.JPEG\t0\t0\t63\t63\n" for i in range(len(imgs)))
    for w in sorted(wnids):
        train_labels += [sorted(wnids).index(w)] * per_class
    val_labels, lines = [], []
    n = 0
    for c, w in enumerate(wnids):
        for img in ds.test.images[ds.test.labels == c][:val_per_class]:
            fname = f"val_{n}.JPEG"
            _jpeg(img, os.path.join(base, "val", "images", fname))
            lines.append(f"{fname}\t{w}\t0\t0\t63\t63\n")
            val_labels.append(sorted(wnids).index(w))
            n += 1
    with open(os.path.join(base, "val", "val_annotations.txt"), "w") as f:
        f.writelines(lines)
    return wnids, np.array(train_labels), np.array(val_labels)


def _jpeg(img, path):
    Image.fromarray(img).resize((64, 64), Image.BICUBIC).save(path, quality=90)
