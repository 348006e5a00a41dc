"""Splat codec: importance pruning, SH degree reduction, quantization, Morton order (stateless functions).

Parameters travel as splatfacto's `gauss_params` layout, numpy float32 arrays: `means` [N, 3], `scales` [N, 3]
(log), `quats` [N, 4] (w, x, y, z), `opacities` [N, 1] (logit), `features_dc` [N, 3], `features_rest` [N, K, 3].

What is stored (`QuantizedGaussians`), in the spirit of gsplat's `PngCompression` (facts only, own code), at the
bits per attribute of `bits` (`DEFAULT_BITS`: gsplat's 16 for means, 8 for the rest):
- means: `sign(x) log(1 + |x|)`, then per-axis min-max (uniform) to `bits["means"]`;
- scales (log) and features_dc: per-channel min-max;
- quats: normalized, sign flipped so w >= 0, each component of [-1, 1] uniformly;
- opacities: the activated opacity sigmoid(logit) in 2^bits bins (decoded at bin centres, so the logit is finite);
- features_rest up to `sh_degree`: per-channel min-max to `sh_bits` bits when there are few Gaussians, else a
  k-means codebook (scikit-learn, 8-bit centroids) and one label per Gaussian;
- Gaussians sorted by the Morton code of their quantized means, so neighbours in the file are neighbours in space
  (what lets the entropy coder in `container` exploit locality).

Uniform codes are what the entropy coder compresses best (peaked histograms); an equal-usage (Lloyd-Max) scalar
codebook measured worse at equal bytes. Which bits win depends on the scene and its image size: at a tight budget,
fewer bits per attribute leave room for more Gaussians, which `BITS_LADDER` and `budget.encode_best` exploit.

`fake_quantize` is the PyTorch twin of `dequantize(quantize(...))` for quantization-aware fine-tuning: the same
decoded values (in the input's order), with straight-through gradients across the rounding only.

Importance (LightGaussian's global significance): the blending weight `opacity * transmittance` each Gaussian
contributes, summed over every pixel of the training views, times its normalized volume to a small power. The sum
is computed exactly with the project's rasterization: render a 1-channel feature `f` (zeros) per Gaussian;
d(sum of the render)/d f_i is Gaussian i's accumulated blending weight.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional, Sequence

import numpy as np

__all__ = [
    "BITS_LADDER",
    "DEFAULT_BITS",
    "GAUSS_KEYS",
    "QUANTIZED_KEYS",
    "QuantizedGaussians",
    "blending_importance",
    "check_bits",
    "dequantize",
    "fake_quantize",
    "kept_indices",
    "morton_codes",
    "prune",
    "quantize",
    "reduce_sh_degree",
]

GAUSS_KEYS = ("means", "scales", "quats", "opacities", "features_dc", "features_rest")
"""The parameter names of splatfacto's `gauss_params`, in storage order."""

QUANTIZED_KEYS = ("means", "scales", "quats", "opacities", "features_dc")
"""The attributes quantized at a chosen number of bits (`bits`); features_rest has its own settings."""

DEFAULT_BITS = {"means": 16, "scales": 8, "quats": 8, "opacities": 8, "features_dc": 8}
"""gsplat PngCompression's precision (and the only one of format version 1)."""

BITS_LADDER = tuple(
    dict(zip(QUANTIZED_KEYS, bits))
    for bits in ((16, 8, 8, 8, 8), (14, 7, 7, 7, 7), (13, 6, 6, 6, 6), (12, 5, 5, 5, 5), (11, 4, 4, 4, 5),
                 (10, 4, 4, 4, 4), (9, 3, 3, 3, 4), (8, 3, 3, 2, 3), (7, 2, 2, 2, 3), (6, 2, 2, 1, 2))
)  # fmt: skip
"""Bit allocations from fine to coarse, tried by `budget.encode_best` (finer: more precise Gaussians, coarser: more
Gaussians in the same bytes)."""


@dataclass
class QuantizedGaussians:
    """Everything the codec stores about the Gaussians: integer codes plus the float32 ranges to decode them."""

    codes: Dict[str, np.ndarray]
    """Integer arrays, one per stored attribute (uint16 means, uint8 the rest, uint8/uint16 SH labels)."""
    ranges: Dict[str, np.ndarray]
    """float32 [2, C] (min row, max row) of each min-max quantized attribute; `sh_centroids` for the codebook."""
    sh_degree: int
    """SH degree stored (0: features_rest not stored)."""
    sh_coeffs: int
    """K of the decoded `features_rest` [N, K, 3] (the model's own degree; coefficients above `sh_degree` are 0)."""
    sh_mode: str
    """"none", "quant" (per-channel min-max at `sh_bits`) or "kmeans" (codebook + labels)."""
    sh_bits: int = 6
    """Bits per SH value in "quant" mode and per centroid value (8) in "kmeans" mode."""
    extra: Dict[str, object] = field(default_factory=dict)
    """Free metadata carried in the header (training step, ...)."""
    bits: Dict[str, int] = field(default_factory=lambda: dict(DEFAULT_BITS))
    """Bits per value of each attribute of `QUANTIZED_KEYS`."""

    @property
    def num_gaussians(self) -> int:
        return int(self.codes["means"].shape[0])


def _check_params(params: Dict[str, np.ndarray]) -> int:
    missing = [k for k in GAUSS_KEYS if k not in params]
    if missing:
        raise ValueError(f"Gaussian parameters lack {missing}; expected the keys {list(GAUSS_KEYS)}")
    n = params["means"].shape[0]
    shapes = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n, 1), "features_dc": (n, 3)}
    for key, shape in shapes.items():
        if tuple(params[key].shape) != shape:
            raise ValueError(f"{key} must have shape {list(shape)} (N from means), got {list(params[key].shape)}")
    rest = params["features_rest"]
    if rest.ndim != 3 or rest.shape[0] != n or rest.shape[2] != 3:
        raise ValueError(f"features_rest must have shape [{n}, K, 3], got {list(rest.shape)}")
    for key in GAUSS_KEYS:
        if not np.isfinite(params[key]).all():
            raise ValueError(f"{key} holds non-finite values; the codec stores finite parameters only")
    if n == 0:
        raise ValueError("there are no Gaussians to compress (N = 0)")
    return n


def _to_numpy(params) -> Dict[str, np.ndarray]:
    out = {}
    for key in GAUSS_KEYS:
        value = params[key]
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        out[key] = np.asarray(value, dtype=np.float32)
    return out


# ---------------------------------------------------------------------------------------------------- importance


def blending_importance(
    means, quats, scales, opacities, viewmats, Ks, sizes: Sequence[tuple], volume_power: float = 0.1,
    on_view: Optional[Callable[[int], None]] = None,
):
    """LightGaussian global significance of each Gaussian over the given cameras.

    Args:
        means, quats: [N, 3], [N, 4] tensors (gauss_params layout).
        scales, opacities: [N, 3] log-scales and [N, 1] logits, as stored by splatfacto (activated here).
        viewmats, Ks: [C, 4, 4] world-to-camera matrices and [C, 3, 3] intrinsics.
        sizes: C (width, height) pairs.
        volume_power: exponent of the volume factor min(volume / 90th-percentile volume, 1) (LightGaussian: 0.1;
            0 disables it).
        on_view: called with the view index after each view (progress bars).

    Returns: [N] float64 numpy array, the accumulated blending weight times the volume factor."""
    import torch

    from difix_ns.splat.rasterize import rasterization

    if viewmats.shape[0] != Ks.shape[0] or viewmats.shape[0] != len(sizes) or len(sizes) == 0:
        raise ValueError(f"need C >= 1 cameras with C viewmats, Ks and sizes, got {viewmats.shape[0]}, "
                         f"{Ks.shape[0]}, {len(sizes)}")  # fmt: skip
    n = means.shape[0]
    weight = torch.zeros(n, 1, dtype=means.dtype, device=means.device, requires_grad=True)
    activated_scales, activated_opacities = torch.exp(scales.detach()), torch.sigmoid(opacities.detach()).reshape(n)
    for c, (width, height) in enumerate(sizes):
        render, _, _ = rasterization(
            means.detach(), quats.detach(), activated_scales, activated_opacities, weight,
            viewmats[c : c + 1], Ks[c : c + 1], int(width), int(height), sh_degree=None,
        )  # fmt: skip
        render.sum().backward()
        if on_view is not None:
            on_view(c)
    accumulated = weight.grad.reshape(n).double().cpu().numpy()
    if volume_power == 0:
        return accumulated
    volume = activated_scales.prod(dim=1).double().cpu().numpy()
    reference = max(float(np.percentile(volume, 90)), 1e-300)
    return accumulated * np.minimum(volume / reference, 1.0) ** volume_power


# ------------------------------------------------------------------------------------------ pruning and SH degree


def prune(params: Dict[str, np.ndarray], importance: np.ndarray, num_gaussians: int) -> Dict[str, np.ndarray]:
    """The `num_gaussians` most important Gaussians (ties broken by index, so the result is deterministic)."""
    params = _to_numpy(params)
    n = _check_params(params)
    importance = np.asarray(importance, dtype=np.float64).reshape(-1)
    if importance.shape[0] != n:
        raise ValueError(f"importance must have one value per Gaussian ({n}), got {importance.shape[0]}")
    if not 1 <= num_gaussians <= n:
        raise ValueError(f"num_gaussians must be in 1..{n}, got {num_gaussians}")
    keep = kept_indices(importance, num_gaussians)
    return {k: v[keep] for k, v in params.items()}


def kept_indices(importance: np.ndarray, num_gaussians: int) -> np.ndarray:
    """Indices (ascending) of the `num_gaussians` most important Gaussians, ties broken by index: what `prune`
    keeps."""
    importance = np.asarray(importance, dtype=np.float64).reshape(-1)
    return np.sort(np.argsort(-importance, kind="stable")[:num_gaussians])


def reduce_sh_degree(features_rest: np.ndarray, sh_degree: int) -> np.ndarray:
    """features_rest [N, K, 3] cut to the (sh_degree + 1)^2 - 1 coefficients of degrees 1..sh_degree."""
    keep = (sh_degree + 1) ** 2 - 1
    if sh_degree < 0 or keep > features_rest.shape[1]:
        raise ValueError(
            f"sh_degree must be in 0..{int(np.sqrt(features_rest.shape[1] + 1)) - 1} for features_rest of shape "
            f"{list(features_rest.shape)}, got {sh_degree}"
        )
    return features_rest[:, :keep]


# ----------------------------------------------------------------------------------------------- quantization


def _minmax_codes(x: np.ndarray, bits: int):
    """Per-column min-max codes of x [N, C] (float32) and its [2, C] float32 range."""
    lo, hi = x.min(axis=0).astype(np.float32), x.max(axis=0).astype(np.float32)
    levels = 2**bits - 1
    span = np.where(hi > lo, hi - lo, np.float32(1)).astype(np.float32)
    codes = np.rint((x - lo) / span * levels).clip(0, levels)
    dtype = np.uint16 if bits > 8 else np.uint8
    return codes.astype(dtype), np.stack([lo, hi]).astype(np.float32)


def _minmax_values(codes: np.ndarray, value_range: np.ndarray, bits: int) -> np.ndarray:
    lo, hi = value_range[0].astype(np.float32), value_range[1].astype(np.float32)
    step = ((hi - lo) / np.float32(2**bits - 1)).astype(np.float32)
    return (lo + codes.astype(np.float32) * step).astype(np.float32)


def morton_codes(grid: np.ndarray) -> np.ndarray:
    """Morton (Z-order) codes of integer 3D grid points [N, 3] (< 2^21 per axis): bits of x, y, z interleaved."""
    grid = np.asarray(grid, dtype=np.uint64)
    if grid.ndim != 2 or grid.shape[1] != 3:
        raise ValueError(f"grid must have shape [N, 3], got {list(grid.shape)}")
    if grid.size and int(grid.max()) >= 2**21:
        raise ValueError(f"grid coordinates must be < 2^21, got {int(grid.max())}")

    def spread(v: np.ndarray) -> np.ndarray:  # 21 bits -> every third bit of 63
        v = v & np.uint64(0x1FFFFF)
        for shift, mask in ((32, 0x1F00000000FFFF), (16, 0x1F0000FF0000FF), (8, 0x100F00F00F00F00F),
                            (4, 0x10C30C30C30C30C3), (2, 0x1249249249249249)):  # fmt: skip
            v = (v | (v << np.uint64(shift))) & np.uint64(mask)
        return v

    return spread(grid[:, 0]) | (spread(grid[:, 1]) << np.uint64(1)) | (spread(grid[:, 2]) << np.uint64(2))


def check_bits(bits: Dict[str, int]) -> Dict[str, int]:
    """`bits` validated: one entry per attribute of `QUANTIZED_KEYS`, means 1..16 bits, the others 1..8."""
    if set(bits) != set(QUANTIZED_KEYS):
        raise ValueError(f"bits must give exactly {list(QUANTIZED_KEYS)}, got {sorted(bits)}")
    for key, value in bits.items():
        top = 16 if key == "means" else 8
        if not (isinstance(value, (int, np.integer)) and 1 <= value <= top):
            raise ValueError(f"bits of {key} must be an integer in 1..{top}, got {value!r}")
    return {k: int(bits[k]) for k in QUANTIZED_KEYS}


def _log_transform(x: np.ndarray) -> np.ndarray:
    return (np.sign(x) * np.log1p(np.abs(x))).astype(np.float32)


def _inverse_log_transform(y: np.ndarray) -> np.ndarray:
    return (np.sign(y) * np.expm1(np.abs(y))).astype(np.float32)


def _quantize_sh(rest: np.ndarray, sh_bits: int, codebook_size: int, seed: int):
    """(codes, ranges, mode) of features_rest [N, k, 3] cut to the stored degree."""
    n = rest.shape[0]
    flat = rest.reshape(n, -1)
    if flat.shape[1] == 0:
        return {}, {}, "none"
    if n < 4 * codebook_size:  # a codebook would cost about as much as the values themselves
        codes, value_range = _minmax_codes(flat, sh_bits)
        return {"features_rest": codes}, {"features_rest": value_range}, "quant"
    from sklearn.cluster import MiniBatchKMeans

    kmeans = MiniBatchKMeans(n_clusters=codebook_size, random_state=seed, n_init=1, batch_size=4096, max_iter=30)
    labels = kmeans.fit_predict(flat.astype(np.float64))
    centroid_codes, centroid_range = _minmax_codes(kmeans.cluster_centers_.astype(np.float32), 8)
    label_dtype = np.uint8 if codebook_size <= 256 else np.uint16
    codes = {"sh_labels": labels.astype(label_dtype), "sh_centroids": centroid_codes}
    return codes, {"sh_centroids": centroid_range}, "kmeans"


def quantize(
    params: Dict[str, np.ndarray], sh_degree: int, sh_bits: int = 6, codebook_size: int = 1024, seed: int = 0,
    bits: Optional[Dict[str, int]] = None,
) -> QuantizedGaussians:  # fmt: skip
    """Quantize (already pruned) Gaussians and sort them in Morton order of their quantized means.

    `sh_degree`: SH degree kept (<= the degree `features_rest` holds); `sh_bits`: bits per SH value when there are
    fewer than 4 x `codebook_size` Gaussians, else a k-means codebook of `codebook_size` entries; `bits`: bits per
    value of means, scales, quats, opacities and features_dc (default `DEFAULT_BITS`)."""
    params = _to_numpy(params)
    n = _check_params(params)
    bits = check_bits(dict(DEFAULT_BITS) if bits is None else bits)
    if not 1 <= sh_bits <= 8:
        raise ValueError(f"sh_bits must be in 1..8, got {sh_bits}")
    if not 2 <= codebook_size <= 65536:
        raise ValueError(f"codebook_size must be in 2..65536, got {codebook_size}")
    rest = reduce_sh_degree(params["features_rest"], sh_degree)
    means_codes, means_range = _minmax_codes(_log_transform(params["means"]), bits["means"])
    order = np.argsort(morton_codes(means_codes.astype(np.uint64)), kind="stable")

    quats = params["quats"] / np.maximum(np.linalg.norm(params["quats"], axis=1, keepdims=True), 1e-12)
    quats = np.where(quats[:, :1] < 0, -quats, quats)
    opacity = 1.0 / (1.0 + np.exp(-params["opacities"].astype(np.float64)))
    scale_codes, scale_range = _minmax_codes(params["scales"], bits["scales"])
    dc_codes, dc_range = _minmax_codes(params["features_dc"], bits["features_dc"])
    quat_levels, opacity_bins = 2 ** bits["quats"] - 1, 2 ** bits["opacities"]
    codes = {
        "means": means_codes,
        "scales": scale_codes,
        "quats": np.rint((quats + 1.0) * (quat_levels / 2)).clip(0, quat_levels).astype(np.uint8),
        "opacities": np.floor(opacity * opacity_bins).clip(0, opacity_bins - 1).astype(np.uint8),
        "features_dc": dc_codes,
    }
    ranges = {"means": means_range, "scales": scale_range, "features_dc": dc_range}
    codes = {k: v[order] for k, v in codes.items()}
    sh_codes, sh_ranges, sh_mode = _quantize_sh(rest[order], sh_bits, codebook_size, seed)
    codes.update(sh_codes)
    ranges.update(sh_ranges)
    return QuantizedGaussians(codes, ranges, sh_degree, params["features_rest"].shape[1], sh_mode, sh_bits,
                              bits=bits)  # fmt: skip


def dequantize(q: QuantizedGaussians) -> Dict[str, np.ndarray]:
    """Float32 Gaussian parameters (gauss_params layout, features_rest with `q.sh_coeffs` coefficients)."""
    n, bits = q.num_gaussians, q.bits
    opacity = (q.codes["opacities"].astype(np.float64) + 0.5) / 2.0 ** bits["opacities"]
    quat_half_levels = np.float32((2 ** bits["quats"] - 1) / 2)
    out = {
        "means": _inverse_log_transform(_minmax_values(q.codes["means"], q.ranges["means"], bits["means"])),
        "scales": _minmax_values(q.codes["scales"], q.ranges["scales"], bits["scales"]),
        "quats": (q.codes["quats"].astype(np.float32) / quat_half_levels - np.float32(1)).astype(np.float32),
        "opacities": np.log(opacity / (1.0 - opacity)).astype(np.float32),
        "features_dc": _minmax_values(q.codes["features_dc"], q.ranges["features_dc"], bits["features_dc"]),
    }
    stored = (q.sh_degree + 1) ** 2 - 1
    rest = np.zeros((n, q.sh_coeffs, 3), dtype=np.float32)
    if q.sh_mode == "quant":
        rest[:, :stored] = _minmax_values(q.codes["features_rest"], q.ranges["features_rest"], q.sh_bits).reshape(
            n, stored, 3
        )
    elif q.sh_mode == "kmeans":
        centroids = _minmax_values(q.codes["sh_centroids"], q.ranges["sh_centroids"], 8)
        rest[:, :stored] = centroids[q.codes["sh_labels"].astype(np.int64)].reshape(n, stored, 3)
    out["features_rest"] = rest
    return out


# ------------------------------------------------------------------------------------- PyTorch twin (fine-tuning)


def _fake_minmax(x, bits: int):
    """x [N, C] (torch) at the decoded values of its per-column min-max codes; straight-through gradient."""
    import torch

    lo, hi = x.detach().min(dim=0).values, x.detach().max(dim=0).values
    levels = float(2**bits - 1)
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    codes = torch.round((x.detach() - lo) / span * levels).clamp(0, levels)
    decoded = lo + codes * ((hi - lo) / levels)
    return x + (decoded - x).detach()


def fake_quantize(params, bits: Optional[Dict[str, int]] = None, sh_degree: Optional[int] = None):
    """What `dequantize(quantize(params, sh_degree, bits=bits))` decodes, as torch tensors in the input's order
    (no Morton sort), differentiable: each rounding passes its gradient straight through (the transforms around it,
    log of the means, normalization and sign of the quats, sigmoid of the opacities, are differentiated exactly).

    Args:
        params: torch tensors of the `GAUSS_KEYS` (gauss_params layout).
        bits: bits per attribute of `QUANTIZED_KEYS` (default `DEFAULT_BITS`).
        sh_degree: SH degree stored (None: every coefficient); the coefficients above it decode as 0. The stored
            ones keep their float values: the codec fits its k-means codebook or their ranges after fine-tuning.

    Returns: a dict of the same keys and shapes."""
    import torch

    bits = check_bits(dict(DEFAULT_BITS) if bits is None else bits)
    means = params["means"]
    log_means = _fake_minmax(torch.sign(means) * torch.log1p(means.abs()), bits["means"])
    quats = params["quats"] / params["quats"].norm(dim=1, keepdim=True).clamp_min(1e-12)
    quats = torch.where(quats[:, :1] < 0, -quats, quats)
    quat_half_levels = (2 ** bits["quats"] - 1) / 2
    quat_codes = torch.round((quats.detach() + 1.0) * quat_half_levels).clamp(0, 2 * quat_half_levels)
    opacity = torch.sigmoid(params["opacities"])
    bins = 2 ** bits["opacities"]
    centre = (torch.floor(opacity.detach() * bins).clamp(0, bins - 1) + 0.5) / bins
    opacity = opacity + (centre - opacity).detach()
    rest = params["features_rest"]
    if sh_degree is not None:
        stored = (sh_degree + 1) ** 2 - 1
        rest = torch.cat([rest[:, :stored], torch.zeros_like(rest[:, stored:])], dim=1)
    return {
        "means": torch.sign(log_means) * torch.expm1(log_means.abs()),
        "scales": _fake_minmax(params["scales"], bits["scales"]),
        "quats": quats + (quat_codes / quat_half_levels - 1.0 - quats).detach(),
        "opacities": torch.log(opacity / (1.0 - opacity)),
        "features_dc": _fake_minmax(params["features_dc"], bits["features_dc"]),
        "features_rest": rest,
    }
