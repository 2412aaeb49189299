"""Linear evaluation of a frozen backbone (reference protocol), and its command line:

    python -m common.linear --checkpoint checkpoints/cifar10_1_seed1339.pt --dataset cifar10

One Linear 512 -> classes (weights N(0, 0.01), bias 0) on the frozen backbone in eval mode, SGD
with Nesterov momentum 0.9, no weight decay, batch 256, lr 30 divided by 10 at 60% and 80% of the
epochs (epochs 60 and 80 of 100), or lr 1 with a per-iteration cosine (`--cosine`). Training
views: RandomResizedCrop(size, scale 0.08-1) + flip; test: normalise only. Reports the best
top-1 and top-5 over the epochs.
"""
import argparse
import math
import os
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
from tqdm import tqdm

from common import checkpoint, log
from common.data import DATASETS, ViewLoader, load_dataset
from common.errors import UserError


def linear_eval(backbone, ds, device, epochs=100, batch_size=256, lr=None, cosine=False,
                aug="pil", workers=2, seed=0, amp=False, csv_path=None, progress=True):
    """Train a linear classifier on frozen features; returns (best top-1, best top-5) in %."""
    device = torch.device(device)
    backbone.eval()
    for p in backbone.parameters():
        p.requires_grad_(False)
    fc = nn.Linear(backbone.feature_dim, ds.num_classes).to(device)
    nn.init.normal_(fc.weight, 0.0, 0.01)
    nn.init.zeros_(fc.bias)
    lr = lr if lr is not None else (1.0 if cosine else 30.0)
    opt = torch.optim.SGD(fc.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=0)
    loader = ViewLoader(ds, ds.train, ["linear"], batch_size, device, aug=aug, workers=workers,
                        shuffle=True, drop_last=False, seed=seed)
    total = epochs * len(loader)
    # the backbone is frozen and the test transform deterministic: test features once
    test_feats, test_labels = _features(backbone, ds, device, amp)
    out = log.CSVLog(csv_path, log.LINEAR_COLUMNS) if csv_path else None
    best1 = best5 = 0.0
    step = 0
    bar = tqdm(range(epochs), desc="linear", disable=not progress, mininterval=1.0)
    for epoch in bar:
        for views, y in loader.epoch(epoch):
            for g in opt.param_groups:
                g["lr"] = _lr(lr, epoch, epochs, step, total, cosine)
            with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=amp):
                f = backbone(views[0])
            loss = F.cross_entropy(fc(f.float()), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
        with torch.no_grad():
            top5 = fc(test_feats).topk(min(5, ds.num_classes), dim=1).indices
        hit = top5 == test_labels[:, None]
        top1, top5 = hit[:, 0].float().mean().item() * 100, hit.any(1).float().mean().item() * 100
        best1, best5 = max(best1, top1), max(best5, top5)
        if out:
            out.write(epoch=epoch + 1, top1=top1, top5=top5, best_top1=best1)
        bar.set_postfix(top1=f"{top1:.2f}", best=f"{best1:.2f}")
    return best1, best5


def _lr(base, epoch, epochs, step, total, cosine):
    if cosine:
        return base * 0.5 * (1 + math.cos(math.pi * step / total))
    return base * 0.1 ** sum(epoch >= m for m in (round(0.6 * epochs), round(0.8 * epochs)))


@torch.no_grad()
def _features(backbone, ds, device, amp):
    from common.data import normalized_batches
    feats, labels = [], []
    for x, y in normalized_batches(ds.test, ds, device):
        with torch.autocast(device.type, torch.bfloat16, enabled=amp):
            feats.append(backbone(x).float())
        labels.append(y)
    return torch.cat(feats), torch.cat(labels)


def main(argv=None):
    from common.train import pick_device, default_amp
    p = argparse.ArgumentParser(prog="python -m common.linear", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="Mini-SSL checkpoint or a reference one")
    p.add_argument("--dataset", choices=DATASETS, help="default: the checkpoint's data set")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--epochs", type=int, default=100)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, help="default 30 (step) or 1 (--cosine)")
    p.add_argument("--cosine", action="store_true", help="per-iteration cosine decay (lr 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--aug", choices=["pil", "gpu"], help="default: gpu on CUDA, else pil")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=1339)
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--results-dir", default="results")
    p.add_argument("--no-download", action="store_true")
    args = p.parse_args(argv)
    try:
        ckpt = checkpoint.load(args.checkpoint)
        saved = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
        dataset = args.dataset or saved.get("dataset")
        if dataset is None:
            raise UserError("--dataset is required for a checkpoint that does not name its data set")
        if args.epochs < 1 or args.batch_size < 1:
            raise UserError("--epochs and --batch-size must be positive")
        device = pick_device(args.device)
        torch.manual_seed(args.seed)
        ds = load_dataset(dataset, args.data_dir, download=not args.no_download)
        backbone = _backbone_from(ckpt, ds, args.checkpoint).to(device)
        amp = default_amp(device) if args.amp is None else args.amp
        os.makedirs(args.results_dir, exist_ok=True)
        name = os.path.splitext(os.path.basename(args.checkpoint))[0]
        # not <run>_linear.csv: that is the training run's own log, which this must not replace
        csv_path = os.path.join(args.results_dir, f"{name}_linear-eval.csv")
        top1, top5 = linear_eval(backbone, ds, device, args.epochs, args.batch_size, args.lr,
                                 args.cosine, args.aug or ("gpu" if device.type == "cuda" else "pil"),
                                 args.workers, args.seed, amp, csv_path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{name}: linear top-1 {top1:.2f} top-5 {top5:.2f} ({args.epochs} epochs); {csv_path}")
    return 0


def _backbone_from(ckpt, ds, path):
    from common.nets import resnet18
    state = checkpoint.backbone_state(ckpt, path)
    # the width is in the weights (reference checkpoints carry no args; 64 in every recipe)
    conv1 = state.get("conv1.weight")
    net = resnet18(ds.image_size, bn_splits=1, width=conv1.shape[0] if conv1 is not None else 64)
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise UserError(f"{path} does not fit a ResNet-18 for {ds.name} "
                        f"({ds.image_size}-px): {str(e).splitlines()[0]}") from None
    return net


if __name__ == "__main__":
    sys.exit(main())
