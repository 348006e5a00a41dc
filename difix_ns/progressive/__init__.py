"""Difix3D progressive 3D update: novel-camera schedule, pseudo views, and their saved state.

Light to import: nerfstudio's camera classes and torch only (no fixer back-end is imported here).
"""

from difix_ns.progressive.config import ProgressiveConfig
from difix_ns.progressive.poses import camera_spacing, interpolate_poses, nearest_views, pose_distances, step_poses
from difix_ns.progressive.references import TrainingViews
from difix_ns.progressive.state import ProgressiveState, PseudoViews, write_pseudo_views
from difix_ns.progressive.targets import interpolated_training_path, load_camera_path
from difix_ns.progressive.update import progressive_update

__all__ = [
    "ProgressiveConfig",
    "ProgressiveState",
    "PseudoViews",
    "TrainingViews",
    "camera_spacing",
    "interpolate_poses",
    "interpolated_training_path",
    "load_camera_path",
    "nearest_views",
    "pose_distances",
    "progressive_update",
    "step_poses",
    "write_pseudo_views",
]
