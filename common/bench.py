"""Throughput on this machine: augmentation, training step, and whole epochs, slow vs fast path.

    python -m common.bench             # CPU: one thread (the targets are stated for one thread)
    python -m common.bench --quick     # smaller and fewer repeats
    python -m common.bench --json      # one JSON object (keys include aug_ratio and amp_ratio)
    python -m common.bench --device cuda --threads 0

(a) views/s of two strong views per image: the per-image PIL pipeline (single process) and the
    batched tensor pipeline (common.augment) at the same batch size; aug_ratio = batched / PIL.
(b) training images/s of one MoCoV2 step (two views, ResNet-18 width --width) in fp32 and under
    bf16 autocast; amp_ratio = bf16 / fp32.
(c) seconds per pre-training epoch of train_moco.py and train_simclr.py on demo --subset, with
    the slow path (--aug pil --no-amp) and the fast one (--aug gpu --amp): the epoch_seconds the
    training loop records (the kNN monitor is stubbed out: it is not part of the epoch time).
Every figure is the best of --repeats timings, so load from other processes inflates it less.
"""
import argparse
import json
import os
import sys
import tempfile
import time
from unittest import mock

import torch


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn, repeats, device):
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        _sync(device)
        t = time.perf_counter()
        fn()
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return best


def bench_aug(ds, device, batch, repeats):
    from PIL import Image
    from common.augment import BatchAugment
    from common.data import pil_transform
    images = ds.train.images[:batch]
    pil = pil_transform("strong", ds.image_size, ds.mean, ds.std)
    pil_images = [Image.fromarray(im) for im in images]
    t_pil = _best(lambda: [pil(im) for im in pil_images for _ in range(2)], repeats, device)
    x = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).contiguous()
    aug = BatchAugment("strong", ds.image_size, ds.mean, ds.std)
    g = torch.Generator(device=device).manual_seed(0)
    t_gpu = _best(lambda: [aug(x, generator=g) for _ in range(2)], repeats, device)
    pil_vs, gpu_vs = 2 * batch / t_pil, 2 * batch / t_gpu
    return {"aug_batch": batch, "aug_pil_views_per_s": round(pil_vs, 1),
            "aug_batched_views_per_s": round(gpu_vs, 1), "aug_ratio": round(gpu_vs / pil_vs, 2)}


def _args(script_name, argv):
    import importlib
    from common import train
    mod = importlib.import_module(script_name)
    return mod, train.parse_args(mod.add_args, mod.__doc__, mod.__file__, argv)


def bench_step(device, batch, width, repeats, channels_last):
    mod, args = _args("train_moco", ["--dataset", "cifar10", "--width", str(width),
                                     "--batch-size", str(batch)])
    args.image_size, args.bn_splits = 32, 8
    torch.manual_seed(0)
    model = mod.Model(args).to(device)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=fmt)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01, momentum=0.9)
    views = [torch.randn(batch, 3, 32, 32, device=device).contiguous(memory_format=fmt)
             for _ in range(2)]
    labels = torch.zeros(batch, dtype=torch.long, device=device)
    out = {}
    for name, amp in (("fp32", False), ("amp", True)):
        def step():
            with torch.autocast(device.type, torch.bfloat16, enabled=amp):
                loss = model(views, labels)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        out[f"step_{name}_images_per_s"] = round(batch / _best(step, repeats, device), 1)
    out["amp_ratio"] = round(out["step_amp_images_per_s"] / out["step_fp32_images_per_s"], 2)
    out.update(step_batch=batch, step_width=width, step_channels_last=channels_last)
    return out


def bench_epochs(device, subset, batch, width, workers):
    from common import train
    out = {}
    with tempfile.TemporaryDirectory() as tmp, \
            mock.patch.object(train.knn, "knn_top1", lambda *a, **k: 0.0):
        for script_name in ("train_moco", "train_simclr"):
            for path, flags in (("pil_fp32", ["--aug", "pil", "--no-amp"]),
                                ("batched_amp", ["--aug", "gpu", "--amp"])):
                mod, _ = _args(script_name, ["--dataset", "demo"])
                argv = ["--dataset", "demo", "--subset", str(subset), "--epochs", "1",
                        "--batch-size", str(batch), "--width", str(width), "--linear-epochs", "0",
                        "--workers", str(workers), "--device", str(device), "--no-progress",
                        "--results-dir", tmp, "--checkpoint-dir", tmp, "--overwrite",
                        "--record", f"bench_{script_name}_{path}", *flags]
                if script_name == "train_moco":
                    argv += ["--queue-size", str(max(batch, 4096 if subset >= 4096 else batch))]
                train.run(mod.Model, mod.add_args, mod.__doc__, mod.__file__, argv)
                rows = _read_csv(os.path.join(tmp, f"bench_{script_name}_{path}_seed1339_pretrain.csv"))
                out[f"epoch_s_{script_name.replace('train_', '')}_{path}"] = round(
                    float(rows[-1]["epoch_seconds"]), 2)
    out.update(epoch_subset=subset, epoch_batch=batch, epoch_width=width)
    return out


def _read_csv(path):
    import csv
    with open(path) as f:
        return list(csv.DictReader(f))


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m common.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=1, help="torch threads (0: leave as is)")
    p.add_argument("--quick", action="store_true", help="smaller batches, fewer repeats")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--only", choices=["aug", "step", "epoch"], action="append",
                   help="run only these parts (repeatable)")
    p.add_argument("--aug-batch", type=int, default=256)
    p.add_argument("--step-batch", type=int, default=None, help="default 64 on CPU (32 quick), 512 on CUDA")
    p.add_argument("--width", type=int, default=64, help="ResNet-18 width of the step benchmark")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=None,
                   help="default: on CUDA")
    p.add_argument("--epoch-subset", type=int, default=None, help="default 512 on CPU, 5000 on CUDA")
    p.add_argument("--epoch-batch", type=int, default=None, help="default 128 on CPU, 512 on CUDA")
    p.add_argument("--epoch-width", type=int, default=None, help="default 16 on CPU, 64 on CUDA")
    p.add_argument("--workers", type=int, default=0, help="DataLoader workers of the PIL epochs")
    p.add_argument("--repeats", type=int, default=None)
    args = p.parse_args(argv)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    repeats = args.repeats or (2 if quick else 5)
    parts = args.only or ["aug", "step", "epoch"]
    from common.data import load_dataset
    result = {"device": str(device) if not cuda else torch.cuda.get_device_name(device),
              "threads": torch.get_num_threads(), "quick": quick}
    if "aug" in parts:
        ds = load_dataset("demo")
        result.update(bench_aug(ds, device, args.aug_batch, repeats))
        _report(result, "aug", args.json)
    if "step" in parts:
        batch = args.step_batch or (512 if cuda else (32 if quick else 64))
        cl = cuda if args.channels_last is None else args.channels_last
        result.update(bench_step(device, batch, args.width, repeats, cl))
        _report(result, "step", args.json)
    if "epoch" in parts:
        result.update(bench_epochs(
            device, args.epoch_subset or (5000 if cuda else (256 if quick else 512)),
            args.epoch_batch or (512 if cuda else (64 if quick else 128)),
            args.epoch_width or (64 if cuda else 16), args.workers))
        _report(result, "epoch", args.json)
    if args.json:
        print(json.dumps(result))
    return 0


def _report(r, part, as_json):
    if as_json:
        return
    if part == "aug":
        print(f"(a) strong 2-view augmentation, batch {r['aug_batch']}: PIL "
              f"{r['aug_pil_views_per_s']:.0f} views/s, batched {r['aug_batched_views_per_s']:.0f} "
              f"views/s, ratio {r['aug_ratio']:.2f}x")
    elif part == "step":
        print(f"(b) MoCoV2 training step, batch {r['step_batch']}, width {r['step_width']}: fp32 "
              f"{r['step_fp32_images_per_s']:.1f} images/s, bf16 autocast "
              f"{r['step_amp_images_per_s']:.1f} images/s, ratio {r['amp_ratio']:.2f}x")
    else:
        print(f"(c) seconds per epoch, demo --subset {r['epoch_subset']}, batch {r['epoch_batch']}, "
              f"width {r['epoch_width']}:")
        for s in ("moco", "simclr"):
            print(f"    {s}: pil+fp32 {r[f'epoch_s_{s}_pil_fp32']:.2f} s, batched+amp "
                  f"{r[f'epoch_s_{s}_batched_amp']:.2f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    sys.exit(main())
