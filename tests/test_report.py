"""Table 3 cells from the tally: best member choice, cost, deltas, file formats."""

from __future__ import annotations

import csv
import io

from ensemble_eval.metrics import Counts, Tally
from ensemble_eval.report import best_member, render_table, table_cells, table_csv

SIZES = {"144": 144, "1": 1, "10": 10}


def _tally():
    t = Tally(3, ["144", "1", "10"])  # deliberately not in crop-count order
    correct = {  # member -> set -> (top1, top5) out of 100 images
        0: {"1": (60, 80), "10": (62, 82), "144": (65, 85)},
        1: {"1": (70, 88), "10": (71, 89), "144": (74, 90)},  # best on 1 crop
        2: {"1": (70, 86), "10": (75, 91), "144": (80, 95)},  # ties on 1 crop, comes later
    }
    for m, per_set in correct.items():
        for s, (t1, t5) in per_set.items():
            t.members[m][s] = Counts(100, t1, t5)
    for s, (t1, t5) in {"1": (72, 90), "10": (76, 92), "144": (81, 96)}.items():
        t.ensemble[s] = Counts(100, t1, t5)
    return t


def test_best_member_is_lowest_one_crop_top1_first_on_ties():
    assert best_member(_tally(), "1") == 1


def test_table_cells_rows_cost_and_deltas():
    cells = table_cells(_tally(), SIZES, ["a.pt", "b.pt", "c.pt"])
    assert [(c.label, c.models, c.crops, c.cost) for c in cells] == [
        ("best member (b.pt)", 1, 1, 1),
        ("best member (b.pt)", 1, 10, 10),
        ("best member (b.pt)", 1, 144, 144),
        ("all members", 3, 1, 3),
        ("all members", 3, 10, 30),
        ("all members", 3, 144, 432),
    ]
    assert [round(c.top5_err, 6) for c in cells] == [0.12, 0.11, 0.10, 0.10, 0.08, 0.04]
    assert [round(c.delta_top5, 6) for c in cells] == [0.0, -0.01, -0.02, -0.02, -0.04, -0.08]
    assert round(cells[-1].top1_err, 6) == 0.19


def test_single_member_has_only_single_rows():
    t = Tally(1, ["1"])
    t.members[0]["1"] = Counts(10, 5, 9)
    t.ensemble["1"] = Counts(10, 5, 9)
    cells = table_cells(t, {"1": 1}, ["only.pt"])
    assert len(cells) == 1 and cells[0].label == "best member (only.pt)"


def test_renderings():
    t = _tally()
    cells = table_cells(t, SIZES, ["a.pt", "b.pt", "c.pt"])
    text = render_table(cells, t, SIZES, ["a.pt", "b.pt", "c.pt"])
    assert "best member (b.pt)" in text and "4.00%" in text and "-8.00" in text and "base" in text
    md = render_table(cells, t, SIZES, ["a.pt", "b.pt", "c.pt"], markdown=True)
    assert md.count("| all members |") == 3 and "## Every member" in md
    rows = list(csv.DictReader(io.StringIO(table_csv(cells))))
    assert len(rows) == 6 and rows[5]["cost"] == "432" and float(rows[5]["top5_err"]) == 0.04
