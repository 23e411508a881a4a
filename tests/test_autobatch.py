"""--batch-size auto: timed on the run's first crops, cached per machine, kept on resume, and
results that do not depend on the choice; --compile gives the same predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, DEVICES, QUICK, SMALL, save_checkpoint
from test_scale import _kill_after

from ensemble_eval import autobatch
from ensemble_eval.cli import main


@pytest.fixture
def batch_cache(tmp_path, monkeypatch) -> Path:
    """A cache directory of this test alone."""
    where = tmp_path / "cache"
    monkeypatch.setenv("ENSEMBLE_EVAL_CACHE", str(where))
    return where / autobatch.CACHE_NAME


def _base(ckpts, *extra):
    return ["--models", *map(str, ckpts), "--data", str(DATA), "--config", QUICK, "--workers", "0", *extra]


def _summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


def _predictions(out: Path) -> dict[str, np.ndarray]:
    with np.load(out / "predictions.npz") as z:
        return {k: z[k] for k in z.files}


def test_auto_times_then_caches_and_gives_the_fixed_size_results(
    tmp_path, demo_ckpts, batch_cache, monkeypatch, capsys
):
    monkeypatch.setattr(autobatch, "MIN_TIMED_RUN", 0)  # time even this 4-image run
    base = _base(demo_ckpts, "--limit", "4", "--table", "--no-progress")
    assert main([*base, "--out", str(tmp_path / "auto")]) == 0
    choice = _summary(tmp_path / "auto")["batch_size_choice"]
    tried = {int(b): r for b, r in choice["tried"].items()}
    assert choice["source"] == "timed" and len(tried) >= 3 and set(tried) <= set(autobatch.CANDIDATES["cpu"])
    size = choice["batch_size"]
    assert size == max(tried, key=tried.get) and _summary(tmp_path / "auto")["batch_size"] == size
    err = capsys.readouterr().err
    assert (
        f"batch size {size} crops per forward pass (auto: timed on the first 64 crops, cached in {batch_cache}" in err
    )
    entries = json.loads(batch_cache.read_text())
    (key,) = entries
    assert entries[key]["batch_size"] == size
    assert json.loads(key)["members"] == ["torchvision-googlenet", "torchvision-googlenet"]
    assert json.loads(key)["view"] == [64, "crops"] and json.loads(key)["threads"] >= 1

    def no_timing(*args, **kwargs):
        raise AssertionError("timed again although the size is cached")

    monkeypatch.setattr(autobatch, "measure", no_timing)
    assert main([*base, "--out", str(tmp_path / "cached")]) == 0
    assert _summary(tmp_path / "cached")["batch_size_choice"]["source"] == "cache"
    assert "(auto: timed on " in capsys.readouterr().err

    auto = _predictions(tmp_path / "auto")
    same = _predictions(tmp_path / "cached")
    assert all(np.array_equal(auto[k], same[k]) for k in auto)
    other = 3 if size != 3 else 5  # another forward batch: the same predictions up to float rounding
    assert main([*base, "--batch-size", str(other), "--out", str(tmp_path / "fixed")]) == 0
    fixed = _predictions(tmp_path / "fixed")
    assert _summary(tmp_path / "fixed")["batch_size_choice"] == {
        "batch_size": other,
        "source": "given",
        "crops_per_s": None,
        "tried": {},
        "note": "--batch-size",
    }
    for k in ("paths", "targets", "top5"):
        assert np.array_equal(auto[k], fixed[k]), k
    np.testing.assert_allclose(auto["probs"], fixed["probs"], atol=1e-6)


def test_a_small_run_takes_the_default_untimed(tmp_path, demo_ckpts, batch_cache, capsys):
    assert main([*_base(demo_ckpts[:1], "--limit", "2", "--no-progress", "--out", str(tmp_path / "o"))]) == 0
    choice = _summary(tmp_path / "o")["batch_size_choice"]
    assert choice["source"] == "default" and choice["batch_size"] == 16 and "too small" in choice["note"]
    assert not batch_cache.exists() and "batch size" not in capsys.readouterr().err


def test_a_damaged_cache_is_timed_over_and_an_unwritable_one_is_one_warning(
    tmp_path, demo_ckpts, batch_cache, monkeypatch, capsys
):
    monkeypatch.setattr(autobatch, "MIN_TIMED_RUN", 0)
    monkeypatch.setattr(autobatch, "CANDIDATES", {"cpu": (4, 8)})
    base = _base(demo_ckpts[:1], "--limit", "1", "--crops", "1", "--no-progress")
    batch_cache.parent.mkdir(parents=True)
    batch_cache.write_text('{"truncated": ')
    assert main([*base, "--out", str(tmp_path / "a")]) == 0
    assert _summary(tmp_path / "a")["batch_size_choice"]["source"] == "timed"
    assert len(json.loads(batch_cache.read_text())) == 1  # rewritten whole
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("ENSEMBLE_EVAL_CACHE", str(blocker / "cache"))  # a directory under a file
    capsys.readouterr()
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    err = capsys.readouterr().err
    assert f"cannot write the batch-size cache {blocker / 'cache' / autobatch.CACHE_NAME}" in err
    assert "Traceback" not in err


def test_a_resumed_run_keeps_the_size_it_started_with(tmp_path, demo_ckpts, batch_cache, monkeypatch):
    out = tmp_path / "run"
    args = _base(demo_ckpts[:1], "--save-every", "1", "--no-progress", "--out", str(out))
    assert _kill_after([*args, "--batch-size", "24"], out, 2)
    monkeypatch.setattr(autobatch, "MIN_TIMED_RUN", 0)  # auto would time: the recorded size must win
    assert main([*args, "--resume"]) == 0
    summary = _summary(out)
    assert summary["batch_size"] == 24 and summary["batch_size_choice"]["source"] == "resumed"
    assert not batch_cache.exists()


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--batch-size", "auto"], "auto"),
        (["--batch-size", "12"], 12),
        ([], "auto"),
    ],
)
def test_batch_size_flag(args, expected):
    from ensemble_eval.cli import command_parser
    from ensemble_eval.config import build_config

    values = vars(command_parser("run").parse_args(["--models", "a.pt", "--data", "d", *args]))
    assert build_config(values.pop("config", None), values).batch_size == expected


def test_batch_size_auto_in_yaml_and_bad_values(tmp_path, capsys):
    from ensemble_eval.config import build_config

    f = tmp_path / "c.yaml"
    f.write_text("batch_size: auto\n")
    assert build_config(str(f), {}).batch_size == "auto"
    with pytest.raises(SystemExit) as exit_:
        main(["--models", "a.pt", "--data", str(DATA), "--batch-size", "fast"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "expected a positive integer or auto, got 'fast'" in err and "Traceback" not in err
    f.write_text("batch_size: fast\n")
    assert main(["--models", "a.pt", "--data", str(DATA), "--config", str(f)]) == 2
    assert "batch_size (--batch-size) must be a positive integer or auto, got 'fast'" in capsys.readouterr().err


def test_compile_gives_the_same_predictions(tmp_path, mixed_models, capsys):
    """torch.compile (inductor, on this CPU) vs eager: ResNet-18, 2 images x 10 crops."""
    ckpt = save_checkpoint(mixed_models["resnet18"], tmp_path / "r18.pt")
    base = _base([ckpt], "--limit", "2", "--crops", "10", "--batch-size", "10", "--no-progress")
    assert main([*base, "--out", str(tmp_path / "eager")]) == 0
    assert main([*base, "--compile", "--out", str(tmp_path / "compiled")]) == 0
    assert _summary(tmp_path / "compiled")["compile"] is True and _summary(tmp_path / "eager")["compile"] is False
    eager, compiled = _predictions(tmp_path / "eager"), _predictions(tmp_path / "compiled")
    assert np.array_equal(eager["top5"], compiled["top5"])
    np.testing.assert_allclose(eager["probs"], compiled["probs"], atol=1e-5)
    assert eager["probs"].max() > 0.1  # input-sensitive: far from the uniform 0.001


@pytest.mark.parametrize("device", DEVICES)
def test_choose_times_every_candidate_on_the_device(device, samples, demo_models, monkeypatch):
    """The timing itself, on each device (CUDA: synchronised timings, cudnn.benchmark, memory limits)."""
    import copy

    import torch

    monkeypatch.setitem(autobatch.CANDIDATES, "cpu", (4, 8, 16))  # CUDA keeps its real sizes
    from ensemble_eval.checkpoints import Convention, Member
    from ensemble_eval.models import ArchSpec

    model = copy.deepcopy(demo_models[1])  # the session's model stays on the CPU
    members = [Member("m", "", ArchSpec("torchvision-googlenet", 1000, False), model, Convention())]
    dev = torch.device(device)
    work = autobatch.Workload(SMALL, SMALL.set_indices("10"), dev, True, "fp32")
    choice = autobatch.choose("auto", members, samples, work, 16, min_timed_run=0, use_cache=False)
    candidates = autobatch.CANDIDATES[dev.type]
    assert choice.source == "timed" and choice.batch_size in choice.tried and set(choice.tried) <= set(candidates)
    assert choice.crops_per_s == max(choice.tried.values()) > 0 and len(choice.tried) >= 2
    assert "cached" not in choice.note  # use_cache=False leaves the cache alone
