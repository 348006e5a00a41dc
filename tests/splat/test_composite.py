"""composite_gaussians (vectorized, analytic backward) against its per-pixel twin `_composite_reference`."""

import math

import pytest
import torch

from difix_ns.splat.composite import _composite_reference, composite_gaussians


def _scene(seed, C=1, N=12, D=3, width=10, height=8, dtype=torch.float64, opaque=False):
    """Random projected Gaussians; `opaque` piles them up around the image center so pixels stop early."""
    g = torch.Generator().manual_seed(seed)
    spread = 0.3 if opaque else 1.0
    center = torch.tensor([width, height], dtype=dtype)
    means2d = (0.5 + spread * (torch.rand(C, N, 2, generator=g, dtype=dtype) - 0.5)) * center
    L = torch.randn(C, N, 2, 2, generator=g, dtype=dtype) * 0.9
    cov = L @ L.transpose(-1, -2) + 0.4 * torch.eye(2, dtype=dtype)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[..., 0, 0], inv[..., 0, 1], inv[..., 1, 1]], dim=-1)
    low = 0.6 if opaque else 0.0
    opacities = low + (1 - low) * torch.rand(C, N, generator=g, dtype=dtype)
    colors = torch.rand(C, N, D, generator=g, dtype=dtype)
    radii = torch.ceil(3 * torch.sqrt(torch.linalg.eigvalsh(cov)[..., -1])).int()
    radii[..., 0] = 0  # one culled Gaussian per camera
    depths = torch.rand(C, N, generator=g, dtype=dtype)
    return means2d, conics, opacities, colors, radii, depths, width, height


def _stop_count(means2d, conics, opacities, radii, depths, width, height):
    """How many pixels of camera 0 reach the T <= 1e-4 stop (to make sure the scenes exercise it)."""
    stopped = 0
    order = torch.sort(depths[0], stable=True).indices.tolist()
    for y in range(height):
        for x in range(width):
            t = 1.0
            for g in order:
                dx, dy = x + 0.5 - float(means2d[0, g, 0]), y + 0.5 - float(means2d[0, g, 1])
                r = int(radii[0, g])
                if r <= 0 or abs(dx) > r or abs(dy) > r:
                    continue
                a, b, c = conics[0, g].tolist()
                sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
                alpha = min(0.999, float(opacities[0, g]) * math.exp(-sigma))
                if sigma < 0 or alpha < 1 / 255:
                    continue
                if t * (1 - alpha) <= 1e-4:
                    stopped += 1
                    break
                t *= 1 - alpha
    return stopped


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("C,D", [(1, 3), (1, 4), (2, 3), (2, 4)])
@pytest.mark.parametrize("opaque", [False, True])
def test_forward_matches_reference(seed, C, D, opaque):
    scene = _scene(seed, C=C, D=D, N=16 if opaque else 10, opaque=opaque)
    backgrounds = torch.rand(C, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))
    expected = _composite_reference(*scene, backgrounds=backgrounds)
    # The fast path in float32 (as in training) against the float64 twin.
    as32 = [t.float() if t.is_floating_point() else t for t in scene[:6]]
    colors, alphas = composite_gaussians(*as32, *scene[6:], backgrounds=backgrounds.float())
    torch.testing.assert_close(colors.double(), expected[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(alphas.double(), expected[1], atol=1e-4, rtol=0)
    if opaque and seed == 0:
        means2d, conics, opacities, _, radii, depths, width, height = scene
        assert _stop_count(means2d, conics, opacities, radii, depths, width, height) > 0


def test_chunking_does_not_change_the_result():
    scene = _scene(3, C=2, D=3, N=20, opaque=True)
    full = composite_gaussians(*scene)
    for max_pairs in (1, 40, 300):
        chunked = composite_gaussians(*scene, max_pairs=max_pairs)
        torch.testing.assert_close(chunked[0], full[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(chunked[1], full[1], atol=1e-12, rtol=0)


def test_indefinite_conic_skips_negative_sigma():
    means2d, conics, opacities, colors, radii, depths, width, height = _scene(4, N=6)
    conics[0, 1] = torch.tensor([0.3, 0.9, 0.2], dtype=torch.float64)  # indefinite: sigma < 0 off the axes
    radii[0, 1] = 4
    fast = composite_gaussians(means2d, conics, opacities, colors, radii, depths, width, height)
    slow = _composite_reference(means2d, conics, opacities, colors, radii, depths, width, height)
    torch.testing.assert_close(fast[0], slow[0], atol=1e-10, rtol=0)


def _one_pixel_gaussians(dtype=torch.float64, shift=(0.0, 0.0)):
    """Three tight Gaussians on pixel (2, 2) of a 5x5 image (front to back: 0.5, 0.8, faint) and one on (0, 0).

    Each reaches only its own pixel: at a neighbor's center sigma >= 0.5 * 50 * 0.8**2, so alpha < 1/255."""
    means2d = torch.tensor([[[2.5, 2.5], [2.5, 2.5], [2.5, 2.5], [0.5, 0.5]]], dtype=dtype)
    means2d = means2d + torch.tensor(shift, dtype=dtype)
    conics = torch.tensor([[[50.0, 0.0, 50.0]] * 4], dtype=dtype)  # neighbors get alpha < 1/255
    opacities = torch.tensor([[0.5, 0.8, 0.003, 0.9]], dtype=dtype)  # 0.003 < 1/255: skipped
    colors = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 1.0, 1.0]]], dtype=dtype)
    radii = torch.tensor([[1, 1, 1, 1]], dtype=torch.int32)
    depths = torch.tensor([[1.0, 2.0, 0.5, 1.0]], dtype=dtype)
    return means2d, conics, opacities, colors, radii, depths, 5, 5


def test_hand_checked_pixel():
    colors, alphas = composite_gaussians(*_one_pixel_gaussians())
    # Pixel (2, 2): red with 0.5, then green with 0.8 * (1 - 0.5); the 0.003 Gaussian is under 1/255.
    torch.testing.assert_close(colors[0, 2, 2], torch.tensor([0.5, 0.4, 0.0], dtype=torch.float64))
    torch.testing.assert_close(alphas[0, 2, 2, 0], torch.tensor(0.9, dtype=torch.float64))
    torch.testing.assert_close(colors[0, 0, 0], torch.tensor([0.9, 0.9, 0.9], dtype=torch.float64))
    assert alphas[0].sum() == pytest.approx(1.8)


def test_early_stop_excludes_the_gaussian_that_crosses_1e_4():
    means2d = torch.full((1, 3, 2), 0.5, dtype=torch.float64)
    conics = torch.tensor([[[1.0, 0.0, 1.0]] * 3], dtype=torch.float64)
    opacities = torch.tensor([[1.0, 0.99, 1.0]], dtype=torch.float64)  # alphas 0.999, 0.99, 0.999
    colors = torch.eye(3, dtype=torch.float64)[None]
    radii = torch.ones(1, 3, dtype=torch.int32)
    depths = torch.tensor([[1.0, 2.0, 3.0]], dtype=torch.float64)
    rgb, alpha = composite_gaussians(means2d, conics, opacities, colors, radii, depths, 1, 1)
    # T: 1 -> 1e-3 -> 1e-5 <= 1e-4, so the second Gaussian is excluded and so is the third.
    torch.testing.assert_close(rgb[0, 0, 0], torch.tensor([0.999, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(alpha[0, 0, 0, 0], torch.tensor(0.999, dtype=torch.float64))


def test_depth_order_not_index_order():
    means2d, conics, opacities, colors, radii, _, width, height = _one_pixel_gaussians()
    depths = torch.tensor([[2.0, 1.0, 0.5, 1.0]], dtype=torch.float64)  # green now in front
    rgb, _ = composite_gaussians(means2d, conics, opacities, colors, radii, depths, width, height)
    torch.testing.assert_close(rgb[0, 2, 2], torch.tensor([0.5 * 0.2, 0.8, 0.0], dtype=torch.float64))


def _inputs_with_grad(scene):
    return [t.detach().clone().requires_grad_() for t in scene[:4]]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("C,D", [(1, 3), (2, 4)])
def test_backward_matches_reference(seed, C, D):
    scene = _scene(seed, C=C, D=D, N=12, width=8, height=7, opaque=seed == 1)
    g = torch.Generator().manual_seed(seed + 10)
    backgrounds = torch.rand(C, D, dtype=torch.float64, generator=g)
    w_colors = torch.randn(C, 7, 8, D, dtype=torch.float64, generator=g)
    w_alphas = torch.randn(C, 7, 8, 1, dtype=torch.float64, generator=g)
    fast_in, slow_in = _inputs_with_grad(scene), _inputs_with_grad(scene)
    bg_fast, bg_slow = backgrounds.clone().requires_grad_(), backgrounds.clone().requires_grad_()
    colors, alphas = composite_gaussians(*fast_in, *scene[4:], backgrounds=bg_fast)
    ((colors * w_colors).sum() + (alphas * w_alphas).sum()).backward()
    colors, alphas = _composite_reference(*slow_in, *scene[4:], backgrounds=bg_slow)
    ((colors * w_colors).sum() + (alphas * w_alphas).sum()).backward()
    for name, fast, slow in zip(("means2d", "conics", "opacities", "colors"), fast_in, slow_in):
        torch.testing.assert_close(fast.grad, slow.grad, atol=1e-10, rtol=1e-8, msg=name)
    torch.testing.assert_close(bg_fast.grad, bg_slow.grad)


@pytest.mark.parametrize("C,D", [(1, 3), (2, 4)])
def test_gradcheck_finite_differences(C, D):
    means2d, conics, opacities, colors, radii, depths, width, height = _scene(5, C=C, D=D, N=6, width=7, height=6)
    backgrounds = torch.rand(C, D, dtype=torch.float64)

    def render(m, c, o, k):
        return composite_gaussians(m, c, o, k, radii, depths, width, height, backgrounds=backgrounds)

    inputs = tuple(t.clone().requires_grad_() for t in (means2d, conics, opacities, colors))
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-6, rtol=1e-4, fast_mode=True)


def _reference_absgrad(scene, w_colors):
    """sum over pixels of |d (w_colors . color at that pixel) / d means2d|, from the twin."""
    means2d = scene[0].detach().clone().requires_grad_()
    colors, _ = _composite_reference(means2d, *scene[1:])
    total = torch.zeros_like(means2d)
    C, H, W, _ = colors.shape
    for c in range(C):
        for y in range(H):
            for x in range(W):
                pixel_loss = (colors[c, y, x] * w_colors[c, y, x]).sum()
                if pixel_loss.requires_grad:
                    (grad,) = torch.autograd.grad(pixel_loss, means2d, retain_graph=True, allow_unused=True)
                    if grad is not None:
                        total += grad.abs()
    return total


@pytest.mark.parametrize("C", [1, 2])
def test_absgrad_sums_per_pixel_abs_gradients(C):
    scene = _scene(6, C=C, D=3, N=8, width=6, height=5)
    w_colors = torch.randn(C, 5, 6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    means2d = scene[0].clone().requires_grad_()
    colors, _ = composite_gaussians(means2d, *scene[1:], absgrad=True)
    (colors * w_colors).sum().backward()
    assert means2d.absgrad.shape == means2d.shape
    assert (means2d.absgrad >= 0).all()
    assert (means2d.absgrad >= means2d.grad.abs() - 1e-12).all()
    torch.testing.assert_close(means2d.absgrad, _reference_absgrad(scene, w_colors), atol=1e-10, rtol=1e-8)


def test_absgrad_equals_abs_grad_for_single_pixel_gaussians():
    scene = _one_pixel_gaussians(shift=(0.1, -0.15))
    means2d = scene[0].clone().requires_grad_()
    colors, alphas = composite_gaussians(means2d, *scene[1:], absgrad=True)
    (colors.sum() * 0.3 - alphas.square().sum()).backward()
    torch.testing.assert_close(means2d.absgrad, means2d.grad.abs())
    assert (means2d.absgrad[0, [0, 1, 3]] > 0).all()


def test_absgrad_absent_without_flag():
    scene = _scene(0)
    means2d = scene[0].clone().requires_grad_()
    composite_gaussians(means2d, *scene[1:])[0].sum().backward()
    assert not hasattr(means2d, "absgrad")


def test_empty_scene_renders_background():
    means2d, conics, opacities, colors, radii, depths, width, height = _scene(0, C=2)
    backgrounds = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]], dtype=torch.float64)
    rgb, alpha = composite_gaussians(
        means2d, conics, opacities, colors, torch.zeros_like(radii), depths, width, height, backgrounds=backgrounds
    )
    torch.testing.assert_close(rgb, backgrounds[:, None, None, :].expand_as(rgb))
    assert (alpha == 0).all()


@pytest.mark.parametrize(
    "index,bad,match",
    [
        (0, torch.zeros(1, 12, 3), "means2d"),
        (1, torch.zeros(1, 12, 2), "conics"),
        (2, torch.zeros(1, 11), "opacities"),
        (3, torch.zeros(2, 12, 3), "colors"),
        (4, torch.zeros(1, 12, 1, dtype=torch.int32), "radii"),
        (5, torch.zeros(12), "depths"),
        (6, 0, "width"),
        (7, 2.5, "height"),
    ],
)
def test_bad_inputs_raise_value_error(index, bad, match):
    args = list(_scene(0, dtype=torch.float32))
    args[index] = bad
    with pytest.raises(ValueError, match=match):
        composite_gaussians(*args)


def test_bad_backgrounds_raise_value_error():
    with pytest.raises(ValueError, match="backgrounds"):
        composite_gaussians(*_scene(0, dtype=torch.float32), backgrounds=torch.zeros(1, 4))
