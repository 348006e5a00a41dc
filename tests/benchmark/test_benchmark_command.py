"""`difix-ns benchmark` end to end on a tiny synthetic scene: outputs, schema, resume, clear errors."""

from __future__ import annotations

import json

import jsonschema
import pytest
from PIL import Image

from difix_ns.benchmark.command import BenchmarkConfig, run_benchmark
from difix_ns.benchmark.report import gains, gains_table, validate_results


@pytest.fixture(scope="module")
def benchmark_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    config = BenchmarkConfig(
        seeds=(0,), resolution=32, iters=6, out=out,
        methods=("splatfacto", "difix-splatfacto", "difix-splatfacto+post"),
        fixer="identity",  # the self fixer is exercised by tests/test_demo.py and tests/models
        fixer_method_args="--pipeline.progressive.alpha-threshold 0.25",
        sampling_seed=5,
    )
    return config, run_benchmark(config)


def test_results_follow_the_schema_and_cover_every_method_and_bin(benchmark_run):
    config, results = benchmark_run
    on_disk = json.loads((config.out / "results.json").read_text())
    validate_results(on_disk)
    assert [r["method"] for r in on_disk["runs"]] == list(config.methods)
    split = on_disk["scenes"][0]["split"]
    for run in on_disk["runs"]:
        assert len(run["views"]) == len(split["eval"])
        assert {"all", "far"} <= set(run["metrics"]) and run["metrics"]["far"]["psnr"] > 0
        assert run["peak_memory_mb"] > 50 and run["wall_seconds"] > 0
    assert not on_disk["fid"]["available"], "no Inception weights here: FID must be left out, not made up"


def test_synthetic_scenes_are_also_scored_on_covisible_pixels(benchmark_run):
    config, results = benchmark_run
    assert len(list((config.out / "splits" / "synth0" / "covis").glob("*.png"))) == len(
        results["scenes"][0]["split"]["eval"]
    )
    for run in results["runs"]:
        assert {"mpsnr", "mssim"} <= set(run["metrics"]["all"]) and all("mpsnr" in v["metrics"] for v in run["views"])
    text = (config.out / "results.md").read_text()
    assert "Δmpsnr far" in text and "mpsnr all" in text


def test_post_processing_scores_the_fixed_renders_of_the_same_run(benchmark_run):
    config, results = benchmark_run
    progressive, post = results["runs"][1], results["runs"][2]
    assert progressive["wall_seconds"] == post["wall_seconds"], "one training serves both"
    run = json.loads((config.out / "runs" / "synth0" / "difix-splatfacto" / "result.json").read_text())
    assert post["views"][0]["metrics"]["psnr"] == run["views"][0]["metrics"]["psnr_fixed"]


def test_fixer_method_args_reach_the_fixer_methods_only(benchmark_run, tmp_path):
    import yaml

    config, results = benchmark_run
    thresholds = {}
    for key in ("splatfacto", "difix-splatfacto"):
        run = json.loads((config.out / "runs" / "synth0" / key / "result.json").read_text())
        trained = yaml.load(open(run["config"]).read(), Loader=yaml.Loader)
        thresholds[key] = trained.pipeline.progressive.alpha_threshold
    assert thresholds == {"splatfacto": 0.5, "difix-splatfacto": 0.25}
    assert results["config"]["fixer_method_args"] == config.fixer_method_args
    text = (config.out / "results.md").read_text()
    assert "methods with a fixer: `--pipeline.progressive.alpha-threshold 0.25`" in text
    with pytest.raises(ValueError, match="fixer_method_args .* cannot be split"):
        run_benchmark(BenchmarkConfig(fixer_method_args="--x 'unclosed", out=tmp_path))


def test_the_sampling_seed_reaches_every_method(benchmark_run, tmp_path):
    import yaml

    config, results = benchmark_run
    for key in ("splatfacto", "difix-splatfacto"):
        run = json.loads((config.out / "runs" / "synth0" / key / "result.json").read_text())
        trained = yaml.load(open(run["config"]).read(), Loader=yaml.Loader)
        assert trained.pipeline.datamanager.train_cameras_sampling_seed == 5
    assert results["config"]["sampling_seed"] == 5
    assert "with sampling seed 5" in (config.out / "results.md").read_text()
    with pytest.raises(ValueError, match="sampling_seed orders whole training images"):
        run_benchmark(BenchmarkConfig(methods=("nerfacto",), sampling_seed=5, out=tmp_path))


def test_no_evaluation_view_is_a_training_view(benchmark_run):
    config, _ = benchmark_run
    transforms = json.loads((config.out / "splits" / "synth0" / "transforms.json").read_text())
    assert set(transforms["train_filenames"]).isdisjoint(transforms["test_filenames"])


def test_markdown_and_grid_are_written(benchmark_run):
    config, _ = benchmark_run
    text = (config.out / "results.md").read_text()
    for method in config.methods:
        assert f"| {method} |" in text
    grid = Image.open(config.out / "grid_synth0.png")
    assert grid.format == "PNG" and grid.width > 400
    assert "| difix-splatfacto | splatfacto |" in text and "| difix-splatfacto+post | difix-splatfacto |" in text
    assert Image.open(config.out / "gains.png").format == "PNG"


def test_gains_are_method_minus_baseline_per_scene_and_bin_computed_from_the_runs(benchmark_run):
    _, results = benchmark_run
    pair = ("difix-splatfacto", "splatfacto")
    table = gains(results, [pair], "psnr")[pair]
    ours, theirs = results["runs"][1]["metrics"], results["runs"][0]["metrics"]
    assert set(table) == set(ours) and table["far"]["synth0"] == ours["far"]["psnr"] - theirs["far"]["psnr"]


def test_gains_leave_out_scenes_missing_a_run_or_bin():
    def run(scene, method, far):
        metrics = {"all": {"psnr": far}, "far": {"psnr": far}}
        return {"scene": scene, "method": method, "metrics": metrics}

    results = {
        "scenes": [{"name": "a"}, {"name": "b"}, {"name": "c"}],
        "runs": [run("a", "base", 10.0), run("a", "ours", 11.5), run("b", "base", 12.0), run("c", "ours", 9.0)],
    }
    table = gains(results, [("ours", "base")], "psnr")[("ours", "base")]
    assert table == {"all": {"a": 1.5}, "far": {"a": 1.5}}, "scene b lacks `ours`, scene c lacks `base`"
    assert "| ours | base | +1.50 |" in gains_table(results, [("ours", "base")])


def test_a_rejected_self_fixer_is_named_in_the_report(benchmark_run):
    """A scene whose self fixer lost to doing nothing gets one line saying its difix runs trained as the base
    method (identical numbers would otherwise read as a fixer that does nothing); the record follows the schema."""
    from difix_ns.benchmark.command import _rejected_fixer_notes

    _, results = benchmark_run
    results = json.loads(json.dumps(results))
    assert _rejected_fixer_notes(results) == [], "the identity fixer is not a self fixer"
    rejected = {"fixer": "f", "used": False, "validation_psnr": 24.26, "validation_psnr_unfixed": 26.66}
    for run in results["runs"][1:]:
        run["self_fixer"] = rejected
    validate_results(results)
    (note,) = _rejected_fixer_notes(results)
    assert note.startswith("synth0: the self fixer did not beat doing nothing on all its validation pairs")
    assert "24.26 dB fixed vs 26.66" in note
    for run in results["runs"][1:]:
        run["self_fixer"] = dict(rejected, used=True)
    assert _rejected_fixer_notes(results) == []
    # kept by the progressive update, not by post-processing: the report says which stage went without it
    update_only = dict(rejected, used=True, postprocess=False, novel_view_validation_psnr=20.73,
                       novel_view_validation_psnr_unfixed=19.80, own_view_validation_psnr=26.06,
                       own_view_validation_psnr_unfixed=30.19)  # fmt: skip
    for run in results["runs"][1:]:
        run["self_fixer"] = update_only
    validate_results(results)
    (note,) = _rejected_fixer_notes(results)
    assert "held-out-view validation pairs (PSNR 20.73 dB fixed vs 19.80 dB)" in note
    assert "(PSNR 24.26 dB fixed vs 26.66 dB)" in note and "own views (PSNR 26.06 dB fixed vs 30.19 dB)" in note
    assert "post-processing left their renders as they were" in note
    for run in results["runs"][1:]:  # fruit: a gain on all pairs, a loss on the folds' own views only
        run["self_fixer"] = dict(update_only, validation_psnr=17.03, validation_psnr_unfixed=16.14)
    (note,) = _rejected_fixer_notes(results)
    assert "but not on the validation pairs of the folds' own views (PSNR 26.06 dB fixed vs 30.19 dB):" in note
    assert "all its validation pairs" not in note
    for run in results["runs"][1:]:  # no gain on held-out views: the update's own check is named
        run["self_fixer"] = dict(update_only, used=False, novel_view_validation_psnr=19.5)
    (note,) = _rejected_fixer_notes(results)
    assert "nothing on its held-out-view validation pairs (PSNR 19.50 dB fixed vs 19.80 dB), so the difix" in note
    results["runs"][1]["self_fixer"] = {"used": "no"}
    with pytest.raises(jsonschema.ValidationError):
        validate_results(results)


def test_a_rerun_keeps_finished_runs(benchmark_run, capsys):
    config, results = benchmark_run
    marker = config.out / "runs" / "synth0" / "splatfacto" / "result.json"
    before = marker.stat().st_mtime_ns
    again = run_benchmark(config)
    assert marker.stat().st_mtime_ns == before
    assert "finished earlier, kept" in capsys.readouterr().out
    assert again["runs"][0]["metrics"] == results["runs"][0]["metrics"]


def test_schema_rejects_a_run_without_metrics(benchmark_run):
    config, _ = benchmark_run
    broken = json.loads((config.out / "results.json").read_text())
    del broken["runs"][0]["metrics"]
    with pytest.raises(jsonschema.ValidationError):
        validate_results(broken)


def test_unknown_method_and_too_few_views_are_clear_errors(tmp_path, synth_scene):
    with pytest.raises(ValueError, match="unknown methods"):
        run_benchmark(BenchmarkConfig(methods=("gaussian-magic",), out=tmp_path))
    with pytest.raises(ValueError, match="train_views must be in"):
        run_benchmark(BenchmarkConfig(data=synth_scene, train_views=40, methods=("splatfacto",), out=tmp_path))
    with pytest.raises(ValueError, match="self_fixer_iters must be >= 2"):
        run_benchmark(BenchmarkConfig(data=synth_scene, self_fixer_iters=1, out=tmp_path))
    with pytest.raises(ValueError, match="self_fixer_steps must be >= 1"):
        run_benchmark(BenchmarkConfig(data=synth_scene, self_fixer_steps=0, out=tmp_path))


def test_the_self_fixer_budget_of_the_benchmark():
    from difix_ns.benchmark.methods import self_fixer_config

    default = self_fixer_config(1000, 90.0)
    assert (default.iterations, default.num_folds, default.max_seconds) == (500, 2, 90.0)
    assert self_fixer_config(1000, 25.0, fold_iterations=200).iterations == 200
    by_steps = self_fixer_config(1000, 90.0, nafnet_steps=400)
    assert (by_steps.iterations, by_steps.steps, by_steps.max_seconds) == (500, 400, None)


def test_the_report_says_how_long_the_self_fixers_trained():
    from difix_ns.benchmark.command import self_fixer_budget_line

    # step-bounded by default: the same fixer whatever the machine's load
    assert BenchmarkConfig().self_fixer_steps == 400
    line = self_fixer_budget_line(BenchmarkConfig())
    assert line == "The self fixers trained 400 NAFNet steps each (no time limit).\n\n"
    timed = BenchmarkConfig(self_fixer_steps=None, self_fixer_seconds=45.0)
    assert "trained for 45 s each (their NAFNet steps follow the machine's load)" in self_fixer_budget_line(timed)


def test_a_kept_self_fixer_of_another_budget_is_refused(tmp_path):
    from dataclasses import replace

    from difix_ns.benchmark.command import _shared_self_fixer

    folder = tmp_path / "self_fixer"
    folder.mkdir()
    budget = {"fold_iterations": 500, "nafnet_seconds": 90.0}  # the default's at 1000 iterations
    (folder / "seconds.json").write_text(json.dumps({"seconds": 12.5, "budget": budget}))
    config = BenchmarkConfig(iters=1000, self_fixer_steps=None, out=tmp_path)
    assert _shared_self_fixer(config, tmp_path / "split", folder) == (folder / "train" / "fixer", 12.5)
    with pytest.raises(ValueError, match="was made with .*fold_iterations.: 500.*choose another --out"):
        _shared_self_fixer(replace(config, self_fixer_iters=200), tmp_path / "split", folder)
    with pytest.raises(ValueError, match="was made with .*this benchmark asks for .*nafnet_steps.: 400"):
        _shared_self_fixer(BenchmarkConfig(iters=1000, out=tmp_path), tmp_path / "split", folder)  # the default
    (folder / "seconds.json").write_text(json.dumps({"seconds": 7.0}))  # made before budgets were kept: taken
    assert _shared_self_fixer(config, tmp_path / "split", folder)[1] == 7.0


def test_fixer_seconds_count_the_pairs_a_self_fixer_found_made(tmp_path):
    from difix_ns.benchmark.command import _resumed_pairs_seconds

    pairs = tmp_path / "pairs"  # as curate leaves it after resuming three units, one made by an older version
    for name, seconds in (("leave-out-0of2", 41.5), ("leave-out-1of2", 38.0), ("underfit", None)):
        (pairs / "units" / name).mkdir(parents=True)
        if seconds is not None:
            (pairs / "units" / name / "seconds.json").write_text(json.dumps({"seconds": seconds}))
    report = {"units_run": [], "units_resumed": ["leave-out-0of2", "leave-out-1of2", "underfit"]}
    (pairs / "report.json").write_text(json.dumps(report))
    assert _resumed_pairs_seconds(pairs) == pytest.approx(79.5)
    report["units_resumed"] = []
    (pairs / "report.json").write_text(json.dumps(report))
    assert _resumed_pairs_seconds(pairs) == 0.0  # units run in this call are in the measured time already


def test_the_self_fixer_needs_are_checked_before_the_first_run(tmp_path, synth_scene):
    # 2 training views: the self fixer's leave-out folds cannot work, say so before training anything
    config = BenchmarkConfig(data=synth_scene, train_views=2, iters=6, out=tmp_path / "b", fixer="self")
    with pytest.raises(ValueError, match="self fixer needs at least 3 training views"):
        run_benchmark(config)
    assert not (tmp_path / "b" / "runs").exists()


def test_the_checked_in_default_benchmark_follows_the_schema_and_covers_the_default():
    from dataclasses import asdict
    from pathlib import Path

    from difix_ns.benchmark.command import BenchmarkConfig

    folder = Path(__file__).parents[2] / "benchmarks" / "results" / "sparse_synthetic"
    results = json.loads((folder / "results.json").read_text())
    validate_results(results)
    default = asdict(BenchmarkConfig())
    # the default command, allowed a subset of the methods (--methods; the README says which): every other
    # setting, every default scene, and every method it names ran
    methods = results["config"]["methods"]
    assert {"splatfacto", "difix-splatfacto", "difix-splatfacto+post"} <= set(methods) <= set(default["methods"])
    assert {(r["scene"], r["method"]) for r in results["runs"]} == {
        (f"synth{seed}", method) for seed in default["seeds"] for method in methods
    }, "benchmarks/results/sparse_synthetic must be the output of the default command"
    keys = ("data", "seeds", "resolution", "iters", "fixer", "fixer_model", "train_every", "train_views")
    for key in keys + ("self_fixer_steps", "self_fixer_iters"):
        assert results["config"][key] == (list(default[key]) if key == "seeds" else default[key]), key
    assert results["config"].get("fixer_method_args", "") == default["fixer_method_args"]


def test_the_difix_methods_update_from_an_eighth_of_the_budget_every_sixteenth():
    """15 progressive updates per run (chosen against 7 over sampling seeds on the synthetic scenes and both
    captures; 7 had been chosen against 3); each update's pseudo views join the earlier ones; the baselines get
    the same schedule otherwise."""
    from difix_ns.benchmark.methods import METHODS, budget_args

    difix = budget_args(METHODS["difix-splatfacto"], 1000, cpu=True)
    plain = budget_args(METHODS["splatfacto"], 1000, cpu=True)
    assert "--pipeline.progressive.fix-start=125" in difix and "--pipeline.progressive.fix-every=62" in difix
    assert "--pipeline.progressive.accumulate=True" in difix, "each update's pseudo views join the earlier ones"
    assert [a for a in difix if "progressive" not in a] == plain
