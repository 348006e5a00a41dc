"""Time the CPU rasterization path (gsplat PyTorch projection/SH + difix_ns compositing) on a random scene.

The scene looks like splatfacto's random initialization: means uniform in [-1, 1]^3, isotropic-ish scales at the
mean point spacing, opacity 0.1, degree-3 SH, one camera 3.5 units away with a 60 degree field of view.

Printed side by side, all measured in this run:
- forward and forward+backward of ``difix_ns.splat.rasterize.rasterization`` (what training calls);
- gsplat's own PyTorch pieces alone (``_quat_scale_to_covar_preci`` + ``_fully_fused_projection`` +
  ``_spherical_harmonics``), so the rest is the cost of compositing;
- tile intersection: gsplat's ``_isect_tiles`` (a Python loop over Gaussians, what its pure-PyTorch rasterizer
  would use) against the vectorized ``_tile_entries`` here, both with 16-pixel tiles.

gsplat's complete PyTorch rasterizer (``gsplat.rendering._rasterization``) cannot run on CPU at all: it calls
CUDA kernels (``isect_tiles``, ``rasterize_to_indices_in_range``) and nerfacc's CUDA accumulation.

With ``--cuda`` (needs a GPU and gsplat's compiled kernels) the same scene is also rendered by gsplat's fused CUDA
rasterization (what ``rasterization`` calls for CUDA tensors) and the two are compared: image and alpha
differences, per-parameter gradient agreement (cosine, relative L2 error) under the same weighted loss, and the
speed of forward and forward+backward on each side.

Usage: python benchmarks/cpu_rasterize.py [--num-gaussians 5000] [--sizes 96 128] [--threads 2] [--cuda] [--json F]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch


def _scene(num_gaussians: int, sh_degree: int, seed: int) -> Dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    N = num_gaussians
    spacing = (8.0 / N) ** (1.0 / 3.0)
    return {
        "means": torch.rand(N, 3, generator=g) * 2 - 1,
        "quats": torch.randn(N, 4, generator=g),
        "log_scales": math.log(spacing) + 0.3 * torch.randn(N, 3, generator=g),
        "logit_opacities": torch.full((N,), math.log(0.1 / 0.9)),
        "sh": 0.2 * torch.randn(N, (sh_degree + 1) ** 2, 3, generator=g),
    }


def _camera(size: int) -> Tuple[torch.Tensor, torch.Tensor]:
    focal = size / (2 * math.tan(math.radians(30)))
    Ks = torch.tensor([[focal, 0, size / 2], [0, focal, size / 2], [0, 0, 1.0]])[None]
    viewmats = torch.eye(4)[None]
    viewmats[0, 2, 3] = 3.5
    return viewmats, Ks


def _timed(fn: Callable[[], object], repeats: int, cuda: bool = False) -> Tuple[float, float]:
    """(min, median) wall milliseconds over `repeats` calls after one warm-up call (CUDA: synchronized)."""
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times), statistics.median(times)


def _render(params: Dict[str, torch.Tensor], size: int, sh_degree: int):
    from difix_ns.splat.rasterize import rasterization

    viewmats, Ks = (t.to(params["means"].device) for t in _camera(size))
    return rasterization(
        params["means"], params["quats"], torch.exp(params["log_scales"]),
        torch.sigmoid(params["logit_opacities"]), params["sh"], viewmats, Ks, size, size,
        sh_degree=sh_degree, absgrad=True,
    )  # fmt: skip


def _bench_size(
    params: Dict[str, torch.Tensor], size: int, sh_degree: int, repeats: int
) -> Tuple[List[str], Dict[str, object]]:
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci, _spherical_harmonics

    viewmats, Ks = _camera(size)

    def render():
        return _render(params, size, sh_degree)

    def forward():
        with torch.no_grad():
            render()

    def forward_backward():
        rgb, alpha, info = render()
        info["means2d"].retain_grad()
        (rgb.square().mean() + alpha.mean()).backward()
        for p in params.values():
            p.grad = None

    def pieces_forward_backward():
        covars, _ = _quat_scale_to_covar_preci(params["quats"], torch.exp(params["log_scales"]), True, False)
        radii, means2d, depths, conics, _ = _fully_fused_projection(
            params["means"], covars, viewmats, Ks, size, size
        )
        dirs = params["means"][None] - torch.linalg.inv(viewmats)[:, None, :3, 3]
        colors = torch.clamp_min(_spherical_harmonics(sh_degree, dirs, params["sh"][None]) + 0.5, 0.0)
        loss = means2d.square().mean() + conics.mean() + colors.mean() + depths.mean()
        loss.backward()
        for p in params.values():
            p.grad = None

    _, _, info = render()
    visible = int((info["radii"] > 0).sum())
    mean_radius = float(info["radii"][info["radii"] > 0].float().mean())
    fwd = _timed(forward, repeats)
    full = _timed(forward_backward, repeats)
    pieces = _timed(pieces_forward_backward, repeats)
    numbers = {
        "size": size, "visible": visible, "mean_radius_px": mean_radius,
        "cpu": {"forward_ms": fwd, "forward_backward_ms": full, "projection_sh_forward_backward_ms": pieces},
    }  # fmt: skip
    return [
        f"{size}x{size}, {visible} visible Gaussians, mean radius {mean_radius:.1f} px",
        f"  rasterization forward            min {fwd[0]:8.1f} ms   median {fwd[1]:8.1f} ms",
        f"  rasterization forward+backward   min {full[0]:8.1f} ms   median {full[1]:8.1f} ms",
        f"  gsplat torch projection+SH f+b   min {pieces[0]:8.1f} ms   median {pieces[1]:8.1f} ms"
        f"   (compositing = {full[0] - pieces[0]:.1f} ms, {100 * (1 - pieces[0] / full[0]):.0f}% of f+b)",
    ], numbers


def _loss_and_grads(params: Dict[str, torch.Tensor], size: int, sh_degree: int, weights: Tuple[torch.Tensor, ...]):
    """Image, alpha and the gradients (parameters and means2d) of a fixed random weighting of both, on CPU."""
    rgb, alpha, info = _render(params, size, sh_degree)
    info["means2d"].retain_grad()
    w_rgb, w_alpha = (w.to(rgb.device) for w in weights)
    ((rgb * w_rgb).sum() + (alpha * w_alpha).sum()).backward()
    grads = {k: v.grad.detach().cpu() for k, v in params.items()}
    grads["means2d"] = info["means2d"].grad.detach().cpu()
    for v in params.values():
        v.grad = None
    return rgb.detach().cpu(), alpha.detach().cpu(), grads


def _bench_cuda(
    params: Dict[str, torch.Tensor], size: int, sh_degree: int, repeats: int, cpu: Dict[str, object],
    device: str = "cuda",
) -> Tuple[List[str], Dict[str, object]]:
    """gsplat's fused CUDA rasterization on the same scene: agreement with the CPU path, and speed.
    (`device="cpu"` runs the same comparison against the CPU path itself: a check of this code without a GPU.)"""
    g = torch.Generator().manual_seed(1)
    weights = (torch.rand(1, size, size, 3, generator=g), torch.rand(1, size, size, 1, generator=g))
    on_gpu = {k: v.detach().to(device).requires_grad_() for k, v in params.items()}
    rgb_cpu, alpha_cpu, grads_cpu = _loss_and_grads(params, size, sh_degree, weights)
    rgb_gpu, alpha_gpu, grads_gpu = _loss_and_grads(on_gpu, size, sh_degree, weights)
    grads = {}
    for name, ref in grads_cpu.items():
        got, ref = grads_gpu[name].reshape(-1).double(), ref.reshape(-1).double()
        grads[name] = {
            "cosine": float(torch.nn.functional.cosine_similarity(got, ref, dim=0)),
            "relative_l2": float((got - ref).norm() / ref.norm().clamp_min(1e-30)),
        }
    parity = {
        "rgb_max_abs": float((rgb_gpu - rgb_cpu).abs().max()), "rgb_mean_abs": float((rgb_gpu - rgb_cpu).abs().mean()),
        "alpha_max_abs": float((alpha_gpu - alpha_cpu).abs().max()), "gradients": grads,
    }  # fmt: skip

    def forward():
        with torch.no_grad():
            _render(on_gpu, size, sh_degree)

    def forward_backward():
        _loss_and_grads(on_gpu, size, sh_degree, weights)

    cuda = device.startswith("cuda")
    fwd, full = _timed(forward, repeats, cuda=cuda), _timed(forward_backward, repeats, cuda=cuda)
    cpu_fwd, cpu_full = cpu["cpu"]["forward_ms"][0], cpu["cpu"]["forward_backward_ms"][0]  # type: ignore[index]
    numbers = {"forward_ms": fwd, "forward_backward_ms": full, "speedup_forward": cpu_fwd / fwd[0],
               "speedup_forward_backward": cpu_full / full[0]}  # fmt: skip
    worst = min(grads.items(), key=lambda kv: kv[1]["cosine"])
    return [
        f"  gsplat fused CUDA forward          min {fwd[0]:8.2f} ms   median {fwd[1]:8.2f} ms"
        f"   ({cpu_fwd / fwd[0]:.0f}x CPU)",
        f"  gsplat fused CUDA forward+backward min {full[0]:8.2f} ms   median {full[1]:8.2f} ms"
        f"   ({cpu_full / full[0]:.0f}x CPU)",
        f"  CUDA vs CPU: max |rgb| {parity['rgb_max_abs']:.2e}, mean |rgb| {parity['rgb_mean_abs']:.2e}, "
        f"max |alpha| {parity['alpha_max_abs']:.2e}; gradients "
        + ", ".join(f"{k} cos {v['cosine']:.4f} rel {v['relative_l2']:.3f}" for k, v in grads.items())
        + f" (lowest cosine: {worst[0]})",
    ], {"cuda": numbers, "parity": parity}


def _bench_isect(params: Dict[str, torch.Tensor], size: int, repeats: int) -> Tuple[List[str], Dict[str, float]]:
    from gsplat.cuda._torch_impl import _fully_fused_projection, _isect_tiles, _quat_scale_to_covar_preci

    from difix_ns.splat.composite import _TILE, _tile_entries

    viewmats, Ks = _camera(size)
    with torch.no_grad():
        covars, _ = _quat_scale_to_covar_preci(params["quats"], torch.exp(params["log_scales"]), True, False)
        radii, means2d, depths, conics, _ = _fully_fused_projection(params["means"], covars, viewmats, Ks, size, size)
        opacities = torch.sigmoid(params["logit_opacities"]).expand_as(depths)
    tiles = math.ceil(size / 16)
    start = time.perf_counter()
    _, isect_ids, _ = _isect_tiles(means2d, radii, depths, 16, tiles, tiles)
    loop_ms = (time.perf_counter() - start) * 1e3  # one run: it is slow
    ours16 = _timed(lambda: _tile_entries(means2d, conics, opacities, radii, depths, size, size, 16), repeats)
    ours = _timed(lambda: _tile_entries(means2d, conics, opacities, radii, depths, size, size), repeats)
    n16 = _tile_entries(means2d, conics, opacities, radii, depths, size, size, 16)[0].numel()
    numbers = {"size": size, "gsplat_isect_tiles_ms": loop_ms, "tile_entries_16px_ms": ours16[0],
               "tile_entries_ms": ours[0]}  # fmt: skip
    return [
        f"tile intersection at {size}x{size} (sorted (tile, depth) lists)",
        f"  gsplat _isect_tiles (Python loop), 16 px tiles:  {loop_ms:9.1f} ms  ({isect_ids.numel()} entries)",
        f"  _tile_entries (vectorized), 16 px tiles:         {ours16[0]:9.1f} ms  ({n16} entries)"
        f"   -> {loop_ms / ours16[0]:.0f}x faster",
        f"  _tile_entries, {_TILE} px tiles (used for compositing): {ours[0]:6.1f} ms",
    ], numbers


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num-gaussians", type=int, default=5000)
    parser.add_argument("--sizes", type=int, nargs="+", default=[96, 128], help="square image sizes in pixels")
    parser.add_argument("--sh-degree", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-isect", action="store_true", help="skip timing gsplat's slow _isect_tiles loop")
    parser.add_argument("--cuda", action="store_true",
                        help="also compare with gsplat's fused CUDA rasterization (needs a GPU)")  # fmt: skip
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.cuda and not torch.cuda.is_available():
        parser.error("--cuda needs a CUDA GPU")

    params = {k: v.requires_grad_() for k, v in _scene(args.num_gaussians, args.sh_degree, args.seed).items()}
    print(f"{args.num_gaussians} Gaussians, SH degree {args.sh_degree}, {torch.get_num_threads()} threads, "
          f"torch {torch.__version__}")
    result: Dict[str, object] = {
        "num_gaussians": args.num_gaussians, "sh_degree": args.sh_degree, "threads": torch.get_num_threads(),
        "torch": torch.__version__, "repeats": args.repeats,
        "gpu": torch.cuda.get_device_name() if args.cuda else None, "sizes": [],
    }  # fmt: skip
    for size in args.sizes:
        lines, numbers = _bench_size(params, size, args.sh_degree, args.repeats)
        if args.cuda:
            more, cuda_numbers = _bench_cuda(params, size, args.sh_degree, args.repeats, numbers)
            lines, numbers = lines + more, {**numbers, **cuda_numbers}
        print("\n".join(lines), flush=True)
        result["sizes"].append(numbers)  # type: ignore[union-attr]
        _write(args.json, result)
    if not args.skip_isect:
        lines, result["isect"] = _bench_isect(params, args.sizes[0], args.repeats)
        print("\n".join(lines))
        _write(args.json, result)


def _write(path: Optional[Path], result: Dict[str, object]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
