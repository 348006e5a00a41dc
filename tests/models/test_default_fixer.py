"""The methods' default fixer back-end `auto` is resolved by ns-train before anything is built, and recorded."""

from __future__ import annotations

from difix_training_helpers import tiny_trainer_config

from difix_ns.fixers.config import FixerConfig


def test_ns_train_resolves_auto_before_building_and_records_the_choice(synth_scene, tmp_path, monkeypatch):
    import yaml

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_cache"))
    config = tiny_trainer_config("difix-splatfacto", synth_scene, tmp_path, 4)
    config.pipeline.model.fixer = FixerConfig(backend="auto")
    trainer = config.setup(local_rank=0, world_size=1)
    trainer._settle_fixer_settings()
    assert config.pipeline.model.fixer.backend == "self"
    saved = yaml.load((trainer.base_dir / "config.yml").read_text(), Loader=yaml.Loader)
    assert saved.pipeline.model.fixer.backend == "self", "config.yml records the choice for ns-eval and the viewer"
