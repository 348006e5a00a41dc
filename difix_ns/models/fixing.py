"""What difix-splatfacto and difix-nerfacto share: the fixer, Difix3D+ post-processing, the viewer toggle, and
the weighting of pseudo views in the loss.

- The fixer is built from `config.fixer` (`FixerConfig`) at first use (`get_fixer`), so building a model stays
  cheap and any back-end `FixerConfig.setup()` knows (identity, nafnet, difix, later ones) plugs in. It is not a
  submodule: its weights are not part of the scene's checkpoint.
- Post-processing: `get_outputs_for_camera` adds `rgb_fixed` (the render fixed with the nearest training view as
  reference) while post-processing is on; `get_image_metrics_and_images` then reports every metric twice
  (`psnr`, `psnr_fixed`, ...), which is what `ns-eval` writes.
- Viewer (custom elements): a checkbox turns post-processing on and off live, a dropdown picks the reference mode,
  a read-only number shows the fixer's last latency. In a viewer render the displayed `rgb` is the fixed image
  (`rgb_raw` keeps the render), and the fixer runs with the viewer's training lock released, so the lock is held
  for the render only. The latency read-out is set during every render, so it must not re-render the viewer
  (`_ViewerReadout`).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Dict, Iterator, List, Literal, Optional, Tuple

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.viewer.viewer_elements import ViewerCheckbox, ViewerDropdown, ViewerNumber
from torch import Tensor

from difix_ns.fixers.base import Fixer, WarpedViews
from difix_ns.fixers.config import FixerConfig
from difix_ns.progressive.references import TrainingViews

__all__ = ["DifixFixingConfig", "DifixFixingMixin", "FixingState", "REFERENCE_MODES"]

REFERENCE_MODES = ("nearest", "none")
"""Reference views given to the fixer in post-processing: the nearest training view, or none."""


def _viewer_render_thread() -> Optional[threading.Thread]:
    """The nerfstudio viewer's render thread when it is the caller (it holds the training lock), else None."""
    module = sys.modules.get("nerfstudio.viewer.render_state_machine")
    thread = threading.current_thread()
    if module is not None and isinstance(thread, module.RenderStateMachine):
        return thread
    return None


@contextlib.contextmanager
def _released(lock: Optional[threading.Lock]) -> Iterator[None]:
    """Release `lock` (held by the caller) for the duration of the block, then take it back."""
    if lock is None or not lock.locked():
        yield
        return
    lock.release()
    try:
        yield
    finally:
        lock.acquire()


class _ViewerReadout(ViewerNumber):
    """A read-only number shown in the viewer, set by the model; updating it does not re-render.

    nerfstudio's viewer hooks every custom element's update to a re-render ("move": a low-resolution render), and
    viser runs update callbacks on values set by the server too. A read-out set during each render would therefore
    start the next low-resolution render forever: the viewer never reaches full resolution and never idles. The
    user cannot edit a read-out, so installing it without an update callback loses nothing.
    """

    def __init__(self, name: str, default_value: float) -> None:
        super().__init__(name, default_value, disabled=True)

    def install(self, viser_server) -> None:
        self._create_gui_handle(viser_server)  # no on_update hook: nothing to react to, no re-render


@dataclass
class DifixFixingConfig:
    """Model settings of the Difix3D(+) additions, shared by difix-splatfacto and difix-nerfacto."""

    fixer: FixerConfig = field(default_factory=lambda: FixerConfig(backend="auto"))
    """Image fixer of the progressive update and of post-processing (built at first use). Default: auto, Difix with
    nvidia/difix_ref when it is in the local Hugging Face cache, else `self` (a NAFNet trained on the scene's own
    training views before the first step); `ns-train` says which it chose and why."""
    postprocess: bool = True
    """Difix3D+ post-processing: renders for evaluation, ns-render and the viewer also get `rgb_fixed` (the viewer
    checkbox switches it live)."""
    postprocess_reference: Literal["nearest", "none"] = "nearest"
    """Reference view of post-processing: the nearest training view (by pose distance), or none."""
    postprocess_blend: Literal["none", "distance"] = "distance"
    """Post-processing output: (`distance`) the fixed render blended with the raw render by the camera's pose
    distance to the nearest training view over the training-camera spacing (raw at a training pose, fully fixed
    from one spacing away; near a training view the render is as good as the reconstruction gets, and a fixer
    trained on held-out renders over-corrects it), or (`none`) the fixed render as is.
    `benchmarks/results/postprocess_blend` measures both on the same runs."""
    postprocess_strength: float = 1.0
    """Scales the post-processing change: render + strength x (fixed - render), after the blend above (`difix-ns
    compress --restorer` chooses it for a decompressed scene's restorer)."""
    pseudo_loss_weight: float = 0.3
    """Weight of the loss on pseudo views (pseudo rays in nerfacto), the paper's 0.3."""


@dataclass
class FixingState:
    """The mixin's per-model state, in a plain object: nn.Module then does not register the fixer as a submodule
    (its weights are not part of the scene's checkpoint)."""

    fixer: Optional[Fixer] = None
    """The fixer, built at first use (or set by the pipeline)."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    """Guards building and replacing the fixer (the viewer renders from its own thread)."""
    training_views: Optional[TrainingViews] = None
    """References of post-processing (given by the pipeline)."""
    postprocess_fixes: bool = True
    """False: post-processing leaves renders as they are (the fixer still serves the progressive update)."""


class DifixFixingMixin:
    """Mix into a nerfstudio model whose config is a `DifixFixingConfig`; call `_setup_fixing()` in
    `populate_modules`."""

    config: DifixFixingConfig
    device: torch.device
    depth_is_ray_distance: bool = False
    """Whether the model's `depth` output is the distance along unit rays (nerfacto) rather than z-depth (splats)."""

    # ---------------------------------------------------------------- set-up
    def _setup_fixing(self) -> None:
        reference = self.config.postprocess_reference
        if reference not in REFERENCE_MODES:
            raise ValueError(f"postprocess_reference must be one of {REFERENCE_MODES}, got {reference!r}")
        if self.config.postprocess_blend not in ("none", "distance"):
            raise ValueError(f"postprocess_blend must be none or distance, got {self.config.postprocess_blend!r}")
        if not 0.0 <= self.config.postprocess_strength <= 1.0:
            raise ValueError(f"postprocess_strength must be in [0, 1], got {self.config.postprocess_strength}")
        self.fixing = FixingState()
        self.viewer_postprocess = ViewerCheckbox(
            "Difix post-processing",
            default_value=bool(self.config.postprocess),
            hint="Fix every render with the configured fixer (Difix3D+); the displayed RGB is the fixed one.",
        )
        self.viewer_reference = ViewerDropdown(
            "Fixer reference", default_value=reference, options=list(REFERENCE_MODES)
        )
        self.viewer_fixer_latency = _ViewerReadout("Fixer latency (ms)", default_value=0.0)

    def get_fixer(self) -> Fixer:
        """The fixer of `config.fixer`, built at first use (thread-safe)."""
        with self.fixing.lock:
            if self.fixing.fixer is None:
                self.fixing.fixer = self.config.fixer.setup()
            return self.fixing.fixer

    def set_fixer(self, fixer: Optional[Fixer], postprocess: bool = True) -> None:
        """Use `fixer` from now on instead of building one from `config.fixer` (the pipeline does this for the
        self-trained fixer, which needs the scene); None builds it again at next use. `postprocess` False: the
        fixer serves the progressive update only and post-processing returns renders unchanged (a self fixer that
        helps held-out views but harms renders near the training views)."""
        with self.fixing.lock:
            self.fixing.fixer = fixer
            self.fixing.postprocess_fixes = postprocess

    def attach_training_views(self, views: Optional[TrainingViews]) -> None:
        """Give the model the training views that post-processing uses as references (done by the pipeline)."""
        self.fixing.training_views = views

    @property
    def postprocess_enabled(self) -> bool:
        """Whether renders are post-processed now (the viewer checkbox; initially `config.postprocess`)."""
        return bool(self.viewer_postprocess.value)

    def render_z_depth(self, outputs: Dict[str, Tensor], camera: Cameras) -> Optional[Float[Tensor, "H W"]]:
        """z-depth of a render of one camera (`difix_ns.geometry.warp`'s convention), None without a depth output."""
        from difix_ns.geometry.warp import ray_distance_to_z_depth

        depth = outputs.get("expected_depth", outputs.get("depth"))
        if depth is None:
            return None
        depth = depth.detach().float().reshape(depth.shape[0], depth.shape[1])
        if self.depth_is_ray_distance:
            depth = ray_distance_to_z_depth(depth, camera.get_intrinsics_matrices()[0].to(depth))
        return torch.nan_to_num(depth, nan=0.0, posinf=0.0, neginf=0.0)

    def reference_indices(self, camera: Cameras, count: int, exclude: Optional[str] = None) -> List[int]:
        """Indices of the `count` training views nearest `camera` (one camera), nearest first, leaving out the one
        named `exclude` (a training view rendered as a target must not be its own reference)."""
        views = self.fixing.training_views
        if count == 0 or views is None:
            return []
        c2w = camera.camera_to_worlds.reshape(-1, 3, 4)[:1].float().cpu()
        nearest = views.nearest(c2w, count + (exclude is not None))[0].tolist()
        return [i for i in nearest if views.names[i] != exclude][:count]

    def warped_references(
        self,
        camera: Cameras,
        depth: Optional[Float[Tensor, "H W"]],
        count: int,
        indices: Optional[List[int]] = None,
    ) -> Optional[WarpedViews]:
        """The `count` training views nearest `camera` (one camera; or the training views `indices`) warped into
        it with its render's z-depth (`render_z_depth`); None when `count` is 0, the depth is unknown, or the model
        has no training views with intrinsics and depth (the pipeline gives them)."""
        views = self.fixing.training_views
        if count == 0 or depth is None or views is None or not views.can_warp:
            return None
        chosen = self.reference_indices(camera, count) if indices is None else indices
        c2w = camera.camera_to_worlds.reshape(-1, 3, 4)[:1].float().cpu()
        intrinsics = camera.get_intrinsics_matrices()[:1].float().cpu()
        return views.warped(torch.tensor([chosen]), c2w, intrinsics, depth[None].cpu())

    def _prefetch_reference_depths(self, camera: Cameras, count: int) -> None:
        """Render (into the training views' cache) the depths `warped_references` will need for `camera`."""
        views = self.fixing.training_views
        if views is not None and views.can_warp:
            for index in self.reference_indices(camera, count):
                views.depth(index)

    def _warped_for(self, fixer: Fixer, camera: Cameras, depth: Optional[Tensor]) -> Optional[WarpedViews]:
        return self.warped_references(camera, depth, fixer.warped_references)

    # ---------------------------------------------------------------- post-processing
    def fix_render(
        self,
        rgb: Float[Tensor, "H W 3"],
        camera: Cameras,
        reference: Optional[str] = None,
        depth: Optional[Float[Tensor, "H W"]] = None,
    ) -> Float[Tensor, "H W 3"]:
        """Fix one render of `camera`; reference mode `reference` (default: the viewer's dropdown). With the
        render's z-depth, a fixer that takes warped references gets them (unless the mode is "none")."""
        reference = reference or self.viewer_reference.value
        if reference not in REFERENCE_MODES:
            raise ValueError(f"reference must be one of {REFERENCE_MODES}, got {reference!r}")
        if not self.fixing.postprocess_fixes:
            return rgb
        refs, warped = None, None
        fixer = self.get_fixer()
        views = self.fixing.training_views
        if reference == "nearest" and views is not None and fixer.supports_refs:
            index = views.nearest(camera.camera_to_worlds.reshape(-1, 3, 4)[:1], 1)
            refs = views.references(index, (rgb.shape[0], rgb.shape[1]))
        if reference == "nearest":
            warped = self._warped_for(fixer, camera, depth)
        start = time.perf_counter()
        fixed = fixer.fix(rgb.detach().float().clamp(0, 1).permute(2, 0, 1)[None], refs, warped)
        self.viewer_fixer_latency.value = round(1000.0 * (time.perf_counter() - start), 1)
        fixed = fixed[0].permute(1, 2, 0).to(rgb.device, rgb.dtype)
        weight = self.config.postprocess_strength
        if self.config.postprocess_blend == "distance" and views is not None and len(views) > 1:
            weight *= self._distance_weight(camera)
        return fixed if weight == 1.0 else rgb + weight * (fixed - rgb)

    def _distance_weight(self, camera: Cameras) -> float:
        """min(1, distance to the nearest training view / training-camera spacing) (`postprocess_blend`)."""
        from difix_ns.progressive.poses import nearest_views

        views = self.fixing.training_views
        assert views is not None
        c2w = camera.camera_to_worlds.reshape(-1, 3, 4)[:1].float().cpu()
        distance = float(nearest_views(c2w, views.poses, 1)[1][0, 0])
        return min(1.0, distance / max(views.spacing, 1e-9))  # spacing: computed once per set of views

    @torch.no_grad()
    def get_outputs_for_camera(
        self, camera: Cameras, obb_box=None, postprocess: Optional[bool] = None
    ) -> Dict[str, Tensor]:
        """nerfstudio's render of `camera`, plus `rgb_fixed` when post-processing is on (`postprocess`; default:
        the viewer checkbox). The progressive update renders with `postprocess=False`."""
        outputs = super().get_outputs_for_camera(camera, obb_box=obb_box)  # type: ignore[misc]
        if not (self.postprocess_enabled if postprocess is None else postprocess):
            return outputs
        viewer = _viewer_render_thread()
        depth = self.render_z_depth(outputs, camera)
        if self.fixing.postprocess_fixes:  # else fix_render returns the render: no reference depths to render
            self._prefetch_reference_depths(camera, self.get_fixer().warped_references)  # renders while still locked
        with _released(viewer.viewer.train_lock if viewer is not None else None):  # type: ignore[attr-defined]
            fixed = self.fix_render(outputs["rgb"], camera, depth=depth)
        if viewer is not None:
            outputs["rgb_raw"] = outputs["rgb"]
            outputs["rgb"] = fixed
        outputs["rgb_fixed"] = fixed
        return outputs

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        raw = {**outputs, "rgb": outputs.get("rgb_raw", outputs["rgb"])}
        metrics, images = super().get_image_metrics_and_images(raw, batch)  # type: ignore[misc]
        if "rgb_fixed" in outputs:
            fixed_metrics, fixed_images = super().get_image_metrics_and_images(  # type: ignore[misc]
                {**outputs, "rgb": outputs["rgb_fixed"]}, batch
            )
            metrics.update({f"{k}_fixed": v for k, v in fixed_metrics.items()})
            images["img_fixed"] = fixed_images["img"]
        return metrics, images

    # ---------------------------------------------------------------- pseudo views in the loss
    def _pseudo_weight(self) -> float:
        return float(self.config.pseudo_loss_weight)
