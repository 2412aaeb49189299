"""Reading checkpoints released by the reference implementation (see issue: published weights)."""


def reference_backbone_state(model_state):
    """Map the reference's `net.net.<i>.*` keys to our torchvision names; None if absent."""
    return None
