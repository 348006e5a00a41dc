"""Trainer of the difix methods: nerfstudio's Trainer, plus one set-up stage before the first step.

`ns-train difix-*` first checks the fixer settings (an incomplete checkpoint folder, a hub id missing from the
local cache while offline, a NAFNet without weights fail in seconds, as one message, before any data or model is
built); then it builds the pipeline (and loads a checkpoint when resuming) as usual; then, before any training
step, the pipeline's fixer is settled: the `self` fixer is trained on the scene's training views (or taken from the
checkpoint / the run folder when it exists), so no training callback ever starts another training. The pipeline is
also told its run folder here, where it writes the self fixer and the pseudo views.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Type

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from difix_ns.checkpoints import latest_complete_step
from difix_ns.errors import UserError, install_user_error_hook
from difix_ns.fixers.config import resolve_auto

__all__ = ["DifixTrainer", "DifixTrainerConfig"]


@dataclass
class DifixTrainerConfig(TrainerConfig):
    """nerfstudio's TrainerConfig; its trainer settles the fixer before the first training step."""

    _target: Type = field(default_factory=lambda: DifixTrainer)


class DifixTrainer(Trainer):
    """Trainer whose set-up ends with the pipeline's fixer stage (`DifixPipeline.settle_fixer`)."""

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        self._settle_fixer_settings()
        super().setup(test_mode=test_mode)
        settle = getattr(self.pipeline, "settle_fixer", None)  # any pipeline may be configured; only ours has it
        if settle is not None:
            settle(self.base_dir)

    def _settle_fixer_settings(self) -> None:
        """Resolve the `auto` back-end (saying which and why; config.yml then records the choice, so ns-eval and the
        viewer use the same) and check the fixer settings."""
        model = self.config.pipeline.model
        if getattr(model, "fixer", None) is None:
            return
        if model.fixer.backend == "auto":
            model.fixer, reason = resolve_auto(model.fixer)
            CONSOLE.log(f"difix: fixer back-end {model.fixer.backend}: {reason}")
            self.config.save_config()
        try:
            model.fixer.check()
        except UserError:
            install_user_error_hook()  # ns-train's main is nerfstudio's: one message, no traceback
            raise

    def _load_checkpoint(self) -> None:
        """nerfstudio's, but resuming from the newest *complete* checkpoint of `--load-dir`: a file cut by a kill
        during saving is skipped with a warning (nerfstudio would crash on it and lose the run)."""
        if self.config.load_dir is not None and self.config.load_step is None:
            step, skipped = latest_complete_step(self.config.load_dir)
            for path in skipped:
                CONSOLE.log(f"[yellow]difix: skipping the incomplete checkpoint {path} (cut while it was written)")
            if step is None and skipped:
                raise UserError(f"no complete checkpoint in {self.config.load_dir}: every step-*.ckpt is cut")
            self.config.load_step = step
        super()._load_checkpoint()
