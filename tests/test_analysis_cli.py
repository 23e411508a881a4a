"""Issue 6 end to end: intervals, paired tests, curves, merge modes, ReaL labels and `report`."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, save_checkpoint

from ensemble_eval.cli import main
from tools.demo import make_demo_googlenet

QUICK = str(Path(__file__).parent.parent / "ensemble_eval" / "presets" / "quick-72px.yaml")
COMMON = ["--data", str(DATA), "--config", QUICK, "--no-progress", "--workers", "0"]


@pytest.fixture(scope="module")
def three_ckpts(demo_ckpts, samples, images, tmp_path_factory):
    third = make_demo_googlenet(images, [s.target for s in samples], seed=2, aux_heads=False)
    path = save_checkpoint(third, tmp_path_factory.mktemp("third") / "c.pt")
    return [str(demo_ckpts[0]), str(demo_ckpts[1]), str(path)]


@pytest.fixture(scope="module")
def run(three_ckpts, tmp_path_factory):
    out = tmp_path_factory.mktemp("analysis") / "run"
    args = ["--models", *three_ckpts, *COMMON, "--table", "--compare-merges", "--save-logits", "--out", str(out)]
    assert main(args) == 0
    return out


def _csv(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_run_writes_curve_merges_per_class_and_logits(run):
    summary = json.loads((run / "summary.json").read_text())
    curve = _csv(run / "curve.csv")
    assert sorted({(r["models"], r["crop_set"]) for r in curve if r["merge"] == "mean-prob"}) == sorted(
        (str(k), s) for k in (1, 2, 3) for s in ("1", "10", "72")
    )
    assert {r["merge"] for r in curve} == {"mean-prob", "mean-logit", "geo-mean", "max-crop"}
    assert (run / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    top = [r for r in curve if r["models"] == "3" and r["crop_set"] == "72" and r["merge"] == "mean-prob"]
    assert float(top[0]["top1_err_mean"]) == summary["top1_err"]  # the curve ends at the ensemble
    merges = {(r["merge"], r["crop_set"]): r for r in _csv(run / "merges.csv")}
    assert len(merges) == 12
    for s in ("1", "10", "72"):  # the normalised geometric mean is the softmax of the mean logit
        assert merges[("geo-mean", s)]["top1_err"] == merges[("mean-logit", s)]["top1_err"]
    assert float(merges[("mean-prob", "72")]["top5_err"]) == summary["top5_err"]
    assert len(_csv(run / "per_class.csv")) == 8 and summary["per_class"]["worst"]
    assert summary["calibration"]["nll"] > 0 and 0 <= summary["calibration"]["ece"] <= 1
    lo, hi = summary["top1_err_ci"]
    assert lo <= summary["top1_err"] <= hi and hi - lo > 0.2  # 8 images: wide intervals
    logits = np.load(run / "logits.npz")
    assert logits["prob_mean"].dtype == np.float16 and logits["prob_mean"].shape == (8, 3, 3, 1000)
    assert sorted(logits["group_sizes"].tolist()) == [1, 9, 62] and logits["set_groups"].sum(1).tolist() == [1, 2, 3]
    pred = np.load(run / "predictions.npz")
    assert pred["top5"].shape == (8, 4, 3, 4, 5) and list(pred["merges"])[0] == "mean-prob"


def test_report_rebuilds_every_file_exactly_without_models(run, tmp_path, capsys):
    moved = tmp_path / "run"
    shutil.copytree(run, moved)  # no checkpoint is needed (they are elsewhere and untouched)
    assert main(["report", str(moved)]) == 0
    out = capsys.readouterr().out
    assert "Table 3 reproduction" in out and "Ensemble size" in out and "rebuilt from" in out
    for name in ("table.csv", "curve.csv", "merges.csv", "per_class.csv", "table.md"):
        assert (moved / "report" / name).read_text() == (run / name).read_text(), name
    rebuilt = json.loads((moved / "report" / "summary.json").read_text())
    assert rebuilt["rebuilt_from"] == "predictions.npz" and rebuilt["run_dir"] == str(moved)
    assert main(["report", str(moved)]) == 0  # a second report replaces the first


def test_report_member_subset_equals_a_live_run_of_those_members(run, three_ckpts, tmp_path, capsys):
    assert main(["report", str(run), "--members", "0", "c.pt", "--out", str(tmp_path / "sub")]) == 0
    live = tmp_path / "live"
    models = [three_ckpts[0], three_ckpts[2]]
    assert main(["--models", *models, *COMMON, "--table", "--compare-merges", "--out", str(live)]) == 0
    a = json.loads((tmp_path / "sub" / "summary.json").read_text())
    b = json.loads((live / "summary.json").read_text())
    assert a["rebuilt_from"].startswith("logits.npz") and [m["name"] for m in a["models"]] == ["a.pt", "c.pt"]
    for key in ("table", "paired_tests", "crop_sets"):
        strip = (lambda d: {k: v for k, v in d.items() if k not in ("nll", "ece")}) if key == "crop_sets" else None
        if strip:
            assert {s: strip(v) for s, v in a[key].items()} == {s: strip(v) for s, v in b[key].items()}
        else:
            assert a[key] == b[key], key
    assert [m["errors"] for m in a["models"]] == [m["errors"] for m in b["models"]]
    for s in a["crop_sets"]:  # float16 statistics: calibration figures agree closely, not bit for bit
        assert a["crop_sets"][s]["nll"] == pytest.approx(b["crop_sets"][s]["nll"], rel=1e-2)
    assert _csv(tmp_path / "sub" / "curve.csv") == _csv(live / "curve.csv")


def test_report_of_one_member_has_only_best_member_rows(run, tmp_path):
    assert main(["report", str(run), "--members", "1", "--out", str(tmp_path / "one")]) == 0
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert [c["label"] for c in summary["table"]] == ["best member (b.pt)"] * 3
    assert summary["top1_predictions_differing_from_run"] == 0
    assert not (tmp_path / "one" / "curve.csv").exists()


def test_real_labels_column_from_a_file_name_mapping(run, tmp_path, capsys):
    pred = np.load(run / "predictions.npz")
    names = [p.split("/")[-1] for p in pred["paths"]]
    top1 = pred["top5"][:, -1, 2, 0, 0]  # the ensemble's answer at 72 crops
    real = {n: [int(t)] for n, t in zip(names, top1)}  # ReaL agrees with every answer...
    real[names[0]] = []  # ...and has no label for the first image
    path = tmp_path / "real.json"
    path.write_text(json.dumps(real))
    assert main(["report", str(run), "--real-labels", str(path), "--out", str(tmp_path / "r")]) == 0
    assert "ReaL top-1 err %" in capsys.readouterr().out
    summary = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert summary["real"] == {"file": str(path), "num_images": 7, "num_without_labels": 1}
    assert summary["table"][-1]["real_top1_err"] == 0.0 and summary["table"][-1]["real_num_images"] == 7
    assert "real_top5_err_lo" in _csv(tmp_path / "r" / "table.csv")[0]


def test_real_labels_that_miss_images_are_refused_before_evaluating(three_ckpts, tmp_path, capsys):
    path = tmp_path / "real.json"
    path.write_text(json.dumps([[1], [2]]))  # the official list form: ILSVRC2012_val_00000001.JPEG, ...
    code = main(["--models", three_ckpts[0], *COMMON, "--real-labels", str(path), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "has no entry for 8 of 8 images" in err and "ILSVRC2012_val_" in err
    assert not (tmp_path / "o").exists()
    path.write_text('{"a.JPEG": [1, "x"]}')
    assert main(["--models", three_ckpts[0], *COMMON, "--real-labels", str(path)]) == 2
    assert "not a list of class indices" in capsys.readouterr().err
    everything = {p.name: list(range(1000)) for p in DATA.glob("*/*")}  # any answer is right
    path.write_text(json.dumps(everything))
    args = [
        "--models",
        three_ckpts[0],
        *COMMON,
        "--crops",
        "1",
        "--real-labels",
        str(path),
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(args) == 0
    assert "ReaL labels: top-1 error 0.00%, top-5 error 0.00% on the 8 images with labels" in capsys.readouterr().out


def test_report_user_errors_are_one_line(run, tmp_path, capsys):
    cases = [
        (["report", str(tmp_path)], "holds no summary.json"),
        (["report", str(run), "--members", "7"], "no such member; the run's members are 0 (a.pt)"),
        (["report", str(run), "--members", "0", "0"], "names a member twice"),
        (["report", str(run), "--out", str(run)], "is the run directory itself"),
        (["report", str(run), "--crops", "144"], "the run computed the crop sets"),
    ]
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    (damaged / "predictions.npz").write_bytes((run / "predictions.npz").read_bytes()[:5000])
    cases.append((["report", str(damaged)], "predictions.npz cannot be read"))
    cases.append((["report", str(run), "--out", str(damaged)], "holds a run's results, not a report"))
    no_logits = tmp_path / "no_logits"
    shutil.copytree(run, no_logits)
    (no_logits / "logits.npz").unlink()
    cases.append((["report", str(no_logits), "--members", "0", "1"], "logits.npz does not exist"))
    for argv, needle in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert needle in err and err.count("\n") == 1 and "Traceback" not in err, (argv, err)


def test_a_merge_the_run_did_not_compute_is_refused(demo_ckpts, tmp_path, capsys):
    out = tmp_path / "plain"
    args = ["--models", str(demo_ckpts[0]), *COMMON, "--crops", "1", "--merge", "max-crop", "--out", str(out)]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["merge"] == "max-crop" and not summary["merges"]
    assert main(["report", str(out), "--merge", "mean-prob"]) == 2
    assert "--compare-merges" in capsys.readouterr().err


def test_curve_plot_is_optional(run, monkeypatch, tmp_path, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if it were not installed
    assert main(["report", str(run), "--out", str(tmp_path / "r")]) == 0
    assert "curve.png not drawn: matplotlib is not installed" in capsys.readouterr().out
    assert (tmp_path / "r" / "curve.csv").exists() and not (tmp_path / "r" / "curve.png").exists()


def test_resume_refuses_other_merge_settings():
    from ensemble_eval.runstate import describe_changes

    old = {"merges": ["mean-prob"], "subsets": [[0]], "save_logits": False}
    assert "merge modes changed" in describe_changes(old, old | {"merges": ["mean-prob", "max-crop"]})
    assert "--save-logits changed" in describe_changes(old, old | {"save_logits": True})
    assert "curve's member subsets changed" in describe_changes(old, old | {"subsets": [[0], [1]]})
