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

Stopping and resuming. The checkpoint (every --save-every epochs, written atomically) holds all a
run needs to continue exactly: weights, EMA copies, queues, optimiser, position, random-generator
states, best kNN accuracy and the CSV rows so far. SIGTERM or Ctrl-C finishes the current step,
writes a checkpoint (mid-epoch if need be) and exits with 128 + the signal number (143, 130); a
second signal stops at once. Running the same command again resumes automatically (or --resume
PATH); on the CPU the result is bit-identical to an uninterrupted run. Resuming with settings that
change the model or its trajectory is refused, and so is overwriting a finished run's results
(--overwrite starts afresh). Exit status 2: bad input (one line on stderr); 3: a non-finite loss
stopped the run (the last good checkpoint is kept; --skip-nonfinite N skips such steps).
"""
import argparse
import os
import random
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from common import checkpoint, dist, knn, log, recipes, resume
from common.data import DATASETS, ViewLoader, load_dataset
from common.errors import UserError, one_line
from common.resume import Interrupted, NonFiniteLoss, StopRequest
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


class _HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the script's docstring as written and shows every flag's default that is not None
    (None means: the record's value, which the flag's help says)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "%(default)" not in text:
            text += " (default: %(default)s)"
        return text


def build_parser(add_args, doc):
    p = argparse.ArgumentParser(description=doc, formatter_class=_HelpFormatter)
    g = p.add_argument_group("common flags (every train script)")
    g.add_argument("--dataset", default="cifar10", help=f"one of {', '.join(DATASETS)}")
    g.add_argument("--data-dir", default="data", help="where data sets are (or are downloaded to)")
    g.add_argument("--no-download", action="store_true", help="never try to download CIFAR")
    g.add_argument("--no-verify", action="store_true",
                   help="skip torchvision's md5 check of CIFAR files (e.g. rebuilt in that layout)")
    g.add_argument("--epochs", type=int, default=200, help="pre-training epochs")
    g.add_argument("--batch-size", type=int, default=256, help="global batch size")
    g.add_argument("--lr", type=float, default=0.06, help="base lr, scaled by batch-size/256")
    g.add_argument("--warmup-epochs", type=int, default=5, help="linear lr warm-up from 0")
    g.add_argument("--weight-decay", type=float, default=5e-4, help="SGD weight decay (all parameters)")
    g.add_argument("--bn-splits", type=int, default=None,
                   help="split BatchNorm sub-batches per process (default: 8 divided by the number "
                        "of processes, at least 1: BatchNorm groups of batch/8 as in the reference)")
    g.add_argument("--sync-bn", choices=["heads", "all", "none"], default="heads",
                   help="under torchrun: BatchNorm layers whose statistics span the global batch "
                        "(heads: the MLP heads' BatchNorm1d; all: also the backbone, needs "
                        "--bn-splits 1; none: per-process statistics)")
    g.add_argument("--dist-timeout", type=float, default=30, metavar="MIN",
                   help="under torchrun: a collective waiting this long (a rank died) raises")
    g.add_argument("--width", type=int, default=64,
                   help="ResNet-18 base width (64 in every recipe; smaller for quick tests)")
    g.add_argument("--hidden-dim", type=int, default=2048, help="hidden width of the MLP heads")
    g.add_argument("--seed", type=int, default=1339, help="the published runs used 1339")
    g.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda, cuda:N")
    g.add_argument("--workers", type=int, default=2, help="DataLoader workers (pil path)")
    g.add_argument("--aug", choices=["pil", "gpu"], default=None,
                   help="per-image PIL pipeline or batched tensor pipeline (default: gpu on CUDA)")
    g.add_argument("--amp", action=argparse.BooleanOptionalAction, default=None,
                   help="bf16 autocast (default: on where the device supports bf16)")
    g.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="channels-last memory format for the network (default: on CUDA)")
    g.add_argument("--compile", action="store_true", help="torch.compile the model (off by default)")
    g.add_argument("--subset", type=int, default=None,
                   help="train on the first N training images, class-balanced")
    g.add_argument("--record", default=None, help="run name prefix (default: the recipe's)")
    g.add_argument("--results-dir", default="results", help="CSV logs and config")
    g.add_argument("--checkpoint-dir", default="checkpoints", help="checkpoints to resume from")
    g.add_argument("--save-every", type=int, default=1, help="checkpoint every N epochs")
    g.add_argument("--knn-every", type=int, default=1, help="kNN monitor every N epochs (0: last only)")
    g.add_argument("--knn-k", type=int, default=200, help="kNN monitor neighbours")
    g.add_argument("--knn-t", type=float, default=0.1, help="kNN monitor temperature")
    g.add_argument("--linear-epochs", type=int, default=100, help="0 skips linear evaluation")
    g.add_argument("--linear-cosine", action="store_true", help="linear eval: cosine lr 1")
    g.add_argument("--overwrite", action="store_true",
                   help="start afresh even if this run has a checkpoint or finished results")
    g.add_argument("--resume", default=None, metavar="PATH",
                   help="resume from this checkpoint (default: the run's own, when it exists)")
    g.add_argument("--skip-nonfinite", type=int, default=0, metavar="N",
                   help="skip up to N steps with a non-finite loss (each is undone: weights, EMA "
                        "copies, queues) instead of stopping the run")
    # for tests: behave as if SIGTERM arrived after epoch E, or after step S of epoch E
    g.add_argument("--stop-after", default=None, metavar="E[:S]", help=argparse.SUPPRESS)
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    algo = p.add_argument_group("algorithm flags")
    add_args(algo)
    p.set_defaults(algorithm_flags=sorted(a.dest for a in algo._group_actions))
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
    if getattr(args, "topk", None) is not None and queue is not None and args.topk > queue:
        raise UserError(f"--topk {args.topk} exceeds --queue-size {queue}")
    if args.skip_nonfinite < 0:
        raise UserError(f"--skip-nonfinite must be >= 0, got {args.skip_nonfinite}")
    args.stop_after = _parse_stop_after(args.stop_after)


def _parse_stop_after(value):
    if value is None or isinstance(value, (tuple, list)):
        return value
    try:
        epoch, _, step = str(value).partition(":")
        out = (int(epoch), int(step) if step else None)
    except ValueError:
        out = (0, None)
    if out[0] < 1 or (out[1] is not None and out[1] < 1):
        raise UserError(f"--stop-after takes EPOCH or EPOCH:STEP (positive integers), got {value}")
    return out


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
    """bf16 autocast where the hardware runs it natively (CUDA compute capability 8.0+ or ROCm, and
    CPUs with AVX-512 BF16/AMX)."""
    if device.type == "cuda":
        # not torch.cuda.is_bf16_supported(): it also says yes where bf16 is only emulated (V100,
        # T4), which is several times slower than fp32 there; and it asks about the current
        # device, not necessarily `device`
        return torch.version.hip is not None or torch.cuda.get_device_capability(device)[0] >= 8
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
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(2)
    except NonFiniteLoss as e:
        print(f"error: {one_line(e)}", file=sys.stderr)
        sys.exit(3)
    except Interrupted as e:
        print(f"stopped: {one_line(e)}", file=sys.stderr)
        sys.exit(128 + e.signum)  # the shell's convention for "killed by this signal"
    finally:
        dist.cleanup()  # leave torchrun's process group (no-op in one process)
    if dist.is_main():
        print(summary)






def run(Model, add_args, doc, script, argv=None):
    args = parse_args(add_args, doc, script, argv)
    device = dist.setup(pick_device(args.device), args.dist_timeout)  # torchrun: cuda:LOCAL_RANK
    args.device = str(device)
    args.aug = args.aug or ("gpu" if device.type == "cuda" else "pil")
    args.amp = default_amp(device) if args.amp is None else args.amp
    if args.channels_last is None:
        args.channels_last = device.type == "cuda"
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed shapes: let cuDNN pick its fastest kernels
    name = run_name(args)
    paths = {k: os.path.join(args.results_dir, f"{name}_{k}") for k in
             ("pretrain.csv", "linear.csv", "config.json")}
    ckpt_path = os.path.join(args.checkpoint_dir, f"{name}.pt")
    _check_writable(args.results_dir, args.checkpoint_dir)
    resume.check_results(paths["config.json"], args, ckpt_path, name)

    seed_everything(args.seed)
    ds = load_dataset(args.dataset, args.data_dir, download=not args.no_download,
                      subset=args.subset, verify=not args.no_verify)
    args.image_size, args.num_classes = ds.image_size, ds.num_classes
    world = dist.world_size()
    if args.bn_splits is None:
        args.bn_splits = max(1, 8 // world)
    if world > 1 and args.sync_bn == "all" and args.bn_splits != 1:
        raise UserError(f"--sync-bn all synchronises every BatchNorm: it needs --bn-splits 1, "
                        f"got {args.bn_splits}")
    if args.batch_size > len(ds.train):
        raise UserError(f"--batch-size {args.batch_size} is larger than the training set "
                        f"({len(ds.train)} images)")
    if args.batch_size % world or (args.batch_size // world) % args.bn_splits:
        raise UserError(f"--batch-size {args.batch_size} must split into {world} rank(s) x "
                        f"{args.bn_splits} BatchNorm splits")

    model = Model(args)
    if world > 1:
        dist.convert_sync_bn(model, args.sync_bn)
    model.to(device, memory_format=torch.channels_last if args.channels_last else torch.preserve_format)
    if args.compile:
        model.compile()  # in place: state_dict keys and model.backbone stay as they are
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=args.weight_decay)
    loader = ViewLoader(ds, ds.train, view_kinds(args), args.batch_size // world, device,
                        aug=args.aug, workers=args.workers, seed=args.seed,
                        rank=dist.rank(), world=world)
    steps = len(loader)
    base_lr = args.lr * args.batch_size / 256
    state = {"epoch": 0, "step": 0, "best_knn": 0.0, "knn": None, "skipped": 0, "partial": None,
             "train_seconds": 0.0}

    resume_from, why = dist.broadcast_object(resume.resume_source(args, ckpt_path))  # rank 0's file
    rows = rng = None
    if resume_from:
        ckpt = dist.broadcast_object(resume.load_or_error(resume_from) if dist.is_main() else None)
        if isinstance(ckpt, UserError):  # raised on every rank, so that none waits for the others
            raise ckpt
        resume.check_compatible(ckpt, args, resume_from)
        resume.load_training_state(ckpt, model, optimizer, resume_from)
        state.update({k: ckpt[k] for k in state if k in ckpt})
        rows = ckpt.get("rows")
        if state["step"]:  # mid-epoch: this rank's generators and sums of the epoch so far
            rng = resume.this_rank(ckpt.get("rng"))
            state["partial"] = resume.this_rank(state["partial"], fallback=state["partial"][0])
        at = f"step {state['step']}/{steps} of epoch {state['epoch'] + 1}" if state["step"] \
            else f"the end of epoch {state['epoch']}"
        log.say(f"resuming {name} from {resume_from} at {at} ({why})")
        del ckpt
    config = {k: v for k, v in vars(args).items()}
    config.update(run=name, finished=False, checkpoint=ckpt_path, command=" ".join(sys.argv))
    if dist.is_main():
        log.write_json(paths["config.json"], config)
        # the CSV holds exactly the rows the checkpoint has seen (older checkpoints: the file's)
        pre = log.CSVLog(paths["pretrain.csv"], log.PRETRAIN_COLUMNS,
                         keep_until=state["epoch"] if resume_from else -1, rows=rows)
    if not resume_from:
        dist.broadcast_buffers(model)
        acc = knn.knn_top1(model.backbone, ds, device, args.knn_k, args.knn_t, args.amp)
        state.update(knn=acc)
        if dist.is_main():
            pre.write(epoch=0, knn_top1=acc, best_knn_top1=None)
            log.say(f"{name}: epoch 0 (random init) kNN top-1 {acc:.2f}")
    saved = {"at": (state["epoch"], state["step"]) if resume_from else None}

    def save(epoch, step=0, partial=None):
        """Checkpoint after `epoch` whole epochs and `step` steps of the next one."""
        rngs = resume.gather_objects(checkpoint.rng_state())  # every rank's, for a mid-epoch resume
        partials = resume.gather_objects(partial)
        if not dist.all_true(resume.all_finite(model)):
            raise NonFiniteLoss(f"non-finite weights at epoch {epoch + (1 if step else 0)}"
                                + (f" step {step}" if step else "") + " (loss still finite); "
                                + resume.last_good(ckpt_path, saved["at"], steps))
        error = None
        if dist.is_main():
            try:
                checkpoint.save(ckpt_path, {
                    "format": "mini-ssl/1", "algorithm": args.algorithm, "args": config,
                    "epoch": epoch, "step": step, "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(), "backbone": model.backbone.state_dict(),
                    "best_knn": state["best_knn"], "knn": state["knn"],
                    "skipped": state["skipped"], "partial": partials if partial else None,
                    "rows": pre.rows, "rng": rngs,
                    "train_seconds": state["train_seconds"] + time.time() - t_start})
            except UserError as e:  # disk full: every rank stops, none waits for rank 0
                error = e
        if not dist.all_true(error is None):
            raise error or UserError(f"rank 0 could not write {ckpt_path}")
        saved["at"] = (epoch, step)

    ddp = dist.wrap(model, device)  # the same module under DDP; `model` stays the bare one
    stop = StopRequest(args.stop_after)
    t_start = time.time()
    with stop:  # SIGTERM/SIGINT from here on: checkpoint after the current step, then exit
        for epoch in range(state["epoch"] + 1, args.epochs + 1):
            # everything random in this epoch follows from (seed, epoch, rank): resume is exact
            seed_everything(args.seed * 1000 + epoch * 7 + dist.rank())
            model.train()
            first, part = state["step"], state["partial"] or {}
            state["step"], state["partial"] = 0, None
            batches = loader.epoch(epoch - 1)
            if first:  # mid-epoch resume: replay the epoch's data stream, then restore the
                for _ in range(first):  # generators as they were after step `first`
                    next(batches)
                if rng is not None:
                    checkpoint.set_rng_state(rng)
            t0 = time.time() - part.get("seconds", 0.0)
            loss_sum = torch.tensor(part.get("loss_sum", 0.0), device=device)
            # summed on the device: a float() per step would wait for the step to finish
            purity_sum = torch.tensor(part.get("purity_sum", 0.0), device=device)
            purity_n = part.get("purity_n", 0)
            n, lr = part.get("n", 0), part.get("lr")
            bar = tqdm(total=steps, initial=first, desc=f"epoch {epoch}/{args.epochs}", leave=False,
                       mininterval=1.0, disable=args.no_progress or not dist.is_main())
            for i in range(first, steps):
                views, labels = next(batches)
                step = (epoch - 1) * steps + i
                lr = lr_at(step, args.epochs * steps, args.warmup_epochs * steps, base_lr)
                for g in optimizer.param_groups:
                    g["lr"] = lr
                if args.channels_last:
                    views = [v.contiguous(memory_format=torch.channels_last) for v in views]
                # a skipped step must leave no trace: forward also moves EMA copies and queues
                before = resume.snapshot(model) if args.skip_nonfinite else None
                with torch.autocast(device.type, torch.bfloat16, enabled=args.amp):
                    out = ddp(views, labels)
                loss, purity = out if isinstance(out, tuple) else (out, None)
                if not dist.all_true(torch.isfinite(loss).item()):
                    state["skipped"] += 1
                    if state["skipped"] > args.skip_nonfinite:
                        raise NonFiniteLoss(
                            f"non-finite loss ({loss.item()}) at epoch {epoch} step {i + 1}/{steps}; "
                            + resume.last_good(ckpt_path, saved["at"], steps))
                    model.load_state_dict(before)
                    optimizer.zero_grad(set_to_none=True)
                    log.say(f"skipped step {i + 1} of epoch {epoch}: non-finite loss "
                         f"({state['skipped']} of --skip-nonfinite {args.skip_nonfinite})")
                else:
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    loss_sum += loss.detach()
                    n += 1
                    if purity is not None:
                        purity_sum += purity.detach() if torch.is_tensor(purity) else purity
                        purity_n += 1
                bar.update()
                stop.check(epoch, i + 1)
                if i + 1 < steps and not dist.all_true(not stop.requested):
                    save(epoch - 1, i + 1, {"loss_sum": loss_sum.item(), "n": n, "lr": lr,
                                            "purity_sum": purity_sum.item(), "purity_n": purity_n,
                                            "seconds": time.time() - t0})
                    raise Interrupted(f"{stop.name} after step {i + 1}/{steps} of epoch {epoch}; "
                                      f"checkpoint {ckpt_path} written: run the same command "
                                      f"again to resume", stop.signum)
            bar.close()
            seconds = time.time() - t0
            mean_loss = dist.mean(loss_sum.item() / max(n, 1))  # over ranks: the global batch's loss
            purity_mean = dist.mean(purity_sum.item() / purity_n) if purity_n else None
            dist.broadcast_buffers(model)  # evaluations below run identically on every rank
            if args.knn_every and epoch % args.knn_every == 0 or epoch == args.epochs:
                acc = knn.knn_top1(model.backbone, ds, device, args.knn_k, args.knn_t, args.amp)
                state["knn"], state["best_knn"] = acc, max(state["best_knn"], acc)
            else:
                acc = None
            if dist.is_main():
                pre.write(epoch=epoch, loss=mean_loss,
                          purity=purity_mean, knn_top1=acc,
                          best_knn_top1=state["best_knn"] if acc is not None else None, lr=lr,
                          epoch_seconds=seconds)
                if args.no_progress is False:
                    tqdm.write(f"epoch {epoch}/{args.epochs} loss {mean_loss:.4f} "
                               + (f"kNN {acc:.2f} (best {state['best_knn']:.2f}) " if acc is not None else "")
                               + f"{seconds:.1f}s", file=sys.stderr)
            state["epoch"] = epoch
            stop.check(epoch)
            stopping = not dist.all_true(not stop.requested)
            if epoch % args.save_every == 0 or epoch == args.epochs or stopping:
                save(epoch)
            if stopping:
                raise Interrupted(f"{stop.name} after epoch {epoch}; checkpoint {ckpt_path} "
                                  f"written: run the same command again to resume", stop.signum)
    train_seconds = state["train_seconds"] + time.time() - t_start

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


def view_kinds(args):
    return ["strong"] + ["weak" if args.weak else "strong"] * (args.views - 1)


def _check_writable(*dirs):
    """Create `dirs` and prove they take a file (os.access says yes to root on a read-only
    mount)."""
    import tempfile
    for d in dirs:
        try:
            os.makedirs(d, exist_ok=True)
            fd, probe = tempfile.mkstemp(dir=d, prefix=".write-test-")
            os.close(fd)
            os.remove(probe)
        except OSError as e:
            raise UserError(f"cannot write to directory {d}: {e.strerror or e}") from None
