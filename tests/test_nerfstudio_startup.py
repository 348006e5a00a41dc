"""The plugin's faster nerfstudio start keeps nerfstudio's behaviour for external methods."""

from __future__ import annotations

import pytest

from difix_ns.nerfstudio_startup import ENV_SWITCH, speed_up_external_methods


def test_loading_nerfstudio_methods_installs_the_one_frame_check():
    import nerfstudio.configs.method_configs as method_configs
    from nerfstudio.configs.external_methods import ExternalMethodDummyTrainerConfig

    assert getattr(ExternalMethodDummyTrainerConfig.__post_init__, "_difix_ns_fast", False)
    assert speed_up_external_methods(), "idempotent: a second call keeps the check in place"
    # the placeholders are still registered, as nerfstudio makes them
    placeholders = [m for m in method_configs.all_methods.values() if isinstance(m, ExternalMethodDummyTrainerConfig)]
    assert len(placeholders) >= 10


def test_the_placeholders_are_quiet_inside_get_external_methods_and_prompt_elsewhere(monkeypatch):
    from nerfstudio.configs import external_methods

    assert speed_up_external_methods()
    configs, descriptions = external_methods.get_external_methods()  # quiet: no prompt, no exit
    assert configs and set(configs) == set(descriptions)

    printed, asked = [], []
    monkeypatch.setattr(external_methods.CONSOLE, "print", lambda *a, **k: printed.append(a))
    monkeypatch.setattr(external_methods.Confirm, "ask", lambda *a, **k: asked.append(a) or False)
    method = next(m for m in external_methods.external_methods if m.pip_package)
    with pytest.raises(SystemExit) as exited:  # a user asked for a method that is not installed
        external_methods.ExternalMethodDummyTrainerConfig(method_name="x", method=method)
    assert exited.value.code == 0 and printed and asked, "nerfstudio's own instructions and install prompt"


def test_the_switch_leaves_nerfstudio_alone(monkeypatch):
    monkeypatch.setenv(ENV_SWITCH, "0")
    assert speed_up_external_methods() is False
