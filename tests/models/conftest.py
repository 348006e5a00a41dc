"""Shared fixture: one difix-splatfacto run trained in process (see difix_training_helpers)."""

from __future__ import annotations

import pytest
from difix_ns.fixers.config import FixerConfig
from difix_training_helpers import (
    SPLAT_FIX_EVERY,
    SPLAT_FIX_START,
    SPLAT_ITERATIONS,
    allow_eval_images,
    forbid_eval_images,
    record_batches,
    tiny_trainer_config,
)


@pytest.fixture(scope="session")
def trained_splatfacto(synth_scene, tmp_path_factory):
    """difix-splatfacto trained in process for 10 steps (updates at steps 3 and 7), with a config.yml."""
    out = tmp_path_factory.mktemp("splat_progressive")
    config = tiny_trainer_config("difix-splatfacto", synth_scene, out, SPLAT_ITERATIONS)
    config.pipeline.progressive.fix_start = SPLAT_FIX_START
    config.pipeline.progressive.fix_every = SPLAT_FIX_EVERY
    # a small untrained NAFNet: cheap, and it visibly changes images (identity would hide a missing fix)
    config.pipeline.model.fixer = FixerConfig(
        backend="nafnet", nafnet_width=8, nafnet_use_reference=True, random_init=True
    )
    config.set_timestamp()
    config.save_config()  # config.yml, as ns-train writes it, so that the ns-* CLIs can load the run
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    forbid_eval_images(trainer.pipeline.datamanager)
    records = record_batches(trainer.pipeline.datamanager)
    trainer.train()
    allow_eval_images(trainer.pipeline.datamanager)
    return {"trainer": trainer, "records": records, "run": out / "e" / "difix-splatfacto" / "t", "config": config}
