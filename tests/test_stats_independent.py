"""An independent check of the statistics a --table --compare-merges run reports.

Nothing here uses the package's statistics code. Ground truth comes from the slow per-crop
reference (tests/reference_protocol.py) run through the demo models directly: per image, member
and crop the logits of the quick-72px geometry. The four merge modes, top-1/top-5 hits, best
member, Wilson intervals (scipy.stats.binomtest), exact McNemar p-values, NLL, ECE and the
ensemble-size curve are recomputed from the spec and compared with summary.json and the CSV files;
the same statistics are also recomputed from predictions.npz alone, and `ensemble-eval report`
(rebuilding without the models, whose files are deleted right after the run) is checked against both.
"""

from __future__ import annotations

import csv
import itertools
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA
from reference_protocol import crop_keys, decode, reference_crop
from scipy.stats import binomtest
from torchvision.transforms import v2

from ensemble_eval.cli import main
from ensemble_eval.data import imagenet_classes, list_samples, wnid_to_index
from ensemble_eval.members.convention import IMAGENET_MEAN, IMAGENET_STD

QUICK = str(Path(__file__).parent.parent / "ensemble_eval" / "presets" / "quick-72px.yaml")
KEYS = crop_keys(scales=(72, 88))  # the whole 72-crop grid, canonical order
SETS = {
    "1": [(72, "center", "center", "none")],
    "10": crop_keys(scales=(72,), squares=("center",), crops=("tl", "tr", "bl", "br", "center")),
    "72": KEYS,
}
MERGES = ("mean-prob", "mean-logit", "geo-mean", "max-crop")
TOL = 1e-9


@pytest.fixture(scope="module")
def run(demo_ckpts, tmp_path_factory):
    """One evaluation; the checkpoint copies it used are deleted afterwards (reports must not need them)."""
    tmp = tmp_path_factory.mktemp("stats")
    ckpts = [shutil.copy(p, tmp / p.name) for p in demo_ckpts]
    out = tmp / "run"
    args = ["--models", *map(str, ckpts), "--data", str(DATA), "--config", QUICK, "--table", "--compare-merges"]
    assert main([*args, "--save-logits", "--out", str(out), "--no-progress", "--workers", "0"]) == 0
    for p in ckpts:
        Path(p).unlink()
    return out, [Path(p).name for p in ckpts], json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def truth(demo_models):
    """Reference logits float32 [N, M, 72, 1000] and targets [N]."""
    samples = list_samples(DATA)
    targets = np.array([wnid_to_index()[s.rel_path.split("/")[0]] for s in samples])
    norm = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))])
    logits = []
    with torch.inference_mode():
        for s in samples:
            image = decode(s.path)
            x = torch.stack([norm(reference_crop(image, k, crop_size=64)) for k in KEYS])
            logits.append(torch.stack([m.eval()(x).float() for m in demo_models]))
    return torch.stack(logits).numpy(), targets, [s.rel_path for s in samples]


def merged(logits: np.ndarray, mode: str) -> np.ndarray:
    """float64 [N, 1000] probabilities of one merge over logits [N, members, crops, 1000]."""
    lg = torch.from_numpy(logits)
    if mode == "mean-prob":
        p = torch.softmax(lg, -1).double().mean((1, 2))
    elif mode == "mean-logit":
        p = torch.softmax(lg.double().mean((1, 2)), -1)
    elif mode == "geo-mean":
        p = torch.softmax(torch.log_softmax(lg, -1).double().mean((1, 2)), -1)
    else:
        p = torch.softmax(lg, -1).double().amax(2).mean(1)
        p = p / p.sum(-1, keepdim=True)
    return p.numpy()


def hits(probs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-probs, axis=1, kind="stable")
    return order[:, 0] == targets, (order[:, :5] == targets[:, None]).any(1)


def subset_probs(truth, members, set_name: str, mode: str) -> np.ndarray:
    logits = truth[0]
    idx = [KEYS.index(k) for k in SETS[set_name]]
    return merged(logits[:, members][:, :, idx], mode)


def wilson(errors: int, n: int) -> list[float]:
    ci = binomtest(errors, n).proportion_ci(confidence_level=0.95, method="wilson")
    return [ci.low, ci.high]


def mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[int, int, float]:
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    p = binomtest(a_only, a_only + b_only, 0.5).pvalue if a_only + b_only else 1.0
    return a_only, b_only, p


def nll_ece(target_prob: np.ndarray, confidence: np.ndarray, top1: np.ndarray) -> tuple[float, float]:
    nll = float(np.mean(-np.log(np.maximum(target_prob, np.finfo(np.float32).tiny))))
    bins = np.clip(np.ceil(confidence * 15).astype(int) - 1, 0, 14)
    ece = sum(
        (bins == b).mean() * abs(top1[bins == b].mean() - confidence[bins == b].mean())
        for b in range(15)
        if (bins == b).any()
    )
    return nll, float(ece)


def assert_errors(entry: dict, top1: np.ndarray, top5: np.ndarray) -> None:
    n, k1, k5 = len(top1), int(top1.sum()), int(top5.sum())
    assert (entry["num_images"], entry["top1_correct"], entry["top5_correct"]) == (n, k1, k5), entry
    assert entry["top1_err"] == pytest.approx((n - k1) / n, abs=TOL)
    assert entry["top5_err"] == pytest.approx((n - k5) / n, abs=TOL)
    assert entry["top1_err_ci"] == pytest.approx(wilson(n - k1, n), abs=TOL)
    assert entry["top5_err_ci"] == pytest.approx(wilson(n - k5, n), abs=TOL)


def check_summary(run_dir: Path, summary: dict, names: list[str], hit: dict, calib: dict) -> None:
    """hit[(row, set, merge)] = (top1, top5) bool [N], row M = all members; calib[(set, merge)] = (p_t, conf)."""
    M = len(names)
    sets = list(SETS)
    for m, entry in enumerate(summary["models"]):
        assert entry["name"] == names[m]
        for s in sets:
            assert_errors(entry["errors"][s], *hit[m, s, "mean-prob"])
    assert_errors(summary, *hit[M, "72", "mean-prob"])
    for s in sets:
        entry = summary["crop_sets"][s]
        assert_errors(entry, *hit[M, s, "mean-prob"])
        assert entry["num_crops"] == len(SETS[s])
        nll, ece = nll_ece(*calib[s, "mean-prob"], hit[M, s, "mean-prob"][0])
        assert entry["nll"] == pytest.approx(nll, rel=1e-4) and entry["ece"] == pytest.approx(ece, abs=1e-4)
    assert len(summary["merges"]) == len(MERGES) * len(sets)
    for entry in summary["merges"]:
        key = (M, entry["crop_set"], entry["merge"])
        assert_errors(entry, *hit[key])
        assert entry["crops"] == len(SETS[entry["crop_set"]])
        nll, ece = nll_ece(*calib[key[1:]], hit[key][0])
        assert entry["nll"] == pytest.approx(nll, rel=1e-4) and entry["ece"] == pytest.approx(ece, abs=1e-4)
        base = hit[M, entry["crop_set"], "mean-prob"]
        for i, metric in enumerate(("top1", "top5")):
            if entry["merge"] == "mean-prob":
                assert f"p_{metric}_vs_mean-prob" not in entry
            else:
                assert entry[f"p_{metric}_vs_mean-prob"] == pytest.approx(mcnemar(hit[key][i], base[i])[2], abs=TOL)

    check_table(run_dir, summary, names, hit)


P_COLS = ("p_top1_vs_fewer_crops", "p_top5_vs_fewer_crops", "p_top1_vs_best_member", "p_top5_vs_best_member")


def check_table(run_dir: Path, summary: dict, names: list[str], hit: dict) -> None:
    """Table 3 (best member @1,@10,@72, then all members), its McNemar tests, paired_tests and table.csv."""
    M, sets = len(names), list(SETS)
    best = int(np.argmin([(~hit[m, "1", "mean-prob"][0]).sum() for m in range(M)]))  # first on ties
    assert summary["best_member"] == names[best]
    cells, rows = summary["table"], [(best, s) for s in sets] + [(M, s) for s in sets]
    paired, csv_rows = [], list(csv.DictReader((run_dir / "table.csv").open()))
    for i, (cell, (row, s), line) in enumerate(zip(cells, rows, csv_rows, strict=True)):
        k, crops = (M if row == M else 1), len(SETS[s])
        assert (cell["models"], cell["crops"], cell["cost"], cell["crop_set"]) == (k, crops, k * crops, s)
        assert row == M or names[best] in cell["label"]
        assert_errors(cell, *hit[row, s, "mean-prob"])
        assert cell["delta_top5"] == pytest.approx(cell["top5_err"] - cells[0]["top5_err"], abs=TOL)
        expect = {}
        for j, metric in enumerate(("top1", "top5")):
            a = hit[row, s, "mean-prob"][j]
            if i % 3:  # A = more crops, B = the previous cell of the group
                test = mcnemar(a, hit[row, sets[i % 3 - 1], "mean-prob"][j])
                expect[f"p_{metric}_vs_fewer_crops"] = test[2]
                paired.append((metric, *test))
            if row == M:  # A = all members, B = the best member
                test = mcnemar(a, hit[best, s, "mean-prob"][j])
                expect[f"p_{metric}_vs_best_member"] = test[2]
                paired.append((metric, *test))
        # table.csv repeats the cell; columns without a test are empty
        assert (line["label"], line["models"], line["crops"], line["cost"]) == (
            cell["label"],
            str(k),
            str(crops),
            str(k * crops),
        )
        for col in P_COLS:
            if col in expect:
                assert cell[col] == pytest.approx(expect[col], abs=TOL)
                assert float(line[col]) == pytest.approx(expect[col], abs=TOL)
            else:
                assert col not in cell and line[col] == ""
        for metric in ("top1", "top5"):
            got = [float(line[f"{metric}_err{x}"]) for x in ("", "_lo", "_hi")]
            assert got == pytest.approx([cell[f"{metric}_err"], *cell[f"{metric}_err_ci"]], abs=TOL)
        assert float(line["delta_top5"]) == pytest.approx(cell["delta_top5"], abs=TOL)
    # paired_tests: exactly these comparisons (compared as a multiset; the comparison labels are free text)
    tests = summary["paired_tests"]
    assert all(t["num_images"] == len(hit[M, "1", "mean-prob"][0]) for t in tests)
    got = sorted((t["metric"], t["a_only_correct"], t["b_only_correct"], t["p_value"]) for t in tests)
    paired.sort()
    assert [t[:3] for t in got] == [t[:3] for t in paired]
    assert [t[3] for t in got] == pytest.approx([t[3] for t in paired], abs=TOL)


def truth_hits(truth, M: int):
    hit, calib = {}, {}
    for row, s, mode in itertools.product(range(M + 1), SETS, MERGES):
        probs = subset_probs(truth, list(range(M)) if row == M else [row], s, mode)
        hit[row, s, mode] = hits(probs, truth[1])
        if row == M:
            calib[s, mode] = (probs[np.arange(len(probs)), truth[1]], probs.max(1))
    return hit, calib


def test_summary_and_table_equal_reference_ground_truth(run, truth):
    out, names, summary = run
    assert len(names) == truth[0].shape[1] == 2 and truth[0].shape == (8, 2, 72, 1000)
    hit, calib = truth_hits(truth, len(names))
    check_summary(out, summary, names, hit, calib)
    # per-class errors of the reported cell (all members, 72 crops, mean-prob)
    top1, top5 = hit[len(names), "72", "mean-prob"]
    classes = {c["index"]: c for c in summary["per_class"]["classes"]}
    assert summary["per_class"]["crop_set"] == "72" and sorted(classes) == sorted(set(truth[1]))
    for t, c in classes.items():
        mask = truth[1] == t
        assert (c["wnid"], c["num_images"]) == (imagenet_classes()[t].wnid, int(mask.sum()))
        assert (c["top1_err"], c["top5_err"]) == pytest.approx((1 - top1[mask].mean(), 1 - top5[mask].mean()), abs=TOL)


def test_summary_equals_statistics_of_saved_predictions(run, truth):
    out, names, summary = run
    pred = np.load(out / "predictions.npz")
    M, targets = len(names), pred["targets"]
    assert list(pred["paths"]) == truth[2] and np.array_equal(targets, truth[1])
    assert list(pred["member_names"]) == names and list(pred["set_names"]) == list(SETS)
    assert list(pred["merges"]) == list(MERGES) and pred["top5"].shape == (8, M + 1, 3, 4, 5)
    hit, calib = {}, {}
    for row, (si, s), (ri, mode) in itertools.product(range(M + 1), enumerate(SETS), enumerate(MERGES)):
        top5 = pred["top5"][:, row, si, ri].astype(np.int64)  # best class first
        hit[row, s, mode] = (top5[:, 0] == targets, (top5 == targets[:, None]).any(1))
        if row == M:
            calib[s, mode] = (pred["target_prob"][:, row, si, ri], pred["confidence"][:, row, si, ri])
    # the reported cell from the probabilities themselves
    from_probs = hits(pred["probs"].astype(np.float64), targets)
    for a, b in zip(from_probs, hit[M, "72", "mean-prob"], strict=True):
        assert np.array_equal(a, b)
    check_summary(out, summary, names, hit, calib)


def test_curve_equals_subset_errors_of_ground_truth(run, truth):
    out, names, _ = run
    M, rows = len(names), list(csv.DictReader((out / "curve.csv").open()))
    assert len(rows) == len(MERGES) * len(SETS) * M and (out / "curve.png").stat().st_size > 0
    got = {(int(r["models"]), r["crop_set"], r["merge"]): r for r in rows}
    for k, s, mode in itertools.product(range(1, M + 1), SETS, MERGES):
        errs = np.array(
            [
                [1 - h.mean() for h in hits(subset_probs(truth, list(sub), s, mode), truth[1])]
                for sub in itertools.combinations(range(M), k)
            ]
        )
        r = got[k, s, mode]
        assert (int(r["num_subsets"]), r["all_subsets"], int(r["crops"])) == (math.comb(M, k), "True", len(SETS[s]))
        for j, metric in enumerate(("top1", "top5")):
            want = [errs[:, j].mean(), errs[:, j].min(), errs[:, j].max()]
            assert [float(r[f"{metric}_err_{x}"]) for x in ("mean", "min", "max")] == pytest.approx(want, abs=TOL)


def test_report_rebuilds_without_models_and_for_one_member(run, truth, tmp_path):
    out, names, _ = run
    assert not any((out.parent / n).exists() for n in names)  # the checkpoints are gone
    assert main(["report", str(out)]) == 0
    for name in ("table.csv", "curve.csv", "merges.csv", "per_class.csv"):
        assert (out / "report" / name).read_text() == (out / name).read_text(), name
    assert main(["report", str(out), "--members", "1", "--out", str(tmp_path)]) == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [m["name"] for m in summary["models"]] == [names[1]] and summary["best_member"] == names[1]
    assert [(c["models"], c["crop_set"]) for c in summary["table"]] == [(1, s) for s in SETS]
    assert len(list(csv.DictReader((tmp_path / "table.csv").open()))) == 3
    for cell in summary["table"]:
        assert names[1] in cell["label"]
        assert_errors(cell, *hits(subset_probs(truth, [1], cell["crop_set"], "mean-prob"), truth[1]))
    for entry in summary["merges"]:  # member 1's merges, rebuilt from float16 statistics in logits.npz
        hit = hits(subset_probs(truth, [1], entry["crop_set"], entry["merge"]), truth[1])
        assert_errors(entry, *hit)
        base = hits(subset_probs(truth, [1], entry["crop_set"], "mean-prob"), truth[1])
        for metric, a, b in zip(("top1", "top5"), hit, base, strict=True):  # includes p = 0.5 (2 vs 0)
            if entry["merge"] == "mean-prob":
                assert f"p_{metric}_vs_mean-prob" not in entry
            else:
                assert entry[f"p_{metric}_vs_mean-prob"] == pytest.approx(mcnemar(a, b)[2], abs=TOL)
