"""Pipeline and trainer of sr3d-splatfacto: 3D-consistent super-resolution (3DSR, ICCV 2025) in one ns-train run.

Mechanism (nerfstudio's classes, glue only; the math is in `ops.py`, the back-ends in `base.py`):
- the data manager (`Sr3dDatamanager`) holds the HR dataset as nerfstudio loads it (HR training views and
  cameras; HR evaluation views with HR intrinsics, so `ns-eval`, `ns-render` and the viewer work at HR) and
  derives the LR views (HR / factor, antialiased). Without SR targets it serves the LR views at LR cameras (the LR
  stage); with targets, the targets at HR cameras plus the LR views for the LR term;
- `Sr3dTrainer.setup` hands the pipeline its run folder before the first step (`prepare_superres`): the SR
  back-end is prepared there (the `self` back-end trains its network on the LR views, or reuses the one the
  checkpoint names; `sd-x4` keeps one latent per training view there and reloads the checkpoint round's latents);
- one training callback, after the model's own at AFTER_TRAIN_ITERATION (splatfacto's densification sees its own
  render first), starts round r when the next step belongs to it (`SuperResConfig.round_at`): every training view
  is rendered at HR (eval mode, no gradients), the back-end makes the SR targets from the render and the LR view,
  the targets (uint8) go to the data manager and to `sr3d/round-RR/targets/*.png` in the run folder (renders in
  `sr3d/round-RR/renders/`). The Gaussians are never reset: each round is warm-started from the previous one;
- the extra state of the checkpoint holds the round, the target files and the back-end's folder, so
  `ns-train --load-dir` continues at the right round with the identical (lossless PNG) targets.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Type

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from torch import Tensor

from difix_ns.superres.backends import make_backend
from difix_ns.superres.base import SuperResBackend, sr_targets
from difix_ns.superres.config import SuperResConfig

__all__ = ["SR3D_FOLDER", "Sr3dPipeline", "Sr3dPipelineConfig", "Sr3dTrainer", "Sr3dTrainerConfig"]

SR3D_FOLDER = "sr3d"
"""Folder of the run with the back-end's files (`backend/`) and each round's targets and renders (`round-RR/`)."""


@dataclass
class Sr3dPipelineConfig(VanillaPipelineConfig):
    """Pipeline of sr3d-splatfacto."""

    _target: Type = field(default_factory=lambda: Sr3dPipeline)
    superres: SuperResConfig = field(default_factory=SuperResConfig)
    """3DSR: factor, stages, loss weights, SR back-end."""


def _to_uint8(image: Tensor) -> Tensor:
    return (image.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8)


class Sr3dPipeline(VanillaPipeline):
    """Datamanager + model, as in nerfstudio, plus the 3DSR rounds (see module docstring)."""

    config: Sr3dPipelineConfig

    def __init__(self, config: Sr3dPipelineConfig, *args: Any, **kwargs: Any) -> None:
        config.superres.validate()
        super().__init__(config, *args, **kwargs)
        sr = config.superres
        self.datamanager.set_factor(sr.factor)
        self.model.set_loss_weights(sr.ssim_weight, sr.lambda_lr)
        self.model.densify_at = sr.densify_at
        self.sr_round = 0
        self.target_files: List[str] = []
        self.backend_path: Optional[Path] = None
        self.round_history: List[Dict[str, float]] = []
        self._backend: Optional[SuperResBackend] = None
        self._output_dir: Optional[Path] = None

    # ---------------------------------------------------------------- the back-end (before the first step)
    def _lr_views_chw(self) -> List[Tensor]:
        return [v.permute(2, 0, 1).cpu() for v in self.datamanager.lr_images]

    def prepare_superres(self, run_dir: Path) -> None:
        """Remember the run folder and prepare the SR back-end (the `self` network is trained into
        `run_dir/sr3d/backend`, or loaded from the folder the checkpoint names), then tell it the rounds done."""
        self._output_dir = Path(run_dir)
        backend = make_backend(self.config.superres)
        if self.backend_path is not None and hasattr(backend, "load"):
            backend.load(self.backend_path)
        else:
            folder = self._output_dir / SR3D_FOLDER / "backend"
            CONSOLE.log(f"sr3d: preparing the {backend.name} SR back-end in {folder}")
            backend.prepare(self._lr_views_chw(), self.config.superres.factor, folder)
            if getattr(backend, "folder", None) is not None:
                self.backend_path = Path(backend.folder).resolve()
        backend.resume(self.sr_round)  # e.g. sd-x4 reloads the per-view latents of that round
        self._backend = backend

    # ---------------------------------------------------------------- rounds
    def _render_training_views(self) -> List[Tensor]:
        """HR renders [3, H, W] of every training view (eval mode, no gradients, no post-processing)."""
        model, cameras = self.model, self.datamanager.train_dataset.cameras
        was_training = model.training
        model.eval()
        renders = []
        try:
            with torch.no_grad():
                for i in range(cameras.shape[0]):
                    out = model.get_outputs_for_camera(cameras[i : i + 1].to(model.device), postprocess=False)
                    renders.append(out["rgb"].permute(2, 0, 1).float())
        finally:
            model.train(was_training)
        return renders

    def make_targets(self) -> tuple:
        """(SR targets [H, W, 3] uint8, renders [3, H, W]) of every training view from the current Gaussians."""
        if self._backend is None:
            raise RuntimeError("sr3d: the SR back-end is not prepared (Sr3dTrainer calls prepare_superres)")
        renders = self._render_training_views()
        targets = []
        for index, (render, lr) in enumerate(zip(renders, self.datamanager.lr_images)):
            lr_chw = lr.permute(2, 0, 1)[None].to(render.device)
            condition = render[None] if self.config.superres.condition_on_render else None
            size, fix = tuple(render.shape[-2:]), self.config.superres.color_fix
            sr = sr_targets(self._backend, lr_chw, condition, size, fix, indices=[index])
            targets.append(_to_uint8(sr[0].permute(1, 2, 0)).cpu())
        return targets, renders

    def start_round(self, round_index: int, step: int) -> None:
        """Make round `round_index`'s targets from the current Gaussians, write them, train on them from now on."""
        if self._output_dir is None:
            raise RuntimeError("sr3d: the pipeline has no run folder (Sr3dTrainer calls prepare_superres)")
        start = time.perf_counter()
        targets, renders = self.make_targets()
        folder = self._output_dir / SR3D_FOLDER / f"round-{round_index:02d}"
        names = [Path(p).stem for p in self.datamanager.train_dataset.image_filenames]
        files = []
        for sub, images in (("targets", targets), ("renders", [_to_uint8(r.permute(1, 2, 0)).cpu() for r in renders])):
            (folder / sub).mkdir(parents=True, exist_ok=True)
            for name, image in zip(names, images):
                Image.fromarray(image.numpy()).save(folder / sub / f"{name}.png")
                if sub == "targets":
                    files.append(str((folder / sub / f"{name}.png").resolve()))
        self.datamanager.set_targets(targets)
        self.sr_round, self.target_files = round_index, files
        self.round_history.append({"round": round_index, "step": step, "seconds": time.perf_counter() - start})
        CONSOLE.log(f"sr3d: round {round_index} starts after step {step}: {len(targets)} SR targets in {folder}")

    def _round_callback(self, step: int) -> None:
        wanted = self.config.superres.round_at(step + 1)
        while self.sr_round < wanted:
            self.start_round(self.sr_round + 1, step)

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        callbacks = super().get_training_callbacks(attributes)
        trainer = attributes.trainer
        total = self.config.superres.total_iterations
        if trainer is not None and trainer.config.max_num_iterations < total:
            CONSOLE.log(
                f"[yellow]sr3d: --max-num-iterations {trainer.config.max_num_iterations} ends before the schedule's "
                f"{total} steps (LR stage + rounds x iterations_per_round): later rounds will not run"
            )
        # last in the list: after the model's own AFTER_TRAIN_ITERATION callbacks (densification)
        callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._round_callback))
        return callbacks

    # ---------------------------------------------------------------- checkpoint
    def get_extra_state(self) -> Dict[str, Any]:
        return {
            "sr3d_round": self.sr_round,
            "sr3d_targets": list(self.target_files),
            "sr3d_backend_path": None if self.backend_path is None else str(self.backend_path),
            "sr3d_history": list(self.round_history),
        }

    def set_extra_state(self, state: Any) -> None:
        if not isinstance(state, dict) or "sr3d_round" not in state:
            return
        self.sr_round = int(state["sr3d_round"])
        self.target_files = list(state["sr3d_targets"])
        self.round_history = list(state.get("sr3d_history", []))
        path = state.get("sr3d_backend_path")
        self.backend_path = None if path is None else Path(path)
        if self.test_mode != "val" or not self.target_files:
            return  # evaluation and rendering never train on the targets
        missing = [f for f in self.target_files if not Path(f).is_file()]
        if missing:
            raise FileNotFoundError(f"sr3d: the SR targets of round {self.sr_round} are missing, e.g. {missing[0]}")
        targets = [torch.from_numpy(np.array(Image.open(f).convert("RGB"))) for f in self.target_files]
        self.datamanager.set_targets(targets)


@dataclass
class Sr3dTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig; its trainer prepares the SR back-end before the first training step."""

    _target: Type = field(default_factory=lambda: Sr3dTrainer)


class Sr3dTrainer(Trainer):
    """Trainer whose set-up ends with `Sr3dPipeline.prepare_superres(run folder)`."""

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        super().setup(test_mode=test_mode)
        prepare = getattr(self.pipeline, "prepare_superres", None)
        if prepare is not None:
            prepare(self.base_dir)
