#!/usr/bin/env bash
# GPU measurement in one command (needs a CUDA GPU; run from the repository root):
#     bash bench/gpu_check.sh [path/to/cifar10_jpeg.tar.xz]
# 1. builds full CIFAR-10 (50k/10k) in torchvision's cifar-10-batches-py layout under the
#    git-ignored .gpu/data from the JPEG archive (default /work/shared/data/cifar10_jpeg.tar.xz
#    or shared/data/... in a checkout that carries it), once;
# 2. python -m common.bench on CUDA (augmentation, fp32 vs bf16 step, demo epochs);
# 3. one MoCoV2 epoch on full CIFAR-10, batch 512 (target < 10 s on H100/H200), and the kNN
#    monitor over 60k images (target < 3 s). Results go to .gpu/gpu_check.json and stdout.
set -euo pipefail
PY=${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
ARCHIVE=${1:-}
for a in "$ARCHIVE" .gpu/cifar10_jpeg.tar.xz /work/shared/data/cifar10_jpeg.tar.xz shared/data/cifar10_jpeg.tar.xz; do
  [ -n "$a" ] && [ -f "$a" ] && ARCHIVE=$a && break
done
mkdir -p .gpu/data
if [ ! -f .gpu/data/cifar-10-batches-py/test_batch ]; then
  [ -f "$ARCHIVE" ] || { echo "no cifar10_jpeg.tar.xz found (pass its path)"; exit 2; }
  rm -rf .gpu/jpeg && mkdir -p .gpu/jpeg && tar -xJf "$ARCHIVE" -C .gpu/jpeg
  "$PY" - <<'PYEOF'
import os, pickle, numpy as np
from PIL import Image
C = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
root, out = ".gpu/jpeg", ".gpu/data/cifar-10-batches-py"
os.makedirs(out, exist_ok=True)
def load(split):
    xs, ys = [], []
    for c, name in enumerate(C):
        d = os.path.join(root, split, name)
        for f in sorted(os.listdir(d)):
            xs.append(np.asarray(Image.open(os.path.join(d, f)).convert("RGB")))
            ys.append(c)
    x = np.stack(xs).transpose(0, 3, 1, 2).reshape(len(xs), -1)
    perm = np.random.default_rng(0).permutation(len(ys))
    return x[perm], [ys[i] for i in perm]
x, y = load("train")
for b in range(5):
    s = slice(b * 10000, (b + 1) * 10000)
    with open(f"{out}/data_batch_{b + 1}", "wb") as f:
        pickle.dump({"data": x[s], "labels": y[s.start:s.stop]}, f)
x, y = load("test")
with open(f"{out}/test_batch", "wb") as f:
    pickle.dump({"data": x, "labels": y}, f)
with open(f"{out}/batches.meta", "wb") as f:
    pickle.dump({"label_names": list(C)}, f)
PYEOF
fi
"$PY" -m common.bench --device cuda --threads 0 --json | tee .gpu/bench.json
"$PY" - <<'PYEOF'
import csv, json, os, subprocess, sys, tempfile, time
import torch
from common import knn, nets
from common.data import load_dataset
# --no-verify: the JPEG-derived files cannot match torchvision's md5 sums of the originals
ds = load_dataset("cifar10", ".gpu/data", download=False, verify=False)
dev = torch.device("cuda")
res = {"gpu": torch.cuda.get_device_name(dev)}
with tempfile.TemporaryDirectory() as tmp:
    t = time.time()
    subprocess.run([sys.executable, "train_moco.py", "--dataset", "cifar10", "--data-dir",
                    ".gpu/data", "--no-download", "--no-verify", "--epochs", "2",
                    "--batch-size", "512", "--linear-epochs", "0", "--knn-every", "0",
                    "--no-progress", "--results-dir", tmp, "--checkpoint-dir", tmp,
                    "--record", "gpu_check"], check=True)
    with open(os.path.join(tmp, "gpu_check_seed1339_pretrain.csv")) as f:
        rows = list(csv.DictReader(f))
    res["moco_epoch_s"] = [float(r["epoch_seconds"]) for r in rows[1:]]  # epoch 2: warm
    res["moco_run_s"] = round(time.time() - t, 1)
net = nets.resnet18(32, 1, 64).to(dev)
knn.knn_top1(net, ds, dev, amp=True)  # warm-up
torch.cuda.synchronize(); t = time.time()
knn.knn_top1(net, ds, dev, amp=True)
torch.cuda.synchronize()
res["knn_60k_s"] = round(time.time() - t, 2)
res["targets"] = {"moco_epoch_s": "< 10 (H100/H200)", "knn_60k_s": "< 3"}
print(json.dumps(res))
with open(".gpu/gpu_check.json", "w") as f:
    json.dump(res, f)
PYEOF
