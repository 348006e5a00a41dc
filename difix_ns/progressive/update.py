"""One progressive update (Difix3D): step the novel cameras, render them, fix them, make pseudo views.

`progressive_update` is a function of the previous `ProgressiveState`; it touches no model or data manager
directly: rendering and fixing come in as callables, so it can be tested with stand-ins.
"""

from __future__ import annotations

import time
from typing import Callable, List, Optional, Tuple, Union

import torch
from jaxtyping import Float
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from difix_ns.fixers.base import WarpedViews
from difix_ns.progressive.config import ProgressiveConfig
from difix_ns.progressive.poses import camera_spacing, path_lengths, step_poses
from difix_ns.progressive.references import TrainingViews
from difix_ns.progressive.state import ProgressiveState, PseudoViews
from difix_ns.progressive.targets import with_poses

__all__ = ["RenderFn", "FixFn", "progressive_update", "default_step_size"]

RenderFn = Callable[
    [Cameras], Tuple[Float[Tensor, "H W 3"], Float[Tensor, "H W 1"], Optional[Float[Tensor, "H W"]]]
]
"""Render one camera ([1] Cameras) in eval mode without gradients: (rgb, alpha, z-depth or None)."""
FixFn = Callable[
    [Float[Tensor, "B 3 H W"], Optional[Float[Tensor, "B R 3 H W"]], Optional[WarpedViews]], Float[Tensor, "B 3 H W"]
]
"""`Fixer.fix`: images and references in [0, 1], and references warped into the images' cameras -> fixed images
of the same size."""


def default_step_size(config: ProgressiveConfig, training: TrainingViews) -> float:
    """`config.step_size`, or `step_spacings` x the median spacing of the training cameras (pose-distance units)."""
    if config.step_size is not None:
        return config.step_size
    if len(training) < 2:
        return config.step_spacings
    return config.step_spacings * camera_spacing(training.poses, config.translation_weight, config.rotation_weight)


def _step_sizes(
    config: ProgressiveConfig,
    training: TrainingViews,
    current: Tensor,
    targets: Tensor,
    step: int,
    last_step: Optional[int],
) -> Union[float, Tensor]:
    """The fixed step, or (`reach_targets`) per camera the larger of it and remaining distance / updates left."""
    base = default_step_size(config, training)
    if not config.reach_targets or last_step is None:
        return base
    updates = max(config.updates_left(step, last_step), 1)
    remaining = path_lengths(current, targets, config.translation_weight, config.rotation_weight)
    return (remaining / updates).clamp_min(base)


def _to_uint8(image: Tensor) -> Tensor:
    return (image.clamp(0, 1) * 255.0).round().to(torch.uint8)


def _warped_views(
    cameras: Cameras, depths: List[Optional[Tensor]], training: TrainingViews, count: int, config: ProgressiveConfig
) -> Optional[WarpedViews]:
    """The `count` training views nearest each camera warped into it by its rendered depth (None: not asked for,
    or no depth)."""
    if count == 0 or not training.can_warp or any(d is None for d in depths):
        return None
    c2w = cameras.camera_to_worlds[:, :3, :4].float().cpu()
    indices = training.nearest(c2w, count, config.translation_weight, config.rotation_weight)
    return training.warped(
        indices, c2w, cameras.get_intrinsics_matrices().float().cpu(), torch.stack(depths)  # type: ignore[arg-type]
    )


def _render_and_fix(
    cameras: Cameras,
    references: Tensor,
    training: TrainingViews,
    render: RenderFn,
    fix: FixFn,
    config: ProgressiveConfig,
    warped_count: int = 0,
) -> Tuple[List[Tensor], List[Tensor]]:
    """Render and fix `cameras` in chunks of `render_chunk_size`; returns uint8 images and bool masks (CPU)."""
    images: List[Tensor] = []
    masks: List[Tensor] = []
    n = cameras.shape[0]
    for start in range(0, n, config.render_chunk_size):
        stop = min(start + config.render_chunk_size, n)
        renders = [render(cameras[i : i + 1]) for i in range(start, stop)]
        sizes = {(rendered[0].shape[0], rendered[0].shape[1]) for rendered in renders}
        groups = [list(range(len(renders)))] if len(sizes) == 1 else [[i] for i in range(len(renders))]
        for group in groups:  # one batch per chunk, or one image at a time when targets differ in size
            size = (renders[group[0]][0].shape[0], renders[group[0]][0].shape[1])
            batch = torch.stack([renders[i][0].detach().float().clamp(0, 1).permute(2, 0, 1) for i in group])
            chosen = [start + i for i in group]
            refs = training.references(references[chosen], size)
            depths = [renders[i][2] for i in group]
            warped = _warped_views(cameras[torch.tensor(chosen)], depths, training, warped_count, config)
            fixed = fix(batch, refs, warped).cpu()
            for j, i in enumerate(group):
                images.append(_to_uint8(fixed[j].permute(1, 2, 0)))
                masks.append((renders[i][1].detach().float().cpu() >= config.alpha_threshold).reshape(*size, 1))
        del renders
    return images, masks


def _current_poses(
    state: ProgressiveState, config: ProgressiveConfig, target_poses: Tensor, training: TrainingViews
) -> Tensor:
    """Where the novel cameras are now: the saved schedule, or (first update) the training pose nearest each target."""
    if state.poses is None:
        start = training.nearest(target_poses, 1, config.translation_weight, config.rotation_weight)[:, 0]
        return training.poses[start]
    if state.targets is None or state.targets.shape != target_poses.shape:
        raise ValueError(
            f"the saved schedule has {0 if state.targets is None else state.targets.shape[0]} novel cameras but the "
            f"configured targets give {target_poses.shape[0]}; resume with the same progressive settings"
        )
    return state.poses


@torch.no_grad()
def progressive_update(
    state: ProgressiveState,
    config: ProgressiveConfig,
    step: int,
    targets: Cameras,
    training: TrainingViews,
    render: RenderFn,
    fix: FixFn,
    warped_count: int = 0,
    last_step: Optional[int] = None,
) -> ProgressiveState:
    """Move the novel cameras one step toward `targets`, render and fix them; returns the next state.

    The first update starts every camera at the training pose nearest its target. References are the
    `num_references` training views nearest each camera's new pose; their indices are also the camera indices the
    pseudo views carry in training. With `warped_count` K > 0 (the fixer's `warped_references`) the fixer also
    gets the K nearest training views warped into each camera by its rendered depth. With `config.reach_targets`
    and the run's `last_step`, a camera's step is its remaining distance over the updates left (at least the
    fixed step). The new views replace the previous set, or join it with `accumulate`.
    """
    start_time = time.perf_counter()
    target_poses = targets.camera_to_worlds[:, :3, :4].float().cpu()
    current = _current_poses(state, config, target_poses, training)
    poses, meta = step_poses(
        current,
        target_poses,
        _step_sizes(config, training, current, target_poses, step, last_step),
        config.translation_weight,
        config.rotation_weight,
        config.snap_fraction,
    )
    cameras = with_poses(targets, poses)
    references = training.nearest(poses, config.num_references, config.translation_weight, config.rotation_weight)
    images, masks = _render_and_fix(cameras, references, training, render, fix, config, warped_count)
    views = PseudoViews(
        cameras=cameras,
        images=images,
        masks=masks,
        reference_indices=references[:, 0].clone(),
        steps=torch.full((cameras.shape[0],), step, dtype=torch.long),
    )
    if config.accumulate and state.pseudo is not None:
        views = PseudoViews.concatenate([state.pseudo, views])
    record = {
        "step": float(step),
        "views": float(len(views)),
        "mean_remaining": float(meta["remaining"].mean()),
        "reached": float(meta["reached"].float().mean()),
        "seconds": time.perf_counter() - start_time,
    }
    return ProgressiveState(
        poses=poses,
        targets=target_poses,
        num_updates=state.num_updates + 1,
        last_update_step=step,
        pseudo=views,
        history=[*state.history, record],
    )
