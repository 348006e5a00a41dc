"""The package installs as designed: every package folder is shipped, method_configs lives under difix_ns."""

from __future__ import annotations

import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = {
        (
            "difix_ns." + ".".join(p.parent.relative_to(ROOT / "difix_ns").parts)
            if p.parent != ROOT / "difix_ns"
            else "difix_ns"
        )
        for p in (ROOT / "difix_ns").rglob("__init__.py")
    }
    found.add("difix_ns.method_configs")
    assert found == listed
    assert config["package-dir"]["difix_ns.method_configs"] == "method_configs"


def test_method_configs_is_not_a_top_level_module():
    import difix_ns.method_configs.difix_splatfacto as spec_module

    assert Path(spec_module.__file__).parent == ROOT / "method_configs"
    assert "method_configs" not in sys.modules


def test_entry_points_register_the_three_methods_by_method_name():
    from nerfstudio.plugins.registry import discover_methods

    methods, descriptions = discover_methods()
    for name in ("difix-nerfacto", "difix-splatfacto", "sr3d-splatfacto"):
        assert name in methods
        assert methods[name].method_name == name
        assert descriptions[name]
