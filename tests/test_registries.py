"""Where the project grows, one definition each: merge modes (merge_modes.MODES) and the
command line's options (config.RunConfig's fields, their help, checks and defaults)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ensemble_eval import config, merge_modes
from ensemble_eval.cli import build_parser, command_parser, with_command
from ensemble_eval.config import RUN_FIELDS, ConfigError, RunConfig, build_config, command_options
from ensemble_eval.merge import CropGroups, group_statistics, merge_records, statistics_for
from ensemble_eval.merge_modes import MergeMode


def test_every_mode_is_three_known_choices_and_names_its_statistic():
    assert merge_modes.DEFAULT_MERGE == "mean-prob" == RunConfig().merge
    for m in merge_modes.MODES:
        assert (m.of, m.over_crops, m.over_members) in [
            (o, c, a) for o in merge_modes.SOURCES for c in merge_modes.OVER_CROPS for a in merge_modes.OVER_MEMBERS
        ]
        assert merge_modes.statistic_parts(m.statistic) == (m.of, m.over_crops)
    assert statistics_for(["max-crop", "mean-prob", "geo-mean"]) == ("prob_max", "prob_mean", "logprob_mean")
    with pytest.raises(ValueError, match="unknown merge mode 'median'"):
        merge_modes.mode("median")


def test_a_mode_defined_only_in_the_registry_runs(monkeypatch):
    """Adding a mode is one MergeMode line: here max over crops of log-probabilities, softmax over
    members, added at run time and computed by the generic code with nothing else changed."""
    new = MergeMode("max-logprob", "logprob", "max", "softmax", "a test mode")
    monkeypatch.setitem(merge_modes.BY_NAME, new.name, new)
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 6)  # [M, B, K, C]
    groups = CropGroups.from_sets([[0], [0, 1, 2, 3]])
    stats = group_statistics(logits, groups, (new.statistic,))
    records, correct, probs = merge_records(stats, torch.tensor([0, 1, 2]), groups, [(0,), (1,), (0, 1)], [new.name], 1)
    expected = torch.softmax(torch.log_softmax(logits, -1).amax(2).mean(0), -1)  # all 4 crops, both members
    assert torch.allclose(torch.from_numpy(probs), expected, atol=1e-6)
    assert records["top5"].shape == (3, 3, 2, 1, 5) and correct.shape == (3, 2, 1, 2)


def test_merge_choices_and_check_follow_the_registry():
    run = command_parser("run")
    merge = next(a for a in run._actions if a.dest == "merge")
    assert tuple(merge.choices) == merge_modes.MERGES
    assert all(m.help in merge.help for m in merge_modes.MODES)
    report_merge = next(a for a in command_parser("report")._actions if a.dest == "merge")
    assert tuple(report_merge.choices) == merge_modes.MERGES
    with pytest.raises(ConfigError, match=r"merge \(--merge\) must be one of \['mean-prob'"):
        build_config(None, {"merge": "median"})
    assert RunConfig(compare_merges=True, merge="geo-mean").merges[0] == "geo-mean"
    assert set(RunConfig(compare_merges=True).merges) == set(merge_modes.MERGES)


def test_every_option_of_the_main_command_is_a_config_field_and_back():
    run = command_parser("run")
    dests = {a.dest for a in run._actions if a.option_strings} - {"help", "version", "protocol", "config"}
    assert dests == {f.name for f in command_options()}
    assert {f.name for f in dataclasses.fields(RunConfig)} - dests == {"protocol", "description"}


@pytest.mark.parametrize(
    "name, default",
    [
        ("save_every", config.DEFAULT_SAVE_EVERY),
        ("curve_samples", config.DEFAULT_CURVE_SAMPLES),
        ("seed", config.DEFAULT_SEED),
        ("save_interval", int(config.DEFAULT_SAVE_INTERVAL)),
        ("merge", merge_modes.DEFAULT_MERGE),
    ],
)
def test_help_states_the_config_default(name, default):
    """The default in --help is the field's own (written once, in config.py)."""
    assert getattr(RunConfig(), name) == default
    action = next(a for a in command_parser("run")._actions if a.dest == name)
    assert f"(default {default}" in action.help


def test_flags_parse_to_config_values_and_unset_flags_stay_unset():
    args = vars(command_parser("run").parse_args(["--models", "a.pt", "--data", "d", "--no-progress", "-v"]))
    given = {k: v for k, v in args.items() if v is not None}  # switches not given are None: build_config skips them
    assert given == {"models": ["a.pt"], "data": "d", "progress": False, "verbose": True}
    cfg = build_config(None, args)
    assert cfg.progress is False and cfg.verbose is True and cfg.save_every == config.DEFAULT_SAVE_EVERY


def test_run_may_be_named_or_left_out():
    argv = ["--models", "a.pt", "--data", "d", "--crops", "10"]
    named = build_parser().parse_args(with_command(["run", *argv]))
    implied = build_parser().parse_args(with_command(argv))
    assert named == implied and named.command == "run" and named.crops == "10"
    assert build_parser().parse_args(with_command(["report", "runs/x"])).command == "report"


def test_validate_and_check_data_share_the_field_definitions():
    validate = {a.dest: a for a in command_parser("validate")._actions}
    assert validate["device"].choices == list(config.DEVICES)
    assert validate["limit"].default == 100 and validate["resize_backend"].default == "tensor"
    check = {a.dest: a for a in command_parser("check-data")._actions}
    assert check["workers"].type(str(config.max_workers())) == config.max_workers()
    assert RUN_FIELDS["workers"].metadata["group"] == "execution"
