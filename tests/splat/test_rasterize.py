"""rasterization on CPU: gsplat's PyTorch projection/SH + composite_gaussians, end to end."""

import math

import pytest
import torch

from difix_ns.splat.rasterize import rasterization


def _cameras(C, width, height, dtype=torch.float64):
    """C cameras on the -z side looking at the origin (identity rotation, slight sideways offsets)."""
    viewmats = torch.eye(4, dtype=dtype).repeat(C, 1, 1)
    viewmats[:, 2, 3] = 4.0
    viewmats[:, 0, 3] = torch.linspace(-0.3, 0.3, C, dtype=dtype)
    focal = 0.9 * width
    Ks = torch.tensor([[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1]], dtype=dtype).repeat(C, 1, 1)
    return viewmats, Ks


def _gaussians(seed, N, dtype=torch.float64, sh_degree=None, spread=1.0, scale=0.25):
    g = torch.Generator().manual_seed(seed)
    means = (torch.rand(N, 3, generator=g, dtype=dtype) - 0.5) * 2 * spread
    quats = torch.randn(N, 4, generator=g, dtype=dtype)
    scales = scale * (0.5 + torch.rand(N, 3, generator=g, dtype=dtype))
    opacities = 0.3 + 0.6 * torch.rand(N, generator=g, dtype=dtype)
    if sh_degree is None:
        colors = torch.rand(N, 3, generator=g, dtype=dtype)
    else:
        colors = 0.3 * torch.randn(N, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype)
    return means, quats, scales, opacities, colors


@pytest.mark.parametrize("sh_degree", [None, 1])
@pytest.mark.parametrize("C", [1, 2])
def test_end_to_end_gradcheck(sh_degree, C):
    width, height = 8, 6
    viewmats, Ks = _cameras(C, width, height)
    inputs = tuple(t.requires_grad_() for t in _gaussians(1, 4, sh_degree=sh_degree, spread=0.6))

    def render(means, quats, scales, opacities, colors):
        rgb, alpha, _ = rasterization(means, quats, scales, opacities, colors, viewmats, Ks, width, height,
                                      sh_degree=sh_degree, render_mode="RGB+ED", rasterize_mode="antialiased")
        return rgb, alpha

    assert render(*inputs)[1].amax() > 0.3  # the Gaussians are on screen
    assert torch.autograd.gradcheck(render, inputs, eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_info_holds_what_default_strategy_reads():
    C, N, width, height = 2, 30, 12, 10
    viewmats, Ks = _cameras(C, width, height, dtype=torch.float32)
    params = [t.float().requires_grad_() for t in _gaussians(0, N)]
    rgb, alpha, info = rasterization(*params, viewmats, Ks, width, height, absgrad=True)
    assert rgb.shape == (C, height, width, 3) and alpha.shape == (C, height, width, 1)
    assert info["means2d"].shape == (C, N, 2) and not info["means2d"].is_leaf
    assert info["radii"].shape == (C, N) and not info["radii"].is_floating_point()
    assert info["depths"].shape == (C, N) and info["conics"].shape == (C, N, 3)
    assert info["opacities"].shape == (C, N)
    assert (info["width"], info["height"], info["n_cameras"]) == (width, height, C)
    assert info["gaussian_ids"] is None and info["camera_ids"] is None
    info["means2d"].retain_grad()
    (rgb.square().sum() + alpha.sum()).backward()
    grad, absgrad = info["means2d"].grad, info["means2d"].absgrad
    assert absgrad.shape == (C, N, 2) and (absgrad >= 0).all()
    assert (absgrad >= grad.abs() - 1e-6).all() and absgrad.sum() > 0
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in params)


def test_expected_depth_of_a_single_opaque_gaussian():
    width = height = 9
    viewmats, Ks = _cameras(1, width, height, dtype=torch.float32)
    means = torch.tensor([[0.0, 0.0, 1.5]])  # camera at z = -4: depth 5.5
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    scales = torch.full((1, 3), 0.4)
    opacities = torch.ones(1)
    colors = torch.ones(1, 3)
    args = (means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    depth, alpha, _ = rasterization(*args, render_mode="ED")
    assert depth.shape == (1, height, width, 1)
    covered = alpha[..., 0] > 1 / 255
    assert covered[0, 4, 4] and covered.sum() > 9
    torch.testing.assert_close(depth[0][covered[0]], torch.full_like(depth[0][covered[0]], 5.5))
    accumulated, alpha_d, _ = rasterization(*args, render_mode="D")
    torch.testing.assert_close(accumulated, 5.5 * alpha_d)
    rgbd, alpha_rgbd, _ = rasterization(*args, render_mode="RGB+ED", backgrounds=torch.tensor([[0.0, 0.5, 1.0]]))
    torch.testing.assert_close(rgbd[..., 3:][covered[..., None]], depth[covered[..., None]])
    torch.testing.assert_close(rgbd[0, 0, 0, :3], torch.tensor([0.0, 0.5, 1.0]))  # background only in color
    torch.testing.assert_close(alpha_rgbd, alpha)


def test_spherical_harmonics_degree_zero_matches_plain_colors():
    width, height = 10, 8
    viewmats, Ks = _cameras(2, width, height, dtype=torch.float32)
    means, quats, scales, opacities, _ = (t.float() for t in _gaussians(3, 20))
    sh = 0.5 * torch.randn(20, 4, 3)
    rgb_sh, _, _ = rasterization(means, quats, scales, opacities, sh, viewmats, Ks, width, height, sh_degree=0)
    plain = torch.clamp_min(sh[:, 0] * 0.2820947917738781 + 0.5, 0.0)
    rgb, _, _ = rasterization(means, quats, scales, opacities, plain, viewmats, Ks, width, height)
    torch.testing.assert_close(rgb_sh, rgb)


@pytest.mark.parametrize("absgrad", [True, False])
def test_default_strategy_densifies_on_cpu(absgrad, monkeypatch):
    from gsplat.strategy import DefaultStrategy
    import gsplat.strategy.default as default_module

    calls = {"duplicate": 0, "split": 0, "remove": 0}
    for name in calls:
        original = getattr(default_module, name)

        def counted(*args, _original=original, _name=name, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(default_module, name, counted)

    torch.manual_seed(0)
    N, width, height = 60, 16, 12
    viewmats, Ks = _cameras(1, width, height, dtype=torch.float32)
    means, quats, scales, opacities, colors = (t.float() for t in _gaussians(2, N, scale=0.1))
    scales[: N // 3] = 0.004  # small: duplicated
    opacities[-5:] = 0.001  # pruned
    params = torch.nn.ParameterDict(
        {
            "means": means, "quats": quats, "scales": torch.log(scales),
            "opacities": torch.logit(opacities), "colors": torch.logit(colors.clamp(0.05, 0.95)),
        }
    )
    optimizers = {k: torch.optim.Adam([p], lr=1e-3) for k, p in params.items()}
    strategy = DefaultStrategy(refine_start_iter=1, refine_every=2, reset_every=10_000, grow_grad2d=1e-7,
                               absgrad=absgrad)
    strategy.check_sanity(params, optimizers)
    state = strategy.initialize_state(scene_scale=1.0)
    target = torch.rand(1, height, width, 3)
    for step in range(1, 6):
        rgb, _, info = rasterization(
            params["means"], params["quats"], torch.exp(params["scales"]), torch.sigmoid(params["opacities"]),
            torch.sigmoid(params["colors"]), viewmats, Ks, width, height, absgrad=absgrad,
        )
        strategy.step_pre_backward(params, optimizers, state, step, info)
        (rgb - target).abs().mean().backward()
        strategy.step_post_backward(params, optimizers, state, step, info, packed=False)
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    assert calls["duplicate"] > 0 and calls["split"] > 0 and calls["remove"] > 0, calls
    assert len(params["means"]) != N
    assert all(len(p) == len(params["means"]) for p in params.values())


def _valid_args(dtype=torch.float32):
    viewmats, Ks = _cameras(2, 8, 6, dtype=dtype)
    means, quats, scales, opacities, colors = (t.to(dtype) for t in _gaussians(0, 5))
    return dict(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                viewmats=viewmats, Ks=Ks, width=8, height=6)


@pytest.mark.parametrize(
    "name,bad",
    [
        ("means", torch.zeros(5, 2)),
        ("quats", torch.zeros(5, 3)),
        ("scales", torch.zeros(4, 3)),
        ("opacities", torch.zeros(5, 1)),
        ("colors", torch.zeros(4, 3)),
        ("viewmats", torch.zeros(2, 3, 4)),
        ("Ks", torch.zeros(1, 3, 3)),
        ("width", 0),
        ("height", 6.0),
    ],
)
def test_bad_shapes_raise_value_error(name, bad):
    args = _valid_args()
    args[name] = bad
    with pytest.raises(ValueError, match=name):
        rasterization(**args)


@pytest.mark.parametrize(
    "options,match",
    [
        (dict(sh_degree=1), "colors"),  # plain [N, 3] colors given as SH
        (dict(backgrounds=torch.zeros(2, 4)), "backgrounds"),
        (dict(render_mode="rgb"), "render_mode"),
        (dict(rasterize_mode="fast"), "rasterize_mode"),
    ],
)
def test_bad_options_raise_value_error(options, match):
    with pytest.raises(ValueError, match=match):
        rasterization(**_valid_args(), **options)


def test_too_few_sh_coefficients_raise_value_error():
    args = _valid_args()
    args["colors"] = torch.zeros(5, 4, 3)
    with pytest.raises(ValueError, match="sh_degree=2"):
        rasterization(**args, sh_degree=2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat's fused kernels)")
def test_cuda_path_matches_cpu_path():
    args = _valid_args()
    args["width"], args["height"] = 32, 24
    args["viewmats"], args["Ks"] = _cameras(2, 32, 24, dtype=torch.float32)
    cpu_rgb, cpu_alpha, _ = rasterization(**args, render_mode="RGB+ED")
    cuda_args = {k: v.cuda() if isinstance(v, torch.Tensor) else v for k, v in args.items()}
    rgb, alpha, info = rasterization(**cuda_args, render_mode="RGB+ED")
    # gsplat's kernel also visits pixels just outside each radius box (whole 16x16 tiles): small differences.
    torch.testing.assert_close(rgb.cpu(), cpu_rgb, atol=2e-2, rtol=0)
    torch.testing.assert_close(alpha.cpu(), cpu_alpha, atol=2e-2, rtol=0)
    assert info["means2d"].shape == (2, 5, 2)
    assert math.isfinite(float(rgb.sum()))
