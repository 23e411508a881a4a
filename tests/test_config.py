"""defaults < YAML < command line, and the shipped YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SMALL

from ensemble_eval.config import ConfigError, RunConfig, build_config
from ensemble_eval.crops import CropScheme

CONFIGS = Path(__file__).parent.parent / "configs"


def test_ilsvrc2014_yaml_equals_the_builtin_defaults():
    config = build_config(str(CONFIGS / "ilsvrc2014.yaml"), {})
    assert config.protocol == CropScheme() == RunConfig().protocol
    assert config.crops == "144"


def test_quick_yaml_is_the_small_test_scheme():
    assert build_config(str(CONFIGS / "quick-72px.yaml"), {}).protocol == SMALL


def test_precedence(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("batch-size: 8\nworkers: 0\ncrops: 10\nmodels: a.pt\n")
    config = build_config(str(f), {"workers": 3, "limit": None})
    assert config.batch_size == 8  # from YAML
    assert config.workers == 3  # command line wins
    assert config.crops == "10" and config.models == ["a.pt"]
    assert config.limit is None and config.device == "auto"  # defaults


@pytest.mark.parametrize(
    "text,overrides,match",
    [
        ("colour: red\n", {}, "unknown config option"),
        ("", {"crops": "7"}, "--crops 7 is not a crop set"),
        ("protocol:\n  scales: [100]\n", {}, "crop_size"),
        ("batch_size: 0\n", {}, "positive integer"),
        ("- just\n- a list\n", {}, "mapping"),
        ("crops: [unclosed\n", {}, "not valid YAML at line"),
    ],
)
def test_bad_configs(tmp_path, text, overrides, match):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        build_config(str(f), overrides)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        build_config(str(tmp_path / "nope.yaml"), {})
