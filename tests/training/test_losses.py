"""Fixer losses: L2 + SSIM without VGG16 weights (said once), L2 + LPIPS + Gram (after warm-up) with them."""

from __future__ import annotations

import torch

from difix_ns.training import losses
from difix_ns.training.losses import FixerLoss, gram_matrix, ssim, vgg16_weights_path


def test_ssim_is_one_for_identical_images_and_differentiable():
    x = torch.rand(2, 3, 24, 24, requires_grad=True)
    assert torch.allclose(ssim(x, x.detach()), torch.ones(2), atol=1e-5)
    (1 - ssim(x, torch.rand(2, 3, 24, 24))).mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_gram_matrix_shape_and_symmetry():
    g = gram_matrix(torch.rand(2, 5, 4, 3))
    assert g.shape == (2, 5, 5)
    torch.testing.assert_close(g, g.transpose(1, 2))


def test_without_vgg_weights_falls_back_to_l2_ssim_and_says_so_once(offline, capsys):
    losses._say_perceptual_unavailable.cache_clear()
    first, second = FixerLoss(), FixerLoss()
    err = capsys.readouterr().err
    assert err.count("VGG16 weights not found") == 1
    assert first.mode == second.mode == "l2+ssim"
    pred, target = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    total, terms = first(pred, target, step=10_000)
    assert set(terms) == {"l2", "ssim"}
    assert all(float(v) > 0 for v in terms.values()), "no silently zero term"
    torch.testing.assert_close(total, terms["l2"] + 0.5 * terms["ssim"])


def test_with_vgg_weights_uses_lpips_and_gram_after_warmup(offline):
    from torchvision.models import vgg16

    path = vgg16_weights_path()
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save({k: v.half() for k, v in vgg16(weights=None).state_dict().items()}, path)  # same format as the real file
    loss = FixerLoss(gram_warmup_steps=5)
    assert loss.mode == "l2+lpips+gram"
    pred = torch.rand(1, 3, 32, 32, requires_grad=True)
    target = torch.rand(1, 3, 32, 32)
    _, early = loss(pred, target, step=0)
    assert set(early) == {"l2", "lpips"}
    total, late = loss(pred, target, step=5)
    assert set(late) == {"l2", "lpips", "gram"}
    assert all(torch.isfinite(v) and float(v) > 0 for v in late.values())
    torch.testing.assert_close(total, late["l2"] + late["lpips"] + 0.5 * late["gram"])
    total.backward()
    assert pred.grad.abs().sum() > 0
