"""Data sets, transforms and view loaders.

Every data set is held in memory as uint8 arrays (N, H, W, 3) plus int64 labels, whatever its
on-disk format; the per-image PIL pipeline and the batched tensor pipeline both read from them.
"""
import io
import os
import tarfile
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from PIL import Image

from common.errors import UserError

DATASETS = ("cifar10", "cifar100", "tin", "demo")
MEAN_STD = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "tin": ((0.4802, 0.4481, 0.3975), (0.2302, 0.2265, 0.2262)),
    "stl10": ((0.4408, 0.4279, 0.3867), (0.2682, 0.2610, 0.2686)),
}
MEAN_STD["demo"] = MEAN_STD["cifar10"]  # the demo set is a CIFAR-10 subset
DEMO_ARCHIVE = os.path.join(os.path.dirname(__file__), "demo", "cifar10_demo.tar.xz")
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")


@dataclass
class Split:
    images: np.ndarray  # uint8 (N, H, W, 3)
    labels: np.ndarray  # int64 (N,)

    def __len__(self):
        return len(self.labels)


@dataclass
class DataSet:
    name: str
    num_classes: int
    image_size: int
    mean: tuple
    std: tuple
    train: Split
    test: Split


def load_dataset(name, data_dir="data", download=True, subset=None, verify=True):
    """Load `name` (cifar10, cifar100, tin, demo) into memory.

    `subset=N` keeps the first N // classes training images of every class (class-balanced).
    `verify=False` skips torchvision's CIFAR checksums (for small test fixtures in the real layout).
    """
    if name in ("cifar10", "cifar100"):
        train, test, classes = _load_cifar(name, data_dir, download, verify)
    elif name == "tin":
        train, test, classes = _load_tin(data_dir)
    elif name == "demo":
        train, test, classes = _load_demo()
    else:
        raise UserError(f"unknown dataset '{name}' (choose from {', '.join(DATASETS)})")
    if subset:
        train = balanced_subset(train, subset, classes)
    mean, std = MEAN_STD[name]
    return DataSet(name, classes, train.images.shape[1], mean, std, train, test)


def balanced_subset(split, n, num_classes):
    """The first n // num_classes images of each class, in their original order."""
    per_class = n // num_classes
    if per_class < 1:
        raise UserError(f"--subset {n} is smaller than the number of classes ({num_classes})")
    keep = np.concatenate([np.flatnonzero(split.labels == c)[:per_class]
                           for c in range(num_classes)])
    keep.sort()
    return Split(split.images[keep], split.labels[keep])


# ----------------------------------------------------------------------------- on-disk formats
CIFAR_DIRS = {"cifar10": ("cifar-10-batches-py", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"),
              "cifar100": ("cifar-100-python", "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")}


def _load_cifar(name, data_dir, download, verify):
    import torchvision
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    folder, url = CIFAR_DIRS[name]
    path = os.path.join(data_dir, folder)
    expected = [f for f, _ in cls.train_list + cls.test_list]
    if os.path.isdir(path):
        missing = [f for f in expected if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise UserError(f"{path} is incomplete: missing {', '.join(missing)}; "
                            f"delete it to re-download, or extract {url} into {data_dir}")
    elif not download:
        raise UserError(f"{name} not found at {path}: download {url} and extract it into {data_dir}")
    if not verify:  # same parser; md5=None makes torchvision check only that the files exist
        cls = type(cls.__name__, (cls,), {
            "train_list": [[f, None] for f, _ in cls.train_list],
            "test_list": [[f, None] for f, _ in cls.test_list],
            "meta": {**cls.meta, "md5": None}})
    try:
        sets = [cls(data_dir, train=t, download=download and not os.path.isdir(path))
                for t in (True, False)]
    except RuntimeError as e:  # torchvision: "Dataset not found or corrupted"
        raise UserError(f"{name} at {path} failed its integrity check ({e}); "
                        f"re-download {url} and extract it into {data_dir} (--no-verify skips the md5 "
                        f"check for files rebuilt in this layout)") from None
    except OSError as e:  # offline: URLError is an OSError
        raise UserError(f"could not download {name} ({e}); download {url} by hand and "
                        f"extract it into {data_dir}") from None
    splits = [Split(np.ascontiguousarray(s.data), np.asarray(s.targets, dtype=np.int64))
              for s in sets]
    return splits[0], splits[1], len(sets[0].classes)


def _decode(f, path="", size=None):
    """uint8 (H, W, 3) array of an image file; a corrupt or truncated file, or (with `size`) one
    of another size, is a UserError naming the file."""
    try:
        with Image.open(f) as img:
            out = np.asarray(img.convert("RGB"))
    except Exception as e:
        why = " ".join(str(e).split())
        raise UserError(f"cannot read image {path} (corrupt or truncated?): {why}; "
                        f"replace it from the original archive") from None
    if size is not None and out.shape[:2] != (size, size):
        raise UserError(f"image {path} is {out.shape[1]}x{out.shape[0]} pixels, expected "
                        f"{size}x{size}")
    return out


def _load_tin(data_dir):
    """Tiny-ImageNet-200 in its distributed layout; the val split is the test set."""
    root = os.path.join(data_dir, "tiny-imagenet-200")
    url = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
    if not os.path.isdir(root):
        raise UserError(f"Tiny-ImageNet not found at {root}: download {url} and unzip it into {data_dir}")
    need = ["wnids.txt", "train", os.path.join("val", "images"),
            os.path.join("val", "val_annotations.txt")]
    missing = [n for n in need if not os.path.exists(os.path.join(root, n))]
    val = os.path.join(root, "val")
    if missing and os.path.isdir(val) and any(
            os.path.isdir(os.path.join(val, d)) and d != "images" for d in os.listdir(val)):
        raise UserError(f"{val} has been reorganised into class folders; this loader reads the "
                        f"original layout (val/images/*.JPEG + val/val_annotations.txt): unzip "
                        f"val/ again from {url}")
    if missing:
        hint = (" (val must keep the original val/images + val/val_annotations.txt layout)"
                if any(m.startswith("val") for m in missing) else "")
        raise UserError(f"{root} is incomplete: missing {', '.join(missing)}{hint}; "
                        f"unzip {url} into {data_dir} again")
    with open(os.path.join(root, "wnids.txt")) as f:
        wnids = sorted(line.strip() for line in f if line.strip())
    if not wnids:
        raise UserError(f"{root}/wnids.txt lists no classes")
    index = {w: i for i, w in enumerate(wnids)}
    train_files, train_labels, absent = [], [], []
    for w in wnids:
        folder = os.path.join(root, "train", w, "images")
        names = sorted(n for n in os.listdir(folder) if n.lower().endswith((".jpeg", ".jpg", ".png"))) \
            if os.path.isdir(folder) else []
        if not names:
            absent.append(f"train/{w}/images")
        train_files += [os.path.join(folder, n) for n in names]
        train_labels += [index[w]] * len(names)
    if absent:
        raise UserError(f"{root} is incomplete: no images in {len(absent)} of {len(wnids)} class "
                        f"folders ({', '.join(absent[:3])}{', ...' if len(absent) > 3 else ''}); "
                        f"unzip {url} into {data_dir} again")
    test_files, test_labels = [], []
    with open(os.path.join(root, "val", "val_annotations.txt")) as f:
        for line in f:
            parts = line.split("\t")
            if len(parts) < 2:
                continue
            if parts[1] not in index:
                raise UserError(f"val_annotations.txt names unknown class {parts[1]}")
            test_files.append(os.path.join(root, "val", "images", parts[0]))
            test_labels.append(index[parts[1]])
    if not test_files:
        raise UserError(f"{root}/val/val_annotations.txt lists no images")
    missing = [p for p in test_files if not os.path.isfile(p)]
    if missing:
        raise UserError(f"{len(missing)} val images listed in val_annotations.txt are missing, "
                        f"e.g. {missing[0]}")
    splits = []
    for files, labels in ((train_files, train_labels), (test_files, test_labels)):
        images = np.stack([_decode(p, p, size=64) for p in _progress(files, "decode tin")])
        splits.append(Split(images, np.asarray(labels, dtype=np.int64)))
    return splits[0], splits[1], len(wnids)


@lru_cache(maxsize=1)  # decoded once per process; callers never modify the arrays
def _load_demo():
    """The embedded demo set: 500 train + 100 test real CIFAR-10 images per class (JPEG)."""
    data = {"train": ([], []), "test": ([], [])}
    with tarfile.open(DEMO_ARCHIVE) as tf:
        for m in sorted((m for m in tf if m.isfile()), key=lambda m: m.name):
            split, cls, _ = m.name.split("/")
            data[split][0].append(_decode(io.BytesIO(tf.extractfile(m).read()), m.name))
            data[split][1].append(CIFAR10_CLASSES.index(cls))
    train, test = (Split(np.stack(x), np.asarray(y, dtype=np.int64)) for x, y in data.values())
    return train, test, 10


def _progress(it, desc):
    from tqdm import tqdm
    return tqdm(it, desc=desc, leave=False, mininterval=1.0, disable=len(it) < 5000)


# ----------------------------------------------------------------------------- transforms
def pil_transform(kind, size, mean, std):
    """The reference per-image torchvision pipeline for one view kind.

    strong: RandomResizedCrop(0.2, 1), flip, colour jitter (0.4, 0.4, 0.4, 0.1) w.p. 0.8,
            grayscale w.p. 0.2, Gaussian blur sigma~U[0.1, 2] w.p. 0.5.
    weak:   RandomResizedCrop(0.2, 1), flip w.p. 0.9.
    linear: RandomResizedCrop (default scale 0.08-1), flip.   test: normalise only.
    """
    from torchvision import transforms as T
    norm = [T.ToTensor(), T.Normalize(mean, std)]
    if kind == "strong":
        aug = [T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(),
               T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
               T.RandomGrayscale(p=0.2),
               T.RandomApply([PILGaussianBlur(0.1, 2.0)], p=0.5)]
    elif kind == "weak":
        aug = [T.RandomResizedCrop(size, scale=(0.2, 1.0)), T.RandomHorizontalFlip(p=0.9)]
    elif kind == "linear":
        aug = [T.RandomResizedCrop(size), T.RandomHorizontalFlip()]
    elif kind == "test":
        aug = []
    else:
        raise ValueError(f"unknown view kind {kind}")
    return T.Compose(aug + norm)


class PILGaussianBlur:
    """PIL's Gaussian blur with radius (= sigma) drawn uniformly from [lo, hi], as in the
    reference (no kernel size: PIL approximates the Gaussian with repeated box blurs)."""

    def __init__(self, lo=0.1, hi=2.0):
        self.lo, self.hi = lo, hi

    def __call__(self, img):
        from PIL import ImageFilter
        sigma = self.lo + (self.hi - self.lo) * torch.rand(()).item()
        return img.filter(ImageFilter.GaussianBlur(radius=sigma))


class ViewDataset(torch.utils.data.Dataset):
    """Split -> (tuple of views, label): one view per transform in `transforms`."""

    def __init__(self, split, transforms):
        self.split, self.transforms = split, transforms

    def __len__(self):
        return len(self.split)

    def __getitem__(self, i):
        img = Image.fromarray(self.split.images[i])
        return tuple(t(img) for t in self.transforms), int(self.split.labels[i])


class ViewLoader:
    """Epoch iterator of (list of view batches on `device`, labels on `device`).

    aug='pil' runs the per-image torchvision pipeline in DataLoader workers; aug='gpu' keeps the
    uint8 images on `device` and produces each view with batched tensor ops (common.augment).
    Each epoch's order and augmentation stream is seeded from (seed, epoch, rank) alone, so a
    resumed run sees exactly the batches an uninterrupted one would.
    """

    def __init__(self, ds, split, kinds, batch_size, device, aug="pil", workers=2,
                 shuffle=True, drop_last=True, seed=0, rank=0, world=1):
        self.ds, self.split, self.kinds = ds, split, list(kinds)
        self.batch_size, self.device, self.aug = batch_size, torch.device(device), aug
        self.workers, self.shuffle, self.drop_last = workers, shuffle, drop_last
        self.seed, self.rank, self.world = seed, rank, world
        n = len(split) // world  # every rank sees the same number of samples
        self.per_rank = n
        if aug == "gpu":
            from common.augment import BatchAugment
            self.images = torch.from_numpy(split.images).to(self.device).permute(0, 3, 1, 2).contiguous()
            self.augs = [BatchAugment(k, ds.image_size, ds.mean, ds.std) for k in self.kinds]
        elif aug == "pil":
            self.transforms = [pil_transform(k, ds.image_size, ds.mean, ds.std) for k in self.kinds]
        else:
            raise UserError(f"unknown augmentation path '{aug}' (choose pil or gpu)")
        self.labels = torch.from_numpy(split.labels).to(self.device)

    def __len__(self):
        full, rest = divmod(self.per_rank, self.batch_size)
        return full + (0 if self.drop_last or not rest else 1)

    def _indices(self, epoch):
        g = torch.Generator().manual_seed(self.seed * 100003 + epoch)
        n = len(self.split)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        return order[self.rank: self.per_rank * self.world: self.world]

    def epoch(self, epoch):
        idx = self._indices(epoch)
        stream = self.seed * 100003 + epoch * 1009 + self.rank
        if self.aug == "gpu":
            yield from self._gpu_epoch(idx, stream)
            return
        sampler = idx.tolist()
        g = torch.Generator().manual_seed(stream)
        loader = torch.utils.data.DataLoader(
            ViewDataset(self.split, self.transforms), batch_size=self.batch_size,
            sampler=sampler, num_workers=self.workers, drop_last=self.drop_last,
            generator=g, pin_memory=self.device.type == "cuda",
            persistent_workers=False)
        if self.workers == 0:  # transforms draw from the global RNG in this process
            torch.manual_seed(stream)
        for views, labels in loader:
            yield ([v.to(self.device, non_blocking=True) for v in views],
                   labels.to(self.device, non_blocking=True))

    def _gpu_epoch(self, idx, stream):
        g = torch.Generator(device=self.device).manual_seed(stream)
        idx = idx.to(self.device)
        for b in range(len(self)):
            i = idx[b * self.batch_size:(b + 1) * self.batch_size]
            x = self.images[i]
            yield [aug(x, generator=g) for aug in self.augs], self.labels[i]


def normalized_batches(split, ds, device, batch_size=1024):
    """Test-transform batches (normalise only) straight from the uint8 arrays, in order."""
    mean = torch.tensor(ds.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(ds.std, device=device).view(1, 3, 1, 1)
    for s in range(0, len(split), batch_size):
        x = torch.from_numpy(split.images[s:s + batch_size]).to(device).permute(0, 3, 1, 2)
        yield (x.float() / 255 - mean) / std, torch.from_numpy(split.labels[s:s + batch_size]).to(device)
