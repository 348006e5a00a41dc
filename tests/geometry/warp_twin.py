"""Brute-force twin of `difix_ns.geometry.warp`: one pixel and one reference at a time, float64 numpy, every step
written out (lift, rigid transform, pinhole projection, frame test, occlusion against the reference depth of the
pixel the point falls in, bilinear lookup with clamped borders)."""

from __future__ import annotations

import math
from typing import Tuple

import numpy as np


def _bilinear(image: np.ndarray, u: float, v: float) -> np.ndarray:
    """Value of `image` [C, H, W] at pixel position (u, v), pixel centres at +0.5, coordinates clamped to the
    centres of the border pixels (grid_sample's border padding)."""
    _, height, width = image.shape
    x = min(max(u - 0.5, 0.0), width - 1.0)
    y = min(max(v - 0.5, 0.0), height - 1.0)
    x0, y0 = int(math.floor(x)), int(math.floor(y))
    x1, y1 = min(x0 + 1, width - 1), min(y0 + 1, height - 1)
    wx, wy = x - x0, y - y0
    top = image[:, y0, x0] * (1 - wx) + image[:, y0, x1] * wx
    bottom = image[:, y1, x0] * (1 - wx) + image[:, y1, x1] * wx
    return top * (1 - wy) + bottom * wy


def _pixel_value(depth: np.ndarray, u: float, v: float) -> float:
    """`depth` [H, W] at the pixel that contains position (u, v), clamped to the image."""
    height, width = depth.shape
    return float(depth[min(int(math.floor(v)), height - 1), min(int(math.floor(u)), width - 1)])


def warp_one_pixel(
    row: int, col: int, target_depth, target_c2w, target_k, ref_rgb, ref_depth, ref_c2w, ref_k, rtol: float
) -> Tuple[np.ndarray, bool]:
    """(colour, valid) of target pixel (row, col) warped from one reference view."""
    depth = float(target_depth[row, col])
    if depth <= 0:
        return np.zeros(3), False
    x = (col + 0.5 - target_k[0, 2]) / target_k[0, 0] * depth
    y = -(row + 0.5 - target_k[1, 2]) / target_k[1, 1] * depth
    point = target_c2w[:, :3] @ np.array([x, y, -depth]) + target_c2w[:, 3]
    cam = ref_c2w[:, :3].T @ (point - ref_c2w[:, 3])
    z = -cam[2]
    if z <= 1e-6:
        return np.zeros(3), False
    u = ref_k[0, 0] * cam[0] / z + ref_k[0, 2]
    v = -ref_k[1, 1] * cam[1] / z + ref_k[1, 2]
    height, width = ref_depth.shape
    if not (0 <= u <= width and 0 <= v <= height):
        return np.zeros(3), False
    ref_z = _pixel_value(ref_depth, u, v)
    if not (ref_z > 0 and z <= ref_z * (1 + rtol)):
        return np.zeros(3), False
    return _bilinear(ref_rgb, u, v), True


def warp_brute_force(
    ref_rgb, ref_depth, ref_c2w, ref_k, target_depth, target_c2w, target_k, rtol: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Warped colours [K, 3, H, W] and validity [K, 1, H, W] (numpy), pixel by pixel."""
    args = [
        np.asarray(a, dtype=np.float64)
        for a in (ref_rgb, ref_depth, ref_c2w, ref_k, target_depth, target_c2w, target_k)
    ]
    ref_rgb, ref_depth, ref_c2w, ref_k, target_depth, target_c2w, target_k = args
    count = ref_rgb.shape[0]
    height, width = target_depth.shape
    rgb = np.zeros((count, 3, height, width))
    valid = np.zeros((count, 1, height, width), dtype=bool)
    for k in range(count):
        for row in range(height):
            for col in range(width):
                rgb[k, :, row, col], valid[k, 0, row, col] = warp_one_pixel(
                    row, col, target_depth, target_c2w, target_k, ref_rgb[k], ref_depth[k], ref_c2w[k], ref_k[k], rtol
                )
    return rgb, valid
