"""From per-image records to the report: best member, Table 3 cells, tests, curve, per class, files."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from ensemble_eval.analysis import RunRecords, analyze, best_member
from ensemble_eval.merge import curve_subsets
from ensemble_eval.report import render_report, table_csv, with_analysis

SETS = ["144", "1", "10"]  # deliberately not in crop-count order
CROPS = {"144": 144, "1": 1, "10": 10}
N, C = 100, 10


def _records() -> RunRecords:
    """3 members + ensemble on 100 images; row r, set s is right on the first CORRECT[r][s] images."""
    correct = {  # row -> set -> (top-1 right, top-5 right) out of 100
        0: {"1": (60, 80), "10": (62, 82), "144": (65, 85)},
        1: {"1": (70, 88), "10": (71, 89), "144": (74, 90)},  # best on 1 crop
        2: {"1": (70, 86), "10": (75, 91), "144": (80, 95)},  # ties on 1 crop, comes later
        3: {"1": (72, 90), "10": (76, 92), "144": (81, 96)},  # all members
    }
    targets = np.arange(N) % C
    wrong = (targets + 1) % C
    top5 = np.zeros((N, 4, 3, 1, 5), np.int16)
    for r, per_set in correct.items():
        for s, (t1, t5) in per_set.items():
            i = SETS.index(s)
            ranked = np.stack([(wrong + j) % C for j in range(5)], 1)  # target absent
            ranked[:t5, 4] = targets[:t5]  # top-5 only
            ranked[:t1, 0], ranked[:t1, 4] = targets[:t1], wrong[:t1]  # top-1
            top5[:, r, i, 0] = ranked
    subsets = curve_subsets(3, 64, 0)
    subset_correct = np.zeros((len(subsets), 3, 1, 2), np.int64)
    subset_correct[:, :, 0, 0] = np.arange(len(subsets))[:, None] * 10  # top-1 right: 0, 10, ..., 60 images
    return RunRecords(
        np.array([f"c/img{i}.JPEG" for i in range(N)]),
        targets,
        ["a.pt", "b.pt", "c.pt"],
        SETS,
        CROPS,
        ["mean-prob"],
        top5,
        np.full((N, 4, 3, 1), 0.5, np.float32),
        np.full((N, 4, 3, 1), 0.7, np.float32),
        np.array([[m in u for m in range(3)] for u in subsets]),
        subset_correct,
    )


@pytest.fixture(scope="module")
def analysis():
    return analyze(_records(), "144", C, table=True)


def test_best_member_is_lowest_one_crop_top1_first_on_ties():
    assert best_member(_records().hits(), SETS.index("1")) == 1


def test_table_cells_rows_cost_deltas_and_tests(analysis):
    cells = analysis["table"]
    assert [(c["label"], c["models"], c["crops"], c["cost"]) for c in cells] == [
        ("best member (b.pt)", 1, 1, 1),
        ("best member (b.pt)", 1, 10, 10),
        ("best member (b.pt)", 1, 144, 144),
        ("all members", 3, 1, 3),
        ("all members", 3, 10, 30),
        ("all members", 3, 144, 432),
    ]
    assert [round(c["top5_err"], 6) for c in cells] == [0.12, 0.11, 0.10, 0.10, 0.08, 0.04]
    assert [round(c["delta_top5"], 6) for c in cells] == [0.0, -0.01, -0.02, -0.02, -0.04, -0.08]
    assert all(lo <= c["top1_err"] <= hi for c in cells for lo, hi in [c["top1_err_ci"]])
    # nested "right on the first k images": every discordant image favours the bigger setting
    assert "p_top5_vs_fewer_crops" not in cells[0] and "p_top5_vs_best_member" not in cells[2]
    t = [x for x in analysis["paired_tests"] if x["comparison"] == "all 3 members vs best member, 144 crops"]
    assert [(x["metric"], x["a_only_correct"], x["b_only_correct"]) for x in t] == [("top1", 7, 0), ("top5", 6, 0)]
    assert t[1]["p_value"] == pytest.approx(2 / 2**6) and cells[5]["p_top5_vs_best_member"] == t[1]["p_value"]


def test_curve_is_mean_min_max_over_subsets_of_each_size(analysis):
    # subsets (0,), (1,), (2,), (0, 1, 2), (0, 1), (0, 2), (1, 2) have 0, 10, ..., 60 top-1 right
    curve = {(c["models"], c["crop_set"]): c for c in analysis["curve"]}
    assert len(curve) == 9 and all(c["merge"] == "mean-prob" and c["all_subsets"] for c in curve.values())
    one, two, three = curve[(1, "10")], curve[(2, "10")], curve[(3, "10")]
    assert (one["num_subsets"], two["num_subsets"], three["num_subsets"]) == (3, 3, 1)
    assert one["top1_err_mean"] == pytest.approx(0.9) and (one["top1_err_min"], one["top1_err_max"]) == (0.8, 1.0)
    assert two["top1_err_mean"] == pytest.approx(0.5) and three["top1_err_mean"] == pytest.approx(0.7)


def test_per_class_and_member_errors(analysis):
    pc = analysis["per_class"]
    assert len(pc["classes"]) == C and sum(c["num_images"] for c in pc["classes"]) == N
    assert pc["worst"][0]["top1_err"] >= pc["worst"][-1]["top1_err"] >= pc["best"][-1]["top1_err"]
    shown = [e["index"] for e in pc["worst"] + pc["best"]]
    assert len(shown) == len(set(shown)) == min(10, C)  # no class in both lists
    assert [m["errors"]["10"]["top1_correct"] for m in analysis["members"]] == [62, 71, 75]


def test_renderings_and_csv(analysis):
    record = with_analysis({"models": [{"name": n} for n in ("a.pt", "b.pt", "c.pt")], "num_crops": 144}, analysis)
    text = render_report(record)
    assert "best member (b.pt)" in text and "4.00 (" in text and "-8.00" in text and "base" in text
    assert "Paired tests" in text and "Per class" in text and "Calibration" in text
    md = render_report(record, markdown=True)
    assert md.count("| all members |") == 3 and "## Every member" in md
    rows = list(csv.DictReader(io.StringIO(table_csv(record["table"]))))
    assert len(rows) == 6 and rows[5]["cost"] == "432" and float(rows[5]["top5_err"]) == 0.04
    assert float(rows[5]["top5_err_lo"]) < 0.04 < float(rows[5]["top5_err_hi"])
    assert rows[0]["p_top5_vs_fewer_crops"] == ""


def test_real_labels_count_any_listed_class_and_leave_out_unlabelled():
    records = _records()
    names = [p.split("/")[-1] for p in records.paths]
    real = {n: frozenset({int(t), int((t + 1) % C)}) for n, t in zip(names, records.targets)}
    real[names[-1]] = frozenset()  # ReaL leaves such images out
    result = analyze(records, "144", C, table=True, real=real, real_source="real.json")
    assert result["real"] == {"file": "real.json", "num_images": N - 1, "num_without_labels": 1}
    first = result["table"][0]  # wrong answers are (target + 1): right under ReaL
    assert first["real_num_images"] == N - 1 and first["real_top1_err"] == 0.0


def test_real_labels_official_list_form_maps_to_val_file_names(tmp_path):
    from ensemble_eval.analysis import read_real_labels
    from ensemble_eval.errors import UserError

    path = tmp_path / "real.json"
    path.write_text("[[1], [2, 3], []]")
    labels = read_real_labels(path, 1000)
    assert labels == {
        "ILSVRC2012_val_00000001.JPEG": frozenset({1}),
        "ILSVRC2012_val_00000002.JPEG": frozenset({2, 3}),
        "ILSVRC2012_val_00000003.JPEG": frozenset(),
    }
    for text, needle in [("[[1000]]", "not a list of class indices 0..999"), ("{", "is not JSON"), ("3", "must hold")]:
        path.write_text(text)
        with pytest.raises(UserError, match=needle):
            read_real_labels(path, 1000)
    with pytest.raises(UserError, match="does not exist"):
        read_real_labels(tmp_path / "missing.json", 1000)


def test_each_preset_names_the_table_it_reproduces():
    from ensemble_eval.config import build_config
    from ensemble_eval.report import _table_title

    title = {name: build_config(None, {"protocol": name}).table_title() for name in ("vgg-150", "googlenet-144")}
    assert title == {"vgg-150": "VGG 2014, Table 5", "googlenet-144": "GoogLeNet 2014, Table 3"}
    assert build_config(None, {}).table_title() == "Table 3"
    assert _table_title({"title": "VGG 2014, Table 5"}) == "VGG 2014, Table 5 reproduction"
    assert _table_title({}) == "Table 3 reproduction"  # a record from before titles
    assert _table_title({"title": None}) == "Every crop set, best member and all members"  # one's own scheme
