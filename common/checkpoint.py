"""Checkpoints: atomic writes, and backbone loading from our format or the reference's."""
import os

import torch

from common.errors import UserError


def save(path, state):
    """Write `state` to `path` atomically: temporary file, fsync, rename. A crash at any point
    leaves the previous checkpoint at `path` intact."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def load(path):
    if not os.path.isfile(path):
        raise UserError(f"checkpoint {path} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:
        raise UserError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None


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
