"""`ensemble-eval compare` (comparison.py, ee.compare_runs): real runs of one ensemble on three
small "evaluation sets" side by side, every number checked against each run's own summary.json,
the files, the names, the missing rows, and the hostile twin of every input."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import sys
from pathlib import Path

import pytest
from conftest import DATA

import ensemble_eval as ee
from ensemble_eval import comparison
from ensemble_eval.cli import main
from ensemble_eval.comparison import CompareError, Setting, parse_run
from ensemble_eval.errors import UserError
from ensemble_eval.rundir import MARKER, OutDirError, check_report_out, check_run_out

ROOT = Path(__file__).parent.parent
# two nested crop sets at 64 px (1 and 10 crops): Table 3's shape at a tiny cost
SCHEME = """\
crops: "10"
protocol:
  scales: [72]
  crop_size: 64
  regions: [center]
  crops: [tl, tr, bl, br, center]
  flips: [none, mirror]
  crop_sets:
    "1": {crops: [center], flips: [none]}
    "10": {}
"""
CSV_HEADER = [
    "setting",
    "members",
    "crops",
    "crop_set",
    "dataset",
    "run_dir",
    "images",
    "top1_err",
    "top1_err_lo",
    "top1_err_hi",
    "top5_err",
    "top5_err_lo",
    "top5_err_hi",
]


def _data_set(root: Path, folders: list[str]) -> Path:
    root.mkdir(parents=True)
    for wnid in folders:
        shutil.copytree(DATA / wnid, root / wnid)
    return root


@pytest.fixture(scope="module")
def runs(demo_ckpts, tmp_path_factory):
    """Three finished runs of the same two members: `val` (4 images, --table), `v2` (the other 4,
    --table) and `sketch` (2 images, no --table: its reported setting only)."""
    base = tmp_path_factory.mktemp("compare")
    (base / "scheme.yaml").write_text(SCHEME)
    wnids = sorted(p.name for p in DATA.iterdir())
    sets = {"val": wnids[:4], "v2": wnids[4:], "sketch": wnids[3:5]}
    out = {}
    for name, folders in sets.items():
        data = _data_set(base / "data" / name, folders)
        run = base / "runs" / name
        args = ["--models", *map(str, demo_ckpts), "--data", str(data), "--config", str(base / "scheme.yaml")]
        args += ["--no-progress", "--workers", "0", "--out", str(run)] + (["--table"] if name != "sketch" else [])
        assert main(args) == 0
        out[name] = run
    return out


def _summary(run: Path) -> dict:
    return json.loads((run / "summary.json").read_text())


def _edited(run: Path, dest: Path, edit) -> Path:
    """A copy of `run` whose summary.json `edit(summary)` changed (a damaged or hostile record)."""
    shutil.copytree(run, dest)
    summary = _summary(dest)
    edit(summary)
    (dest / "summary.json").write_text(json.dumps(summary))
    return dest


def _error(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("ensemble-eval: error: "), err
    assert "Traceback" not in err
    return err


# ---------------------------------------------------------------------------------------
# The numbers


def test_every_cell_is_the_runs_own_summary_cell(runs):
    done = ee.compare_runs({"val": runs["val"], "v2": runs["v2"], "sketch": runs["sketch"]}, metric="top5")
    assert [c.name for c in done.columns] == ["val", "v2", "sketch"]
    assert [s.label for s in done.settings] == [
        "best member, 1 crop",
        "best member, 10 crops",
        "all members, 1 crop",
        "all members, 10 crops",
    ]
    for column in done.columns[:2]:
        table = _summary(column.run_dir)["table"]
        assert len(column.cells) == len(table) == 4
        for cell in table:
            group = "all" if cell["label"] == "all members" else "best"
            ours = column.cells[Setting(group, cell["crop_set"], cell["crops"])]
            assert ours.num_images == cell["num_images"] and ours.models == cell["models"]
            for k in ("top1", "top5"):
                assert ours.errors[k] == (cell[f"{k}_err"], *cell[f"{k}_err_ci"])  # exactly the run's numbers
    headline = _summary(runs["sketch"])
    (only,) = done.columns[2].cells.items()
    assert only[0] == Setting("all", "10", 10)
    assert only[1].errors["top1"] == (headline["top1_err"], *headline["top1_err_ci"])
    text = done.render()
    val_all10 = done.columns[0].cells[Setting("all", "10", 10)].errors["top5"]
    shown = f"{100 * val_all10[0]:.2f} [{100 * val_all10[1]:.2f}, {100 * val_all10[2]:.2f}]"
    (row,) = [line for line in text.splitlines() if line.startswith("all members, 10 crops")]
    assert shown in row
    assert text.startswith("top-5 error % [95% Wilson interval], merge mean-prob")


def test_the_command_writes_markdown_csv_and_plot(runs, tmp_path, capsys):
    out = tmp_path / "cmp"
    argv = ["compare", f"val={runs['val']}", f"v2={runs['v2']}", f"sketch={runs['sketch']}", "--out", str(out)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert f"wrote compare.md, compare.csv, compare.png to {out}" in printed
    rows = list(csv.DictReader((out / "compare.csv").open()))
    assert list(rows[0]) == CSV_HEADER
    assert len(rows) == 4 * 3  # every setting x data set, the missing ones included
    assert [(r["setting"], r["dataset"]) for r in rows[:3]] == [
        ("best member, 1 crop", d) for d in ("val", "v2", "sketch")
    ]
    for r in rows:
        run = runs[r["dataset"]]
        assert r["run_dir"] == str(run)
        summary = _summary(run)
        cells = [c for c in summary.get("table", []) if f"{c['crops']} crop" in r["setting"]]
        cells = [c for c in cells if (c["label"] == "all members") == r["setting"].startswith("all")]
        if r["dataset"] == "sketch":
            cells = [summary] if r["setting"] == "all members, 10 crops" else []
        if not cells:  # a setting the run lacks: no numbers
            assert r["top1_err"] == r["top5_err"] == r["images"] == r["members"] == ""
            continue
        (cell,) = cells
        assert int(r["images"]) == cell["num_images"]
        for k in ("top1", "top5"):
            assert float(r[f"{k}_err"]) == cell[f"{k}_err"]  # written with repr: read back exactly
            assert [float(r[f"{k}_err_lo"]), float(r[f"{k}_err_hi"])] == cell[f"{k}_err_ci"]
    md = (out / "compare.md").read_text()
    assert "| Setting | val | v2 | sketch |" in md and "|---|---:|---:|---:|" in md
    assert len([line for line in md.splitlines() if line.startswith("| ") and line.endswith(" | — |")]) == 3
    assert "- missing (—): sketch lacks best member, 1 crop; best member, 10 crops; all members, 1 crop" in md
    assert "(run without --table: its reported setting only)" in md
    assert (out / "compare.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    marker = json.loads((out / MARKER).read_text())
    assert marker["kind"] == "compare" and sorted(marker["files"]) == ["compare.csv", "compare.md", "compare.png"]
    assert main([*argv, "--metric", "top5"]) == 0  # its own directory: replaced
    assert "top-5 error %" in (out / "compare.md").read_text()


def test_the_api_and_the_command_give_the_same_rows(runs, tmp_path, capsys):
    assert main(["compare", str(runs["val"]), str(runs["v2"]), "--out", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    done = ee.compare_runs([str(runs["val"]), runs["v2"]])
    written = list(csv.DictReader((tmp_path / "c" / "compare.csv").open()))
    assert [{k: str(v) for k, v in r.items()} for r in done.rows()] == written
    assert done.written == [] and done.out is None  # no out: nothing written


# ---------------------------------------------------------------------------------------
# Names


def test_names_come_from_the_data_folder_and_are_made_unique(runs, tmp_path):
    copy = tmp_path / "again"
    shutil.copytree(runs["val"], copy)  # the same --data folder name, another run directory
    done = ee.compare_runs([runs["val"], runs["v2"], copy])
    assert [c.name for c in done.columns] == ["val", "v2", "val-2"]
    assert any(
        n.startswith("names: val-2 is ") and "(its --data folder, val, names another column)" in n for n in done.notes
    )
    named = ee.compare_runs([f"val-2={runs['v2']}", runs["val"], copy])  # a derived name yields to a given one
    assert [c.name for c in named.columns] == ["val-2", "val", "val-3"]


def test_name_parsing():
    assert parse_run("v2=runs/x") == ("v2", Path("runs/x"))
    assert parse_run("runs/lr=0.1") == (None, Path("runs/lr=0.1"))  # a / before =: a path
    assert parse_run("runs/x") == (None, Path("runs/x"))
    for bad in ("=runs/x", "v2=", "a\x1b[31m=runs/x", "x" * 65 + "=runs/x"):
        with pytest.raises(CompareError):
            parse_run(bad)


def test_a_directory_named_with_an_equals_sign_is_taken_whole(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(runs["v2"], tmp_path / "lr=0.1")
    assert parse_run("lr=0.1") == (None, Path("lr=0.1"))
    assert [c.name for c in ee.compare_runs([runs["val"], "lr=0.1"]).columns] == ["val", "v2"]


def test_a_name_with_markdown_and_mathtext_characters_is_written_safely(runs, tmp_path):
    done = ee.compare_runs({"a|b": runs["val"], "$x_1$": runs["v2"]}, tmp_path / "c")
    md = (tmp_path / "c" / "compare.md").read_text()
    assert "| Setting | a\\|b | $x_1$ |" in md
    assert (tmp_path / "c" / "compare.png").stat().st_size > 0 and done.written[-1] == "compare.png"


def test_a_run_directory_with_a_non_utf8_name(runs, tmp_path):
    odd = os.fsdecode(bytes(tmp_path) + b"/\xff\xfe-run")
    shutil.copytree(runs["v2"], odd)
    done = ee.compare_runs([runs["val"], odd], tmp_path / "c")
    assert [c.name for c in done.columns] == ["val", "v2"]
    text = (tmp_path / "c" / "compare.csv").read_text(encoding="utf-8")
    assert "\\udcff\\udcfe-run" in text  # escaped, never an undecodable byte in a UTF-8 file


# ---------------------------------------------------------------------------------------
# Refusals, each one line and exit status 2


@pytest.mark.parametrize(
    "args,expected",
    [
        (["{val}", "{val}"], "is given twice; give each run once"),
        (["a={val}", "a={v2}"], "the name 'a' is given to 2 runs"),
        (["{val}", "{missing}"], "does not exist; pass the --out directory of a finished run"),
        (["{val}", "{file}"], "is not a directory"),
        (["{val}", "{empty}"], "holds no summary.json"),
        (["{val}", "{progress}"], "holds a run in progress (no summary.json yet)"),
    ],
)
def test_what_is_not_a_finished_run_or_a_usable_name_is_one_line(runs, tmp_path, capsys, args, expected):
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "progress" / "progress").mkdir(parents=True)
    (tmp_path / "progress" / "progress" / "manifest.json").write_text("{}")
    paths = {"val": runs["val"], "v2": runs["v2"], "missing": tmp_path / "nope"}
    paths |= {k: tmp_path / k for k in ("file", "empty", "progress")}
    assert main(["compare", *(a.format(**paths) for a in args)]) == 2
    assert expected in _error(capsys)


def test_a_path_python_cannot_use_is_one_error():
    with pytest.raises(UserError, match="is not a usable path"):
        ee.compare_runs(["a\x00b"])


@pytest.mark.parametrize(
    "argv,expected",
    [
        ([], "the following arguments are required: [NAME=]RUN_DIR"),
        (["r", "--metric", "top3"], "invalid choice: 'top3'"),
    ],
)
def test_no_run_at_all_or_a_bad_metric_is_one_line(capsys, argv, expected):
    with pytest.raises(SystemExit) as stop:
        main(["compare", *argv])
    err = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(err.splitlines()) == 1 and expected in err
    with pytest.raises(CompareError, match="at least one"):
        ee.compare_runs([])
    with pytest.raises(CompareError, match="--metric top3: choose one of top1, top5"):
        ee.compare_runs(["r"], metric="top3")


def _truncate(run: Path) -> None:
    text = (run / "summary.json").read_bytes()
    (run / "summary.json").write_bytes(text[: len(text) // 2])


def _non_utf8(run: Path) -> None:
    (run / "summary.json").write_bytes(b'{"models": [], "data": "\xff\xfe"}')


def _fifo(run: Path) -> None:
    (run / "summary.json").unlink()
    os.mkfifo(run / "summary.json")


def _huge(run: Path) -> None:
    os.truncate(run / "summary.json", 300 << 20)  # sparse: a declared size, no disk spent


def _deep(run: Path) -> None:
    (run / "summary.json").write_text("[" * 100_000)


def _dangling(run: Path) -> None:
    (run / "summary.json").unlink()
    (run / "summary.json").symlink_to(run / "elsewhere.json")


@pytest.mark.parametrize(
    "damage,expected",
    [
        (_truncate, "summary.json cannot be read (JSONDecodeError)"),
        (_non_utf8, "summary.json cannot be read (UnicodeDecodeError)"),
        (_fifo, "summary.json cannot be read (NotRegularFile)"),
        (_huge, "summary.json cannot be read (FileTooLarge)"),
        (_deep, "summary.json cannot be read (RecursionError)"),
        (_dangling, "holds no summary.json"),
    ],
)
def test_a_damaged_summary_file_is_one_line(runs, tmp_path, capsys, deadline, damage, expected):
    run = tmp_path / "run"
    shutil.copytree(runs["v2"], run)
    damage(run)
    assert main(["compare", str(runs["val"]), str(run)]) == 2
    assert expected in _error(capsys)


def _cell(summary: dict, i: int = 3) -> dict:
    return summary["table"][i]


@pytest.mark.parametrize(
    "edit,expected",
    [
        (lambda s: s.update(schema_version=99), "schema_version 99; this ensemble-eval reads 1 and older"),
        (lambda s: s.update(table="all"), "table is 'all'"),
        (lambda s: _cell(s).update(top1_err=float("nan")), "table[3].top1_err is nan"),
        (lambda s: _cell(s).update(top1_err=float("inf")), "table[3].top1_err is inf"),
        (lambda s: _cell(s).update(top5_err="0.25"), "table[3].top5_err is '0.25'"),
        (lambda s: _cell(s).update(top1_err=True), "table[3].top1_err is True"),
        (lambda s: _cell(s).update(top1_err_ci=[0.9, 1.0]), "table[3].top1_err_ci"),
        (lambda s: _cell(s).update(top1_err_ci=[0.0]), "table[3].top1_err_ci"),
        (lambda s: _cell(s).update(top1_correct=-1), "table[3].top1_correct"),
        (lambda s: _cell(s).update(num_images=10**30), "table[3].top1_correct (of 1000000000000000000000000000000"),
        (lambda s: _cell(s).update(num_images=-4), "table[3].num_images is -4"),
        (lambda s: _cell(s).update(crops=0), "table[3].crops is 0"),
        (lambda s: _cell(s).update(label="the best"), "table[3].label is 'the best'"),
        (lambda s: _cell(s).update(label="best member (a.pt)"), "table[3].label"),  # models 2: not a best member
        (lambda s: _cell(s, 2).update(crop_set="10", crops=10), "a second cell of the same setting"),
        (lambda s: s["table"].__setitem__(0, [1, 2]), "table[0] is [1, 2]"),
        (lambda s: s.update(models="a.pt"), "models is not a list of members"),
        (lambda s: s.update(models=[]), "models is []"),
    ],
)
def test_a_damaged_or_edited_record_is_refused_not_shown(runs, tmp_path, capsys, edit, expected):
    run = _edited(runs["v2"], tmp_path / "run", edit)
    assert main(["compare", str(runs["val"]), str(run)]) == 2
    err = _error(capsys)
    assert expected in err and str(run) in err


@pytest.mark.parametrize("n", [1, 10, 13, 15, 17, 1000, 49999])
def test_every_count_the_tool_can_write_is_accepted(n):
    from ensemble_eval.metrics import wilson_interval

    for wrong in sorted({0, 1, n // 3, n - 1, n}):  # the ends: a low end of 1e-17 above an error of 0
        cell = {"top1_err": wrong / n, "top1_err_ci": list(wilson_interval(wrong, n)), "top1_correct": n - wrong}
        cell |= {"top5_err": 0.0, "top5_err_ci": list(wilson_interval(0, n)), "top5_correct": n}
        assert comparison._errors(Path("s.json"), "", cell, n)["top1"][0] == wrong / n


def test_an_edited_headline_is_refused(runs, tmp_path, capsys):
    run = _edited(runs["sketch"], tmp_path / "run", lambda s: s.update(top5_err=0.123))
    assert main(["compare", str(runs["val"]), str(run)]) == 2
    assert "top5_correct (of 2 images, against top5_err 0.123) is 2" in _error(
        capsys
    )  # inside its interval, not its hits


def test_a_run_of_no_images_shows_no_numbers(runs, tmp_path):
    def empty(s):
        for cell in s["table"]:
            for k in ("top1", "top5"):
                cell.update({f"{k}_err": None, f"{k}_err_ci": None, f"{k}_correct": 0})
            cell["num_images"] = 0

    run = _edited(runs["v2"], tmp_path / "run", empty)
    done = ee.compare_runs([runs["val"], run])
    assert "no images" in done.render() and "nan" not in done.render().lower()
    assert all(r["top1_err"] == "" for r in done.rows() if r["dataset"] == "v2")


# ---------------------------------------------------------------------------------------
# Members


def test_runs_of_other_members_are_refused_unless_allowed(runs, tmp_path, capsys):
    def other(s):
        s["models"][1]["sha256"] = "0" * 64

    run = _edited(runs["v2"], tmp_path / "run", other)
    assert main(["compare", str(runs["val"]), str(run)]) == 2
    err = _error(capsys)
    name = _summary(run)["models"][1]["name"]
    assert f"v2's {name} is not val's" in err and str(run) in err and "--allow-different-members" in err
    assert main(["compare", str(runs["val"]), str(run), "--allow-different-members"]) == 0
    out = capsys.readouterr().out
    assert f"members differ (--allow-different-members): v2's {name} is not val's" in out


def test_another_member_list_is_named(runs, tmp_path, capsys):
    def fewer(s):
        s["models"] = s["models"][:1]

    run = _edited(runs["v2"], tmp_path / "run", fewer)
    _, dropped = [m["name"] for m in _summary(runs["val"])["models"]]
    assert main(["compare", str(runs["val"]), str(run)]) == 2
    assert f"v2 has no other member where val has {dropped}" in _error(capsys)


def test_the_same_files_under_other_names_are_the_same_members(runs, tmp_path):
    def renamed(s):
        for m in s["models"]:
            m["name"] = m["path"] = "renamed-" + m["name"]
            m["input"]["source"] = "sidecar"  # where the convention came from is not the member

    run = _edited(runs["v2"], tmp_path / "run", renamed)
    assert "members: " in ee.compare_runs([runs["val"], run]).notes[1]


def test_a_different_merge_or_protocol_is_a_note(runs, tmp_path):
    run = _edited(runs["v2"], tmp_path / "run", lambda s: s.update(merge="max-crop"))
    notes = ee.compare_runs([runs["val"], run]).notes
    assert "settings that change the numbers differ from val's: v2 (merge)" in notes


# ---------------------------------------------------------------------------------------
# --out


def test_out_never_takes_a_run_or_a_foreign_directory(runs, tmp_path, capsys):
    two = [str(runs["val"]), str(runs["v2"])]
    for overwrite in ([], ["--overwrite"]):  # a run's directory: never, its marker would be replaced
        assert main(["compare", *two, "--out", str(runs["v2"]), *overwrite]) == 2
        assert "holds a run's results; choose a new directory" in _error(capsys)
    assert not (runs["v2"] / "compare.md").exists()
    assert json.loads((runs["v2"] / MARKER).read_text())["kind"] == "run"
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    assert main(["compare", *two, "--out", str(foreign)]) == 2
    assert "holds files ensemble-eval did not write ('notes.txt')" in _error(capsys)
    assert main(["compare", *two, "--out", str(foreign), "--overwrite"]) == 0
    assert (foreign / "notes.txt").read_text() == "mine" and (foreign / "compare.csv").is_file()


def test_a_hand_edited_comparison_is_kept_unless_overwrite(runs, tmp_path, capsys):
    out = tmp_path / "c"
    two = [str(runs["val"]), str(runs["v2"]), "--out", str(out)]
    assert main(["compare", *two]) == 0
    (out / "compare.md").write_text("my notes")
    assert main(["compare", *two]) == 2
    assert "compare.md was changed after ensemble-eval wrote it" in _error(capsys)
    assert (out / "compare.md").read_text() == "my notes"
    assert main(["compare", *two, "--overwrite"]) == 0
    assert (out / "compare.md").read_text().startswith("## top-1 error %")


def test_runs_and_reports_refuse_a_comparison_directory(runs, tmp_path):
    ee.compare_runs([runs["val"]], tmp_path / "c")
    with pytest.raises(OutDirError, match="holds a comparison of `ensemble-eval compare`, not a run"):
        check_run_out(tmp_path / "c", overwrite=True, resume=False)
    with pytest.raises(OutDirError, match="holds a comparison of `ensemble-eval compare`, not a report"):
        check_report_out(tmp_path / "c", overwrite=False)


def test_without_matplotlib_the_rest_is_written_and_a_stale_plot_goes(runs, tmp_path, monkeypatch, capsys):
    out = tmp_path / "c"
    argv = ["compare", str(runs["val"]), str(runs["v2"]), "--out", str(out)]
    assert main(argv) == 0 and (out / "compare.png").is_file()
    capsys.readouterr()
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "compare.png not drawn: matplotlib is not installed" in printed
    assert not (out / "compare.png").exists() and (out / "compare.md").is_file() and (out / "compare.csv").is_file()
    assert sorted(json.loads((out / MARKER).read_text())["files"]) == ["compare.csv", "compare.md"]


# ---------------------------------------------------------------------------------------
# The ImageNet-C hook, the docs


def test_a_corruptions_section_adds_mce_and_relative_mce(runs, tmp_path):
    from ensemble_eval.benchmarks import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS

    def with_corruptions(s):
        s["corruptions"] = {"settings": []}
        for i, c in enumerate(s["table"]):
            errors = {
                "fog": {"1": {"top1_err": 0.4 + i / 20}, "2": {"top1_err": 0.6}},
                "saturate": {"1": {"top1_err": 0.9}},
            }
            s["corruptions"]["settings"].append(
                {k: c[k] for k in ("label", "models", "crops", "crop_set")} | {"errors": errors}
            )

    run = _edited(runs["v2"], tmp_path / "c-run", with_corruptions)
    done = ee.compare_runs({"val": runs["val"], "imagenet-c": run})
    setting = Setting("all", "10", 10)
    cell = json.loads((run / "summary.json").read_text())["corruptions"]["settings"]
    i = next(k for k, c in enumerate(cell) if c["label"] == "all members" and c["crop_set"] == "10")
    mean = (0.4 + i / 20 + 0.6) / 2
    assert done.columns[1].mce[setting] == pytest.approx(mean / ALEXNET_ERRORS["fog"], abs=1e-12)
    clean = done.columns[0].cells[setting].errors["top1"][0]
    relative = (mean - clean) / (ALEXNET_ERRORS["fog"] - ALEXNET_CLEAN_ERROR)
    assert done.columns[1].relative_mce[setting] == pytest.approx(relative, abs=1e-12)
    assert done.clean_name == "val"
    text = done.render()
    assert "mCE % (ImageNet-C" in text and "relative mCE %" in text and f"{100 * relative:.2f}" in text
    rows = list(csv.DictReader(io.StringIO(done.csv_text())))
    assert rows[0]["mce"] == "" and float(rows[1]["mce"]) > 0 and rows[1]["relative_mce"] != ""
    # without a clean column: mCE, no relative mCE
    alone = ee.compare_runs({"v2": runs["val"], "imagenet-c": run})
    assert alone.columns[1].mce and not alone.columns[1].relative_mce and "relative mCE" not in alone.render()
    with pytest.raises(UserError, match="--clean nope: no column has that name"):
        ee.compare_runs({"val": runs["val"], "imagenet-c": run}, clean="nope")
    with pytest.raises(UserError, match="is an ImageNet-C run"):
        ee.compare_runs({"val": runs["val"], "imagenet-c": run}, clean="imagenet-c")

    def bad(s):
        with_corruptions(s)
        s["corruptions"]["settings"][0]["errors"]["fog"]["1"]["top1_err"] = float("nan")

    with pytest.raises(UserError, match=r"corruptions.settings\[0\].errors.fog.1 is nan"):
        ee.compare_runs([runs["val"], _edited(runs["v2"], tmp_path / "bad", bad)])


def test_the_output_files_page_lists_the_comparison_files():
    page = (ROOT / "docs" / "output-files.md").read_text()
    assert comparison.with_generated_doc(page) == page, "run: python scripts/output_files_doc.py"
    for name in ("compare.md", "compare.csv", "compare.png"):
        assert f"**`{name}`**" in page
    assert all(f"| `{c}` |" in page for c in CSV_HEADER)
