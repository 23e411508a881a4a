"""`ensemble-eval compare` (and api.compare_runs): one ensemble's Table 3 on several evaluation
sets side by side, for "does test-time augmentation help under distribution shift".

Each run directory's summary.json is read with report.read_summary (a missing, damaged or
newer-schema record is one line); its `table` cells are the rows, or, for a run without
--table, its reported setting alone. A row is a Setting: the members setting ("best member" or
"all members") at one crop set, matched across runs by the crop set's name and crop count,
never by the cell's label (the best member is chosen by each run on its own images, so
"best member (a.pt)" on one data set may be "best member (b.pt)" on another). Every number
shown is the run's own, checked first: an error must be a finite fraction inside its interval
and agree with the recorded integer hits, else the run is refused as damaged. The members of
the runs must be the same files (sha256 or published name, format, architecture, input
convention), unless allowed.

Written with --out (outputs.COMPARE_OUTPUTS) into a directory rundir marks "compare": a new or
empty one, or one a comparison wrote, replacing only its own unchanged files.

Standard library only (matplotlib for compare.png, when it is installed).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .crops import set_label
from .errors import UserError, printable, short_repr

METRICS = ("top1", "top5")
METRIC_WORDS = {"top1": "top-1", "top5": "top-5"}
GROUPS = {"best": "best member", "all": "all members"}  # Table 3's order: the best member's rows first
MISSING = "—"
MAX_NAME = 64
ROUNDING = 1e-9  # the float slack of the checks: a Wilson interval of 0 errors may start at 1e-17
# the settings of a run that change its numbers without changing its members: a difference is a note
SETTINGS_THAT_MATTER = ("protocol", "merge", "views", "resize_backend", "precision", "num_classes")
CSV_COLUMNS = (
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
)
CSV_DOC = {
    "setting": "the row: `best member, 10 crops`, `all members, 144 crops`, ...",
    "members": "members in the cell (1 for the best member)",
    "crops": "crops of the crop set",
    "crop_set": "the crop set's name",
    "dataset": "the column's name (NAME=, or the run's --data folder)",
    "run_dir": "the run directory",
    "images": "images evaluated",
    "top1_err": "top-1 error (fraction; empty: the run lacks the setting)",
    "top1_err_lo": "its 95% Wilson interval, low end",
    "top1_err_hi": "high end",
    "top5_err": "top-5 error",
    "top5_err_lo": "its interval, low end",
    "top5_err_hi": "high end",
    "mce": "mean corruption error of the setting (fraction; only when a run has a `corruptions` section)",
    "relative_mce": "relative mCE of the setting against the clean column's top-1 error (fraction; with --clean)",
}


class CompareError(UserError):
    """A comparison that cannot be made as asked (names, members, --metric); the message says why."""


@dataclass(frozen=True)
class Setting:
    """A row: the best member or all members at one crop set."""

    group: str  # "best" or "all"
    crop_set: str
    crops: int

    @property
    def label(self) -> str:
        return f"{GROUPS[self.group]}, {set_label(self.crop_set, self.crops)} crop{'' if self.crops == 1 else 's'}"


@dataclass(frozen=True)
class Cell:
    """One run's numbers for one setting: errors per metric as (error, low, high) fractions, or
    None when the run evaluated no image."""

    models: int
    num_images: int
    errors: dict[str, tuple[float, float, float] | None]
    member: str | None = None  # the best member's name (a "best" row)


@dataclass
class Column:
    """One data set: a finished run directory and its cells."""

    name: str
    run_dir: Path
    summary: dict
    cells: dict[Setting, Cell]
    headline_only: bool  # the run had no --table: its reported setting is its one row
    mce: dict[Setting, float] = field(default_factory=dict)
    corruption_errors: dict[Setting, dict[str, dict[int, float]]] = field(default_factory=dict)
    relative_mce: dict[Setting, float] = field(default_factory=dict)

    @property
    def member_names(self) -> list[str]:
        return [printable(m["name"]) for m in self.summary["models"]]


@dataclass(frozen=True)
class Request:
    """What to compare: (name or None, run directory) per data set, and the choices."""

    runs: list[tuple[str | None, Path]]
    out: Path | None = None
    metric: str = "top1"
    allow_different_members: bool = False
    overwrite: bool = False
    clean: str | None = None  # the column of clean ImageNet val: relative mCE of the ImageNet-C columns


@dataclass
class Comparison:
    """The table (settings x columns), the notes under it, and what --out received."""

    columns: list[Column]
    settings: list[Setting]
    metric: str
    notes: list[str]
    out: Path | None = None
    written: list[str] = field(default_factory=list)
    plot_missing: bool = False  # --out given, matplotlib not installed
    clean_name: str | None = None  # the column whose errors are the clean ones (relative mCE)

    def cell(self, setting: Setting, column: Column) -> Cell | None:
        return column.cells.get(setting)

    def title(self) -> str:
        merge = self.columns[0].summary.get("merge")
        merged = f", merge {printable(merge)}" if isinstance(merge, str) else ""
        return (
            f"{METRIC_WORDS[self.metric]} error % [95% Wilson interval]{merged}: the Table 3 settings (rows) "
            f"on {len(self.columns)} evaluation set(s) (columns)"
        )

    def table(self) -> tuple[list[str], list[list[str]]]:
        header = ["Setting"] + [c.name for c in self.columns]
        rows = [[s.label] + [_cell_text(c.cells.get(s), self.metric) for c in self.columns] for s in self.settings]
        return header, rows

    def mce_table(self, relative: bool = False) -> tuple[list[str], list[list[str]]] | None:
        """mCE (or relative mCE) per setting of the ImageNet-C columns, or None when there is none."""
        columns = [c for c in self.columns if (c.relative_mce if relative else c.mce)]
        if not columns:
            return None
        header = ["Setting"] + [c.name for c in columns]
        of = (lambda c: c.relative_mce) if relative else (lambda c: c.mce)
        rows = [
            [s.label] + [f"{100 * of(c)[s]:.2f}" if s in of(c) else MISSING for c in columns] for s in self.settings
        ]
        return header, rows

    def render(self, markdown: bool = False) -> str:
        """The table and its notes, as text (the command's output) or Markdown (compare.md)."""
        from .report import format_markdown_table, format_text_table

        if markdown:
            fmt = lambda h, r: format_markdown_table(_md(h), [_md(x) for x in r])  # noqa: E731
        else:
            fmt = format_text_table
        head = "## " if markdown else ""
        parts = [f"{head}{self.title()}", fmt(*self.table())]
        mce = self.mce_table()
        if mce is not None:
            parts += [f"{head}mCE % (ImageNet-C: corruption errors relative to AlexNet's = 100)", fmt(*mce)]
        relative = self.mce_table(relative=True)
        if relative is not None:
            parts += [
                f"{head}relative mCE % (ImageNet-C: the rise over the clean error of column "
                f"{self.clean_name}, relative to AlexNet's rise = 100)",
                fmt(*relative),
            ]
        notes = self.notes if not markdown else [f"- {_md([n])[0]}" for n in self.notes]
        parts.append("\n".join(notes))
        return "\n\n".join(p for p in parts if p) + "\n"

    def rows(self) -> list[dict]:
        """compare.csv's rows: one per setting and column (both metrics, fractions; a setting a
        run lacks has empty numbers)."""
        with_mce = any(c.mce for c in self.columns)
        with_relative = any(c.relative_mce for c in self.columns)
        out = []
        for s in self.settings:
            for c in self.columns:
                cell = c.cells.get(s)
                row = {"setting": s.label, "members": "", "crops": s.crops, "crop_set": s.crop_set}
                row |= {"dataset": c.name, "run_dir": printable(str(c.run_dir)), "images": ""}
                row |= {k: "" for k in CSV_COLUMNS[7:]}
                if cell is not None:
                    row |= {"members": cell.models, "images": cell.num_images}
                    for k in METRICS:
                        e = cell.errors[k]
                        if e is not None:
                            row |= dict(zip((f"{k}_err", f"{k}_err_lo", f"{k}_err_hi"), e))
                if with_mce:
                    row["mce"] = c.mce.get(s, "")
                if with_relative:
                    row["relative_mce"] = c.relative_mce.get(s, "")
                out.append(row)
        return out

    def csv_text(self) -> str:
        columns = list(CSV_COLUMNS) + (["mce"] if any(c.mce for c in self.columns) else [])
        columns += ["relative_mce"] if any(c.relative_mce for c in self.columns) else []
        buf = io.StringIO()
        writer = csv.DictWriter(buf, columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows())
        return buf.getvalue()

    def text(self) -> str:
        """What the command prints: the table, the notes, the files written."""
        text = self.render()
        if self.out is not None:
            text += f"wrote {', '.join(self.written)} to {printable(str(self.out))}\n"
        if self.plot_missing:
            text += "compare.png not drawn: matplotlib is not installed (pip install matplotlib, or the [plot] extra)\n"
        return text


def _cell_text(cell: Cell | None, metric: str) -> str:
    if cell is None:
        return MISSING
    e = cell.errors[metric]
    if e is None:
        return "no images"
    err, lo, hi = e
    return f"{100 * err:.2f} [{100 * lo:.2f}, {100 * hi:.2f}]"


def _md(cells: list[str]) -> list[str]:
    return [c.replace("|", "\\|") for c in cells]


# ---------------------------------------------------------------------------------------
# Names: NAME=RUN_DIR, or the run's --data folder


def parse_run(text: str | os.PathLike) -> tuple[str | None, Path]:
    """(NAME, RUN_DIR) of `NAME=RUN_DIR`, or (None, RUN_DIR). A path that exists as a whole is
    taken as a whole (a directory named `lr=0.1`); NAME holds no `/`."""
    text = os.fspath(text)
    if "=" in text and not os.path.lexists(text):
        name, path = text.split("=", 1)
        if "/" not in name:
            if not name:
                raise CompareError(
                    f"{printable(text)[:120]}: the name before = is empty; write NAME=RUN_DIR or RUN_DIR"
                )
            if not path:
                raise CompareError(f"{printable(text)[:120]}: no run directory after =; write NAME=RUN_DIR")
            return check_name(name), Path(path)
    return None, Path(text)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip() or not name.isprintable() or len(name) > MAX_NAME:
        raise CompareError(
            f"data set name {printable(str(name))[:80]!r} is not usable; a name is 1 to {MAX_NAME} printable "
            "characters (NAME=RUN_DIR)"
        )
    return name


def derived_name(summary: dict, run_dir: Path) -> str:
    """The basename of the run's --data folder (else of the run directory), printable, bounded."""
    data = summary.get("data")
    base = os.path.basename(os.path.normpath(data)) if isinstance(data, str) and data.strip() else ""
    if base in ("", ".", "..", "/"):
        base = os.path.basename(os.path.normpath(os.path.abspath(run_dir))) or "run"
    return printable(base)[:MAX_NAME]


def _name_columns(runs: list[tuple[str | None, Path]], summaries: list[dict]) -> tuple[list[str], list[str]]:
    """The columns' names (explicit ones as given, each once; derived ones made unique with
    -2, -3, ...) and a note for each derived name that had to change."""
    given = [n for n, _ in runs if n is not None]
    for n, count in Counter(given).items():
        if count > 1:
            where = ", ".join(printable(str(p)) for name, p in runs if name == n)
            raise CompareError(f"the name {n!r} is given to {count} runs ({where}); name each data set once")
    taken, names, notes = set(given), [], []
    for (name, path), summary in zip(runs, summaries):
        if name is not None:
            names.append(name)
            continue
        base = derived_name(summary, path)
        unique, k = base, 2
        while unique in taken:
            unique, k = f"{base}-{k}", k + 1
        if unique != base:
            notes.append(f"{unique} is {printable(str(path))} (its --data folder, {base}, names another column)")
        taken.add(unique)
        names.append(unique)
    return names, notes


# ---------------------------------------------------------------------------------------
# Reading a run: its summary, its cells checked


def _damaged(path: Path, what: str, value: object) -> UserError:
    from .records import RunDirError

    return RunDirError(
        f"{printable(str(path))}: {what} is {short_repr(value)}; the file is damaged or was edited, evaluate again"
    )


def _is_int(x: object) -> bool:
    return type(x) is int


def _fraction(x: object) -> bool:
    return type(x) in (int, float) and math.isfinite(x) and 0 <= x <= 1


def _errors(path: Path, where: str, d: dict, n: int) -> dict[str, tuple[float, float, float] | None]:
    """(error, low, high) per metric of a recorded count of `n` images, checked: finite fractions,
    the error inside its interval and equal to the one its integer hits give."""
    out: dict[str, tuple[float, float, float] | None] = {}
    for k in METRICS:
        if n == 0:
            out[k] = None  # no images: no error exists (null in the record)
            continue
        err, ci, correct = d.get(f"{k}_err"), d.get(f"{k}_err_ci"), d.get(f"{k}_correct")
        if not _fraction(err):
            raise _damaged(path, f"{where}{k}_err", err)
        inside = isinstance(ci, list) and len(ci) == 2 and all(map(_fraction, ci))
        if not (inside and ci[0] - ROUNDING <= err <= ci[1] + ROUNDING):  # 0 of 10 wrong: low end 1e-17
            raise _damaged(path, f"{where}{k}_err_ci (against {k}_err {err!r})", ci)
        if correct is not None and not (
            _is_int(correct) and 0 <= correct <= n and abs((n - correct) / n - err) < ROUNDING
        ):
            raise _damaged(path, f"{where}{k}_correct (of {n} images, against {k}_err {err!r})", correct)
        out[k] = (float(err), float(ci[0]), float(ci[1]))
    return out


def _table_cells(path: Path, table: list) -> dict[Setting, Cell]:
    cells: dict[Setting, Cell] = {}
    for i, c in enumerate(table):
        where = f"table[{i}]."
        if not isinstance(c, dict):
            raise _damaged(path, f"table[{i}]", c)
        label, models, crops, n = c.get("label"), c.get("models"), c.get("crops"), c.get("num_images")
        crop_set = c.get("crop_set", str(crops))  # records from before crop_set: the count is the name
        for key, ok in (("models", _is_int(models) and models >= 1), ("crops", _is_int(crops) and crops >= 1)):
            if not ok:
                raise _damaged(path, where + key, c.get(key))
        if not _is_int(n) or n < 0:
            raise _damaged(path, where + "num_images", n)
        if not isinstance(crop_set, str):
            raise _damaged(path, where + "crop_set", crop_set)
        if label == "all members":
            group, member = "all", None
        elif isinstance(label, str) and label.startswith("best member (") and label.endswith(")") and models == 1:
            group, member = "best", label[len("best member (") : -1]
        else:
            raise _damaged(path, where + "label", label)
        setting = Setting(group, crop_set, crops)
        if setting in cells:
            raise _damaged(path, where + "crop_set (a second cell of the same setting)", crop_set)
        cells[setting] = Cell(models, n, _errors(path, where, c, n), member)
    return cells


def _headline_cell(path: Path, summary: dict) -> dict[Setting, Cell]:
    """A run without --table: its reported setting (all members, or its one member) as its one row."""
    crop_set, crops, n = summary.get("crops"), summary.get("num_crops"), summary.get("num_images")
    if not isinstance(crop_set, str):
        raise _damaged(path, "crops", crop_set)
    if not _is_int(crops) or crops < 1:
        raise _damaged(path, "num_crops", crops)
    if not _is_int(n) or n < 0:
        raise _damaged(path, "num_images", n)
    models = summary["models"]
    group = "all" if len(models) > 1 else "best"
    member = models[0]["name"] if len(models) == 1 else None
    return {Setting(group, crop_set, crops): Cell(len(models), n, _errors(path, "", summary, n), member)}


def corruption_errors_of(path: Path, summary: dict) -> dict[Setting, dict[str, dict[int, float]]]:
    """ImageNet-C: each setting's top-1 error per corruption and severity, from the run's
    `corruptions` section (analysis.corruption_section); {} without one. A section that does
    not hold together is refused as damaged, never guessed."""
    section = summary.get("corruptions")
    if section is None:
        return {}
    settings = section.get("settings") if isinstance(section, dict) else None
    if not isinstance(settings, list):
        raise _damaged(path, "corruptions.settings", settings)
    out: dict[Setting, dict[str, dict[int, float]]] = {}
    for i, c in enumerate(settings):
        where = f"corruptions.settings[{i}]"
        if not isinstance(c, dict) or not isinstance(c.get("errors"), dict):
            raise _damaged(path, where, c)
        keys = ("label", "models", "crops", "crop_set")
        (setting,) = _table_cells(path, [{k: c.get(k) for k in keys} | {"num_images": 0}])
        errors: dict[str, dict[int, float]] = {}
        for name, by_severity in c["errors"].items():
            if not isinstance(by_severity, dict):
                raise _damaged(path, f"{where}.errors.{printable(str(name))[:40]}", by_severity)
            for severity, cell in by_severity.items():
                value = cell.get("top1_err") if isinstance(cell, dict) else None
                if not (isinstance(severity, str) and severity.isdigit() and _fraction(value)):
                    raise _damaged(path, f"{where}.errors.{printable(str(name))[:40]}.{severity}", value)
                errors.setdefault(name, {})[int(severity)] = float(value)
        out[setting] = errors
    return out


def read_column(run_dir: Path) -> tuple[dict, dict[Setting, Cell], bool, dict[Setting, dict]]:
    """(summary, cells, headline_only, ImageNet-C errors per setting) of a finished run
    directory; RunDirError (one line) for a path that is not one: missing, not a directory, a
    run in progress, a damaged or newer-schema summary.json, a cell whose numbers do not hold
    together."""
    from .records import RunDirError
    from .report import read_summary
    from .rundir import PROGRESS_DIR

    shown = printable(str(run_dir))
    if not run_dir.exists():
        raise RunDirError(f"{shown} does not exist; pass the --out directory of a finished run")
    if not run_dir.is_dir():
        raise RunDirError(f"{shown} is not a directory; pass the --out directory of a finished run")
    if not os.path.lexists(run_dir / "summary.json") and os.path.lexists(run_dir / PROGRESS_DIR / "manifest.json"):
        raise RunDirError(
            f"{shown} holds a run in progress (no summary.json yet); let it finish, or finish it with "
            "--resume, then compare"
        )
    summary = read_summary(run_dir)
    if not summary["models"]:
        raise _damaged(run_dir / "summary.json", "models", summary["models"])
    table = summary.get("table")
    if table is not None and not isinstance(table, list):
        raise _damaged(run_dir / "summary.json", "table", table)
    if table:
        cells, headline_only = _table_cells(run_dir / "summary.json", table), False
    else:
        cells, headline_only = _headline_cell(run_dir / "summary.json", summary), True
    return summary, cells, headline_only, corruption_errors_of(run_dir / "summary.json", summary)


# ---------------------------------------------------------------------------------------
# Members and settings across runs


def member_identities(summary: dict) -> list[tuple[str, ...]]:
    """What makes a member the same member: its file's sha256 (its name for published weights
    recorded without one), format, architecture and input convention (where it came from aside)."""
    ids = []
    for m in summary["models"]:
        convention = m.get("input") if isinstance(m.get("input"), dict) else {}
        convention = {k: v for k, v in convention.items() if k != "source"}
        key = m.get("sha256") or m["name"]
        ids.append((str(key), str(m.get("format")), str(m.get("arch")), json.dumps(convention, sort_keys=True)))
    return ids


def member_difference(first: Column, other: Column) -> str | None:
    """One line on how `other`'s members differ from `first`'s, or None when they are the same."""
    a, b = Counter(member_identities(first.summary)), Counter(member_identities(other.summary))
    if a == b:
        return None

    def names(column: Column, extra: Counter) -> list[str]:
        """The names of `column`'s members whose identities are in `extra` (as many as it counts)."""
        left, found = Counter(extra), []
        for identity, name in zip(member_identities(column.summary), column.member_names):
            if left[identity] > 0:
                left[identity] -= 1
                found.append(name)
        return found

    only_other, only_first = names(other, b - a), names(first, a - b)
    if only_other and sorted(only_other) == sorted(only_first):
        return (
            f"{other.name}'s {', '.join(only_other)} is not {first.name}'s (another file, format, architecture "
            "or input convention)"
        )
    return f"{other.name} has {', '.join(only_other) or 'no other member'} where {first.name} has " + (
        ", ".join(only_first) or "no other member"
    )


def _settings(columns: list[Column]) -> list[Setting]:
    """Every row of any run: the best member's rows first, then all members', each in the runs'
    crop-set order (the first run that has a setting places it)."""
    seen = list(dict.fromkeys(s for c in columns for s in c.cells))
    return sorted(seen, key=lambda s: list(GROUPS).index(s.group))


def _notes(columns: list[Column], settings: list[Setting], naming: list[str], differing: list[str]) -> list[str]:
    notes = []
    images = []
    for c in columns:
        n = next(iter(c.cells.values())).num_images
        skipped = c.summary.get("num_skipped")
        images.append(f"{c.name} {n}" + (f" ({skipped} skipped)" if _is_int(skipped) and skipped > 0 else ""))
    notes.append("images: " + ", ".join(images))
    first = columns[0]
    if not differing:
        notes.append(f"members: {', '.join(first.member_names)} (the same in every run)")
    else:
        notes.append("members differ (--allow-different-members): " + "; ".join(differing))
    best = [(c.name, cell.member) for c in columns for s, cell in c.cells.items() if s.group == "best" and cell.member]
    if best:
        chosen = list(dict.fromkeys(best))
        notes.append(
            "best member (lowest top-1 error at the run's fewest crops, chosen on each data set's own images): "
            + ", ".join(f"{name} {printable(member)}" for name, member in chosen)
        )
    lacking = []
    for c in columns:
        missing = [s.label for s in settings if s not in c.cells]
        if missing:
            why = " (run without --table: its reported setting only)" if c.headline_only else ""
            lacking.append(f"{c.name} lacks {'; '.join(missing)}{why}")
    if lacking:
        notes.append(f"missing ({MISSING}): " + " | ".join(lacking))
    changed = []
    for c in columns[1:]:
        keys = [k for k in SETTINGS_THAT_MATTER if c.summary.get(k) != first.summary.get(k)]
        if keys:
            changed.append(f"{c.name} ({', '.join(keys)})")
    if changed:
        notes.append(f"settings that change the numbers differ from {first.name}'s: " + ", ".join(changed))
    if naming:
        notes.append("names: " + "; ".join(naming))
    return notes


# ---------------------------------------------------------------------------------------
# The comparison


def compare(request: Request) -> Comparison:
    """Read and check every run, build the table and its notes, write --out's files (if asked)."""
    from .records import RunDirError

    if request.metric not in METRICS:
        raise CompareError(f"--metric {printable(str(request.metric))[:40]}: choose one of {', '.join(METRICS)}")
    if not request.runs:
        raise CompareError("no run directories given; pass at least one [NAME=]RUN_DIR")
    seen: dict[str, Path] = {}
    for _, path in request.runs:
        if "\x00" in str(path):  # from Python only: no file name holds one
            raise CompareError(f"{printable(str(path))[:120]} is not a usable path (a NUL character)")
        real = os.path.realpath(path)
        if real in seen:
            also = "" if str(seen[real]) == str(path) else f" (also as {printable(str(seen[real]))})"
            raise CompareError(f"{printable(str(path))} is given twice{also}; give each run once")
        seen[real] = path
    read = []
    for _, path in request.runs:
        try:
            read.append(read_column(Path(path)))
        except OSError as exc:  # a permission or a name problem no check foresaw: the path, in one line
            raise RunDirError(f"{printable(str(path))} cannot be read ({exc.strerror or exc})") from None

    names, naming = _name_columns(request.runs, [r[0] for r in read])
    columns = [
        Column(name, Path(path), summary, cells, headline, corruption_errors=corrupted)
        for name, (_, path), (summary, cells, headline, corrupted) in zip(names, request.runs, read)
    ]
    clean = _corruption_scores(columns, request.clean)
    differing = []
    for c in columns[1:]:
        diff = member_difference(columns[0], c)
        if diff and not request.allow_different_members:
            raise CompareError(
                f"{diff}: {printable(str(c.run_dir))} evaluated other members than "
                f"{printable(str(columns[0].run_dir))}; compare runs of the same members, or pass "
                "--allow-different-members"
            )
        if diff:
            differing.append(diff)
    settings = _settings(columns)
    comparison = Comparison(columns, settings, request.metric, _notes(columns, settings, naming, differing))
    comparison.clean_name = clean
    if request.out is not None:
        _write(comparison, Path(request.out), request.overwrite)
    return comparison


def _corruption_scores(columns: list[Column], clean: str | None) -> str | None:
    """Each ImageNet-C column's mCE per setting, and its relative mCE against the clean column's
    top-1 error of the same setting: the column named `clean`, else one named `val` (the name of
    the column used, or None)."""
    from .benchmarks import corruption_errors

    by_name = {c.name: c for c in columns}
    if clean is not None and clean not in by_name:
        raise CompareError(
            f"--clean {printable(clean)[:40]}: no column has that name; the columns: {', '.join(by_name)}"
        )
    if clean is None and "val" in by_name and not by_name["val"].corruption_errors:
        clean = "val"
    reference = by_name.get(clean) if clean is not None else None
    if reference is not None and reference.corruption_errors:
        raise CompareError(f"--clean {printable(clean)[:40]} is an ImageNet-C run; name the clean ImageNet val run")
    for column in columns:
        for setting, errors in column.corruption_errors.items():
            cell = reference.cells.get(setting) if reference is not None else None
            clean_error = cell.errors["top1"][0] if cell is not None and cell.errors["top1"] is not None else None
            scores = corruption_errors(errors, clean_error)
            if scores["mce"] is not None:
                column.mce[setting] = scores["mce"]
            if scores.get("relative_mce") is not None:
                column.relative_mce[setting] = scores["relative_mce"]
    return clean if reference is not None else None


def _write(comparison: Comparison, out: Path, overwrite: bool) -> None:
    """compare.md, compare.csv and compare.png (when matplotlib is installed) into `out`, a
    directory checked (rundir.check_compare_out) and marked as a comparison's."""
    from .fileio import atomic_write_bytes, atomic_write_text
    from .outputs import COMPARE_CSV, COMPARE_FILES, COMPARE_MD, COMPARE_PNG
    from .rundir import check_compare_out, claim, record_files, remove_own

    check_compare_out(out, overwrite, COMPARE_FILES)
    claim(out, "compare")
    remove_own(out, COMPARE_FILES, unchanged_only=not overwrite)  # no stale plot beside new numbers
    atomic_write_text(out / COMPARE_MD.name, comparison.render(markdown=True))
    atomic_write_text(out / COMPARE_CSV.name, comparison.csv_text())
    written = [COMPARE_MD.name, COMPARE_CSV.name]
    png = plot_png(comparison)
    if png is not None:
        atomic_write_bytes(out / COMPARE_PNG.name, png)
        written.append(COMPARE_PNG.name)
    record_files(out, "compare", written, forget=list(COMPARE_FILES))
    comparison.out, comparison.written, comparison.plot_missing = out, written, png is None


def plot_png(comparison: Comparison) -> bytes | None:
    """compare.png: the chosen metric's error against crops, one panel per data set, one line per
    members setting, the 95% intervals as bars. None when matplotlib is not installed."""
    from .report import figure_png, pyplot

    plt = pyplot()
    if plt is None:
        return None
    metric = comparison.metric
    n = len(comparison.columns)
    across = min(n, 4)
    down = math.ceil(n / across)
    fig, axes = plt.subplots(down, across, figsize=(3.4 * across, 3.0 * down), sharey=True, squeeze=False)
    handles = {}  # one legend for every panel (the first may lack a line)
    for ax, column in zip(axes.flat, comparison.columns):
        crops = sorted({s.crops for s in column.cells})
        log = bool(crops) and crops[-1] >= 10 * crops[0]
        for g, (group, word) in enumerate(GROUPS.items()):
            points = sorted(
                (s.crops, cell.errors[metric])
                for s, cell in column.cells.items()
                if s.group == group and cell.errors[metric] is not None
            )
            if not points:
                continue
            shift = 0.04 * (g - 0.5)  # the two lines side by side, so their bars do not hide each other
            x = [k * (1 + shift) if log else k + shift * max(1, crops[-1] - crops[0]) for k, _ in points]
            y = [100 * e[0] for _, e in points]
            below = [100 * (e[0] - e[1]) for _, e in points]
            above = [100 * (e[2] - e[0]) for _, e in points]
            handles[word] = ax.errorbar(x, y, yerr=[below, above], marker="o", capsize=3, label=word, color=f"C{g}")
        if log:
            ax.set_xscale("log")
            ax.minorticks_off()
        ax.set_xticks(crops)
        ax.set_xticklabels([str(k) for k in crops])
        ax.set_title(column.name.replace("$", r"\$"), fontsize=9)  # a name is text, never mathtext
        ax.set_xlabel("crops")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for row in axes:
        row[0].set_ylabel(f"{METRIC_WORDS[metric]} error (%)")
    if handles:
        axes[0][0].legend(list(handles.values()), list(handles), fontsize=8)
    fig.suptitle(f"{METRIC_WORDS[metric]} error vs crops per evaluation set (bars: 95% Wilson intervals)", fontsize=9)
    return figure_png(fig, 110)


def request_from(
    runs: list[str | os.PathLike] | Mapping[str, str | os.PathLike],
    out: str | os.PathLike | None,
    metric: str,
    allow_different_members: bool,
    overwrite: bool,
    clean: str | None = None,
) -> Request:
    """A Request from the API's or the command line's runs: `[NAME=]RUN_DIR` strings or paths,
    or a mapping of names to run directories."""
    if isinstance(runs, (str, os.PathLike)):
        runs = [runs]
    if isinstance(runs, Mapping):
        parsed = [(check_name(str(name)), Path(path)) for name, path in runs.items()]
    else:
        parsed = [parse_run(r) if isinstance(r, str) else (None, Path(r)) for r in runs]
    return Request(parsed, Path(out) if out is not None else None, metric, allow_different_members, overwrite, clean)


# ---------------------------------------------------------------------------------------
# docs/output-files.md: the comparison's part

DOC_BEGIN = "<!-- begin generated: compare (python scripts/output_files_doc.py, from outputs.py, comparison.py) -->"
DOC_END = "<!-- end generated: compare -->"


def files_doc() -> str:
    from .outputs import COMPARE_OUTPUTS

    lines = [DOC_BEGIN, "", "All in `ensemble-eval compare`'s `--out`:", ""]
    for f in COMPARE_OUTPUTS:
        lines.append(f"- **`{f.name}`** ({f.when}; written by: {f.writer}): {f.doc}")
    lines += ["", "| `compare.csv` column | What it is |", "|---|---|"]
    lines += [f"| `{c}` | {CSV_DOC[c]} |" for c in [*CSV_COLUMNS, "mce", "relative_mce"]]
    return "\n".join(lines + ["", DOC_END])


def with_generated_doc(page: str) -> str:
    """`page` (docs/output-files.md) with the comparison's generated part replaced by files_doc()."""
    start, end = page.index(DOC_BEGIN), page.index(DOC_END) + len(DOC_END)
    return page[:start] + files_doc() + page[end:]
