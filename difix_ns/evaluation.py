"""Per-view evaluation of a trained run, through nerfstudio's own loading (`eval_setup`) and metrics.

`ns-eval` reports averages; the demo and benchmarks also need per-view numbers (to bin views by their distance
from the training cameras) and the rendered images (for figures). Metrics come from the model's
`get_image_metrics_and_images`, the method `ns-eval` uses, so the numbers agree with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
from jaxtyping import Float

__all__ = ["ViewResult", "evaluate_views"]


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


def _split_pair(image: torch.Tensor) -> Tuple[np.ndarray, np.ndarray]:
    """nerfstudio's evaluation images are [ground truth | render] side by side."""
    ground_truth, rendered = torch.chunk(image, 2, dim=1)
    return ground_truth.clamp(0, 1).cpu().numpy(), rendered.clamp(0, 1).cpu().numpy()


@torch.no_grad()
def evaluate_views(config_path: Path, description: str = "Evaluating views") -> List[ViewResult]:
    """Load a run from its config.yml (latest checkpoint) and evaluate every test view, with a progress bar."""
    from nerfstudio.utils.eval_utils import eval_setup
    from rich.progress import track

    _, pipeline, _, _ = eval_setup(Path(config_path), test_mode="test")
    pipeline.eval()
    datamanager = pipeline.datamanager
    filenames = datamanager.eval_dataset.image_filenames
    results = []
    loader = datamanager.fixed_indices_eval_dataloader
    for camera, batch in track(loader, description=description, total=len(loader)):
        outputs = pipeline.model.get_outputs_for_camera(camera=camera)
        metrics, images = pipeline.model.get_image_metrics_and_images(outputs, batch)
        ground_truth, rendered = _split_pair(images["img"])
        results.append(
            ViewResult(
                filename=Path(filenames[int(batch["image_idx"])]).name,
                metrics={k: float(v) for k, v in metrics.items()},
                rendered=rendered,
                ground_truth=ground_truth,
                rendered_fixed=_split_pair(images["img_fixed"])[1] if "img_fixed" in images else None,
            )
        )
    return results
