"""The run record's schema, the output-file registry and the page generated from them."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from ensemble_eval import outputs, report, schema
from ensemble_eval.schema import ABSENT, SchemaError, Summary, csv_text

ROOT = Path(__file__).parent.parent


def test_docs_output_files_is_generated_from_the_registry_and_the_schema():
    page = (ROOT / "docs" / "output-files.md").read_text()
    assert schema.with_generated_doc(page) == page, "run: python scripts/output_files_doc.py"
    for f in outputs.OUTPUTS:
        assert f"**`{f.name}`**" in page


def test_the_csv_columns_are_the_ones_earlier_releases_wrote():
    err = ["top1_err", "top1_err_lo", "top1_err_hi", "top5_err", "top5_err_lo", "top5_err_hi", "top1_acc", "top5_acc"]
    p = ["p_top1_vs_fewer_crops", "p_top5_vs_fewer_crops", "p_top1_vs_best_member", "p_top5_vs_best_member"]
    real = ["real_num_images", "real_top1_err", "real_top1_err_lo", "real_top1_err_hi", "real_top5_err"]
    real += ["real_top5_err_lo", "real_top5_err_hi"]
    table = ["label", "models", "crops", "cost", *err, "delta_top5", *p]
    assert schema.TableCell.csv_columns([{"label": "x"}]) == table
    assert schema.TableCell.csv_columns([{"real_top1_err": 0.1}]) == table + real
    assert schema.MergeRow.csv_columns([]) == ["merge", "crops", "crop_set", "num_images", *err, "nll", "ece"]
    curve = ["models", "crops", "crop_set", "merge", "num_subsets", "all_subsets", "top1_err_mean", "top1_err_min"]
    curve += ["top1_err_max", "top5_err_mean", "top5_err_min", "top5_err_max"]
    assert schema.CurvePoint.csv_columns([]) == curve
    classes = ["index", "wnid", "name", "num_images", "top1_err", "top5_err", "top1_acc", "top5_acc"]
    assert schema.ClassRow.csv_columns([]) == classes


def test_a_renamed_key_is_an_error_not_an_empty_column():
    row = {"index": 0, "wnid": "n0", "name": "tench", "num_images": 2, "top1_err": 0.5, "top5_err": 0.0}
    text = csv_text("ClassRow", [row | {"top1_acc": 0.5, "top5_acc": 1.0}])
    assert list(csv.DictReader(io.StringIO(text))) == [
        {"index": "0", "wnid": "n0", "name": "tench", "num_images": "2", "top1_err": "0.5", "top5_err": "0.0"}
        | {"top1_acc": "0.5", "top5_acc": "1.0"}
    ]
    with pytest.raises(SchemaError, match="top1_accuracy"):
        csv_text("ClassRow", [row | {"top1_accuracy": 0.5}])
    with pytest.raises(SchemaError, match="num_imgs"):
        report.write_summary(Path("/nonexistent"), {"models": [], "num_imgs": 3})


def test_a_merge_row_keeps_its_p_values_against_the_reported_merge():
    row = {"merge": "max-crop", "crops": 10, "crop_set": "10", "p_top1_vs_mean-prob": 0.5, "p_top5_vs_mean-prob": 1.0}
    assert schema.MergeRow.from_dict(row, strict=True).to_dict() == row


def test_an_older_record_reads_as_it_is():
    old = {"models": [{"name": "a.pt", "errors": {"1": {"num_images": 3}}}], "num_images": 3, "from_the_future": 1}
    parsed = Summary.from_dict(old)
    assert parsed.schema_version is ABSENT and parsed.title is ABSENT  # absent stays absent, not null
    assert parsed.models[0].errors["1"].num_images == 3
    assert parsed.to_dict() == old
    with pytest.raises(SchemaError):
        Summary.from_dict(old, strict=True)


def test_every_derived_output_has_its_renderer_and_names_are_unique():
    assert len(set(outputs.OUTPUT_FILES)) == len(outputs.OUTPUT_FILES)
    assert outputs.OUTPUT_FILES[0] == "summary.json"  # removed first: no result outlives its run
    for f in outputs.DERIVED:
        assert callable(getattr(report, f.render))
    for f in outputs.OUTPUTS:
        assert f.schema is None or f.schema in schema.RECORDS
