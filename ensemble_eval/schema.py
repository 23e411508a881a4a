"""The run record (summary.json), one versioned schema: its parts as records with to_dict/from_dict.

Each record type lists its fields once (Field: name, type, what it is, whether it is a CSV
column); from that list come the dataclass, summary.json (written through Summary.to_dict), the
CSV columns of table.csv, merges.csv, curve.csv and per_class.csv (csv_text), and the field
tables of docs/output-files.md (output_files_doc). A key the code writes but the schema does not
know is an error when the record is written (SchemaError), so a renamed key cannot silently
empty a column.

Reading: from_dict keeps what a record holds and no more (a key absent from an older record
stays absent, so rendering can tell "not recorded" from null), and keeps keys it does not know
aside (`extra`) when reading leniently. SCHEMA_VERSION is the version written; records of
version 1 and records without a version (earlier releases) are read; newer ones are refused by
report.read_summary in one line.

Standard library only.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field, make_dataclass
from typing import Any, ClassVar

SCHEMA_VERSION = 1  # of summary.json; runs written before it have none (read as they are)


class SchemaError(Exception):
    """A record the code built does not match the schema (a bug, not a user error)."""


class _Absent:
    """A field the record does not hold (absent from the JSON, not null)."""

    def __repr__(self) -> str:
        return "ABSENT"

    def __bool__(self) -> bool:
        return False


ABSENT: Any = _Absent()
REAL = "with --real-labels"


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # as the docs show it: "int", "float", "[low, high]", "list of TableCell", ...
    doc: str
    csv: bool = False  # a column of the record's CSV file (an interval: two columns, `_lo` and `_hi`)
    of: str | None = None  # a nested record type: the value is one, a list of them or a dict of them
    when: str = ""  # when the field is present, if not always ("with --table", ...)
    column_when_present: bool = False  # a CSV column only when the first row has a field of this kind (ReaL)


class Record:
    """Base of every record type; subclasses are made by record_type."""

    FIELDS: ClassVar[tuple[Field, ...]] = ()
    DOC: ClassVar[str] = ""
    extra: dict  # keys the schema does not name (pattern fields such as p_top1_vs_<merge>; unknown keys read leniently)

    @classmethod
    def from_dict(cls, data: dict, strict: bool = False) -> Record:
        """The record `data` holds; `strict`: a key the schema does not know is a SchemaError."""
        if not isinstance(data, dict):
            raise SchemaError(f"{cls.__name__}: not a mapping: {type(data).__name__}")
        known = {f.name: f for f in cls.FIELDS if "<" not in f.name}
        patterns = tuple(f.name.split("<")[0] for f in cls.FIELDS if "<" in f.name)  # p_top1_vs_<merge>
        unknown = [k for k in data if k not in known and not (patterns and k.startswith(patterns))]
        if strict and unknown:
            raise SchemaError(f"{cls.__name__} has no field {unknown[0]!r}; declare it in schema.py")
        values = {name: _parse(f, data[name], strict) for name, f in known.items() if name in data}
        return cls(**values, extra={k: v for k, v in data.items() if k not in known})

    def to_dict(self) -> dict:
        """The JSON-ready mapping: the fields the record holds, in schema order, then `extra`."""
        held = [f.name for f in self.FIELDS if "<" not in f.name and getattr(self, f.name) is not ABSENT]
        return {name: _plain(getattr(self, name)) for name in held} | self.extra

    @classmethod
    def csv_columns(cls, rows: list[dict]) -> list[str]:
        """The CSV columns: the csv fields in order, an interval `x_ci` as `x_lo`, `x_hi`; the
        column_when_present fields only when the first row has one of them."""
        columns = []
        optional = {f.name for f in cls.FIELDS if f.column_when_present}
        with_optional = bool(rows and optional & set(rows[0]))
        for f in cls.FIELDS:
            if not f.csv or (f.column_when_present and not with_optional):
                continue
            columns += [f.name[:-3] + "_lo", f.name[:-3] + "_hi"] if f.name.endswith("_ci") else [f.name]
        return columns


RECORDS: dict[str, type[Record]] = {}


def _parse(f: Field, value: Any, strict: bool) -> Any:
    if f.of is None or value is None:
        return value
    cls = RECORDS[f.of]
    if f.type.startswith("list") and isinstance(value, list):
        return [cls.from_dict(v, strict) for v in value]
    if f.type.startswith("dict") and isinstance(value, dict):
        return {k: cls.from_dict(v, strict) for k, v in value.items()}
    return cls.from_dict(value, strict)


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def record_type(name: str, doc: str, fields: list[Field]) -> type[Record]:
    """A dataclass of `fields` (each defaulting to ABSENT), registered under `name`."""
    names = [f.name for f in fields]
    assert len(set(names)) == len(names), f"{name}: a field named twice"
    spec = [(f.name, Any, field(default=ABSENT)) for f in fields if "<" not in f.name]
    spec.append(("extra", dict, field(default_factory=dict, repr=False)))
    cls = make_dataclass(name, spec, bases=(Record,), kw_only=True, namespace={"FIELDS": tuple(fields), "DOC": doc})
    cls.__module__ = __name__
    RECORDS[name] = cls
    return cls


def csv_text(record: str, rows: list[dict]) -> str:
    """CSV of `rows` (each a `record` as a dict) with the columns the schema gives; a key the
    schema does not know raises SchemaError."""
    cls = RECORDS[record]
    columns = cls.csv_columns(rows)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        flat = cls.from_dict(row, strict=True).to_dict()
        for key in [k for k in flat if k.endswith("_ci")]:
            flat[key[:-3] + "_lo"], flat[key[:-3] + "_hi"] = flat.pop(key)
        writer.writerow({c: flat[c] for c in columns if c in flat})
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------
# The parts


def errors(prefix: str = "", csv: bool = True, images_csv: bool = False) -> list[Field]:
    """The errors of one count of images (metrics.Counts.to_dict), every field named prefix + name."""
    of = " against the ReaL labels" if prefix else ""
    spec = [
        ("num_images", "int", "images counted", images_csv),
        ("top1_correct", "int", f"top-1 hits{of} (the errors are computed from these integers)", False),
        ("top5_correct", "int", f"top-5 hits{of}", False),
        ("top1_err", "float", f"top-1 error{of} (fraction)", csv),
        ("top1_err_ci", "[low, high]", "its 95% Wilson interval (null: no images)", csv),
        ("top5_err", "float", f"top-5 error{of} (fraction)", csv),
        ("top5_err_ci", "[low, high]", "its 95% Wilson interval", csv),
        ("top1_acc", "float", "top-1 accuracy (fraction, 1 - top1_err)", csv and not prefix),
        ("top5_acc", "float", "top-5 accuracy", csv and not prefix),
    ]
    when = REAL if prefix else ""
    return [Field(prefix + n, t, d, c, when=when, column_when_present=bool(prefix)) for n, t, d, c in spec]


def _p(versus: str, what: str) -> list[Field]:
    return [
        Field(
            f"p_{k}_vs_{versus}",
            "float",
            f"exact McNemar p of the {k.replace('top', 'top-')} hits {what}",
            csv,
            when=what,
        )
        for k in ("top1", "top5")
    ]


def real_errors(csv: bool = True) -> list[Field]:
    """The errors against the ReaL labels (--real-labels), of the images that have them."""
    images = Field("real_num_images", "int", "images with ReaL labels", csv, when=REAL, column_when_present=True)
    return [images, *(f for f in errors("real_", csv) if f.name != "real_num_images")]


Errors = record_type(
    "Errors", "Errors of one count of images, with 95% Wilson intervals.", [*errors(), *real_errors(csv=False)]
)

TableCell = record_type(
    "TableCell",
    "One cell of Table 3: the best member or all members at one crop set (summary `table`, table.csv).",
    [
        Field("label", "str", "the row: `best member (NAME)` or `all members`", True),
        Field("models", "int", "members in the row", True),
        Field("crops", "int", "crops of the crop set", True),
        Field("crop_set", "str", "the crop set's name"),
        Field("cost", "int", "models x crops", True),
        *errors(),
        Field("delta_top5", "float", "top-5 error minus the best member's at the fewest crops (fraction)", True),
        *_p("fewer_crops", "against the largest crop set nested in this one"),
        *_p("best_member", "of all members against the best member"),
        *real_errors(),
    ],
)

MergeRow = record_type(
    "MergeRow",
    "One merge mode at one crop set, all members (summary `merges`, merges.csv; with --compare-merges).",
    [
        Field("merge", "str", "the merge mode", True),
        Field("crops", "int", "crops of the crop set", True),
        Field("crop_set", "str", "the crop set's name", True),
        *errors(images_csv=True),
        Field("nll", "float", "negative log-likelihood of the true class", True),
        Field("ece", "float", "expected calibration error (fraction)", True),
        Field("p_top1_vs_<merge>", "float", "exact McNemar p of the top-1 hits against the reported merge mode"),
        Field("p_top5_vs_<merge>", "float", "likewise, top-5 (both absent for the reported merge mode itself)"),
    ],
)

CurvePoint = record_type(
    "CurvePoint",
    "Error of k-member ensembles at one crop set and merge mode (summary `curve`, curve.csv; 2+ members).",
    [
        Field("models", "int", "k, the members in each subset", True),
        Field("crops", "int", "crops of the crop set", True),
        Field("crop_set", "str", "the crop set's name", True),
        Field("merge", "str", "the merge mode", True),
        Field("num_subsets", "int", "member subsets of size k evaluated", True),
        Field("all_subsets", "bool", "true: every subset of size k; false: a sample (--curve-samples)", True),
        *[
            Field(f"{k}_err_{s}", "float", f"{s} {k.replace('top', 'top-')} error over the subsets (fraction)", True)
            for k in ("top1", "top5")
            for s in ("mean", "min", "max")
        ],
    ],
)

ClassRow = record_type(
    "ClassRow",
    "The ensemble's errors on one class at the reported crop set (summary `per_class`, per_class.csv).",
    [
        Field("index", "int", "class index", True),
        Field("wnid", "str", "WordNet id (empty for a class list other than ImageNet's)", True),
        Field("name", "str", "class name", True),
        Field("num_images", "int", "images of the class", True),
        Field("top1_err", "float", "top-1 error (fraction)", True),
        Field("top5_err", "float", "top-5 error (fraction)", True),
        Field("top1_acc", "float", "top-1 accuracy (fraction)", True),
        Field("top5_acc", "float", "top-5 accuracy (fraction)", True),
    ],
)

PairedTest = record_type(
    "PairedTest",
    "An exact McNemar test between two settings on the same images (summary `paired_tests`).",
    [
        Field("comparison", "str", "what is compared: `A vs B`"),
        Field("metric", "str", "`top1` or `top5`"),
        Field("num_images", "int", "images compared"),
        Field("a_only_correct", "int", "images A gets right and B wrong"),
        Field("b_only_correct", "int", "images B gets right and A wrong"),
        Field("p_value", "float", "two-sided exact p"),
    ],
)

CropSetErrors = record_type(
    "CropSetErrors",
    "All members at one crop set (summary `crop_sets`, by name).",
    [
        *errors(csv=False),
        *real_errors(csv=False),
        Field("num_crops", "int", "crops of the set"),
        Field("nll", "float", "negative log-likelihood of the true class"),
        Field("ece", "float", "expected calibration error (fraction)"),
    ],
)

MemberRecord = record_type(
    "MemberRecord",
    "One member of the ensemble (summary `models`).",
    [
        Field("name", "str", "the file's name (or its torchvision:/timm: name)"),
        Field("path", "str", "as given"),
        Field("sha256", "str", "of the file"),
        Field("arch", "str", "architecture"),
        Field("num_classes", "int", "classes it outputs"),
        Field("aux_heads", "bool", "auxiliary heads present (ignored at evaluation)"),
        Field("format", "str", "how it was stored"),
        Field("input", "object", "its input convention: mean, std, color, input_scale, class_offset, ..."),
        Field(
            "view",
            "object",
            "its eval view: crop_size, resize_size, interpolation, antialias, source, the scales of its copy of "
            "the protocol, the resize backend, views_per_image, pixels_per_image (null for whole-image views)",
        ),
        Field("errors", "dict of Errors", "its own errors per crop set", of="Errors"),
    ],
)

Environment = record_type(
    "Environment",
    "What the numbers were computed with (summary `environment`; no host name).",
    [
        Field(
            "packages",
            "object",
            "versions of ensemble-eval, torch (with its build), torchvision, numpy, pillow, "
            "safetensors, timm (null: not installed)",
        ),
        Field("python", "str", "Python version"),
        Field("platform", "str", "operating system"),
        Field("cuda", "str", "CUDA torch was built with (null: none)"),
        Field("cudnn", "int", "cuDNN torch was built with"),
        Field("cpu", "str", "CPU model"),
        Field("cpu_cores", "int", "CPU cores"),
        Field("torch_threads", "int", "torch's CPU threads"),
        Field("device", "str", "the device evaluated on"),
        Field("gpu", "str", "the GPU's name (null on CPU)"),
    ],
)

PerClass = record_type(
    "PerClass",
    "Per-class errors of all members at the reported crop set (summary `per_class`).",
    [
        Field("crop_set", "str", "the crop set"),
        Field("classes", "list of ClassRow", "every class that has images", of="ClassRow"),
        Field("worst", "list of ClassRow", "the five classes of highest top-1 error", of="ClassRow"),
        Field("best", "list of ClassRow", "the five of lowest (none also in `worst`)", of="ClassRow"),
    ],
)

Calibration = record_type(
    "Calibration",
    "Calibration of the reported setting (summary `calibration`).",
    [
        Field("crop_set", "str", "the crop set"),
        Field("nll", "float", "negative log-likelihood of the true class"),
        Field("ece", "float", "expected calibration error (fraction)"),
        Field("ece_bins", "int", "confidence bins of the ECE"),
    ],
)

Skipped = record_type(
    "Skipped",
    "An image that was not evaluated (summary `skipped`, `data_listing.problems`).",
    [Field("path", "str", "relative to --data"), Field("reason", "str", "why")],
)

CorruptionSetting = record_type(
    "CorruptionSetting",
    "One setting (members x crops) on ImageNet-C (summary `corruptions.settings`).",
    [
        Field("label", "str", "`best member (NAME)` or `all members`"),
        Field("models", "int", "members in the setting"),
        Field("crops", "int", "crops of the crop set"),
        Field("crop_set", "str", "the crop set"),
        Field("errors", "object", "{corruption: {severity: Errors}}: every corruption and severity evaluated"),
        Field("mean_error", "object", "{corruption: top-1 error averaged over its severities}"),
        Field("ce", "object", "{corruption: corruption error, against AlexNet's} for the 15 corruptions of the mCE"),
        Field("mce", "float", "mean corruption error over those present (AlexNet = 1; null: none present)"),
        Field("corruptions_in_mce", "int", "how many of the 15 were present"),
        Field("complete", "bool", "all 15 corruptions at all 5 severities: comparable to published mCE"),
    ],
)

Corruptions = record_type(
    "Corruptions",
    "ImageNet-C, evaluated in one run from its tree <corruption>/<severity>/<wnid>/ (summary `corruptions`).",
    [
        Field("corruptions", "list of str", "in the paper's order, then the extra ones, then others"),
        Field("severities", "list of int", "the severities present"),
        Field("complete_severities", "bool", "severities 1-5 all present"),
        Field("baseline", "str", "where AlexNet's errors come from"),
        Field("settings", "list of CorruptionSetting", "per setting", of="CorruptionSetting"),
    ],
)

CorruptionRow = record_type(
    "CorruptionRow",
    "One setting at one corruption and severity (corruptions.csv).",
    [
        Field("label", "str", "the setting's row", True),
        Field("models", "int", "members", True),
        Field("crops", "int", "crops", True),
        Field("corruption", "str", "the corruption", True),
        Field("severity", "int", "1-5", True),
        *errors(),
        Field("ce", "float", "the corruption's CE (the same on each of its rows; empty outside the 15)", True),
    ],
)

RUN, REPORT, TABLE = "", "in a report's record", "with --table"

Summary = record_type(
    "Summary",
    "summary.json: one record of the run. Errors are fractions; the reported setting is all members, "
    "the `crops` crop set, the `merge` merge mode. A value that does not exist (an interval of no "
    "images, a rate of no time) is null.",
    [
        Field(
            "schema_version",
            "int",
            f"{SCHEMA_VERSION}; records from before it have none and are read as they "
            "are; a newer one is refused by `report` in one line",
        ),
        Field("version", "str", "of ensemble-eval"),
        Field("environment", "Environment", "what the numbers were computed with", of="Environment"),
        Field("num_skipped", "int", "undecodable images"),
        Field("skipped", "list of Skipped", "those images, each with the reason", of="Skipped"),
        Field("num_classes", "int", "classes the members output"),
        Field("crops", "str", "the reported crop set's name"),
        Field("num_crops", "int", "its crops"),
        Field("num_models", "int", "members"),
        Field("models", "list of MemberRecord", "each member", of="MemberRecord"),
        Field(
            "title",
            "str",
            'the paper and table the protocol reproduces, from its preset ("Table 3" for the '
            "built-in protocol; null for one's own; absent in records from before titles)",
        ),
        Field("views", "str", "`native` or `protocol`"),
        Field("resize_backend", "str", "`tensor` or `pil`"),
        Field("device", "str", "the device evaluated on"),
        Field("batch_size", "int", "crops per forward pass"),
        Field(
            "batch_size_choice",
            "object",
            "how it was chosen: `batch_size`, `source` (given, timed, cache, "
            "default or resumed), `crops_per_s`, `tried` (crops x members per second at each size timed), `note`",
        ),
        Field("compile", "bool", "torch.compile"),
        Field("channels_last", "bool", "channels-last memory format"),
        Field("precision", "str", "fp32, bf16 or fp16"),
        Field("merges_computed", "list of str", "the merge modes computed"),
        Field("save_logits", "bool", "logits.npz written"),
        Field("seconds", "float", "evaluation time (every session of a resumed run)"),
        Field("resumed", "bool", "the run was resumed"),
        Field("sessions", "int", "sessions of the run"),
        Field("world_size", "int", "processes (torchrun)"),
        Field("images_per_second", "float", "over `seconds`"),
        Field("crops_per_image", "int", "views per image"),
        Field("crop_evals_per_second", "float", "images x views x members per second"),
        Field("data", "str", "--data"),
        Field("labels", "str", "--labels"),
        Field("real_labels", "str", "--real-labels"),
        Field("limit", "int", "--limit"),
        Field("protocol", "object", "the whole crop scheme"),
        Field("command", "list of str", "the command line"),
        Field("created_utc", "str", "when the record was written"),
        Field("num_images", "int", "images evaluated"),
        Field("top1_err", "float", "top-1 error of the reported setting (fraction)"),
        Field("top5_err", "float", "top-5 error of the reported setting"),
        Field("top1_err_ci", "[low, high]", "its 95% Wilson interval"),
        Field("top5_err_ci", "[low, high]", "its 95% Wilson interval"),
        Field("top1_correct", "int", "top-1 hits (the errors are computed from these integers)"),
        Field("top5_correct", "int", "top-5 hits"),
        Field("merge", "str", "the reported merge mode"),
        Field("crop_sets", "dict of CropSetErrors", "all members at every crop set computed", of="CropSetErrors"),
        Field("confidence_level", "float", "of the intervals (0.95)"),
        Field("interval", "str", "`wilson`"),
        Field("best_member", "str", "the member of lowest top-1 error at the fewest crops"),
        Field("paired_tests", "list of PairedTest", "exact McNemar tests", of="PairedTest"),
        Field("curve", "list of CurvePoint", "the ensemble-size curve (2+ members)", of="CurvePoint"),
        Field("merges", "list of MergeRow", "the merge modes side by side (with --compare-merges)", of="MergeRow"),
        Field("per_class", "PerClass", "per-class errors", of="PerClass"),
        Field("calibration", "Calibration", "calibration of the reported setting", of="Calibration"),
        Field("table", "list of TableCell", "the Table 3 cells, best member first", of="TableCell", when=TABLE),
        Field("real", "object", "`file`, `num_images` (with labels), `num_without_labels`", when=REAL),
        Field(
            "data_listing",
            "object",
            "what under --data was not evaluated: `problems` (`[{path, reason}]`, "
            "entries that could not be listed or read), `ignored` (counts of files that are not images, by "
            "extension, and of hidden entries)",
            when="in a run's record",
        ),
        Field(
            "data_layout",
            "str",
            "what --data was recognised as: `wnid folders`, `index folders`, "
            "`ImageNet-C tree`, `folder with a labels file`, `Parquet shards`, `tar shards`",
            when="in records since data layouts",
        ),
        Field(
            "class_subset",
            "object",
            "the classes the prediction was restricted to: `name` (ImageNet-A, ImageNet-R or the "
            "--class-subset file), `num_classes`, `indices`",
            when="when restricted",
        ),
        Field(
            "corruptions",
            "Corruptions",
            "ImageNet-C errors, CE and mCE",
            of="Corruptions",
            when="with an ImageNet-C tree",
        ),
        Field("rebuilt_from", "str", "`predictions.npz` or `logits.npz (float16 group statistics)`", when=REPORT),
        Field("run_dir", "str", "the run the report was made from", when=REPORT),
        Field(
            "top1_predictions_differing_from_run",
            "int",
            "top-1 predictions of the rebuilt records that differ from the run's (float16 near-ties)",
            when="in a report rebuilt from logits.npz",
        ),
    ],
)


# ---------------------------------------------------------------------------------------------
# docs/output-files.md

DOC_BEGIN = "<!-- begin generated: python scripts/output_files_doc.py (from outputs.py, schema.py, records.py) -->"
DOC_END = "<!-- end generated -->"


def _field_table(cls: type[Record]) -> list[str]:
    lines = [f"#### {cls.__name__}", "", cls.DOC, "", "| Field | Type | What it is |", "|---|---|---|"]
    for f in cls.FIELDS:
        what = f.doc + (f" ({f.when})" if f.when else "") + ("; a CSV column" if f.csv else "")
        lines.append(f"| `{f.name}` | {f.type} | {what} |")
    return lines + [""]


def output_files_doc() -> str:
    """The generated part of docs/output-files.md: every output file (outputs.OUTPUTS), the arrays
    of predictions.npz (records.PREDICTIONS_ARRAYS) and a field table per record type."""
    from .outputs import OUTPUTS
    from .records import PREDICTIONS_ARRAYS

    lines = [DOC_BEGIN, "", "All in `--out`:", ""]
    for f in OUTPUTS:
        fields = f" Fields: {f.schema}, below." if f.schema else ""
        lines.append(f"- **`{f.name}`** ({f.when}; written by: {f.writer}): {f.doc}{fields}")
    lines += ["", "### predictions.npz", "", "| Array | Type | What it is |", "|---|---|---|"]
    lines += [f"| `{name}` | {kind} | {doc} |" for name, kind, doc in PREDICTIONS_ARRAYS]
    lines += ["", f"### summary.json (schema_version {SCHEMA_VERSION}) and the CSV files", ""]
    lines += ["An interval `x_ci` is two CSV columns, `x_lo` and `x_hi`.", ""]
    for f in OUTPUTS:
        if f.schema and f.name.endswith(".csv"):
            every = [{field.name: None for field in RECORDS[f.schema].FIELDS}]
            columns = ", ".join(f"`{c}`" for c in RECORDS[f.schema].csv_columns(every))
            lines.append(
                f"- `{f.name}` columns ({f.schema}): {columns} (ReaL columns with `--real-labels`)"
                if f.schema == "TableCell"
                else f"- `{f.name}` columns ({f.schema}): {columns}"
            )
    lines.append("")
    order = [Summary, *(c for c in RECORDS.values() if c not in (Summary, Errors)), Errors]
    for cls in order:
        lines += _field_table(cls)
    return "\n".join(lines + [DOC_END])


def with_generated_doc(page: str) -> str:
    """`page` (docs/output-files.md) with its generated part replaced by output_files_doc()."""
    start, end = page.index(DOC_BEGIN), page.index(DOC_END) + len(DOC_END)
    return page[:start] + output_files_doc() + page[end:]
