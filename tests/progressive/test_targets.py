"""Target cameras: viewer camera-path JSON (accepted, or a clear error), interpolated training path."""

from __future__ import annotations

import json
import math

import pytest
import torch

from difix_ns.progressive.targets import interpolated_training_path, load_camera_path, make_cameras


def _viewer_camera_path(num_frames: int = 5) -> dict:
    """What the viewer's render panel writes (nerfstudio 1.1.5 `render_panel.py`), trimmed to the used fields."""
    frames = []
    for i in range(num_frames):
        angle = 0.2 * i
        c2w = [
            [math.cos(angle), 0.0, math.sin(angle), 0.5 * math.sin(angle)],
            [0.0, 1.0, 0.0, 0.0],
            [-math.sin(angle), 0.0, math.cos(angle), 0.5 * math.cos(angle)],
            [0.0, 0.0, 0.0, 1.0],
        ]
        frames.append({"camera_to_world": [v for row in c2w for v in row], "fov": 50.0, "aspect": 1.5})
    return {
        "default_fov": 50.0,
        "default_transition_sec": 2.0,
        "keyframes": [{"matrix": frames[0]["camera_to_world"], "fov": 50.0, "aspect": 1.5}],
        "camera_type": "perspective",
        "render_height": 480,
        "render_width": 720,
        "fps": 24.0,
        "seconds": 4.0,
        "is_cycle": False,
        "smoothness_value": 0.5,
        "camera_path": frames,
    }


def test_viewer_camera_path_is_accepted_and_resized_to_training_height(tmp_path):
    path = tmp_path / "camera_path.json"
    path.write_text(json.dumps(_viewer_camera_path(5)))
    cameras = load_camera_path(path, height=48)
    assert cameras.shape[0] == 5
    assert int(cameras.height[0]) == 48 and int(cameras.width[0]) == 72
    torch.testing.assert_close(cameras.camera_to_worlds[1, 0, 3], torch.tensor(0.5 * math.sin(0.2)))


@pytest.mark.parametrize(
    "content, message",
    [
        ("", "the file is empty"),
        ("{not json", "not valid JSON"),
        ("[1, 2]", "top level is a list"),
        (json.dumps({**_viewer_camera_path(), "camera_path": []}), "no cameras"),
        (json.dumps({k: v for k, v in _viewer_camera_path().items() if k != "camera_path"}), "no cameras"),
        (json.dumps({**_viewer_camera_path(), "render_height": 0}), "render_height must be a positive number"),
        (
            json.dumps({**_viewer_camera_path(1), "camera_path": [{"camera_to_world": [1, 2, 3], "fov": 50}]}),
            r"camera_path\[0\].camera_to_world must be a list of 16 numbers",
        ),
    ],
)
def test_empty_or_malformed_camera_path_gets_a_clear_error(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        load_camera_path(path, height=48)
    assert str(path) in str(info.value)


def test_missing_camera_path_file_gets_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        load_camera_path(tmp_path / "nowhere.json", height=48)


def test_interpolated_training_path_lies_between_consecutive_cameras():
    c2w = torch.eye(4)[:3].repeat(3, 1, 1)
    c2w[:, 0, 3] = torch.tensor([0.0, 1.0, 3.0])
    ones = torch.ones(3, 1)
    training = make_cameras(c2w, 30 * ones, 30 * ones, 16 * ones, 16 * ones, 32 * ones, 32 * ones)
    path = interpolated_training_path(training, per_segment=3)
    assert path.shape[0] == 6
    torch.testing.assert_close(path.camera_to_worlds[:, 0, 3], torch.tensor([0.25, 0.5, 0.75, 1.5, 2.0, 2.5]))
