"""Scene geometry for fixing and evaluation: depth-warped reference views and co-visibility masks."""

from difix_ns.geometry.warp import (
    DEFAULT_RTOL,
    covisibility_mask,
    project_into_references,
    ray_distance_to_z_depth,
    warp_references,
)

__all__ = [
    "DEFAULT_RTOL",
    "covisibility_mask",
    "project_into_references",
    "ray_distance_to_z_depth",
    "warp_references",
]
