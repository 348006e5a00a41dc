"""Helpers to train the difix methods in process on the small synthetic scene (model tests)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Optional

from difix_ns.fixers.config import FixerConfig



def tiny_trainer_config(method: str, scene: Path, out: Path, iterations: int, load_dir: Optional[Path] = None):
    """A TrainerConfig of `method` (difix-splatfacto or difix-nerfacto) small enough for a CPU test."""
    if method == "difix-splatfacto":
        from difix_ns.method_configs.difix_splatfacto import difix_splatfacto as spec
    else:
        from difix_ns.method_configs.difix_nerfacto import difix_nerfacto as spec
    config = copy.deepcopy(spec.config)
    config.pipeline.datamanager.data = scene
    config.output_dir = out
    config.experiment_name = "e"
    config.timestamp = "t"
    config.vis = "tensorboard"
    config.max_num_iterations = iterations
    config.steps_per_save = 1000
    config.steps_per_eval_image = config.steps_per_eval_all_images = config.steps_per_eval_batch = 100000
    config.load_dir = load_dir
    config.pipeline.model.fixer = FixerConfig(backend="identity")  # model tests set their own fixer where it matters
    if method == "difix-nerfacto":
        model = config.pipeline.model
        model.implementation = "torch"
        model.eval_num_rays_per_chunk = 4096
        model.num_proposal_samples_per_ray = (16, 8)
        model.num_nerf_samples_per_ray = 8
        model.num_levels, model.log2_hashmap_size, model.max_res = 4, 12, 64
        config.pipeline.datamanager.train_num_rays_per_batch = 200
    return config


def train(config) -> Any:
    """Set up and train; returns the trainer."""
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return trainer


def record_batches(datamanager) -> List[Dict[str, Any]]:
    """Wrap `datamanager.next_train` to record (step, camera or ray bundle, batch) of every training sample."""
    records: List[Dict[str, Any]] = []
    inner = datamanager.next_train

    def next_train(step: int):
        camera, batch = inner(step)
        records.append({"step": step, "camera": camera, "batch": batch})
        return camera, batch

    datamanager.next_train = next_train
    return records


_IMAGE_READERS = ("get_numpy_image", "get_image_float32", "get_image_uint8", "get_data")


def forbid_eval_images(datamanager) -> None:
    """Make any read of an evaluation image fail (the progressive loop may use eval poses only)."""

    def refuse(*args, **kwargs):
        raise AssertionError("an evaluation image was read")

    for name in _IMAGE_READERS:
        setattr(datamanager.eval_dataset, name, refuse)


def allow_eval_images(datamanager) -> None:
    """Undo `forbid_eval_images`."""
    for name in _IMAGE_READERS:
        datamanager.eval_dataset.__dict__.pop(name, None)


SPLAT_FIX_START, SPLAT_FIX_EVERY, SPLAT_ITERATIONS = 3, 4, 10
"""Schedule of the shared difix-splatfacto run: updates at steps 3 and 7 of 10."""
