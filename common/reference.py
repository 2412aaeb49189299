"""Reading checkpoints released by the reference implementation.

The reference saves {'model': state_dict, 'optimizer': ..., 'epoch': ...}. Its backbone is a
torch.nn.Sequential built from torchvision's ResNet-18 children, stored under `net.net.`:

    conv1, bn1, relu, [maxpool: 64-px data only], layer1, layer2, layer3, layer4, avgpool, flatten

so the weights sit at net.net.0 (conv1), net.net.1 (bn1) and net.net.3-6 (layer1-4) for CIFAR,
net.net.4-7 for Tiny-ImageNet. Inside each layer the names are torchvision's, like ours, and its
split BatchNorm has the parameters and buffers of a plain BatchNorm2d. The momentum backbone and
the heads (other prefixes) are ignored. Whether a max-pool is used is decided by the data set the
backbone is evaluated on, as in the reference, not by the checkpoint.
"""
import torch

from common.errors import UserError

PREFIX = "net.net."
# the Sequential's children that hold weights, in order
NAMES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def reference_backbone_state(model_state):
    """Map the reference's `net.net.<i>.*` keys to our torchvision names; None if absent."""
    # a DistributedDataParallel-wrapped model saves every key under "module."
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in model_state.items()}
    sub = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    if not sub:
        return None
    try:
        indices = sorted({int(k.split(".", 1)[0]) for k in sub})
    except ValueError:
        raise UserError(f"reference checkpoint: unexpected key under '{PREFIX}' "
                        f"({next(k for k in sub if not k.split('.', 1)[0].isdigit())})") from None
    # without the max-pool layer1 is child 3, with it child 4; the layers follow one another
    if len(indices) != len(NAMES) or indices[:2] != [0, 1] or indices[2] not in (3, 4) \
            or indices[2:] != list(range(indices[2], indices[2] + 4)):
        raise UserError(f"reference checkpoint: the children of '{PREFIX[:-1]}' holding weights are "
                        f"{indices}, not a ResNet-18 (expected [0, 1, 3, 4, 5, 6] or [0, 1, 4, 5, 6, 7])")
    name = dict(zip(indices, NAMES))
    out = {}
    for k, v in sub.items():
        i, rest = k.split(".", 1)
        out[f"{name[int(i)]}.{rest}"] = v
    # older PyTorch versions saved BatchNorm without this counter; it does not affect the output
    for k in [k for k in out if k.endswith(".running_mean")]:
        out.setdefault(k.replace(".running_mean", ".num_batches_tracked"), torch.tensor(0))
    return out

