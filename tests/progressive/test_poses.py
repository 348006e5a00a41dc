"""Pose math of the progressive update: distances, nearest views, stepping toward targets."""

from __future__ import annotations

import math

import pytest
import torch

from difix_ns.progressive.poses import (
    camera_spacing,
    interpolate_poses,
    nearest_views,
    pose_distances,
    rotation_angles,
    step_poses,
)


def _rot_z(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _pose(angle: float, x: float, y: float = 0.0, z: float = 0.0) -> torch.Tensor:
    return torch.cat([_rot_z(angle), torch.tensor([[x], [y], [z]])], dim=1)


def test_pose_distance_is_weighted_translation_plus_angle():
    a, b = _pose(0.0, 0.0)[None], _pose(0.5, 3.0, 4.0)[None]
    assert pose_distances(a, b).item() == pytest.approx(5.0 + 0.5, abs=1e-5)
    assert pose_distances(a, b, translation_weight=2.0, rotation_weight=0.0).item() == pytest.approx(10.0, abs=1e-5)


def test_nearest_views_use_translation_and_rotation():
    train = torch.stack([_pose(0.0, 1.0), _pose(math.pi, 0.9), _pose(0.1, 0.5)])
    query = _pose(0.0, 0.0)[None]
    indices, distances = nearest_views(query, train, k=2)
    # translation alone would pick view 2 (0.5) then 1 (0.9); the rotation angle of view 1 pushes it last
    assert indices.tolist() == [[2, 0]]
    assert distances[0, 0].item() == pytest.approx(0.6, abs=1e-5)
    with pytest.raises(ValueError, match="k must be in"):
        nearest_views(query, train, k=4)


def test_step_poses_moves_monotonically_and_reaches_targets():
    current = torch.stack([_pose(0.0, 0.0), _pose(0.2, 1.0, 1.0)])
    targets = torch.stack([_pose(1.2, 4.0, 0.0), _pose(0.2, 1.0, 1.2)])
    step = 0.5
    distances = [pose_distances(current, targets).diagonal()]
    reached_at = None
    for update in range(1, 20):
        current, meta = step_poses(current, targets, step)
        remaining = pose_distances(current, targets).diagonal()
        torch.testing.assert_close(remaining, meta["remaining"], atol=1e-4, rtol=0)
        assert (remaining <= distances[-1] + 1e-6).all(), "a pose moved away from its target"
        # never more than one step per update
        assert (distances[-1] - remaining <= step + 1e-4).all()
        distances.append(remaining)
        if bool(meta["reached"].all()):
            reached_at = update
            break
    assert reached_at == math.ceil((4.0 + 1.2 - 0.25 * step) / step)  # the far pose snaps within a quarter step
    torch.testing.assert_close(current, targets)
    assert distances[1][1].item() == 0.0, "a pose within a step of its target snaps to it at once"


def test_step_poses_takes_one_step_size_per_pose():
    current = torch.stack([_pose(0.0, 0.0), _pose(0.0, 0.0)])
    targets = torch.stack([_pose(0.0, 4.0), _pose(0.0, 4.0)])
    moved, meta = step_poses(current, targets, torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(pose_distances(current, moved).diagonal(), torch.tensor([0.5, 2.0]), atol=1e-5, rtol=0)
    torch.testing.assert_close(meta["remaining"], torch.tensor([3.5, 2.0]), atol=1e-5, rtol=0)
    same, _ = step_poses(current, targets, 0.5)
    torch.testing.assert_close(same[0], moved[0])


def test_step_poses_validates_its_input():
    with pytest.raises(ValueError, match="step_size must be > 0"):
        step_poses(_pose(0, 0)[None], _pose(0, 1)[None], 0.0)
    with pytest.raises(ValueError, match="one per pose"):
        step_poses(_pose(0, 0)[None], _pose(0, 1)[None], torch.ones(2))
    with pytest.raises(ValueError, match="same shape"):
        step_poses(_pose(0, 0)[None], torch.stack([_pose(0, 1)] * 2), 1.0)


def test_interpolate_poses_slerps_rotation_and_lerps_translation():
    a, b = _pose(0.0, 0.0)[None], _pose(1.0, 2.0)[None]
    mid = interpolate_poses(a, b, torch.tensor([0.5]))
    assert rotation_angles(mid[0, :, :3], a[0, :, :3]).item() == pytest.approx(0.5, abs=1e-4)
    assert mid[0, 0, 3].item() == pytest.approx(1.0)
    torch.testing.assert_close(interpolate_poses(a, b, torch.tensor([1.0])), b)


def test_camera_spacing_is_the_median_nearest_neighbour_distance():
    poses = torch.stack([_pose(0.0, x) for x in (0.0, 1.0, 2.0, 4.0)])
    assert camera_spacing(poses) == pytest.approx(1.0)
