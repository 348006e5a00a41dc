"""Wall time of difix-splatfacto (progressive updates on) vs splatfacto at equal iterations, in one run.

"splatfacto" here is splatfacto's algorithm on this project's device-independent path: difix-splatfacto with the
progressive update and post-processing off (nerfstudio's own `splatfacto` needs CUDA and network access).
Both train in this process on the same synthetic scene with the same settings; only `trainer.train()` is timed
(no imports, no set-up), after an untimed warm-up of both, alternating the two runs `--repeats` times. Goal:
ratio <= 1.3x on CPU, <= 1.15x on GPU.

    .venv/bin/python benchmarks/progressive_overhead.py --iterations 600 --fix-every 150
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _config(scene: Path, out: Path, name: str, args: argparse.Namespace, progressive: bool):
    from difix_ns.fixers.config import FixerConfig
    from difix_ns.method_configs.difix_splatfacto import difix_splatfacto
    from difix_ns.runner import splatfacto_schedule

    config = copy.deepcopy(difix_splatfacto.config)
    config.pipeline.datamanager.data = scene
    config.output_dir, config.experiment_name, config.timestamp = out, name, "bench"
    config.vis = "tensorboard"
    config.max_num_iterations = args.iterations
    config.steps_per_save = 10**9
    config.steps_per_eval_image = config.steps_per_eval_all_images = config.steps_per_eval_batch = 10**9
    if args.device:
        config.machine.device_type = args.device
    model = config.pipeline.model
    # small images: no coarse-to-fine stage; densify in the middle of the budget (as `make demo` does)
    for name, value in splatfacto_schedule(args.iterations).items():
        setattr(model, name, value)
    model.postprocess = False  # training time only (post-processing runs at render time)
    config.pipeline.progressive.enabled = progressive
    config.pipeline.progressive.fix_start = args.fix_every
    config.pipeline.progressive.fix_every = args.fix_every
    if args.fixer == "nafnet":
        # without --checkpoint an untrained NAFNet: the same cost, and only the cost is measured here
        model.fixer = FixerConfig(
            backend="nafnet",
            checkpoint=args.checkpoint,
            nafnet_width=args.nafnet_width,
            random_init=args.checkpoint is None,
        )
    else:
        model.fixer = FixerConfig(backend="identity")
    return config


def _train_seconds(config) -> tuple:
    """(wall seconds, process CPU seconds, update records) of `trainer.train()`."""
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    start, start_cpu = time.perf_counter(), time.process_time()
    trainer.train()
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    return seconds, cpu_seconds, trainer.pipeline.progressive_state.history, trainer.pipeline.model.num_points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=600)
    parser.add_argument("--fix-every", type=int, default=150, help="update period (paper: 1500 of 30k steps)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=2, help="timed runs of each (alternating); median")
    parser.add_argument("--warmup", type=int, default=10, help="iterations of the untimed warm-up runs")
    parser.add_argument("--fixer", choices=["nafnet", "identity"], default="nafnet")
    parser.add_argument("--checkpoint", default=None, help="NAFNet folder (default: untrained, same cost)")
    parser.add_argument("--nafnet-width", type=int, default=16)
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cuda if available)")
    parser.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    args = parser.parse_args()

    import torch

    from difix_ns.data.synth import SynthConfig, make_synthetic_scene

    work = Path(tempfile.mkdtemp(prefix="progressive_overhead_"))
    scene = make_synthetic_scene(SynthConfig(out=work / "scene", seed=0, resolution=args.resolution))
    # warm-up (untimed): the first training in a process pays one-off costs (torch.compile of get_viewmat, ...)
    warm = argparse.Namespace(**{**vars(args), "iterations": args.warmup, "fix_every": max(args.warmup // 2, 1)})
    for progressive in (False, True):
        _train_seconds(_config(scene, work / "runs", f"warmup{int(progressive)}", warm, progressive))
    base_times, ours_times, base_cpu, ours_cpu, base_points, ours_points = [], [], [], [], [], []
    updates: list = []
    for repeat in range(args.repeats):  # alternate, so that a change in machine load hits both
        torch.manual_seed(repeat)
        seconds, cpu, _, points = _train_seconds(_config(scene, work / "runs", f"base{repeat}", args, False))
        base_times.append(seconds)
        base_cpu.append(cpu)
        base_points.append(points)
        torch.manual_seed(repeat)
        seconds, cpu, updates, points = _train_seconds(_config(scene, work / "runs", f"ours{repeat}", args, True))
        ours_times.append(seconds)
        ours_cpu.append(cpu)
        ours_points.append(points)
    base, ours = statistics.median(base_times), statistics.median(ours_times)
    update_s = statistics.mean(u["seconds"] for u in updates) if updates else 0.0
    # the same per-update cost at the paper's period (one update per 1500 steps)
    paper_ratio = 1.0 + (update_s / 1500.0) / (base / args.iterations)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    result = {
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "iterations": args.iterations,
        "fix_every": args.fix_every,
        "resolution": args.resolution,
        "fixer": args.fixer,
        "splatfacto_s": base_times,
        "difix_splatfacto_s": ours_times,
        "splatfacto_cpu_s": base_cpu,
        "difix_splatfacto_cpu_s": ours_cpu,
        "splatfacto_gaussians": base_points,
        "difix_splatfacto_gaussians": ours_points,
        "updates": len(updates),
        "seconds_per_update": [round(u["seconds"], 3) for u in updates],
        "ratio": ours / base,
        "cpu_ratio": statistics.median(ours_cpu) / statistics.median(base_cpu),
        "ratio_at_paper_period": paper_ratio,
    }
    print(json.dumps(result, indent=2))
    print(
        f"difix-splatfacto / splatfacto wall time at {args.iterations} iterations on {device}: "
        f"{ours:.1f} s / {base:.1f} s = {ours / base:.2f}x ({len(updates)} progressive updates, "
        f"goal <= {'1.15' if device.startswith('cuda') else '1.3'}x); process CPU time ratio "
        f"{result['cpu_ratio']:.2f}x; with one update per 1500 steps (the paper) the same update cost "
        f"gives {paper_ratio:.3f}x"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
