"""Scene geometry for fixing and evaluation: depth-warped reference views (`warp`), co-visibility masks and the
masked metrics of DyCheck (`covis`), multi-view consistency of a set of images (`consistency`)."""

from difix_ns.geometry.consistency import multiview_consistency
from difix_ns.geometry.covis import (
    COVIS_FOLDER,
    covisibility_mask_paths,
    load_covisibility_mask,
    masked_psnr,
    masked_ssim,
)
from difix_ns.geometry.warp import (
    DEFAULT_RTOL,
    covisibility_mask,
    project_into_references,
    ray_distance_to_z_depth,
    warp_references,
)

__all__ = [
    "COVIS_FOLDER",
    "DEFAULT_RTOL",
    "covisibility_mask",
    "covisibility_mask_paths",
    "load_covisibility_mask",
    "masked_psnr",
    "masked_ssim",
    "multiview_consistency",
    "project_into_references",
    "ray_distance_to_z_depth",
    "warp_references",
]
