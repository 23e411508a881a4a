"""`ensemble-eval report` (and api.report): a finished run's tables, tests, curves and
per-class errors rebuilt from its run directory, without the models.

Without a member subset (or another curve sample) the numbers come from predictions.npz and
equal the run's exactly; a subset is rebuilt from logits.npz's float16 group statistics, and
the rows the run also computed exactly are compared with it (near-ties may turn).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import UserError


@dataclass(frozen=True)
class Request:
    """What to rebuild: the run directory and the report's choices (None: the run's own)."""

    run_dir: Path
    out: Path | None = None  # None: RUN_DIR/report
    members: list[str] | None = None  # indices (0 = first) or file names
    merge: str | None = None
    crops: str | None = None
    real_labels: str | None = None
    curve_samples: int | None = None
    seed: int | None = None
    overwrite: bool = False

    @property
    def target(self) -> Path:
        return Path(self.out) if self.out else Path(self.run_dir) / "report"

    @property
    def resampled(self) -> bool:
        """Whether the curve is drawn again (another sample size or seed): from logits.npz."""
        return bool(self.curve_samples) or self.seed is not None


@dataclass
class Rebuilt:
    """What a rebuild wrote: the directory, its record (summary.json), the files, where the
    numbers came from, and how many top-1 predictions differ from the run's exact ones."""

    out: Path
    record: dict[str, Any]
    written: list[str]
    source: str
    differing: int | None = None

    def headline(self) -> str:
        line = f"rebuilt from {Path(self.record['run_dir']) / self.source.split()[0]}"
        if self.differing is not None:
            line += f"; {self.differing} top-1 predictions differ from the run's (float16 near-ties)"
        return line


def rebuild(request: Request) -> Rebuilt:
    """Check the target, pick the records, analyse them, write the files (the run's own never)."""
    from .report import read_summary
    from .rundir import check_report_out

    run, out = Path(request.run_dir), request.target
    summary = read_summary(run)
    try:
        same = out.resolve() == run.resolve()
    except OSError:
        same = False
    if same:
        raise UserError(f"--out {out} is the run directory itself; the run's files are kept, choose another --out")
    check_report_out(out, request.overwrite)
    records, ids, source, differing = _records(request, summary)
    record = _analysed(request, summary, records, ids)
    record["rebuilt_from"] = source
    record["run_dir"] = str(run)
    if differing is not None:
        record["top1_predictions_differing_from_run"] = differing
    return Rebuilt(out, record, _write(out, record, summary, request.overwrite), source, differing)


def _records(request: Request, summary: dict):
    """(records, member ids, source, differing): predictions.npz's records with the asked merge
    first, or a subset's rebuilt from logits.npz (and its difference from the exact rows)."""
    from .analysis import records_from_logits
    from .config import DEFAULT_CURVE_SAMPLES, DEFAULT_SEED
    from .outputs import LOGITS, PREDICTIONS
    from .records import load_records

    records = load_records(Path(request.run_dir))
    ids = pick_members(request.members, records.member_names)
    merge = request.merge or records.merges[0]
    crops = _crop_set(request, summary, records.set_names)
    everyone = list(range(len(records.member_names)))
    if ids == everyone and not request.resampled:
        return records.with_merge_first(merge), ids, PREDICTIONS.name, None
    merges = [merge] + [m for m in records.merges if m != merge]
    exact = records.with_merge_first(merge)
    curve = request.curve_samples or DEFAULT_CURVE_SAMPLES
    seed = DEFAULT_SEED if request.seed is None else request.seed
    rebuilt = records_from_logits(Path(request.run_dir), ids, merges, curve, seed, crops)
    differing = None
    if len(ids) == 1 or ids == everyone:  # a row the run also computed exactly
        row = ids[0] if len(ids) == 1 else len(everyone)
        differing = int((rebuilt.top5[:, -1, :, 0, 0] != exact.top5[:, row, :, 0, 0]).sum())
    return rebuilt, ids, f"{LOGITS.name} (float16 group statistics)", differing


def _crop_set(request: Request, summary: dict, set_names: list[str]) -> str:
    crops = request.crops or summary.get("crops", set_names[0])
    if crops not in set_names:
        raise UserError(f"--crops {crops}: the run computed the crop sets {set_names}; choose one of them")
    return crops


def _analysed(request: Request, summary: dict, records, ids: list[int]) -> dict:
    """The analysis of `records` merged into the run's record, for the members `ids`."""
    from .analysis import analyze, read_real_labels
    from .listing import IMAGENET_CLASSES
    from .report import with_analysis

    crops = _crop_set(request, summary, records.set_names)
    num_classes = summary.get("num_classes", IMAGENET_CLASSES)
    real = read_real_labels(request.real_labels, num_classes) if request.real_labels else None
    nesting = _compared_with(summary, records.set_names)
    layout = summary.get("data_layout")
    analysis = analyze(
        records, crops, num_classes, "table" in summary, real, request.real_labels or "", nesting, layout
    )
    record = with_analysis(summary | {"crops": crops}, analysis, ids)
    record["num_crops"] = records.crops_per_set[crops]
    return record


def _write(out: Path, record: dict, summary: dict, overwrite: bool) -> list[str]:
    """The report's files into `out` (claimed as a report's; summary.json among them); their names."""
    from .outputs import OUTPUT_FILES, SUMMARY
    from .report import analysis_files, clear_outputs, write_summary
    from .rundir import claim, record_files
    from .schema import SCHEMA_VERSION

    claim(out, "report")
    clear_outputs(out, unchanged_only=not overwrite)  # a stale curve.png of an earlier report goes too
    written = [SUMMARY.name] + analysis_files(out, record)
    current = summary.get("schema_version") == SCHEMA_VERSION  # an older record's own keys are carried
    write_summary(out, record, strict=current)
    record_files(out, "report", written, forget=list(OUTPUT_FILES))
    return written


def pick_members(wanted: list[str] | None, names: list[str]) -> list[int]:
    """Member ids from indices or file names (all members when none are given)."""
    if not wanted:
        return list(range(len(names)))
    ids = []
    for w in wanted:
        if w.isdigit() and int(w) < len(names):
            ids.append(int(w))
        elif w in names:
            ids.append(names.index(w))
        else:
            raise UserError(
                f"--members {w}: no such member; the run's members are "
                + ", ".join(f"{i} ({n})" for i, n in enumerate(names))
            )
    if len(set(ids)) != len(ids):
        raise UserError("--members names a member twice; list each once")
    return ids


def _compared_with(summary: dict, set_names: list[str]) -> dict | None:
    """The run's nesting of crop sets (crops.nested_under) from its recorded protocol; None when
    the record's protocol cannot be read (then each set is compared with the next smaller one)."""
    from .crops import CropScheme, SchemeError, nested_under

    try:
        return nested_under(CropScheme.from_dict(summary.get("protocol")), list(set_names))
    except (SchemeError, TypeError, ValueError):
        return None
