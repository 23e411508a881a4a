"""The Python API: the same run as the command, read back, its rows; the docs example runs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, QUICK

import ensemble_eval as ee
from ensemble_eval.cli import main
from ensemble_eval.errors import UserError

DOCS = Path(__file__).parent.parent / "docs" / "python-api.md"


def test_evaluate_writes_what_the_command_writes(demo_ckpts, tmp_path, capsys):
    models = [str(p) for p in demo_ckpts]
    results = ee.evaluate(models, DATA, config=QUICK, table=True, limit=3, out=tmp_path / "api", progress=False)
    assert capsys.readouterr().out == ""  # quiet unless print_report
    code = main(
        ["--models", *models, "--data", str(DATA), "--config", QUICK, "--table", "--limit", "3"]
        + ["--no-progress", "--out", str(tmp_path / "cli")]
    )
    assert code == 0
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    for key in ("top1_err", "top5_err", "num_images", "crop_sets", "table", "curve"):
        assert results.summary[key] == cli[key], key
    assert (results.top1_err, results.top5_err, results.num_images) == (cli["top1_err"], cli["top5_err"], 3)
    with np.load(tmp_path / "cli" / "predictions.npz") as z:
        assert np.array_equal(results.records["top5"], z["top5"])
    table = results.rows("table")
    assert len(table) == len(cli["table"]) and {"top5_err", "top5_err_ci_low", "cost"} <= set(table[0])
    members = results.rows("members")
    assert [m["name"] for m in members] == ["a.pt", "b.pt"] and "top1_err@72" in members[0]
    again = ee.load_results(tmp_path / "cli")
    assert again.summary == cli and again.table == cli["table"]


def test_report_rebuilds_what_the_command_rebuilds(demo_ckpts, tmp_path, capsys):
    models = [str(p) for p in demo_ckpts]
    run = tmp_path / "run"
    ee.evaluate(models, DATA, config=QUICK, table=True, limit=3, save_logits=True, out=run, progress=False)
    api = ee.rebuild_report(run, tmp_path / "api", members=[1])
    assert main(["report", str(run), "--members", "b.pt", "--out", str(tmp_path / "cli")]) == 0
    assert capsys.readouterr().out.startswith(f"rebuilt from {run / 'logits.npz'}")
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert api.summary == cli == json.loads((tmp_path / "api" / "summary.json").read_text())
    assert api.run_dir == tmp_path / "api" and [m["name"] for m in api.members] == ["b.pt"]
    assert api.summary["top1_predictions_differing_from_run"] == 0  # one member: its exact row is in the run
    whole = ee.rebuild_report(run, tmp_path / "whole")
    assert whole.summary["rebuilt_from"] == "predictions.npz"
    assert whole.summary["table"] == ee.load_results(run).table
    with pytest.raises(UserError, match="is the run directory itself"):
        ee.rebuild_report(run, run)
    with pytest.raises(UserError, match="no such member"):
        ee.rebuild_report(run, tmp_path / "x", members=["c.pt"])


def test_evaluate_refuses_what_the_command_refuses(demo_ckpts, tmp_path):
    with pytest.raises(UserError, match="unknown option"):
        ee.evaluate(str(demo_ckpts[0]), DATA, crop="10")
    with pytest.raises(UserError, match="does not exist"):
        ee.evaluate(str(tmp_path / "missing.pt"), DATA, out=tmp_path / "o")
    with pytest.raises(UserError, match="is not a preset"):
        ee.evaluate(str(demo_ckpts[0]), DATA, protocol="vgg150", out=tmp_path / "o")
    with pytest.raises(UserError, match="holds no summary.json"):
        ee.load_results(tmp_path)
    assert not (tmp_path / "o").exists()


def test_rows_of_an_unknown_section_and_to_frame_without_pandas(demo_ckpts, tmp_path):
    results = ee.evaluate(
        str(demo_ckpts[0]), DATA, config=QUICK, crops="1", limit=1, out=tmp_path / "r", progress=False
    )
    with pytest.raises(UserError, match="no section 'tabel'"):
        results.rows("tabel")
    try:
        import pandas  # noqa: F401
    except ImportError:
        with pytest.raises(UserError, match="pip install pandas"):
            results.to_frame()
    else:
        assert len(results.to_frame("members")) == 1


def test_help_documents_every_parameter_and_import_stays_light():
    import inspect
    import subprocess
    import sys

    doc = inspect.getdoc(ee.evaluate)
    for name in inspect.signature(ee.evaluate).parameters:
        assert re.search(rf"\b{name}\b", doc), name
    code = "import sys, ensemble_eval; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


@pytest.mark.parametrize("page,out", [(DOCS, "api"), (DOCS.parent.parent / "README.md", "py")])
def test_the_docs_examples_run(demo_ckpts, tmp_path, monkeypatch, capsys, page, out):
    """The Python blocks of docs/python-api.md and the README, as written, on the shipped
    samples/eval (the demo's ckpts/ made from the test fixtures, the run from another folder)."""
    block = re.search(r"```python\n(.*?)```", page.read_text(), re.S).group(1)
    (tmp_path / "ckpts").mkdir()
    for p in demo_ckpts:
        (tmp_path / "ckpts" / p.name).write_bytes(p.read_bytes())
    monkeypatch.chdir(tmp_path)
    assert '"samples/eval"' in block
    samples = DOCS.parent.parent / "samples" / "eval"
    exec(compile(block.replace('"samples/eval"', repr(str(samples))), str(page), "exec"), {})
    assert capsys.readouterr().out and (tmp_path / "runs" / out / "summary.json").is_file()


def test_every_summary_records_its_schema_and_environment_and_a_newer_schema_is_refused(demo_ckpts, tmp_path):
    from ensemble_eval.report import SCHEMA_VERSION

    results = ee.evaluate(
        str(demo_ckpts[0]), DATA, config=QUICK, crops="1", limit=1, out=tmp_path / "r", progress=False
    )
    env = results.summary["environment"]
    assert results.summary["schema_version"] == SCHEMA_VERSION
    assert env["packages"]["torch"] and env["packages"]["ensemble-eval"] and env["cpu"] and env["device"] == "cpu"
    record = dict(results.summary, schema_version=SCHEMA_VERSION + 1)
    (tmp_path / "r" / "summary.json").write_text(json.dumps(record))
    with pytest.raises(UserError, match="upgrade ensemble-eval"):
        ee.load_results(tmp_path / "r")
    old = {k: v for k, v in results.summary.items() if k not in ("schema_version", "environment")}
    (tmp_path / "r" / "summary.json").write_text(json.dumps(old))
    assert ee.load_results(tmp_path / "r").top1_err == results.top1_err  # a record from before the schema


def test_validate_from_python_is_the_commands_report(demo_ckpts, tmp_path, capsys):
    found = ee.validate([str(p) for p in demo_ckpts] + [str(tmp_path / "missing.pt")], DATA, limit=2, workers=0)
    assert not found.usable  # the missing file is an ERROR of its own, not an exception
    verdicts = [c["verdict"] for c in found.record["checkpoints"]]
    assert verdicts == ["OK", "OK", "ERROR"]
    assert all("quick" in c for c in found.record["checkpoints"][:2])
    assert main(["validate", *map(str, demo_ckpts), "--data", str(DATA), "--limit", "2", "--workers", "0"]) == 0
    assert found.render().splitlines()[2].split() == capsys.readouterr().out.splitlines()[2].split()  # same row
