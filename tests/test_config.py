"""defaults < YAML < command line, and the shipped YAML files."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import SMALL

from ensemble_eval.config import ConfigError, RunConfig, build_config
from ensemble_eval.crops import CropScheme

CONFIGS = Path(__file__).parent.parent / "ensemble_eval" / "presets"


def test_googlenet_144_preset_equals_the_builtin_defaults():
    config = build_config(str(CONFIGS / "googlenet-144.yaml"), {})
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


# ---------------------------------------------------------------------------------------
# Presets shipped with the package (--protocol NAME)


def test_every_preset_is_selectable_by_name_and_equals_its_file():
    from ensemble_eval.presets import PRESETS_DIR, preset_names

    names = preset_names()
    assert {"googlenet-144", "vgg-150", "resnet-dense", "inception-299-144", "tencrop"} <= set(names)
    for name in names:
        by_name = build_config(None, {"protocol": name})
        by_file = build_config(str(PRESETS_DIR / f"{name}.yaml"), {})
        assert by_name.protocol == by_file.protocol and by_name.crops == by_file.crops
        assert by_name.description  # `--protocol list` has a line for it
    assert build_config(None, {"protocol": "googlenet-144"}).protocol == build_config(None, {}).protocol


def test_a_config_file_can_start_from_a_preset_and_the_command_line_wins(tmp_path):
    (tmp_path / "mine.yaml").write_text("protocol: vgg-150\ncrops: Q256\nbatch_size: 32\n")
    config = build_config(str(tmp_path / "mine.yaml"), {})
    assert config.protocol.set_indices("150") and config.crops == "Q256" and config.batch_size == 32
    over = build_config(str(tmp_path / "mine.yaml"), {"protocol": "inception-299-144", "crops": "10"})
    assert over.protocol.crop_size == 299 and over.crops == "10" and over.batch_size == 32
    assert over.table_title() == "Inception-v3/v4, Tables 4-5"
    (tmp_path / "own.yaml").write_text("protocol: {scales: [256], crop_sets: {'1': {}}}\n")
    own = build_config(str(tmp_path / "own.yaml"), {"protocol": "vgg-150", "crops": "1"})
    assert own.protocol.num_crops == 144 // 4 and own.table_title() is None  # not VGG's table any more


def test_protocol_list_and_an_unknown_preset(capsys):
    from ensemble_eval.cli import main

    assert main(["--protocol", "list"]) == 0
    out = capsys.readouterr().out
    assert "vgg-150" in out and "VGG 2014, Table 5" in out and "presets" in out
    assert main(["--protocol", "vgg150", "--models", "a.pt", "--data", "d"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "did you mean vgg-150?" in err and "--config FILE.yaml" in err
