"""Pipeline of the difix methods: nerfstudio's VanillaPipeline plus the Difix3D progressive update.

Glue only (the math is in `difix_ns.progressive`):
- at construction it gives the model the training views (poses + images on demand) that post-processing uses as
  references;
- before the first training step (`DifixTrainer` calls `settle_fixer(run folder)`) the fixer is settled: the `self`
  fixer is trained on the training views into the run folder, or reused from there or from the checkpoint;
- one training callback, after the model's own at AFTER_TRAIN_ITERATION (splatfacto's densification must see
  its own render first), runs `progressive_update` on the steps `ProgressiveConfig.is_update_step` names: the
  model renders the novel cameras in eval mode without gradients, its fixer fixes them, the data manager gets
  the pseudo views, and the run folder gets `difix_pseudo/step-NNNNNNNNN/` (images, masks, cameras.json);
- the `ProgressiveState` (schedule position + pseudo views) is this module's extra state, so it is saved in every
  checkpoint and restored by `ns-train --load-dir`, `ns-eval`, `ns-render` and the viewer.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple, Type

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from difix_ns.progressive.config import ProgressiveConfig
from difix_ns.progressive.references import TrainingViews
from difix_ns.progressive.state import ProgressiveState, write_pseudo_views
from difix_ns.progressive.targets import interpolated_training_path, load_camera_path, subsample, with_poses
from difix_ns.progressive.update import progressive_update
from difix_ns.training.self_fixer import SelfFixerConfig

__all__ = ["DifixPipeline", "DifixPipelineConfig", "PSEUDO_VIEWS_FOLDER"]

PSEUDO_VIEWS_FOLDER = "difix_pseudo"
"""Folder of the run where each update writes its pseudo views (`step-NNNNNNNNN/`)."""
SELF_FIXER_FOLDER = "difix_self_fixer"
"""Folder of the run where the `self` fixer is made (curated pairs, NAFNet training)."""
SELF_FIXER_DECISION = "difix_self_fixer.json"
"""In the run folder: which self fixer the run uses, whether it kept it, and its validation PSNRs (the benchmark
reports a rejected one)."""


@dataclass
class DifixPipelineConfig(VanillaPipelineConfig):
    """Pipeline of difix-splatfacto and difix-nerfacto."""

    _target: Type = field(default_factory=lambda: DifixPipeline)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    """Difix3D progressive update: schedule, targets and pseudo views."""
    self_fixer: SelfFixerConfig = field(default_factory=SelfFixerConfig)
    """How the `self` fixer (--pipeline.model.fixer.backend self) is trained from the training views."""


class DifixPipeline(VanillaPipeline):
    """Datamanager + model, as in nerfstudio, plus the progressive fixer update (see module docstring)."""

    config: DifixPipelineConfig

    def __init__(self, config: DifixPipelineConfig, *args: Any, **kwargs: Any) -> None:
        config.progressive.validate()
        super().__init__(config, *args, **kwargs)
        self.progressive_state = ProgressiveState()
        self._training_views = self._make_training_views()
        if hasattr(self.model, "attach_training_views"):
            self.model.attach_training_views(self._training_views)
        eval_dataset = getattr(self.datamanager, "eval_dataset", None)
        if eval_dataset is not None and hasattr(self.model, "attach_eval_images"):  # co-visibility-masked metrics
            self.model.attach_eval_images(self.datamanager.dataparser.config.data, eval_dataset.image_filenames)
        self._output_dir: Optional[Path] = None
        self._last_train_step: Optional[int] = None  # set from the trainer with the training callbacks
        self.self_fixer_path: Optional[Path] = None
        self.self_fixer_used = True  # by the progressive update
        self.self_fixer_postprocess = True  # by post-processing

    # ---------------------------------------------------------------- training views and targets
    def _make_training_views(self) -> TrainingViews:
        datamanager = self.datamanager
        dataset = datamanager.train_dataset
        names = [Path(p).name for p in dataset.image_filenames]
        if hasattr(datamanager, "training_image"):
            load = datamanager.training_image
        else:
            load = dataset.get_image_float32
        views = TrainingViews(
            dataset.cameras.camera_to_worlds, load, names, intrinsics=dataset.cameras.get_intrinsics_matrices()
        )
        views.set_depth_source(self._render_training_depth)
        return views

    def novel_camera_targets(self) -> Cameras:
        """Target cameras of the progressive update (poses and intrinsics only, never images)."""
        config = self.config.progressive
        train_cameras = self.datamanager.train_dataset.cameras
        if config.targets == "eval":
            cameras = self.datamanager.eval_dataset.cameras
            cameras = with_poses(cameras, cameras.camera_to_worlds)
        elif config.targets == "path":
            assert config.camera_path is not None
            cameras = load_camera_path(config.camera_path, int(train_cameras.height[0]))
        else:
            cameras = interpolated_training_path(train_cameras, config.interpolation_steps)
        if cameras.shape[0] == 0:
            raise ValueError(f"progressive.targets={config.targets!r} gives no cameras")
        return subsample(cameras, config.max_views)

    # ---------------------------------------------------------------- rendering
    def _render(self, camera: Cameras) -> Tuple[Tensor, Tensor, Optional[Tensor]]:
        """Raw render (rgb [H, W, 3], alpha [H, W, 1], z-depth [H, W] or None) of one camera in eval mode, without
        post-processing."""
        model = self.model
        was_training = model.training
        model.eval()
        camera = camera.to(model.device)
        try:
            with torch.no_grad():
                outputs = model.get_outputs_for_camera(camera, postprocess=False)
        finally:
            model.train(was_training)
        return outputs["rgb"], outputs["accumulation"], model.render_z_depth(outputs, camera)

    def _render_training_depth(self, index: int) -> Tensor:
        """z-depth [H, W] of training camera `index` (the occlusion test of warped references)."""
        cameras = self.datamanager.train_dataset.cameras
        depth = self._render(cameras[index : index + 1])[2]
        if depth is None:
            raise ValueError(f"{type(self.model).__name__} renders no depth: warped references need it")
        return depth

    # ---------------------------------------------------------------- the fixer stage (before training)
    def _self_backend(self) -> bool:
        from difix_ns.fixers.config import resolve_auto

        return resolve_auto(self.model.config.fixer)[0].backend == "self"

    def _needs_self_fixer(self) -> bool:
        return self._self_backend() and self.model.config.fixer.checkpoint is None

    def _use_self_fixer(
        self, folder: Path, use: bool = True, postprocess: Optional[bool] = None, scores: Optional[dict] = None
    ) -> None:
        """Make the self fixer in `folder` the model's fixer for the progressive update (`use`) and for
        post-processing (`postprocess`, default `use`); a stage where it did not beat doing nothing on its
        validation pairs gets the identity. The choice and the fixer's `scores` (read from `folder` when not
        given) are written to the run folder (`SELF_FIXER_DECISION`)."""
        from difix_ns.training.self_fixer import self_fixer_scores

        postprocess = use if postprocess is None else postprocess
        self.self_fixer_path, self.self_fixer_used, self.self_fixer_postprocess = Path(folder), use, postprocess
        if self._output_dir is not None:
            scores = self_fixer_scores(folder) if scores is None else scores
            record = {"fixer": str(folder), "used": use, "postprocess": postprocess, **scores}
            self._output_dir.mkdir(parents=True, exist_ok=True)
            (self._output_dir / SELF_FIXER_DECISION).write_text(json.dumps(record, indent=1))
        if use or postprocess:
            config = dataclasses.replace(self.model.config.fixer, backend="self", checkpoint=str(folder))
        else:
            config = dataclasses.replace(self.model.config.fixer, backend="identity", checkpoint=None)
        self.model.set_fixer(config.setup(), postprocess=postprocess)

    def _adopt_self_fixer(self, folder: Path) -> None:
        """Use the self fixer in `folder` in the stages whose checks it passes (`_self_fixer_gates`)."""
        from difix_ns.training.self_fixer import self_fixer_scores

        scores = self_fixer_scores(folder)
        self._use_self_fixer(folder, *self._self_fixer_gates(scores), scores=scores)

    def _self_fixer_gates(self, scores: dict) -> Tuple[bool, bool]:
        """(use the self fixer in the progressive update, in post-processing), from its `scores`
        (`self_fixer_scores`): each stage only if the fixer passes that stage's checks (`SELF_FIXER_CHECKS`: it
        beats doing nothing on validation pairs like the renders the stage fixes)."""
        from difix_ns.training.self_fixer import failed_self_fixer_checks

        if not self.config.self_fixer.require_gain:
            return True, True
        failed = failed_self_fixer_checks(scores)
        for check in failed:
            fixed, unfixed = (scores[f"{check.prefix}validation_psnr{end}"] for end in ("", "_unfixed"))
            stage = "progressive update (no pseudo views)" if check.stage == "update" else "post-processing"
            CONSOLE.log(
                f"[yellow]difix: the self fixer does not beat doing nothing on {check.pairs} (PSNR {fixed:.2f} dB "
                f"fixed vs {unfixed:.2f} dB unfixed): no fixer in the {stage}"
                + ("" if check.stage == "update" else ": renders are left as they are")
                + " (--pipeline.self-fixer.require-gain False keeps it)"
            )
        stages = {check.stage for check in failed}
        return "update" not in stages, "postprocess" not in stages

    def settle_fixer(self, run_dir: Path) -> None:
        """Before the first training step: remember the run folder (pseudo views are written there) and make the
        `self` fixer, trained on this scene's training views only into `run_dir/difix_self_fixer` (reused when
        that folder or the loaded checkpoint has it). A self fixer given as a checkpoint (made once for several
        runs, as the benchmark does) passes the same check against doing nothing."""
        from difix_ns.training.self_fixer import train_self_fixer

        self._output_dir = Path(run_dir)
        if not self._self_backend() or self.self_fixer_path is not None:
            return
        if self.model.config.fixer.checkpoint is not None:  # made elsewhere (the benchmark shares one per scene)
            folder = Path(self.model.config.fixer.checkpoint)
            self._adopt_self_fixer(folder)
            return
        data = Path(self.datamanager.dataparser.config.data)
        CONSOLE.log(f"difix: the self fixer, trained on the training views of {data} (before the first step)")
        folder = train_self_fixer(data, self._output_dir / SELF_FIXER_FOLDER, self.config.self_fixer)
        self._adopt_self_fixer(folder)

    # ---------------------------------------------------------------- the update
    def run_progressive_update(self, step: int) -> ProgressiveState:
        """Run one progressive update now (as after training step `step`); returns the new state."""
        fixer = self.model.get_fixer()
        self._training_views.forget_depths()  # the model moved on since the last update
        self.progressive_state = progressive_update(
            self.progressive_state,
            self.config.progressive,
            step,
            self.novel_camera_targets(),
            self._training_views,
            self._render,
            lambda images, refs, warped: fixer.fix(images, refs if fixer.supports_refs else None, warped),
            fixer.warped_references,
            self._last_train_step,
        )
        self.datamanager.set_pseudo_views(self.progressive_state.pseudo)
        self._save_pseudo_views(step)
        record = self.progressive_state.history[-1]
        CONSOLE.log(
            f"difix progressive update {self.progressive_state.num_updates} at step {step}: "
            f"{int(record['views'])} pseudo views, mean distance to targets {record['mean_remaining']:.3f}, "
            f"{record['seconds']:.1f} s"
        )
        return self.progressive_state

    def _save_pseudo_views(self, step: int) -> None:
        if not (self.config.progressive.save_views and self.progressive_state.pseudo):
            return
        if self._output_dir is None:
            CONSOLE.log("[yellow]difix: pseudo views not written: the pipeline has no run folder (settle_fixer)")
            return
        folder = self._output_dir / PSEUDO_VIEWS_FOLDER / f"step-{step:09d}"
        write_pseudo_views(folder, self.progressive_state.pseudo, self._training_views.names, step)

    def _progressive_callback(self, step: int) -> None:
        # A rejected self fixer leaves no fixer: pseudo views would be the model's own unfixed renders, which
        # reinforce its artifacts (synth0: masked far PSNR -0.39 dB against splatfacto, self_fixer_budget/ at ce5781b).
        if self.self_fixer_path is not None and not self.self_fixer_used:
            return
        if self.config.progressive.is_update_step(step) and step > self.progressive_state.last_update_step:
            self.run_progressive_update(step)

    def get_training_callbacks(
        self, training_callback_attributes: TrainingCallbackAttributes
    ) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        trainer = training_callback_attributes.trainer
        if trainer is not None:  # the run's last step: progressive.reach_targets sizes the camera steps by it
            self._last_train_step = trainer._start_step + trainer.config.max_num_iterations - 1
        if self.config.progressive.enabled:
            # last in the list: after the model's own AFTER_TRAIN_ITERATION callbacks (densification)
            callbacks.append(
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._progressive_callback)
            )
        return callbacks

    # ---------------------------------------------------------------- checkpoint
    def get_extra_state(self) -> Dict[str, Any]:
        state: Dict[str, Any] = {"progressive": self.progressive_state.to_state()}
        if self.self_fixer_path is not None:
            state["self_fixer_path"] = str(self.self_fixer_path)
            state["self_fixer_used"] = self.self_fixer_used
            state["self_fixer_postprocess"] = self.self_fixer_postprocess
        return state

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or "progressive" not in state:
            return
        self.progressive_state = ProgressiveState.from_state(state["progressive"])
        self.datamanager.set_pseudo_views(self.progressive_state.pseudo)
        if self._self_backend() and "self_fixer_path" in state:
            folder = Path(state["self_fixer_path"])
            if not folder.is_dir():
                raise FileNotFoundError(
                    f"the run's self-trained fixer {folder} is missing (it lives in the run folder)"
                )
            used = bool(state.get("self_fixer_used", True))
            self._use_self_fixer(folder, used, bool(state.get("self_fixer_postprocess", used)))
