"""State of the progressive update: the pseudo views and the schedule position, saved with the checkpoint.

Everything converts to and from plain dicts of tensors, ints and lists (`to_state` / `from_state`), which torch's
weights-only loader accepts, so `ns-train --load-dir` restores the identical pseudo set and schedule position.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import torch
from jaxtyping import Bool, Float, Int, UInt8
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from difix_ns.progressive.targets import make_cameras

__all__ = ["ProgressiveState", "PseudoViews", "cameras_from_state", "cameras_to_state", "write_pseudo_views"]

_CAMERA_KEYS = ("camera_to_worlds", "fx", "fy", "cx", "cy", "width", "height")


def cameras_to_state(cameras: Cameras) -> Dict[str, Tensor]:
    """Pinhole camera parameters as a dict of CPU tensors."""
    return {key: getattr(cameras, key).detach().cpu().clone() for key in _CAMERA_KEYS}


def cameras_from_state(state: Dict[str, Tensor]) -> Cameras:
    """Inverse of `cameras_to_state`."""
    return make_cameras(*(state[key] for key in _CAMERA_KEYS))


@dataclass
class PseudoViews:
    """Pseudo training views: fixed renders of novel cameras (CPU tensors; images may differ in size)."""

    cameras: Cameras
    """Pinhole cameras [P] in nerfstudio's world frame."""
    images: List[UInt8[Tensor, "H W 3"]]
    """Fixed renders."""
    masks: List[Bool[Tensor, "H W 1"]]
    """True where the render's alpha reached the threshold (the pixels that count in the loss)."""
    reference_indices: Int[Tensor, "P"]
    """Nearest training view of each camera: its reference, and the camera index it carries in training."""
    steps: Int[Tensor, "P"]
    """Training step of the update that made each view."""

    def __post_init__(self) -> None:
        n = self.cameras.shape[0]
        if not (len(self.images) == len(self.masks) == self.reference_indices.shape[0] == self.steps.shape[0] == n):
            raise ValueError(
                f"pseudo views disagree on their count: {n} cameras, {len(self.images)} images, {len(self.masks)} "
                f"masks, {self.reference_indices.shape[0]} reference indices, {self.steps.shape[0]} steps"
            )
        for i, (image, mask) in enumerate(zip(self.images, self.masks)):
            size = (int(self.cameras.height[i]), int(self.cameras.width[i]))
            if image.dtype != torch.uint8 or tuple(image.shape) != (*size, 3) or tuple(mask.shape) != (*size, 1):
                raise ValueError(
                    f"pseudo view {i}: image {tuple(image.shape)} {image.dtype} and mask {tuple(mask.shape)} must be "
                    f"uint8 [{size[0]}, {size[1]}, 3] and [{size[0]}, {size[1]}, 1] (the camera's size)"
                )

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def concatenate(sets: Sequence["PseudoViews"]) -> "PseudoViews":
        """All views of `sets`, in order (Cameras have no concatenate helper: rebuilt from their parameters)."""
        states = [cameras_to_state(s.cameras) for s in sets]
        cameras = cameras_from_state({k: torch.cat([s[k] for s in states]) for k in _CAMERA_KEYS})
        return PseudoViews(
            cameras=cameras,
            images=[im for s in sets for im in s.images],
            masks=[m for s in sets for m in s.masks],
            reference_indices=torch.cat([s.reference_indices for s in sets]),
            steps=torch.cat([s.steps for s in sets]),
        )

    def to_state(self) -> Dict[str, Any]:
        return {
            "cameras": cameras_to_state(self.cameras),
            "images": [im.clone() for im in self.images],
            "masks": [m.clone() for m in self.masks],
            "reference_indices": self.reference_indices.clone(),
            "steps": self.steps.clone(),
        }

    @staticmethod
    def from_state(state: Dict[str, Any]) -> "PseudoViews":
        return PseudoViews(
            cameras=cameras_from_state(state["cameras"]),
            images=list(state["images"]),
            masks=list(state["masks"]),
            reference_indices=state["reference_indices"].long(),
            steps=state["steps"].long(),
        )


@dataclass
class ProgressiveState:
    """Schedule position and pseudo views of the progressive update."""

    poses: Optional[Float[Tensor, "M 3 4"]] = None
    """Current novel-camera poses (None before the first update)."""
    targets: Optional[Float[Tensor, "M 3 4"]] = None
    """Their target poses."""
    num_updates: int = 0
    """Updates done so far."""
    last_update_step: int = -1
    """Training step of the latest update (-1: none yet)."""
    pseudo: Optional[PseudoViews] = None
    """Current pseudo training views."""
    history: List[Dict[str, float]] = field(default_factory=list)
    """Per update: step, number of views, mean remaining distance to the targets, seconds."""

    def to_state(self) -> Dict[str, Any]:
        return {
            "version": 1,
            "poses": None if self.poses is None else self.poses.clone(),
            "targets": None if self.targets is None else self.targets.clone(),
            "num_updates": self.num_updates,
            "last_update_step": self.last_update_step,
            "pseudo": None if self.pseudo is None else self.pseudo.to_state(),
            "history": [dict(h) for h in self.history],
        }

    @staticmethod
    def from_state(state: Dict[str, Any]) -> "ProgressiveState":
        if state.get("version") != 1:
            raise ValueError(f"unknown progressive-update state version {state.get('version')!r}")
        return ProgressiveState(
            poses=state["poses"],
            targets=state["targets"],
            num_updates=int(state["num_updates"]),
            last_update_step=int(state["last_update_step"]),
            pseudo=None if state["pseudo"] is None else PseudoViews.from_state(state["pseudo"]),
            history=[dict(h) for h in state["history"]],
        )


def write_pseudo_views(
    folder: Path, views: PseudoViews, reference_names: Sequence[str], step: int
) -> Path:
    """Write the views of one update: `images/NNNN.png`, `masks/NNNN.png`, `cameras.json`; returns the folder.

    `cameras.json` lists, per view, the camera-to-world matrix (nerfstudio's world frame, after the dataparser
    transform; OpenGL convention), pinhole intrinsics, size, and the reference training view.
    """
    from PIL import Image

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (image, mask) in enumerate(zip(views.images, views.masks)):
        name = f"{i:04d}.png"
        Image.fromarray(image.numpy()).save(folder / "images" / name)
        Image.fromarray(mask[..., 0].numpy().astype("uint8") * 255).save(folder / "masks" / name)
        ref = int(views.reference_indices[i])
        frames.append(
            {
                "file_path": f"images/{name}",
                "mask_path": f"masks/{name}",
                "camera_to_world": views.cameras.camera_to_worlds[i].tolist(),
                "fl_x": float(views.cameras.fx[i]),
                "fl_y": float(views.cameras.fy[i]),
                "cx": float(views.cameras.cx[i]),
                "cy": float(views.cameras.cy[i]),
                "w": int(views.cameras.width[i]),
                "h": int(views.cameras.height[i]),
                "reference_index": ref,
                "reference_file": reference_names[ref] if ref < len(reference_names) else None,
                "step": int(views.steps[i]),
            }
        )
    meta = {"step": step, "frame": "nerfstudio world (after dataparser transform), OpenGL camera", "frames": frames}
    (folder / "cameras.json").write_text(json.dumps(meta, indent=2))
    return folder
