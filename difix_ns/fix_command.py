"""`difix-ns fix`: run a fixer over a folder of images or a video file.

Light module: only the standard library at import time; torch, the fixers and the image/video readers are
imported inside `FixCommandConfig.main`.

Documented handling:
- Inputs: the image files directly inside the folder (.png .jpg .jpeg .bmp .tif .tiff .webp), sorted by name;
  other files are skipped. A folder with no images is an error. A video file is read frame by frame and written
  as a video of the same name, size and frame rate (H.264) into the output folder.
- Outputs have the input's names, extensions and sizes. Greyscale and palette images are written as RGB; an
  alpha channel is carried over unchanged; 16-bit images are written as 8-bit.
- The output folder must differ from the input folder (the input is never overwritten). Existing files in the
  output folder are replaced only with `--overwrite`.
- An unreadable image (or a failed write) is reported with its reason at the end; every other image is written.
  With `--strict` the command then exits with status 1.
- References (`--ref`, a folder or one image): with camera poses (`--poses` for the frames, `--ref-poses` for the
  references, default the same file; nerfstudio `transforms.json`, matched by file name) each frame gets the
  nearest reference by translation distance + `rotation_weight` x rotation angle (radians); otherwise, and for
  frames without a pose, the first reference (sorted by name) is used for every frame.
- Depth-warped references (`--depths` for the frames, `--ref-depths` for the references: z-depth maps
  `<image stem>.npy` [H, W] in the poses' units, 0 = no surface, as `difix-ns synth` writes them; needs `--ref` and
  `--poses` with intrinsics): a fixer that takes warped references (a NAFNet with `warped_references` > 0) gets the
  nearest references warped into each frame by its depth, with an occlusion test against the references' depth.
  A frame without its depth map gets none (the fixer sees "no valid reference"); other fixers ignore them.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

__all__ = ["FixCommandConfig", "FixSummary", "IMAGE_EXTENSIONS", "VIDEO_EXTENSIONS", "nearest_reference"]

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".mov", ".avi", ".mkv", ".webm")


@dataclass
class FixSummary:
    """What a `difix-ns fix` run did."""

    written: list[str] = field(default_factory=list)
    """Names of the files written to the output folder."""
    failed: dict[str, str] = field(default_factory=dict)
    """Input file name -> reason, for every input that could not be processed."""
    reference_of: dict[str, str] = field(default_factory=dict)
    """Input file name -> reference file name used for it (empty without `--ref`)."""


@dataclass
class FixCommandConfig:
    """Fix every image of a folder (or every frame of a video) with an image fixer; writes same names and sizes."""

    input: Path = Path("renders")
    """Folder of images, or a video file."""
    output: Path = Path("fixed")
    """Output folder (created; must not be the input folder)."""
    backend: Literal["difix", "nafnet", "identity"] = "difix"
    """Fixer back-end."""
    checkpoint: Optional[str] = None
    """Difix: hub id (nvidia/difix, nvidia/difix_ref) or folder; NAFNet: folder from save_pretrained."""
    ref: Optional[Path] = None
    """Reference image folder (or one reference image); used by reference-aware fixers."""
    poses: Optional[Path] = None
    """nerfstudio transforms.json with the poses of the input frames (matched by file name)."""
    ref_poses: Optional[Path] = None
    """transforms.json with the poses of the references (default: --poses)."""
    rotation_weight: float = 1.0
    """Nearest reference: weight of the rotation angle (radians) against the translation distance."""
    depths: Optional[Path] = None
    """Folder of z-depth maps of the input frames (`<stem>.npy`): warps the references into each frame."""
    ref_depths: Optional[Path] = None
    """Folder of z-depth maps of the references (`<stem>.npy`); required with --depths."""
    batch_size: int = 4
    """Images per fixer call (same-size images are batched; halved automatically on out-of-memory)."""
    device: str = "auto"
    """auto, cpu, cuda, cuda:N."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """Autocast precision on CUDA (auto = bf16/fp16); CPU runs fp32."""
    compile: bool = False
    """torch.compile the fixer's network."""
    overwrite: bool = False
    """Replace files that already exist in the output folder."""
    strict: bool = False
    """Exit with status 1 if any input failed."""
    quiet: bool = False
    """No progress bar or summary table."""

    def main(self) -> FixSummary:
        """Run the command; returns the summary (also printed)."""
        from difix_ns import fix_runner

        summary = fix_runner.run(self)
        if self.strict and summary.failed:
            sys.exit(1)
        return summary


def nearest_reference(frame_c2w: Any, ref_c2ws: list[Any], rotation_weight: float = 1.0) -> int:
    """Index of the reference camera closest to `frame_c2w` (4x4 or 3x4 camera-to-world matrices, numpy):
    translation distance + `rotation_weight` * relative rotation angle in radians (`difix_ns.progressive.poses`)."""
    import numpy as np

    from difix_ns.progressive.poses import nearest_views

    frame = np.asarray(frame_c2w, dtype=np.float64)[None, :3, :4]
    refs = np.stack([np.asarray(r, dtype=np.float64)[:3, :4] for r in ref_c2ws])
    index, _ = nearest_views(frame, refs, rotation_weight=rotation_weight)
    return int(index[0, 0])
