"""Checkpoints: atomic writes, random-number-generator states, and backbone loading from our
format or the reference's."""
import glob
import os
import random

import numpy as np
import torch

from common.errors import UserError


def save(path, state):
    """Write `state` to `path` atomically: temporary file, fsync, rename, fsync of the folder.

    At every moment `path` holds a complete checkpoint: a crash or kill during the write leaves the
    previous one in place (and at most a stale temporary file, removed by the next save). A failed
    write (disk full, quota, read-only file system) removes its temporary file and raises a
    UserError; the previous checkpoint is kept.
    """
    folder = os.path.dirname(os.path.abspath(path))
    tmp = f"{path}.tmp{os.getpid()}"
    for stale in glob.glob(glob.escape(path) + ".tmp*"):  # left by a process killed mid-write
        if stale != tmp:
            _remove(stale)
    try:
        os.makedirs(folder, exist_ok=True)
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(folder)
    except OSError as e:
        _remove(tmp)
        kept = " (the previous checkpoint is kept)" if os.path.exists(path) else ""
        raise UserError(f"cannot write checkpoint {path}: {e.strerror or e}{kept}") from None
    except BaseException:  # KeyboardInterrupt, a pickling bug: still no partial file
        _remove(tmp)
        raise


def load(path):
    """The checkpoint at `path` (on the CPU); a missing or unreadable file is a UserError."""
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise UserError(f"cannot read checkpoint {path} (truncated or not a PyTorch file?): "
                        f"{type(e).__name__}: {first}") from None


def rng_state():
    """Every random-number generator a training step may draw from: Python, NumPy, torch CPU and
    (when present) every CUDA device."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(),
             "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state):
    """Restore what `rng_state` returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"][:torch.cuda.device_count()]
        torch.cuda.set_rng_state_all(cuda)


def backbone_state(ckpt, path="checkpoint"):
    """The backbone state dict (torchvision ResNet names) from a loaded checkpoint."""
    if isinstance(ckpt, dict) and "backbone" in ckpt:
        return ckpt["backbone"]
    if isinstance(ckpt, dict) and isinstance(ckpt.get("model"), dict):
        from common.reference import reference_backbone_state
        state = reference_backbone_state(ckpt["model"])
        if state is not None:
            return state
    raise UserError(f"{path} holds no backbone weights (neither a Mini-SSL checkpoint nor the "
                    f"reference's {{'model': ...}} layout)")


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _fsync_dir(folder):
    # the rename itself must reach the disk, or a power cut could bring back the old checkpoint
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some file systems cannot fsync a folder; the rename is still atomic
    finally:
        os.close(fd)
