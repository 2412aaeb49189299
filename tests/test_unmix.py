"""Un-Mix: mixup and cutmix of the batch with its reversed self, the weighted loss, three EMA
updates per step (or one), one epoch."""
import json

import pytest
import torch

from conftest import check_ema_step, script, tiny_model, train_tiny

unmix = script("train_unmix")


def _images(n=4, size=8):
    torch.manual_seed(0)
    return torch.randn(n, 3, size, size)


def test_mixup_blends_each_image_with_its_mirror_in_the_batch():
    x = _images()
    mixed = unmix.mixup(x, 0.3)
    assert mixed.shape == x.shape
    torch.testing.assert_close(mixed[0], 0.3 * x[0] + 0.7 * x[3])
    torch.testing.assert_close(mixed[2], 0.3 * x[2] + 0.7 * x[1])


def test_cutmix_pastes_a_box_and_returns_the_kept_pixel_ratio():
    x = _images()
    mixed, lam = unmix.cutmix(x, 0.75, (4, 4))  # sides 8 * sqrt(0.25) = 4: rows and cols 2..5
    assert mixed.shape == x.shape and lam == 1 - 16 / 64
    assert torch.equal(mixed[:, :, 2:6, 2:6], x.flip(0)[:, :, 2:6, 2:6])
    box = torch.zeros(8, 8, dtype=torch.bool)
    box[2:6, 2:6] = True
    assert torch.equal(mixed[:, :, ~box], x[:, :, ~box])
    # a box at the corner is clipped, and lam follows the pixels actually kept
    mixed, lam = unmix.cutmix(x, 0.75, (0, 0))
    assert lam == 1 - 4 / 64 and torch.equal(mixed[:, :, 2:, :], x[:, :, 2:, :])


def test_random_mixture_draws_both_kinds_with_valid_lam_reproducibly():
    x = _images(size=16)
    kinds = set()
    for seed in range(12):
        torch.manual_seed(seed)
        mixed, lam = unmix.random_mixture(x)
        assert mixed.shape == x.shape and 0 <= lam <= 1
        if torch.allclose(mixed, unmix.mixup(x, lam)):
            kinds.add("mixup")
        else:
            kept = (mixed[0] == x[0]).all(0).float().mean().item()  # pixels kept from image 0
            assert kept == pytest.approx(lam)
            kinds.add("cutmix")
        torch.manual_seed(seed)
        assert torch.equal(unmix.random_mixture(x)[0], mixed)
    assert kinds == {"mixup", "cutmix"}


def test_loss_weights_the_mixtures_by_lam():
    assert unmix.unmix_loss(1.0, 2.0, 4.0, 0.25) == 1.0 + 0.25 * 2.0 + 0.75 * 4.0


@pytest.mark.parametrize("flags,updates", [((), 3), (("--one-ema-update",), 1)])
def test_target_moves_once_per_loss_term_and_only_online_gets_gradients(flags, updates):
    model = tiny_model("train_unmix", "--momentum", "0.9", *flags)
    views = [torch.randn(8, 3, 16, 16) for _ in range(2)]
    check_ema_step(model, model.online, model.target, views, torch.zeros(8, dtype=torch.long),
                   momentum=0.9, updates=updates)
    assert all(p.grad is not None for p in model.predictor.parameters())


def test_forward_equals_three_byol_calls_on_the_reference_mixture():
    # one BatchNorm split: the target's output does not depend on the batch shuffle
    model = tiny_model("train_unmix", "--bn-splits", "1")
    torch.manual_seed(1)
    v1, v2 = torch.randn(8, 3, 16, 16), torch.randn(8, 3, 16, 16)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    torch.manual_seed(2)
    loss = model([v1, v2], None)
    model.load_state_dict(start)
    torch.manual_seed(2)
    mixed, lam = unmix.random_mixture(v2)
    terms = []
    for x in (v2, mixed, mixed.flip(0)):  # the reference: model(v1, x) three times
        model.update_target()
        terms.append(model.pair_loss(v1, x))
    torch.testing.assert_close(loss, terms[0] + lam * terms[1] + (1 - lam) * terms[2])


def test_one_epoch_writes_outputs(tmp_path):
    # fp32: bf16 is slow on CPUs (the amp path runs in the ReSSL and SCE tests)
    summary = train_tiny("train_unmix", tmp_path, "--no-amp")
    assert "demo_10_seed1339" in summary
    res = tmp_path / "results"
    assert (res / "demo_10_seed1339_pretrain.csv").read_text().count("\n") == 3
    assert (res / "demo_10_seed1339_linear.csv").exists()
    config = json.loads((res / "demo_10_seed1339_config.json").read_text())
    assert config["finished"] and config["algorithm"] == "UnMix" and config["one_ema_update"] is False
