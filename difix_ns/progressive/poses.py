"""Pose math of the progressive update (Difix3D, CVPR 2025, Sec. 4.1): distances, nearest views, stepping.

Stateless functions over camera-to-world tensors [..., 3, 4] (nerfstudio's world frame, after the dataparser's
normalisation). Pose distance = `translation_weight` * translation distance + `rotation_weight` * rotation angle
(radians), the measure the paper uses to pick the nearest training view as reference.
"""

from __future__ import annotations

from typing import Dict, Tuple, Union

import torch
from jaxtyping import Float, Int
from torch import Tensor

__all__ = [
    "camera_spacing",
    "interpolate_poses",
    "nearest_views",
    "path_lengths",
    "pose_distance_parts",
    "pose_distances",
    "rotation_angles",
    "step_poses",
]


def _check_poses(poses: Tensor, name: str) -> None:
    if poses.ndim != 3 or poses.shape[1:] not in ((3, 4), (4, 4)):
        raise ValueError(f"{name} must be camera-to-world poses [N, 3, 4], got {tuple(poses.shape)}")


def rotation_angles(rot_a: Float[Tensor, "*b 3 3"], rot_b: Float[Tensor, "*b 3 3"]) -> Float[Tensor, "*b"]:
    """Geodesic angle in radians between rotation matrices (broadcasting)."""
    trace = (rot_a.transpose(-1, -2) @ rot_b).diagonal(dim1=-2, dim2=-1).sum(-1)
    return torch.arccos(((trace - 1.0) / 2.0).clamp(-1.0, 1.0))


def pose_distance_parts(
    poses_a: Float[Tensor, "M 3 4"], poses_b: Float[Tensor, "N 3 4"]
) -> Tuple[Float[Tensor, "M N"], Float[Tensor, "M N"]]:
    """Pairwise translation distance and rotation angle (radians), in the poses' own precision (at least float32;
    numpy arrays and [4, 4] matrices are accepted)."""
    a, b = torch.as_tensor(poses_a), torch.as_tensor(poses_b)
    _check_poses(a, "poses_a")
    _check_poses(b, "poses_b")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a[:, :3, :4].to(dtype), b[:, :3, :4].to(dtype)
    translation = torch.cdist(a[:, :, 3], b[:, :, 3])
    angle = rotation_angles(a[:, None, :, :3], b[None, :, :, :3])
    return translation, angle


def pose_distances(
    poses_a: Float[Tensor, "M 3 4"],
    poses_b: Float[Tensor, "N 3 4"],
    translation_weight: float = 1.0,
    rotation_weight: float = 1.0,
) -> Float[Tensor, "M N"]:
    """Pairwise pose distance: translation_weight * |t_a - t_b| + rotation_weight * angle(R_a, R_b) (float32)."""
    translation, angle = pose_distance_parts(torch.as_tensor(poses_a).float(), torch.as_tensor(poses_b).float())
    return translation_weight * translation + rotation_weight * angle


def nearest_views(
    queries: Float[Tensor, "M 3 4"],
    candidates: Float[Tensor, "N 3 4"],
    k: int = 1,
    translation_weight: float = 1.0,
    rotation_weight: float = 1.0,
) -> Tuple[Int[Tensor, "M k"], Float[Tensor, "M k"]]:
    """Indices (nearest first) and distances of the `k` nearest candidates of every query pose."""
    if not 1 <= k <= candidates.shape[0]:
        raise ValueError(f"k must be in [1, {candidates.shape[0]}] (the number of candidates), got {k}")
    distances = pose_distances(queries, candidates, translation_weight, rotation_weight)
    values, indices = torch.topk(distances, k, dim=1, largest=False)
    return indices, values


def camera_spacing(
    poses: Float[Tensor, "N 3 4"], translation_weight: float = 1.0, rotation_weight: float = 1.0
) -> float:
    """Median distance from each pose to its nearest other pose (the typical step between training views)."""
    _check_poses(poses, "poses")
    if poses.shape[0] < 2:
        raise ValueError(f"camera spacing needs at least 2 poses, got {poses.shape[0]}")
    distances = pose_distances(poses, poses, translation_weight, rotation_weight)
    distances.fill_diagonal_(float("inf"))
    return float(distances.min(dim=1).values.median())


def _slerp_rotations(
    rot_a: Float[Tensor, "M 3 3"], rot_b: Float[Tensor, "M 3 3"], t: Float[Tensor, "M"]
) -> Float[Tensor, "M 3 3"]:
    """Rotation a fraction `t` of the way from `rot_a` to `rot_b` along the geodesic (SLERP)."""
    from nerfstudio.cameras.camera_utils import quaternion_from_matrix, quaternion_matrix, quaternion_slerp

    out = []
    for ra, rb, ti in zip(rot_a.double(), rot_b.double(), t.tolist()):
        qa, qb = quaternion_from_matrix(ra.numpy()), quaternion_from_matrix(rb.numpy())
        out.append(torch.from_numpy(quaternion_matrix(quaternion_slerp(qa, qb, ti))[:3, :3]))
    return torch.stack(out).to(rot_a.dtype) if out else rot_a.clone()


def interpolate_poses(
    poses_a: Float[Tensor, "M 3 4"], poses_b: Float[Tensor, "M 3 4"], t: Float[Tensor, "M"]
) -> Float[Tensor, "M 3 4"]:
    """Poses a fraction `t` of the way from `poses_a` to `poses_b`: linear translation, SLERP rotation."""
    _check_poses(poses_a, "poses_a")
    if poses_b.shape != poses_a.shape or t.shape != poses_a.shape[:1]:
        raise ValueError(
            f"poses_b {tuple(poses_b.shape)} and t {tuple(t.shape)} must match poses_a {tuple(poses_a.shape)}"
        )
    a, b = poses_a[:, :3, :4].float().cpu(), poses_b[:, :3, :4].float().cpu()
    t = t.float().cpu()
    rotation = _slerp_rotations(a[:, :, :3], b[:, :, :3], t)
    translation = a[:, :, 3] + t[:, None] * (b[:, :, 3] - a[:, :, 3])
    # exact end points, whatever the quaternion round trip does
    rotation = torch.where((t == 0.0)[:, None, None], a[:, :, :3], rotation)
    rotation = torch.where((t == 1.0)[:, None, None], b[:, :, :3], rotation)
    return torch.cat([rotation, translation[:, :, None]], dim=-1)


def path_lengths(
    current: Float[Tensor, "M 3 4"],
    targets: Float[Tensor, "M 3 4"],
    translation_weight: float = 1.0,
    rotation_weight: float = 1.0,
) -> Float[Tensor, "M"]:
    """Pose distance from each current pose to its own target (the diagonal of `pose_distances`)."""
    cur, tgt = current[:, :3, :4].float().cpu(), targets[:, :3, :4].float().cpu()
    translation = (tgt[:, :, 3] - cur[:, :, 3]).norm(dim=-1)
    return translation_weight * translation + rotation_weight * rotation_angles(cur[:, :, :3], tgt[:, :, :3])


@torch.no_grad()
def step_poses(
    current: Float[Tensor, "M 3 4"],
    targets: Float[Tensor, "M 3 4"],
    step_size: Union[float, Float[Tensor, "M"]],
    translation_weight: float = 1.0,
    rotation_weight: float = 1.0,
    snap_fraction: float = 0.25,
) -> Tuple[Float[Tensor, "M 3 4"], Dict[str, Tensor]]:
    """Move every current pose toward its target by at most `step_size` (in pose-distance units; one for all
    poses, or one per pose).

    Translation and rotation (SLERP) move by the same fraction f = min(1, step_size / distance), so the distance
    to the target shrinks by exactly `step_size` per call; a pose whose remaining distance would be below
    `snap_fraction * step_size` snaps to its target. Returns the new poses and `meta` with the `distance` [M]
    before the step, the `remaining` distance [M] after it, and `reached` [M] (bool).
    """
    if current.shape != targets.shape:
        raise ValueError(f"current {tuple(current.shape)} and targets {tuple(targets.shape)} must have the same shape")
    _check_poses(current, "current")
    step_size = torch.as_tensor(step_size, dtype=torch.float32).cpu()
    if step_size.ndim > 1 or (step_size.ndim == 1 and step_size.shape[0] != current.shape[0]):
        raise ValueError(
            f"step_size must be a number or one per pose [{current.shape[0]}], got {tuple(step_size.shape)}"
        )
    if not bool((step_size > 0).all()):
        raise ValueError(f"step_size must be > 0, got {step_size.min().item()}")
    cur, tgt = current[:, :3, :4].float().cpu(), targets[:, :3, :4].float().cpu()
    distance = path_lengths(cur, tgt, translation_weight, rotation_weight)
    fraction = (step_size / distance.clamp_min(1e-12)).clamp(max=1.0)
    fraction = torch.where(distance - step_size <= snap_fraction * step_size, torch.ones_like(fraction), fraction)
    new = interpolate_poses(cur, tgt, fraction)
    new[fraction == 1.0] = tgt[fraction == 1.0]
    remaining = (1.0 - fraction) * distance
    return new, {"distance": distance, "remaining": remaining, "reached": fraction == 1.0}
