"""CUDA-only: gradients of gsplat's fused rasterization (what difix-splatfacto trains with on a GPU) against the
CPU path (gsplat's PyTorch projection + difix_ns compositing). tests/splat/test_rasterize.py compares the images.

Run by benchmarks/gpu/run.sh (step cuda_tests_rasterize, after gsplat's CUDA kernels are built); skipped without
CUDA. gsplat's kernel also visits pixels just outside each Gaussian's radius box (whole 16x16 tiles), so the two
paths differ slightly; the bounds (cosine >= 0.99, relative L2 error <= 0.1 per parameter) are set from that
difference, not yet measured on a GPU.
"""

from __future__ import annotations

import math

import pytest
import torch

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]

MIN_COSINE, MAX_REL_L2 = 0.99, 0.1


def _scene(N: int = 300, width: int = 64, height: int = 48, sh_degree: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    params = {
        "means": (torch.rand(N, 3, generator=g) - 0.5) * 1.6,
        "quats": torch.randn(N, 4, generator=g),
        "scales": 0.05 * (0.5 + torch.rand(N, 3, generator=g)),
        "opacities": 0.2 + 0.6 * torch.rand(N, generator=g),
        "colors": 0.3 * torch.randn(N, (sh_degree + 1) ** 2, 3, generator=g),
    }
    viewmats = torch.eye(4)[None]
    viewmats[0, 2, 3] = 3.0
    focal = 0.9 * width
    Ks = torch.tensor([[[focal, 0, width / 2], [0, focal, height / 2], [0, 0, 1.0]]])
    weights = torch.rand(1, height, width, 3, generator=g), torch.rand(1, height, width, 1, generator=g)
    return params, viewmats, Ks, width, height, sh_degree, weights


def _grads(device: str, scene):
    from difix_ns.splat.rasterize import rasterization

    params, viewmats, Ks, width, height, sh_degree, (w_rgb, w_alpha) = scene
    leaves = {k: v.detach().clone().to(device).requires_grad_() for k, v in params.items()}
    rgb, alpha, info = rasterization(
        leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], leaves["colors"],
        viewmats.to(device), Ks.to(device), width, height, sh_degree=sh_degree,
    )  # fmt: skip
    info["means2d"].retain_grad()
    ((rgb * w_rgb.to(device)).sum() + (alpha * w_alpha.to(device)).sum()).backward()
    grads = {k: v.grad.detach().cpu() for k, v in leaves.items()}
    grads["means2d"] = info["means2d"].grad.detach().cpu()
    return rgb.detach().cpu(), grads


def test_cuda_gradients_match_cpu_path():
    scene = _scene()
    rgb_cpu, grads_cpu = _grads("cpu", scene)
    rgb_cuda, grads_cuda = _grads("cuda", scene)
    assert float(rgb_cpu.amax()) > 0.1, "the Gaussians are off screen"
    torch.testing.assert_close(rgb_cuda, rgb_cpu, atol=2e-2, rtol=0)
    report = []
    for name, ref in grads_cpu.items():
        got = grads_cuda[name].reshape(-1)
        ref = ref.reshape(-1)
        assert math.isfinite(float(got.sum())), name
        cosine = float(torch.nn.functional.cosine_similarity(got, ref, dim=0))
        rel = float((got - ref).norm() / ref.norm().clamp_min(1e-12))
        report.append(f"{name}: cosine {cosine:.4f}, relative L2 {rel:.4f}")
        assert cosine >= MIN_COSINE and rel <= MAX_REL_L2, "\n".join(report)
