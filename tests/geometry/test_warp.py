"""Tests of the depth warp (`difix_ns.geometry.warp`): brute-force twin, an exact plane, masks, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from difix_ns.geometry import covisibility_mask, project_into_references, ray_distance_to_z_depth, warp_references
from warp_twin import warp_brute_force

RTOL = 0.03


def _k(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)


def _pose(rotation: np.ndarray, position) -> torch.Tensor:
    return torch.tensor(np.concatenate([rotation, np.asarray(position, dtype=np.float64)[:, None]], axis=1))


def _rot(axis, angle: float) -> np.ndarray:
    axis = np.asarray(axis, dtype=np.float64) / np.linalg.norm(axis)
    cross = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(angle) * cross + (1 - math.cos(angle)) * cross @ cross


def _bumpy_depth(height: int, width: int, seed: int) -> torch.Tensor:
    """A slanted surface with a bump and a near box: depth edges, occluders, smooth parts."""
    rng = np.random.default_rng(seed)
    v, u = np.meshgrid(np.arange(height) / height, np.arange(width) / width, indexing="ij")
    depth = 3.0 + 0.8 * u - 0.4 * v + 0.3 * np.exp(-((u - 0.5) ** 2 + (v - 0.5) ** 2) * 20)
    r0, c0 = rng.integers(1, height // 2), rng.integers(1, width // 2)
    depth[r0 : r0 + height // 3, c0 : c0 + width // 3] = 1.6
    return torch.tensor(depth)


def _random_case(seed: int):
    rng = np.random.default_rng(seed)
    height, width, ref_h, ref_w = 12, 16, 10, 14
    refs = 3
    target_c2w = _pose(_rot(rng.normal(size=3), 0.1), rng.normal(size=3) * 0.1)
    ref_c2w = torch.stack(
        [
            _pose(_rot(rng.normal(size=3), 0.15) @ target_c2w[:, :3].numpy(), rng.normal(size=3) * 0.4)
            for _ in range(refs)
        ]
    )
    ref_k = torch.stack([_k(13.0 + i, 12.0, ref_w / 2 + 0.3 * i, ref_h / 2) for i in range(refs)])
    return dict(
        ref_rgb=torch.tensor(rng.uniform(size=(refs, 3, ref_h, ref_w))),
        ref_depth=torch.stack([_bumpy_depth(ref_h, ref_w, seed + 10 + i) for i in range(refs)]),
        ref_c2w=ref_c2w,
        ref_intrinsics=ref_k,
        target_depth=_bumpy_depth(height, width, seed),
        target_c2w=target_c2w,
        target_intrinsics=_k(15.0, 15.5, width / 2, height / 2 - 0.2),
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_brute_force_twin(seed: int):
    case = _random_case(seed)
    rgb, valid, meta = warp_references(**case, rtol=RTOL)
    twin_rgb, twin_valid = warp_brute_force(*case.values(), rtol=RTOL)
    assert valid.shape == (3, 1, 12, 16) and valid.dtype == torch.bool and rgb.shape == (3, 3, 12, 16)
    # A fair test: some of each kind of pixel (valid, out of frame, occluded).
    assert 0.2 < valid.float().mean() < 0.9
    assert (~meta["in_frame"]).any() and (meta["in_frame"] & ~meta["unoccluded"]).any()
    np.testing.assert_array_equal(valid.numpy(), twin_valid)
    torch.testing.assert_close(rgb, torch.tensor(twin_rgb), rtol=0, atol=1e-10)


def _plane_case(shift_px: float, width: int = 20, height: int = 8, depth: float = 4.0):
    """A fronto-parallel plane at z-depth `depth` seen by a target camera and a reference translated along +x so
    that the plane moves by `shift_px` pixels; the plane's texture is linear in x (bilinear sampling is exact)."""
    fx = 10.0
    baseline = shift_px * depth / fx
    k = _k(fx, fx, width / 2, height / 2)
    target_c2w = _pose(np.eye(3), [0.0, 0.0, 0.0])
    ref_c2w = _pose(np.eye(3), [baseline, 0.0, 0.0])[None]
    cols = torch.arange(width, dtype=torch.float64) + 0.5

    def texture(world_x: torch.Tensor) -> torch.Tensor:  # [W] -> [3, H, W]
        rgb = torch.stack([0.5 + 0.1 * world_x, 0.2 + 0.05 * world_x, 0.8 - 0.07 * world_x])
        return rgb[:, None, :].expand(3, height, width)

    ref_rgb = texture((cols - width / 2) / fx * depth + baseline)[None]
    target_truth = texture((cols - width / 2) / fx * depth)
    plane = torch.full((height, width), depth, dtype=torch.float64)
    return ref_rgb, plane[None].clone(), ref_c2w, k[None], plane, target_c2w, k, target_truth


@pytest.mark.parametrize("shift_px", [3.0, 2.37])
def test_exact_on_a_fronto_parallel_plane(shift_px: float):
    ref_rgb, ref_depth, ref_c2w, ref_k, depth, target_c2w, k, truth = _plane_case(shift_px)
    rgb, valid, meta = warp_references(ref_rgb, ref_depth, ref_c2w, ref_k, depth, target_c2w, k)
    width = depth.shape[1]
    cols = torch.arange(width, dtype=torch.float64) + 0.5
    # The plane moves left by shift_px in the reference: target column u lands at u - shift_px.
    torch.testing.assert_close(meta["uv"][0, 3, :, 0], cols - shift_px, rtol=0, atol=1e-12)
    expected_valid = cols - shift_px >= 0
    assert torch.equal(valid[0, 0], expected_valid[None].expand_as(depth))
    # Inside the frame, away from the clamped border column, the warp reproduces the target's own texture.
    inside = cols - shift_px >= 0.5
    torch.testing.assert_close(rgb[0][..., inside], truth[..., inside], rtol=0, atol=1e-12)
    assert torch.all(rgb[0][..., ~expected_valid] == 0)
    if shift_px == 3.0:  # integer shift: the warp is a pure pixel shift
        torch.testing.assert_close(rgb[0, :, :, 3:], ref_rgb[0, :, :, :-3], rtol=0, atol=1e-12)


def test_occluded_pixels_are_masked():
    ref_rgb, ref_depth, ref_c2w, ref_k, depth, target_c2w, k, _ = _plane_case(3.0)
    # An occluder in front of the plane, seen by the reference only (its depth map covers columns 8..11).
    ref_depth[0, :, 8:12] = 2.0
    _, valid, meta = warp_references(ref_rgb, ref_depth, ref_c2w, ref_k, depth, target_c2w, k)
    occluded = torch.zeros_like(depth, dtype=torch.bool)
    occluded[:, 11:15] = True  # target column j lands on the centre of reference column j - 3
    assert torch.equal(~meta["unoccluded"][0] & meta["in_frame"][0], occluded)
    assert not valid[0, 0][occluded].any()
    assert valid[0, 0][:, 3:][~occluded[:, 3:]].all()
    # Slightly in front of the reference's surface is still visible: the tolerance is relative.
    ref_depth[0, :, 8:12] = 4.0 / (1 + 0.5 * 0.03)
    _, valid, _ = warp_references(ref_rgb, ref_depth, ref_c2w, ref_k, depth, target_c2w, k, rtol=0.03)
    assert valid[0, 0][:, 3:].all()


def test_behind_camera_and_no_surface_are_invalid():
    ref_rgb, ref_depth, ref_c2w, ref_k, depth, target_c2w, k, _ = _plane_case(3.0)
    turned = ref_c2w.clone()
    turned[0, :, :3] = torch.tensor(_rot([0, 1, 0], math.pi))  # looks down +z: the plane is behind it
    _, valid, meta = warp_references(ref_rgb, ref_depth, turned, ref_k, depth, target_c2w, k)
    assert not meta["in_front"].any() and not valid.any()

    depth[:, :10] = 0.0  # "no surface" in the target
    ref_depth[0, :, :5] = 0.0  # nothing rendered there in the reference
    _, valid, _ = warp_references(ref_rgb, ref_depth, ref_c2w, ref_k, depth, target_c2w, k)
    assert not valid[0, 0, :, :10].any()
    assert valid[0, 0, :, 10:].all()  # columns 10.. land on reference columns 7.. (rendered)


def test_covisibility_is_the_union_over_views():
    case = _random_case(4)
    mask = covisibility_mask(
        case["target_depth"], case["target_c2w"], case["target_intrinsics"],
        case["ref_depth"], case["ref_c2w"], case["ref_intrinsics"], rtol=RTOL, chunk=2,
    )
    _, valid, _ = project_into_references(
        case["ref_depth"], case["ref_c2w"], case["ref_intrinsics"], case["target_depth"], case["target_c2w"],
        case["target_intrinsics"], rtol=RTOL,
    )
    assert mask.shape == (12, 16) and torch.equal(mask, valid[:, 0].any(0))
    assert mask.any() and not mask.all()


def test_ray_distance_to_z_depth_matches_the_ray_geometry():
    k = _k(10.0, 12.0, 7.5, 4.0)
    distance = torch.full((8, 14), 5.0, dtype=torch.float64)
    z = ray_distance_to_z_depth(distance, k)
    u, v = 0.5, 7.5  # pixel (row 7, col 0)
    direction = np.array([(u - 7.5) / 10.0, (v - 4.0) / 12.0, 1.0])
    assert float(z[7, 0]) == pytest.approx(5.0 / np.linalg.norm(direction), rel=1e-12)
    assert float(z.max()) < 5.0


def test_bad_inputs_raise_value_errors_naming_them():
    case = _random_case(0)
    bad = {
        "ref_rgb": case["ref_rgb"][:, :2],
        "ref_depth": case["ref_depth"][0],
        "ref_c2w": case["ref_c2w"][:2],
        "ref_intrinsics": case["ref_intrinsics"][:, :2],
        "target_depth": case["target_depth"][None],
        "target_c2w": case["target_c2w"][None],
    }
    for name, value in bad.items():
        with pytest.raises(ValueError, match=name):
            warp_references(**{**case, name: value})
    with pytest.raises(ValueError, match="finite"):
        warp_references(**{**case, "target_depth": case["target_depth"] * math.inf})
    with pytest.raises(ValueError, match="rtol"):
        warp_references(**case, rtol=-1.0)
