"""The files a run, a report or a comparison writes into its --out: one definition each.

Every file the tool may write, replace or remove in a directory it owns is named here, once
(a run's and a report's in OUTPUTS, a comparison's in COMPARE_OUTPUTS):
its name, who writes it, when, its line in docs/output-files.md, and for the files derived
from the run record the function of report.py that renders it (None: not applicable to this
record). The writers (engine._finish, rebuild._write, report.analysis_files), the run
directory's bookkeeping (rundir.remove_own / check_report_out, runstate: which files a run owns
and may replace) and the docs all read this registry. Adding an output file is one entry here
(and its renderer) plus its test.

Standard library only: the CLI checks its --out before importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class OutputFile:
    name: str
    writer: str  # who writes it: "run" (the evaluation), "run, report" (both, from the run record)
    when: str  # when it is written ("always", "with --table", ...)
    doc: str  # what it holds, for docs/output-files.md (Markdown, one paragraph)
    render: str | None = None  # report.<render>(record) -> str, bytes or None; None here: written by `writer`
    schema: str | None = None  # the schema.py record its rows or fields are (docs: field table)


SUMMARY = OutputFile(
    "summary.json",
    "run, report",
    "always",
    "the run record: every number of the run with its metadata (fields below). Written last: a run "
    "is finished once it exists. A `report` writes the same record with `rebuilt_from` and `run_dir`.",
    schema="Summary",
)
PREDICTIONS = OutputFile(
    "predictions.npz",
    "run",
    "always",
    "(`numpy.load`) the per-image arrays every number is computed from (records.py; arrays below). "
    "Skipped images are left out. Written by streaming, so memory does not grow with N.",
)
LOGITS = OutputFile(
    "logits.npz",
    "run",
    "with `--save-logits`",
    "`paths`, `targets`, `member_names`, `set_names`, `crops_per_set`, `merges`, `group_sizes` `[G]`, "
    "`set_groups` (bool `[S, G]`: crop set s is the union of the groups it marks), and float16 "
    "`[N, M, G, num_classes]` arrays `prob_mean`, `logit_mean`, `logprob_mean`, `prob_max` (those "
    "the merge modes need), from which `report --members` rebuilds any subset of members. With a "
    "class subset (`--class-subset`), `classes` (int64 `[C']`) names the statistics' columns, the "
    "canonical indices of the classes the prediction was restricted to.",
)
TABLE_MD = OutputFile(
    "table.md",
    "run, report",
    "with `--table`",
    "the whole report in Markdown: table, paired tests, every member, merge modes, curve, per "
    "class, calibration (errors in %).",
    render="table_md",
)
TABLE_CSV = OutputFile(
    "table.csv",
    "run, report",
    "with `--table`",
    "the Table 3 cells with intervals (`*_lo`, `*_hi`), accuracies and p-values; errors are fractions.",
    render="table_csv_file",
    schema="TableCell",
)
CURVE_CSV = OutputFile(
    "curve.csv",
    "run, report",
    "with 2+ members",
    "error against the number of members (mean, min and max over member subsets).",
    render="curve_csv",
    schema="CurvePoint",
)
CURVE_PNG = OutputFile(
    "curve.png",
    "run, report",
    "with 2+ members, when matplotlib is installed",
    "`curve.csv` as a plot.",
    render="curve_png",
)
MERGES_CSV = OutputFile(
    "merges.csv",
    "run, report",
    "with `--compare-merges`",
    "per merge mode and crop set, errors with intervals, accuracies, `nll`, `ece`.",
    render="merges_csv",
    schema="MergeRow",
)
PER_CLASS_CSV = OutputFile(
    "per_class.csv",
    "run, report",
    "when an image was evaluated",
    "the ensemble's errors at the reported crop set, for every class that has images.",
    render="per_class_csv",
    schema="ClassRow",
)
CORRUPTIONS_CSV = OutputFile(
    "corruptions.csv",
    "run, report",
    "with an ImageNet-C tree as --data",
    "per setting, corruption and severity: errors with intervals, and the corruption's CE against AlexNet.",
    render="corruptions_csv",
    schema="CorruptionRow",
)
CORRUPTIONS_PNG = OutputFile(
    "corruptions.png",
    "run, report",
    "with an ImageNet-C tree as --data, when matplotlib is installed",
    "top-1 error against severity, one line per corruption (all members at the most crops).",
    render="corruptions_png",
)

# summary.json first: removed first, so no result outlives its run; the derived files in the
# order a run lists them.
OUTPUTS: tuple[OutputFile, ...] = (
    SUMMARY,
    PREDICTIONS,
    LOGITS,
    TABLE_MD,
    TABLE_CSV,
    CURVE_CSV,
    CURVE_PNG,
    MERGES_CSV,
    PER_CLASS_CSV,
    CORRUPTIONS_CSV,
    CORRUPTIONS_PNG,
)
OUTPUT_FILES: tuple[str, ...] = tuple(f.name for f in OUTPUTS)  # every result file a run or report owns
DERIVED: tuple[OutputFile, ...] = tuple(f for f in OUTPUTS if f.render is not None)  # rendered from the record


# The files of `ensemble-eval compare --out DIR` (comparison.py writes them; a directory marked
# "compare" by rundir): not a run's files, so not in OUTPUTS.
COMPARE_MD = OutputFile(
    "compare.md",
    "compare",
    "with `--out`",
    "the comparison in Markdown: one row per Table 3 setting, one column per data set, each cell the "
    "error in % of the chosen `--metric` with its 95% Wilson interval, `—` where a run lacks the "
    "setting; then the lines naming images, missing settings, best members and differences between the runs.",
)
COMPARE_CSV = OutputFile(
    "compare.csv",
    "compare",
    "with `--out`",
    "one row per setting and data set, both metrics, errors as fractions (columns below); a setting "
    "a run lacks is a row with empty error columns.",
)
COMPARE_PNG = OutputFile(
    "compare.png",
    "compare",
    "with `--out`, when matplotlib is installed",
    "error (the chosen `--metric`, %) against crops, one panel per data set, one line per members "
    "setting, the 95% intervals as bars.",
)
COMPARE_OUTPUTS: tuple[OutputFile, ...] = (COMPARE_MD, COMPARE_CSV, COMPARE_PNG)
COMPARE_FILES: tuple[str, ...] = tuple(f.name for f in COMPARE_OUTPUTS)


def by_name(name: str) -> OutputFile:
    return next(f for f in OUTPUTS if f.name == name)
