"""3D Gaussian rasterization that runs on CPU as well as CUDA.

On CUDA this is gsplat 1.4.0's fused ``gsplat.rendering.rasterization`` (``packed=False``, ``sparse_grad=False``).
On CPU it chains gsplat's own pure-PyTorch projection and spherical harmonics (``gsplat.cuda._torch_impl``) with
:func:`difix_ns.splat.composite.composite_gaussians`, so autograd covers everything and gsplat's
``DefaultStrategy`` can densify from ``info`` exactly as it does after the CUDA call.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from jaxtyping import Float
from torch import Tensor

from difix_ns.splat.composite import composite_gaussians

__all__ = ["rasterization", "RENDER_MODES", "RASTERIZE_MODES"]

RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")
RASTERIZE_MODES = ("classic", "antialiased")


def rasterization(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, "N"],
    colors: Float[Tensor, "N D"] | Float[Tensor, "N K 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Float[Tensor, "C D"]] = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
    absgrad: bool = False,
) -> Tuple[Float[Tensor, "C H W Dout"], Float[Tensor, "C H W 1"], Dict[str, Any]]:
    """Render Gaussians into ``C`` pinhole cameras; same arguments and units as gsplat's ``rasterization``.

    Args:
        means: World-space centers.
        quats: Rotations ``(w, x, y, z)``; normalized internally.
        scales: Per-axis standard deviations (already activated).
        opacities: Opacities in ``[0, 1]`` (already activated).
        colors: ``[N, D]`` features when ``sh_degree`` is None, else ``[N, K, 3]`` SH coefficients with
            ``(sh_degree + 1) ** 2 <= K`` (evaluated, then ``clamp_min(x + 0.5, 0)`` like gsplat).
        viewmats, Ks: World-to-camera matrices and intrinsics.
        width, height: Image size in pixels.
        near_plane, far_plane: Gaussians outside this depth range are culled.
        eps2d: Added to the 2D covariance diagonal (dilation).
        sh_degree: SH degree to evaluate, or None for plain features.
        backgrounds: ``[C, D]`` background for the color channels (``D = 3`` with SH); depth gets 0.
        render_mode: ``"RGB"``, ``"D"`` (accumulated depth), ``"ED"`` (depth / alpha), ``"RGB+D"`` or ``"RGB+ED"``.
        rasterize_mode: ``"classic"`` or ``"antialiased"`` (opacities times the dilation compensation).
        absgrad: Also accumulate ``info["means2d"].absgrad`` in backward.

    Returns:
        ``(render_colors, render_alphas, info)``. ``info`` holds what ``DefaultStrategy`` reads with
        ``packed=False``: ``means2d`` ``[C, N, 2]`` (call ``retain_grad()`` on it), ``radii`` ``[C, N]``,
        ``width``, ``height``, ``n_cameras``, ``gaussian_ids``/``camera_ids`` (None), plus ``depths``,
        ``conics`` and the per-view ``opacities``.
    """
    inputs = (means, quats, scales, opacities, colors, viewmats, Ks, width, height)
    _check_inputs(*inputs, sh_degree, backgrounds, render_mode, rasterize_mode)
    if means.is_cuda:
        from gsplat.rendering import rasterization as gsplat_rasterization

        return gsplat_rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree, backgrounds=backgrounds,
            render_mode=render_mode, rasterize_mode=rasterize_mode, packed=False, sparse_grad=False,
            absgrad=absgrad,
        )
    return _rasterization_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
        sh_degree, backgrounds, render_mode, rasterize_mode, absgrad,
    )


def _rasterization_torch(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, eps2d,
    sh_degree, backgrounds, render_mode, rasterize_mode, absgrad,
) -> Tuple[Tensor, Tensor, Dict[str, Any]]:
    """The CPU path: gsplat's PyTorch projection and SH, then :func:`composite_gaussians`."""
    from gsplat.cuda._torch_impl import _fully_fused_projection, _quat_scale_to_covar_preci

    C = viewmats.shape[0]
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_covar=True, compute_preci=False, triu=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane, far_plane=far_plane,
        calc_compensations=(rasterize_mode == "antialiased"),
    )
    view_opacities = opacities.repeat(C, 1)  # [C, N]
    if compensations is not None:
        view_opacities = view_opacities * compensations
    features = _view_colors(means, colors, viewmats, sh_degree)  # [C, N, D]

    if render_mode in ("RGB+D", "RGB+ED"):
        features = torch.cat([features, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        features = depths[..., None]
        backgrounds = None  # gsplat uses a zero background for depth
    render_colors, render_alphas = composite_gaussians(
        means2d, conics, view_opacities, features, radii, depths.detach(), width, height,
        backgrounds=backgrounds, absgrad=absgrad,
    )
    if render_mode in ("ED", "RGB+ED"):
        expected_depth = render_colors[..., -1:] / render_alphas.clamp(min=1e-10)
        render_colors = torch.cat([render_colors[..., :-1], expected_depth], dim=-1)

    info = {
        "camera_ids": None,
        "gaussian_ids": None,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": view_opacities,
        "width": width,
        "height": height,
        "n_cameras": C,
    }
    return render_colors, render_alphas, info


def _view_colors(means: Tensor, colors: Tensor, viewmats: Tensor, sh_degree: Optional[int]) -> Tensor:
    """Per-view colors ``[C, N, D]``: plain features broadcast, or SH evaluated toward each camera."""
    C = viewmats.shape[0]
    if sh_degree is None:
        return colors.expand(C, -1, -1)
    from gsplat.cuda._torch_impl import _spherical_harmonics

    camera_centers = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
    dirs = means[None, :, :] - camera_centers[:, None, :]  # [C, N, 3]
    rgb = _spherical_harmonics(sh_degree, dirs, colors.expand(C, -1, -1, -1))
    return torch.clamp_min(rgb + 0.5, 0.0)


def _check_inputs(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, render_mode,
    rasterize_mode,
) -> None:
    """Raise ValueError naming the first argument whose type, shape, device or value is wrong."""
    if not isinstance(means, Tensor) or means.dim() != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be a [N, 3] tensor, got {_shape(means)}")
    if not isinstance(viewmats, Tensor) or viewmats.dim() != 3 or tuple(viewmats.shape[1:]) != (4, 4):
        raise ValueError(f"viewmats must be a [C, 4, 4] tensor, got {_shape(viewmats)}")
    N, C = means.shape[0], viewmats.shape[0]
    if C == 0:
        raise ValueError("viewmats must hold at least one camera, got shape [0, 4, 4]")
    for name, tensor, shape in (
        ("quats", quats, (N, 4)), ("scales", scales, (N, 3)), ("opacities", opacities, (N,)), ("Ks", Ks, (C, 3, 3)),
    ):
        if not isinstance(tensor, Tensor) or tuple(tensor.shape) != shape:
            raise ValueError(
                f"{name} must have shape {list(shape)} (N from means, C from viewmats), got {_shape(tensor)}"
            )
    channels = _check_colors(colors, N, sh_degree)
    if backgrounds is not None and (not isinstance(backgrounds, Tensor) or tuple(backgrounds.shape) != (C, channels)):
        raise ValueError(
            f"backgrounds must have shape [{C}, {channels}] (cameras, color channels), got {_shape(backgrounds)}"
        )
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if render_mode not in RENDER_MODES:
        raise ValueError(f"render_mode must be one of {RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in RASTERIZE_MODES:
        raise ValueError(f"rasterize_mode must be one of {RASTERIZE_MODES}, got {rasterize_mode!r}")
    named = (("quats", quats), ("scales", scales), ("opacities", opacities), ("colors", colors),
             ("viewmats", viewmats), ("Ks", Ks), ("backgrounds", backgrounds))
    for name, tensor in (("means", means),) + named:
        if tensor is not None and not tensor.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {tensor.dtype}")
    for name, tensor in named:
        if tensor is not None and tensor.device != means.device:
            raise ValueError(f"{name} is on {tensor.device}, means on {means.device}")


def _check_colors(colors, N: int, sh_degree: Optional[int]) -> int:
    """Validate ``colors`` against ``sh_degree``; return the number of rendered color channels."""
    if not isinstance(colors, Tensor):
        raise ValueError(f"colors must be a tensor, got {_shape(colors)}")
    if sh_degree is None:
        if colors.dim() != 2 or colors.shape[0] != N:
            raise ValueError(f"colors must have shape [{N}, D] when sh_degree is None, got {_shape(colors)}")
        return colors.shape[1]
    if not isinstance(sh_degree, int) or isinstance(sh_degree, bool) or sh_degree < 0:
        raise ValueError(f"sh_degree must be None or an int >= 0, got {sh_degree!r}")
    if colors.dim() != 3 or colors.shape[0] != N or colors.shape[2] != 3:
        raise ValueError(
            f"colors must have shape [{N}, K, 3] SH coefficients when sh_degree is set, got {_shape(colors)}"
        )
    if (sh_degree + 1) ** 2 > colors.shape[1]:
        raise ValueError(
            f"sh_degree={sh_degree} needs K >= {(sh_degree + 1) ** 2} SH coefficients, "
            f"colors has shape {_shape(colors)}"
        )
    return 3


def _shape(value) -> str:
    return str(list(value.shape)) if isinstance(value, Tensor) else repr(type(value).__name__)
