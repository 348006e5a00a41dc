"""Per-view evaluation of a trained run, through nerfstudio's own loading (`eval_setup`) and metrics.

`ns-eval` reports averages; the demo and benchmarks also need per-view numbers (to bin views by their distance
from the training cameras) and the rendered images (for figures). Metrics come from the model's
`get_image_metrics_and_images`, the method `ns-eval` uses, so the numbers agree with it. With
`warped_references` K > 0 each view also carries the K nearest training photos warped into it by its render's
z-depth (what a fixer with warped inputs gets at run time); a target that is itself a training view never gets
its own photo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from jaxtyping import Float

from difix_ns.fixers.base import WarpedViews

__all__ = ["ViewResult", "evaluate_pipeline", "evaluate_views"]


@dataclass
class ViewResult:
    """Metrics and images of one evaluation view."""

    filename: str
    """Image file name (no folder), the key that joins with the scene's metadata."""
    metrics: Dict[str, float]
    """psnr, ssim, and lpips when its weights are available."""
    rendered: Float[np.ndarray, "H W 3"]
    """The model's render, in [0, 1]."""
    ground_truth: Float[np.ndarray, "H W 3"]
    """The evaluation image, in [0, 1]."""
    rendered_fixed: Optional[Float[np.ndarray, "H W 3"]] = None
    """The post-processed render (Difix3D+), when the model's post-processing is on."""
    warped: Optional[WarpedViews] = None
    """The nearest training photos warped into this view by the render's z-depth (batch 1, on the CPU), when
    `evaluate_views` was asked for them."""
    warped_views: Optional[List[str]] = None
    """File names (no folder) of the training views in `warped`, in order."""


def _split_pair(image: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """nerfstudio's evaluation images are [ground truth | render] side by side."""
    ground_truth, rendered = torch.chunk(image, 2, dim=1)
    return ground_truth.clamp(0, 1).cpu().numpy(), rendered.clamp(0, 1).cpu().numpy()


def _warped_views(model, camera, outputs: dict, count: int, name: str) -> Tuple[WarpedViews, List[str]]:
    """The `count` training views nearest `camera` other than `name` warped into it (`model.warped_references`
    with the target's own photo left out), and their file names."""
    depth = model.render_z_depth(outputs, camera)
    views = model.fixing.training_views
    if depth is None or views is None or not views.can_warp:
        raise ValueError(
            f"warped references need a depth render and training views with intrinsics: {type(model).__name__} "
            f"has depth={depth is not None}, training views that can warp={views is not None and views.can_warp}"
        )
    chosen = model.reference_indices(camera, count, exclude=name)
    warped = model.warped_references(camera, depth, count, indices=chosen)
    return warped, [views.names[i] for i in chosen]


@torch.no_grad()
def evaluate_views(
    config_path: Path, description: str = "Evaluating views", warped_references: int = 0
) -> List[ViewResult]:
    """Load a run from its config.yml (latest checkpoint; nerfstudio's `eval_setup` in test mode) and evaluate every
    test view with `evaluate_pipeline`."""
    from nerfstudio.utils.eval_utils import eval_setup

    if warped_references < 0:
        raise ValueError(f"warped_references must be >= 0, got {warped_references}")
    _, pipeline, _, _ = eval_setup(Path(config_path), test_mode="test")
    return evaluate_pipeline(pipeline, description, warped_references)


@torch.no_grad()
def evaluate_pipeline(pipeline, description: str = "Evaluating views", warped_references: int = 0) -> List[ViewResult]:
    """Evaluate every test view of a loaded pipeline (`eval_setup(..., test_mode="test")`), with a progress bar.

    `warped_references` K > 0: each result also carries K training photos warped into the view (the run must be a
    difix-ns method: its pipeline gives the model its training views and their depths)."""
    from rich.progress import track

    if warped_references < 0:
        raise ValueError(f"warped_references must be >= 0, got {warped_references}")
    if warped_references and not hasattr(pipeline.model, "warped_references"):
        raise ValueError(f"warped references need a difix-ns model, got {type(pipeline.model).__name__}")
    pipeline.eval()
    datamanager = pipeline.datamanager
    filenames = datamanager.eval_dataset.image_filenames
    results = []
    loader = datamanager.fixed_indices_eval_dataloader
    for camera, batch in track(loader, description=description, total=len(loader)):
        outputs = pipeline.model.get_outputs_for_camera(camera=camera)
        metrics, images = pipeline.model.get_image_metrics_and_images(outputs, batch)
        ground_truth, rendered = _split_pair(images["img"])
        name = Path(filenames[int(batch["image_idx"])]).name
        warped, warped_views = None, None
        if warped_references:
            warped, warped_views = _warped_views(pipeline.model, camera, outputs, warped_references, name)
        results.append(
            ViewResult(
                filename=name,
                metrics={k: float(v) for k, v in metrics.items()},
                rendered=rendered,
                ground_truth=ground_truth,
                rendered_fixed=_split_pair(images["img_fixed"])[1] if "img_fixed" in images else None,
                warped=warped,
                warped_views=warped_views,
            )
        )
    return results
