"""`difix-ns` command line: one tyro subcommand per job.

Each subcommand is a dataclass config with a `main()` method, defined in a light module (heavy imports happen
inside `main`), so `difix-ns --help` stays fast. A job that fails on bad input or settings (`ValueError`,
`FileNotFoundError`) prints one message and exits with status 2 (`DIFIX_NS_DEBUG=1` shows the traceback).
"""

from __future__ import annotations

import os

import tyro

from difix_ns.benchmark.command import BenchmarkConfig
from difix_ns.compression.command import CompressConfig, DecompressConfig
from difix_ns.data.curate import CurateConfig
from difix_ns.data.synth import SynthConfig
from difix_ns.demo import DemoConfig
from difix_ns.errors import DEBUG_ENV, report_user_error
from difix_ns.fix_command import FixCommandConfig
from difix_ns.training.train_fixer import TrainFixerConfig


def _subcommands() -> dict:
    # Add new jobs here: name -> default config instance (its dataclass has a `main()` method).
    return {
        "synth": SynthConfig(),
        "demo": DemoConfig(),
        "fix": FixCommandConfig(),
        "benchmark": BenchmarkConfig(),
        "curate": CurateConfig(),
        "train-fixer": TrainFixerConfig(),
        "compress": CompressConfig(),
        "decompress": DecompressConfig(),
    }


def _description(config: object) -> str:
    """The first paragraph of the config class's docstring, on one line: the job's description in `--help`.

    tyro shows a class docstring only for a subcommand it builds itself, not for one given as a default instance,
    so `difix-ns --help` would list the jobs with no description."""
    doc = (type(config).__doc__ or "").strip()
    return " ".join(doc.split("\n\n")[0].split())


def entrypoint() -> None:
    """Parse `difix-ns <job> [options]` and run the job."""
    jobs = _subcommands()
    descriptions = {name: _description(config) for name, config in jobs.items()}
    job = tyro.cli(tyro.extras.subcommand_type_from_defaults(jobs, descriptions))
    try:
        job.main()
    except (ValueError, FileNotFoundError) as error:  # bad input or settings: the message says what to change
        if os.environ.get(DEBUG_ENV):
            raise
        report_user_error(error)
        raise SystemExit(2) from None


if __name__ == "__main__":
    entrypoint()
