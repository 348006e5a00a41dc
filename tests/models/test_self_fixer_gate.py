"""A `self` fixer given as a checkpoint (the benchmark makes one per scene and shares it) passes the same check
against doing nothing as one the run trains itself: without a gain on its validation pairs the run fixes nothing
and adds no pseudo views. The run folder records the choice."""

from __future__ import annotations

import json

import pytest
import torch

from difix_ns.fixers.base import IdentityFixer
from difix_ns.fixers.config import FixerConfig
from difix_ns.fixers.nafnet import NAFNet, NAFNetFixer
from difix_ns.pipeline import SELF_FIXER_DECISION

from difix_training_helpers import tiny_trainer_config


def _self_fixer(folder, psnr: float, psnr_degraded: float):
    NAFNetFixer(NAFNet(width=8, enc_blk_nums=(1,), dec_blk_nums=(1,))).save_pretrained(folder / "train" / "fixer")
    summary = {"validation": {"psnr": psnr, "psnr_degraded": psnr_degraded}}
    (folder / "train" / "summary.json").write_text(json.dumps(summary))
    return folder / "train" / "fixer"


@pytest.mark.parametrize("psnr, kept", [(20.0, True), (17.0, False)])
def test_a_given_self_fixer_is_used_only_when_it_beats_doing_nothing(synth_scene, tmp_path, psnr, kept):
    checkpoint = _self_fixer(tmp_path / "fixer", psnr, psnr_degraded=18.0)
    config = tiny_trainer_config("difix-splatfacto", synth_scene, tmp_path / "out", iterations=1)
    config.pipeline.model.fixer = FixerConfig(backend="self", checkpoint=str(checkpoint))
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipeline = trainer.pipeline
    fixer = pipeline.model.get_fixer()
    assert pipeline.self_fixer_used is kept
    assert isinstance(fixer, NAFNetFixer if kept else IdentityFixer)
    record = json.loads((pipeline._output_dir / SELF_FIXER_DECISION).read_text())  # what the benchmark reports
    assert record == {
        "fixer": str(checkpoint), "used": kept, "validation_psnr": psnr, "validation_psnr_unfixed": 18.0
    }  # fmt: skip
    state = pipeline.get_extra_state()  # ns-eval restores the same choice from the checkpoint
    assert state["self_fixer_used"] is kept and state["self_fixer_path"] == str(checkpoint)
    x = torch.rand(1, 3, 8, 8)
    if not kept:
        assert torch.equal(fixer.fix(x), x)
    # without a fixer the progressive updates are skipped: pseudo views would be unfixed renders
    pipeline._progressive_callback(pipeline.config.progressive.fix_start)
    assert pipeline.progressive_state.num_updates == (1 if kept else 0)
    assert bool(pipeline.progressive_state.pseudo) is kept
