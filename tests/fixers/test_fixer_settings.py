"""Fixer settings are checked in seconds, before any data or model is built (issue 12 item 2)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from difix_ns.fixers.config import FixerConfig, FixerSettingsError

BIN = Path(sys.executable).parent


def test_nafnet_without_checkpoint_is_an_error_not_a_random_network():
    with pytest.raises(FixerSettingsError, match="nafnet back-end needs a checkpoint"):
        FixerConfig(backend="nafnet").check()
    with pytest.raises(FixerSettingsError, match="nafnet back-end needs a checkpoint"):
        FixerConfig(backend="nafnet", device="cpu").setup()
    assert FixerConfig(backend="nafnet", random_init=True, device="cpu").setup() is not None


def test_incomplete_nafnet_folder_names_the_missing_file(tmp_path):
    (tmp_path / "naf").mkdir()
    (tmp_path / "naf" / "config.json").write_text("{}")
    with pytest.raises(FixerSettingsError, match="missing diffusion_pytorch_model.safetensors"):
        FixerConfig(backend="nafnet", checkpoint=str(tmp_path / "naf")).check()
    with pytest.raises(FixerSettingsError, match="not found"):
        FixerConfig(backend="self", checkpoint=str(tmp_path / "nothing")).check()


def test_empty_difix_folder_lists_every_missing_file(tmp_path):
    with pytest.raises(FixerSettingsError, match="missing model_index.json.*unet/config.json"):
        FixerConfig(backend="difix", checkpoint=str(tmp_path)).check()
    with pytest.raises(FixerSettingsError, match="needs a checkpoint"):
        FixerConfig(backend="difix").check()


def test_hub_id_missing_from_the_offline_cache_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(FixerSettingsError, match="nvidia/difix_ref"):
        FixerConfig(backend="difix", checkpoint="nvidia/difix_ref", cache_dir=tmp_path / "hub").check()
    assert time.perf_counter() - start < 10


def test_a_complete_checkpoint_passes(nvidia_difix_dir):
    FixerConfig(backend="difix", checkpoint=str(nvidia_difix_dir)).check()
    FixerConfig(backend="identity").check()


def test_ns_train_with_a_bad_checkpoint_stops_before_the_data_and_model(synth_scene, tmp_path):
    command = [
        str(BIN / "ns-train"), "difix-splatfacto", f"--data={synth_scene}", f"--output-dir={tmp_path}",
        "--experiment-name=e", "--timestamp=t", "--max-num-iterations=5", "--vis=tensorboard",
        "--pipeline.model.fixer.backend=difix", f"--pipeline.model.fixer.checkpoint={tmp_path / 'empty'}",
    ]  # fmt: skip
    (tmp_path / "empty").mkdir()
    env = {k: v for k, v in os.environ.items() if k != "DIFIX_NS_DEBUG"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode != 0
    assert "is incomplete: missing model_index.json" in result.stderr, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, "a settings error is one message, not a traceback"
    assert not list(tmp_path.rglob("nerfstudio_models")), "no model was built or saved"
    assert "Caching" not in result.stdout + result.stderr, "no image was loaded"


def test_a_self_fixer_that_does_not_beat_doing_nothing_is_replaced_by_identity(tmp_path):
    from difix_ns.pipeline import DifixPipeline
    from difix_ns.training.self_fixer import self_fixer_scores, self_fixer_validation

    fixer_dir = tmp_path / "train" / "fixer"
    fixer_dir.mkdir(parents=True)
    assert self_fixer_validation(fixer_dir) is None
    pipeline = SimpleNamespace(config=SimpleNamespace(self_fixer=SimpleNamespace(require_gain=True)))
    for fixed, unfixed, helps in ((20.76, 20.84, False), (21.5, 20.84, True)):
        summary = {"validation": {"psnr": fixed, "psnr_degraded": unfixed}}
        (tmp_path / "train" / "summary.json").write_text(json.dumps(summary))
        assert self_fixer_validation(fixer_dir) == (fixed, unfixed)
        # a summary without per-strategy validation (fixers made before it): both stages judged on all pairs
        assert DifixPipeline._self_fixer_gates(pipeline, self_fixer_scores(fixer_dir)) == (helps, helps)
    pipeline.config.self_fixer.require_gain = False
    assert DifixPipeline._self_fixer_gates(pipeline, self_fixer_scores(fixer_dir)) == (True, True)


def _hub_cache_with(folder: Path, cache: Path, repo: str = "nvidia/difix_ref") -> None:
    """A Hugging Face cache holding `folder` as the snapshot of `repo` (the layout huggingface_hub reads)."""
    import shutil

    root = cache / f"models--{repo.replace('/', '--')}"
    commit = "0" * 40
    shutil.copytree(folder, root / "snapshots" / commit)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(commit)


def test_auto_is_difix_ref_when_cached_else_the_self_fixer(tmp_path, nvidia_difix_ref_dir, monkeypatch):
    from difix_ns.fixers.config import resolve_auto

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    chosen, why = resolve_auto(FixerConfig(backend="auto", cache_dir=tmp_path / "empty_cache"))
    assert chosen.backend == "self" and "not in the local Hugging Face cache" in why
    _hub_cache_with(nvidia_difix_ref_dir, tmp_path / "cache")
    chosen, why = resolve_auto(FixerConfig(backend="auto", cache_dir=tmp_path / "cache"))
    assert (chosen.backend, chosen.checkpoint) == ("difix", "nvidia/difix_ref") and "local cache" in why
    chosen.check()
    assert resolve_auto(FixerConfig(backend="identity"))[0].backend == "identity"


def test_the_methods_default_to_auto():
    from difix_ns.method_configs.difix_nerfacto import difix_nerfacto
    from difix_ns.method_configs.difix_splatfacto import difix_splatfacto

    for spec in (difix_splatfacto, difix_nerfacto):
        assert spec.config.pipeline.model.fixer.backend == "auto"

