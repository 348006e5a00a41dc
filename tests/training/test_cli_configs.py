"""The job configs parse as `difix-ns` subcommands (the same tyro construction as `difix_ns.cli`)."""

from __future__ import annotations

from pathlib import Path

import tyro

from difix_ns.data.curate import CurateConfig
from difix_ns.training.train_fixer import TrainFixerConfig


def _parse(args):
    jobs = {"curate": CurateConfig(), "train-fixer": TrainFixerConfig()}
    return tyro.cli(tyro.extras.subcommand_type_from_defaults(jobs), args=args)


def test_curate_and_train_fixer_parse_as_subcommands():
    curate = _parse(["curate", "--data", "scene", "--strategies", "leave-out", "compression",
                     "--ns-train-args=--pipeline.model.sh-degree 1"])  # fmt: skip
    assert curate.strategies == ("leave-out", "compression")
    assert curate.ns_train_args == "--pipeline.model.sh-degree 1"
    train = _parse(["train-fixer", "--manifests", "a.jsonl", "b.jsonl", "--backend", "difix",
                    "--init-checkpoint", "nvidia/difix", "--unet", "lora", "--max-seconds", "30"])  # fmt: skip
    assert train.manifests == (Path("a.jsonl"), Path("b.jsonl"))
    assert (train.backend, train.unet, train.max_seconds) == ("difix", "lora", 30.0)
    assert callable(curate.main) and callable(train.main)
