"""`ProgressiveConfig`: when and how novel cameras are rendered, fixed and added as pseudo training views."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional

__all__ = ["ProgressiveConfig"]


@dataclass
class ProgressiveConfig:
    """Difix3D progressive 3D update: every `fix_every` steps from `fix_start`, novel cameras move one step from
    the training poses toward their targets, are rendered, fixed (nearest training view as reference) and added
    as pseudo training views."""

    enabled: bool = True
    """Run the progressive update (off: the method trains like its base model)."""
    fix_start: int = 1500
    """First step with an update."""
    fix_every: int = 1500
    """Steps between updates (the paper uses 1.5k)."""
    targets: Literal["eval", "path", "interpolated"] = "eval"
    """Target poses: the evaluation cameras' poses (the paper's protocol; their images are never read), a camera
    path exported from the viewer's render panel (`camera_path`), or poses interpolated between consecutive
    training cameras."""
    camera_path: Optional[Path] = None
    """Viewer camera-path JSON for targets='path' (resized to the training images' height)."""
    interpolation_steps: int = 1
    """Poses between each pair of consecutive training cameras for targets='interpolated'."""
    max_views: int = 0
    """Most novel cameras per update (evenly subsampled from the targets); 0 = all."""
    step_size: Optional[float] = None
    """Largest pose change per update, in pose-distance units (nerfstudio's normalised frame, so its reach differs
    from scene to scene); None = `step_spacings` x the median spacing of the training cameras."""
    step_spacings: float = 1.0
    """The step when `step_size` is None, in training-camera spacings (the same reach in every scene)."""
    reach_targets: bool = False
    """Let each camera's step grow to its remaining distance over the updates left in the run (at least
    `step_size`), so every camera is at its target by the last update. With a fixed step, targets more than
    (updates - 1) steps from the nearest training view are never rendered."""
    translation_weight: float = 1.0
    """Weight of the translation distance (normalised scene units) in the pose distance."""
    rotation_weight: float = 1.0
    """Weight of the rotation angle (radians) in the pose distance."""
    snap_fraction: float = 0.25
    """A pose closer to its target than this fraction of a step after moving snaps to the target."""
    num_references: int = 1
    """Nearest training views passed to the fixer as references."""
    accumulate: bool = False
    """Keep the pseudo views of earlier updates (default: each update replaces the previous set)."""
    alpha_threshold: float = 0.5
    """Pseudo-view pixels whose render alpha is below this are left out of the loss."""
    render_chunk_size: int = 8
    """Novel cameras rendered and fixed together; bounds memory on long trajectories."""
    save_views: bool = True
    """Write each update's pseudo views (PNG images, alpha masks, cameras.json) under the run folder."""

    def validate(self) -> None:
        """Raise `ValueError` naming the first invalid setting."""
        if self.fix_every < 1 or self.fix_start < 0:
            raise ValueError(f"fix_every must be >= 1 and fix_start >= 0, got {self.fix_every}, {self.fix_start}")
        if self.targets == "path" and self.camera_path is None:
            raise ValueError("progressive.targets='path' needs progressive.camera_path (a viewer camera-path JSON)")
        if self.step_size is not None and self.step_size <= 0:
            raise ValueError(f"step_size must be > 0 or None, got {self.step_size}")
        if self.step_spacings <= 0:
            raise ValueError(f"step_spacings must be > 0, got {self.step_spacings}")
        if self.num_references < 1 or self.render_chunk_size < 1 or self.interpolation_steps < 1:
            raise ValueError(
                "num_references, render_chunk_size and interpolation_steps must be >= 1, got "
                f"{self.num_references}, {self.render_chunk_size}, {self.interpolation_steps}"
            )
        if not 0.0 <= self.alpha_threshold <= 1.0:
            raise ValueError(f"alpha_threshold must be in [0, 1], got {self.alpha_threshold}")

    def updates_left(self, step: int, last_step: int) -> int:
        """Update steps in [step, last_step] (`step` itself counts when it is one)."""
        if not self.enabled or last_step < max(step, self.fix_start):
            return 0
        first = max(step, self.fix_start)
        first += (-(first - self.fix_start)) % self.fix_every  # round up onto the update grid
        return 0 if first > last_step else (last_step - first) // self.fix_every + 1

    def is_update_step(self, step: int) -> bool:
        """Whether the update runs after training step `step`."""
        return self.enabled and step >= self.fix_start and (step - self.fix_start) % self.fix_every == 0
