"""The one training loop every train_*.py script runs, and the flags they all share.

A script provides a `Model(args)` (an nn.Module whose forward(views, labels) returns the loss, or
(loss, purity), and whose `backbone` attribute is the online ResNet-18), an `add_args(parser)`
for its own flags, and calls `main(Model, add_args, __doc__, __file__)`.

One run = pre-training with the kNN monitor every epoch, then linear evaluation of the final
backbone. Outputs, in --results-dir, named <record>_seed<seed>:
  *_pretrain.csv  epoch, loss, purity, knn_top1, best_knn_top1, lr, epoch_seconds (epoch 0 is the
                  randomly initialised network)
  *_linear.csv    epoch, top1, top5, best_top1
  *_config.json   every setting of the run, and its final numbers once finished
and a checkpoint <checkpoint-dir>/<record>_seed<seed>.pt from which the run resumes.
"""
import argparse
import os
import random
import signal
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from common import checkpoint, dist, knn, log, recipes
from common.data import DATASETS, ViewLoader, load_dataset
from common.errors import UserError
from common.linear import linear_eval
from common.schedule import lr_at

# flags whose defaults come from the record (recipes.csv column in brackets)
RECIPE_FLAGS = {
    "temperature": (float, "loss temperature [temperature]"),
    "momentum": (float, "EMA momentum of the target network [momentum]"),
    "queue_size": (int, "queue length K [queue_size]"),
    "topk": (int, "neighbours retrieved per key [topk]"),
    "proj_dim": (int, "projection output dimension [proj_dim]"),
}
COLUMN = {"weak": "weak_second_view"}
# settings that must agree between a checkpoint and the run resuming from it
RESUME_KEYS = ("algorithm", "dataset", "batch_size", "queue_size", "topk", "proj_dim", "views",
               "subset", "epochs", "seed", "width", "hidden_dim")


def recipe_flags(parser, *names):
    """Add the record-driven flags `names` (default: the record's value). 'symmetric' and 'weak'
    become --x/--no-x switches."""
    for name in names:
        if name in ("symmetric", "weak"):
            what = {"symmetric": "symmetric loss (L(v1,v2) + L(v2,v1)) / 2",
                    "weak": "weak augmentation for view 2 (and 3)"}[name]
            parser.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                                help=f"{what} (default: the record's [{COLUMN.get(name, name)}])")
        else:
            kind, what = RECIPE_FLAGS[name]
            parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None,
                                help=f"{what} (default: the record's value)")


def build_parser(add_args, doc):
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("common flags (every train script)")
    g.add_argument("--dataset", default="cifar10", help=f"one of {', '.join(DATASETS)}")
    g.add_argument("--data-dir", default="data", help="where data sets are (or are downloaded to)")
    g.add_argument("--no-download", action="store_true", help="never try to download CIFAR")
    g.add_argument("--epochs", type=int, default=200)
    g.add_argument("--batch-size", type=int, default=256, help="global batch size")
    g.add_argument("--lr", type=float, default=0.06, help="base lr, scaled by batch-size/256")
    g.add_argument("--warmup-epochs", type=int, default=5)
    g.add_argument("--weight-decay", type=float, default=5e-4)
    g.add_argument("--bn-splits", type=int, default=8, help="split BatchNorm sub-batches")
    g.add_argument("--width", type=int, default=64,
                   help="ResNet-18 base width (64 in every recipe; smaller for quick tests)")
    g.add_argument("--hidden-dim", type=int, default=2048, help="hidden width of the MLP heads")
    g.add_argument("--seed", type=int, default=1339)
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    g.add_argument("--workers", type=int, default=2, help="DataLoader workers (pil path)")
    g.add_argument("--aug", choices=["pil", "gpu"], default=None,
                   help="per-image PIL pipeline or batched tensor pipeline (default: gpu on CUDA)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on where the device supports bf16)")
    g.add_argument("--subset", type=int, default=None,
                   help="train on the first N training images, class-balanced")
    g.add_argument("--record", default=None, help="run name prefix (default: the recipe's)")
    g.add_argument("--results-dir", default="results")
    g.add_argument("--checkpoint-dir", default="checkpoints")
    g.add_argument("--save-every", type=int, default=1, help="checkpoint every N epochs")
    g.add_argument("--knn-every", type=int, default=1, help="kNN monitor every N epochs (0: last only)")
    g.add_argument("--knn-k", type=int, default=200)
    g.add_argument("--knn-t", type=float, default=0.1)
    g.add_argument("--linear-epochs", type=int, default=100, help="0 skips linear evaluation")
    g.add_argument("--linear-cosine", action="store_true", help="linear eval: cosine lr 1")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh even if this run has a checkpoint or finished results")
    g.add_argument("--resume", default=None, metavar="PATH",
                   help="resume from this checkpoint (default: the run's own, when it exists)")
    g.add_argument("--skip-nonfinite", type=int, default=0, metavar="N",
                   help="skip up to N steps with a non-finite loss instead of stopping")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_args(p.add_argument_group("algorithm flags"))
    return p


def parse_args(add_args, doc, script, argv=None):
    args = build_parser(add_args, doc).parse_args(argv)
    args.script = os.path.basename(script)
    if args.dataset not in DATASETS:
        raise UserError(f"unknown dataset '{args.dataset}' (choose from {', '.join(DATASETS)})")
    # per-dataset defaults from the record; explicit flags win
    given = {COLUMN.get(k, k): v for k, v in vars(args).items() if k in RECIPE_FLAGS or k in COLUMN
             or k == "symmetric"}
    row = recipes.find(args.script, args.dataset, given)
    args.algorithm = row["algorithm"]
    args.record = args.record or row["record"]
    for k in list(RECIPE_FLAGS) + ["symmetric", "weak"]:
        if hasattr(args, k) and getattr(args, k) is None:
            setattr(args, k, row[COLUMN.get(k, k)])
    args.views = row["views"]
    args.published_knn200, args.published_linear = row["published_knn200"], row["published_linear"]
    validate(args)
    return args


def validate(args):
    def positive(name, value, kind="integer"):
        if value is not None and not value > 0:
            raise UserError(f"--{name} must be a positive {kind}, got {value}")
    positive("epochs", args.epochs)
    positive("batch-size", args.batch_size)
    positive("lr", args.lr, "number")
    positive("save-every", args.save_every)
    positive("bn-splits", args.bn_splits)
    positive("width", args.width)
    positive("hidden-dim", args.hidden_dim)
    positive("knn-k", args.knn_k)
    positive("knn-t", args.knn_t, "number")
    for name in ("temperature", "momentum", "queue_size", "topk", "proj_dim"):
        positive(name.replace("_", "-"), getattr(args, name, None), "number")
    if getattr(args, "momentum", None) is not None and args.momentum >= 1:
        raise UserError(f"--momentum must be below 1, got {args.momentum}")
    if args.subset is not None:
        positive("subset", args.subset)
    if args.linear_epochs < 0 or args.knn_every < 0 or args.warmup_epochs < 0:
        raise UserError("--linear-epochs, --knn-every and --warmup-epochs must be >= 0")
    if "/" in args.record or args.record.startswith("."):
        raise UserError(f"--record '{args.record}' must be a plain name")
    queue = getattr(args, "queue_size", None)
    if queue is not None and queue < args.batch_size:
        raise UserError(f"--queue-size {queue} is smaller than one batch ({args.batch_size})")


def pick_device(name):
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}' (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


def default_amp(device):
    """bf16 autocast where the hardware runs it natively (CUDA, and CPUs with AVX-512 BF16/AMX)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def run_name(args):
    return f"{args.record}_seed{args.seed}"


def main(Model, add_args, doc, script, argv=None):
    """Entry point of a train script: parse, train, evaluate; bad input -> one line, exit 2."""
    try:
        summary = run(Model, add_args, doc, script, argv)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLoss as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(3)
    if dist.is_main():
        print(summary)


class NonFiniteLoss(Exception):
    pass


def run(Model, add_args, doc, script, argv=None):
    args = parse_args(add_args, doc, script, argv)
    device = pick_device(args.device)
    args.device = str(device)
    args.aug = args.aug or ("gpu" if device.type == "cuda" else "pil")
    args.amp = default_amp(device) if args.amp is None else args.amp
    name = run_name(args)
    paths = {k: os.path.join(args.results_dir, f"{name}_{k}") for k in
             ("pretrain.csv", "linear.csv", "config.json")}
    ckpt_path = os.path.join(args.checkpoint_dir, f"{name}.pt")
    _check_writable(args.results_dir, args.checkpoint_dir)
    if os.path.exists(paths["config.json"]) and not args.overwrite:
        if log.read_json(paths["config.json"]).get("finished"):
            raise UserError(f"run {name} has finished results in {args.results_dir}; "
                            f"pass --overwrite to run it again, or choose another --seed/--record")

    seed_everything(args.seed)
    ds = load_dataset(args.dataset, args.data_dir, download=not args.no_download,
                      subset=args.subset)
    args.image_size, args.num_classes = ds.image_size, ds.num_classes
    world = dist.world_size()
    if args.batch_size > len(ds.train):
        raise UserError(f"--batch-size {args.batch_size} is larger than the training set "
                        f"({len(ds.train)} images)")
    if args.batch_size % world or (args.batch_size // world) % args.bn_splits:
        raise UserError(f"--batch-size {args.batch_size} must split into {world} rank(s) x "
                        f"{args.bn_splits} BatchNorm splits")

    model = Model(args).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    loader = ViewLoader(ds, ds.train, _view_kinds(args), args.batch_size // world, device,
                        aug=args.aug, workers=args.workers, seed=args.seed,
                        rank=dist.rank(), world=world)
    steps = len(loader)
    base_lr = args.lr * args.batch_size / 256
    state = {"epoch": 0, "best_knn": 0.0, "knn": None}

    resume_from = args.resume or (ckpt_path if os.path.exists(ckpt_path) and not args.overwrite else None)
    if resume_from:
        ckpt = checkpoint.load(resume_from)
        _check_compatible(ckpt, args, resume_from)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        state.update(epoch=ckpt["epoch"], best_knn=ckpt["best_knn"], knn=ckpt.get("knn"))
        _say(f"resuming {name} from {resume_from} after epoch {state['epoch']}")
    config = {k: v for k, v in vars(args).items()}
    config.update(run=name, finished=False, checkpoint=ckpt_path, command=" ".join(sys.argv))
    if dist.is_main():
        log.write_json(paths["config.json"], config)
        pre = log.CSVLog(paths["pretrain.csv"], log.PRETRAIN_COLUMNS,
                         keep_until=state["epoch"] if resume_from else -1)
    if state["epoch"] == 0:
        acc = knn.knn_top1(model.backbone, ds, device, args.knn_k, args.knn_t, args.amp)
        state.update(knn=acc)
        if dist.is_main():
            pre.write(epoch=0, knn_top1=acc, best_knn_top1=None)
            _say(f"{name}: epoch 0 (random init) kNN top-1 {acc:.2f}")

    def save(epoch):
        if dist.is_main():
            checkpoint.save(ckpt_path, {
                "format": "mini-ssl/1", "algorithm": args.algorithm, "args": config,
                "epoch": epoch, "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "backbone": model.backbone.state_dict(), "best_knn": state["best_knn"],
                "knn": state["knn"]})

    skipped = 0
    t_start = time.time()
    for epoch in range(state["epoch"] + 1, args.epochs + 1):
        # everything random in this epoch follows from (seed, epoch, rank): resume is exact
        seed_everything(args.seed * 1000 + epoch * 7 + dist.rank())
        model.train()
        t0 = time.time()
        loss_sum = torch.zeros((), device=device)
        purity_sum, purity_n, n = 0.0, 0, 0
        bar = tqdm(loader.epoch(epoch - 1), total=steps, desc=f"epoch {epoch}/{args.epochs}",
                   leave=False, mininterval=1.0, disable=args.no_progress or not dist.is_main())
        for i, (views, labels) in enumerate(bar):
            step = (epoch - 1) * steps + i
            lr = lr_at(step, args.epochs * steps, args.warmup_epochs * steps, base_lr)
            for g in optimizer.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, torch.bfloat16, enabled=args.amp):
                out = model(views, labels)
            loss, purity = out if isinstance(out, tuple) else (out, None)
            if not torch.isfinite(loss).item():
                skipped += 1
                if skipped > args.skip_nonfinite:
                    raise NonFiniteLoss(
                        f"non-finite loss ({loss.item()}) at epoch {epoch} step {i + 1}; "
                        f"the last good checkpoint is {ckpt_path if os.path.exists(ckpt_path) else 'absent'}")
                optimizer.zero_grad(set_to_none=True)
                continue
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_sum += loss.detach()
            n += 1
            if purity is not None:
                purity_sum += float(purity)
                purity_n += 1
        seconds = time.time() - t0
        mean_loss = loss_sum.item() / max(n, 1)
        if args.knn_every and epoch % args.knn_every == 0 or epoch == args.epochs:
            acc = knn.knn_top1(model.backbone, ds, device, args.knn_k, args.knn_t, args.amp)
            state["knn"], state["best_knn"] = acc, max(state["best_knn"], acc)
        else:
            acc = None
        if dist.is_main():
            pre.write(epoch=epoch, loss=mean_loss,
                      purity=purity_sum / purity_n if purity_n else None, knn_top1=acc,
                      best_knn_top1=state["best_knn"] if acc is not None else None, lr=lr,
                      epoch_seconds=seconds)
            if args.no_progress is False:
                tqdm.write(f"epoch {epoch}/{args.epochs} loss {mean_loss:.4f} "
                           + (f"kNN {acc:.2f} (best {state['best_knn']:.2f}) " if acc is not None else "")
                           + f"{seconds:.1f}s", file=sys.stderr)
        state["epoch"] = epoch
        if epoch % args.save_every == 0 or epoch == args.epochs:
            save(epoch)
    train_seconds = time.time() - t_start

    top1 = top5 = None
    if args.linear_epochs:
        seed_everything(args.seed)
        top1, top5 = linear_eval(model.backbone, ds, device, args.linear_epochs, 256,
                                 cosine=args.linear_cosine, aug=args.aug, workers=args.workers,
                                 seed=args.seed, amp=args.amp,
                                 csv_path=paths["linear.csv"] if dist.is_main() else None,
                                 progress=not args.no_progress and dist.is_main())
    config.update(finished=True, final_knn_top1=state["knn"], best_knn_top1=state["best_knn"],
                  linear_top1=top1, linear_top5=top5, train_seconds=round(train_seconds, 1))
    if dist.is_main():
        log.write_json(paths["config.json"], config)
    lin = f"linear top-1 {top1:.2f} top-5 {top5:.2f}" if top1 is not None else "linear skipped"
    return (f"{name} ({args.algorithm}, {args.dataset}, {args.epochs} epochs): kNN top-1 "
            f"{state['knn']:.2f} (best {state['best_knn']:.2f}), {lin}; "
            f"{train_seconds:.0f}s pre-training; results in {args.results_dir}/{name}_*")


def _view_kinds(args):
    return ["strong"] + ["weak" if args.weak else "strong"] * (args.views - 1)


def _check_writable(*dirs):
    for d in dirs:
        try:
            os.makedirs(d, exist_ok=True)
        except OSError as e:
            raise UserError(f"cannot create directory {d}: {e.strerror}") from None
        if not os.access(d, os.W_OK):
            raise UserError(f"directory {d} is not writable")


def _check_compatible(ckpt, args, path):
    if not isinstance(ckpt, dict) or ckpt.get("format") != "mini-ssl/1":
        raise UserError(f"{path} is not a Mini-SSL training checkpoint")
    saved = ckpt["args"]
    diff = [f"{k}: checkpoint {saved.get(k)!r} vs now {getattr(args, k, None)!r}"
            for k in RESUME_KEYS if saved.get(k) != getattr(args, k, None)]
    if diff:
        raise UserError(f"cannot resume from {path}: " + "; ".join(diff)
                        + " (pass --overwrite to start afresh)")


def _say(msg):
    if dist.is_main():
        print(msg, file=sys.stderr, flush=True)
