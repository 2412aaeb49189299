"""Weighted k-nearest-neighbour monitor (InstDisc-style) on frozen backbone features."""
import torch
import torch.nn.functional as F

from common.data import normalized_batches


@torch.no_grad()
def extract(backbone, split, ds, device, batch_size=1024, amp=False):
    """L2-normalised features of a whole split (test transform), and its labels, on `device`."""
    was_training = backbone.training
    backbone.eval()
    feats, labels = [], []
    for x, y in normalized_batches(split, ds, device, batch_size):
        with torch.autocast(torch.device(device).type, torch.bfloat16, enabled=amp):
            f = backbone(x)
        feats.append(F.normalize(f.float(), dim=1))
        labels.append(y)
    backbone.train(was_training)
    return torch.cat(feats), torch.cat(labels)


@torch.no_grad()
def knn_predict(query, bank, bank_labels, num_classes, k=200, t=0.1, chunk=1024):
    """Predicted class of each query: vote of its k most cosine-similar bank entries, each
    weighted by exp(sim / t). `query` and `bank` are L2-normalised rows; processed in chunks of
    queries so memory stays bounded for large banks."""
    k = min(k, bank.shape[0])
    preds = []
    for q in query.split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)
        votes = torch.zeros(q.shape[0], num_classes, device=q.device)
        votes.scatter_add_(1, bank_labels[idx], (sim / t).exp())
        preds.append(votes.argmax(1))
    return torch.cat(preds)


def knn_top1(backbone, ds, device, k=200, t=0.1, amp=False):
    """kNN top-1 (%) of the test split against the training split."""
    bank, bank_labels = extract(backbone, ds.train, ds, device, amp=amp)
    query, labels = extract(backbone, ds.test, ds, device, amp=amp)
    pred = knn_predict(query, bank, bank_labels, ds.num_classes, k, t)
    return (pred == labels).float().mean().item() * 100


def main(argv=None):
    """200-NN top-1 of a checkpoint's backbone, nothing trained; our checkpoints and the
    reference's released ones are both accepted (told apart automatically):

        python -m common.knn --checkpoint checkpoints/cifar10_1_seed1339.pt
        python -m common.knn --checkpoint moco-cifar10.pth --dataset cifar10

    The max-pool (64-px data) follows the data set, as in the reference."""
    import argparse
    import os
    import sys

    from common import checkpoint
    from common.data import DATASETS, load_dataset
    from common.errors import UserError
    from common.linear import _backbone_from
    from common.train import default_amp, pick_device
    p = argparse.ArgumentParser(prog="python -m common.knn", description=main.__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="Mini-SSL checkpoint or a reference one")
    p.add_argument("--dataset", choices=DATASETS, help="default: the checkpoint's data set")
    p.add_argument("--data-dir", default="data")
    p.add_argument("--subset", type=int, help="bank of the first N training images, class-balanced")
    p.add_argument("--k", type=int, default=200, help="neighbours")
    p.add_argument("--t", type=float, default=0.1, help="temperature of the exp(sim / t) weights")
    p.add_argument("--device", default="auto")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--no-download", action="store_true")
    args = p.parse_args(argv)
    try:
        if args.k < 1 or args.t <= 0:
            raise UserError("--k and --t must be positive")
        ckpt = checkpoint.load(args.checkpoint)
        saved = ckpt.get("args", {}) if isinstance(ckpt, dict) else {}
        dataset = args.dataset or saved.get("dataset")
        if dataset is None:
            raise UserError("--dataset is required for a checkpoint that does not name its data set")
        checkpoint.backbone_state(ckpt, args.checkpoint)  # a wrong file fails before the data loads
        device = pick_device(args.device)
        ds = load_dataset(dataset, args.data_dir, download=not args.no_download,
                          subset=args.subset)
        backbone = _backbone_from(ckpt, ds, args.checkpoint).to(device)
        amp = default_amp(device) if args.amp is None else args.amp
        acc = knn_top1(backbone, ds, device, args.k, args.t, amp)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    name = os.path.basename(args.checkpoint)
    print(f"{name}: {args.k}-NN top-1 {acc:.2f} on {dataset} "
          f"({len(ds.train)} train / {len(ds.test)} test images)")
    return 0


if __name__ == "__main__":
    import sys
    sys.exit(main())
