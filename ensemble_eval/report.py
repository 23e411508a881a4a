"""The run record -> terminal table, Markdown, the CSV files and summary.json.

Errors are fractions in JSON and CSV, percentages in the tables people read. The record's
fields and the CSV columns are schema.py's; which files exist and which function here renders
each is outputs.py's; the per-image arrays are records.py's.
"""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

from .crops import set_label
from .errors import printable, short_repr
from .fileio import atomic_write_bytes, atomic_write_text, write_json
from .outputs import DERIVED, OUTPUT_FILES, SUMMARY
from .rundir import VALIDATE_TOOL
from .schema import ABSENT, SCHEMA_VERSION, Summary, TableCell, csv_text


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _pct_ci(err: float, ci: list[float]) -> str:
    """'31.25 (28.10-34.61)': a percentage with its 95% interval."""
    return f"{100 * err:.2f} ({100 * ci[0]:.2f}-{100 * ci[1]:.2f})"


def format_p(p: float | None) -> str:
    if p is None or p is ABSENT:  # ABSENT: a record's field for a comparison that does not exist
        return ""
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *map(line, rows)])


def format_markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def _table_section(record: dict) -> tuple[list[str], list[list[str]]]:
    cells = record["table"]
    real = "real" in record
    header = ["Members", "Models", "Crops", "Cost", "Top-1 err % (95% CI)", "Top-5 err % (95% CI)", "Δ top-5 (pts)"]
    header += ["p vs fewer crops", "p vs best member"]
    if real:
        header += ["ReaL top-1 err %", "ReaL top-5 err %"]
    rows = []
    for i, c in enumerate(TableCell.from_dict(c) for c in cells):  # the schema's fields (a renamed one fails)
        row = [
            c.label,
            str(c.models),
            set_label(c.crop_set, c.crops),
            str(c.cost),
            _pct_ci(c.top1_err, c.top1_err_ci),
            _pct_ci(c.top5_err, c.top5_err_ci),
            "base" if i == 0 else f"{100 * c.delta_top5:+.2f}",
            format_p(c.p_top5_vs_fewer_crops),
            format_p(c.p_top5_vs_best_member),
        ]
        if real:
            row += [_pct_ci(c.real_top1_err, c.real_top1_err_ci), _pct_ci(c.real_top5_err, c.real_top5_err_ci)]
        rows.append(row)
    return header, rows


def _member_section(record: dict) -> tuple[list[str], list[list[str]]]:
    sets = list(record["crop_sets"])
    crops = {s: record["crop_sets"][s]["num_crops"] for s in sets}
    header = ["Member"] + [f"{label} @{set_label(s, crops[s])}" for s in sets for label in ("top-1", "top-5")]
    rows = [
        [m["name"]] + [_pct(m["errors"][s][a]) for s in sets for a in ("top1_err", "top5_err")]
        for m in record["models"]
    ]
    views = [_view_cells(m.get("view")) for m in record["models"]]
    if all(views):  # runs since member views (older records, or damaged entries: no columns)
        header[1:1] = ["View (resize/crop)", "Pixels per view (224 px = 1)"]
        for row, cells in zip(rows, views):
            row[1:1] = cells
    return header, rows


def _table_title(record: dict) -> str:
    """The table's heading: the paper and table a preset reproduces (summary's `title`); GoogLeNet's
    Table 3 for records written before titles; a plain heading for one's own protocol."""
    if "title" not in record:
        return "Table 3 reproduction"  # written before titles: the built-in protocol's
    title = record["title"]
    if isinstance(title, str) and title:
        return f"{title[:120]} reproduction"
    return "Every crop set, best member and all members"  # one's own protocol


def _view_cells(view: object) -> list[str] | None:
    """A member's view as the members table shows it, or None when the record has no usable one."""
    if not isinstance(view, dict):
        return None
    resize, crop, interpolation = view.get("resize_size"), view.get("crop_size"), view.get("interpolation")
    if not all(type(v) is int and 0 < v <= 1 << 16 for v in (resize, crop)) or not isinstance(interpolation, str):
        return None
    return [f"{resize}/{crop} {interpolation[:16]}", f"{crop**2 / 224**2:.2f}"]


def _tests_section(record: dict) -> tuple[list[str], list[list[str]]]:
    header = ["Comparison (A vs B)", "Metric", "A only right", "B only right", "p"]
    rows = [
        [t["comparison"], t["metric"].replace("top", "top-"), str(t["a_only_correct"]), str(t["b_only_correct"])]
        + [format_p(t["p_value"])]
        for t in record["paired_tests"]
    ]
    return header, rows


def _curve_section(record: dict) -> tuple[list[str], list[list[str]]]:
    merge = record["merge"]
    points = [c for c in record["curve"] if c["merge"] == merge]
    sets = list(dict.fromkeys(c["crop_set"] for c in points))
    crops = {c["crop_set"]: c["crops"] for c in points}
    header = ["Models", "Subsets"] + [
        f"{label} @{set_label(s, crops[s])}" for s in sets for label in ("top-1", "top-5")
    ]
    rows = []
    for k in sorted({c["models"] for c in points}):
        at = {c["crop_set"]: c for c in points if c["models"] == k}
        first = at[sets[0]]
        subsets = str(first["num_subsets"]) + ("" if first["all_subsets"] else " (sample)")
        rows.append([str(k), subsets] + [_pct(at[s][f"{a}_err_mean"]) for s in sets for a in ("top1", "top5")])
    return header, rows


def _merges_section(record: dict) -> tuple[list[str], list[list[str]]]:
    first = record["merges"][0]["merge"]
    header = ["Merge", "Crops", "Top-1 err % (95% CI)", "Top-5 err % (95% CI)", "NLL", "ECE %"]
    header += [f"p top-1 vs {first}", f"p top-5 vs {first}"]
    rows = [
        [
            e["merge"],
            set_label(e["crop_set"], e["crops"]),
            _pct_ci(e["top1_err"], e["top1_err_ci"]),
            _pct_ci(e["top5_err"], e["top5_err_ci"]),
            f"{e['nll']:.3f}",
            f"{100 * e['ece']:.2f}",
            format_p(e.get(f"p_top1_vs_{first}")),
            format_p(e.get(f"p_top5_vs_{first}")),
        ]
        for e in record["merges"]
    ]
    return header, rows


def _class_lines(record: dict) -> list[str]:
    pc = record["per_class"]

    def line(e: dict) -> str:
        name = f"{e['wnid']} {e['name']}".strip()
        images = f"{e['num_images']} image" + ("s" if e["num_images"] != 1 else "")
        return f"  {name}: top-1 {_pct(e['top1_err'])}, top-5 {_pct(e['top5_err'])} ({images})"

    lowest = ["lowest top-1 error:"] + [line(e) for e in pc["best"]] if pc["best"] else []
    return ["highest top-1 error:"] + [line(e) for e in pc["worst"]] + lowest


def render_report(record: dict, markdown: bool = False) -> str:
    """The human-readable report of a run: Table 3, paired tests, members, merge modes,
    ensemble-size curve, per-class errors and calibration (each when it applies)."""
    fmt = format_markdown_table if markdown else format_text_table
    head = "## " if markdown else ""
    n = record["num_images"]
    m = record["num_models"]
    crops = record["crop_sets"][record["crops"]]["num_crops"]
    parts = []
    if record.get("table"):
        parts += [
            f"{head}{_table_title(record)}: {n} images, errors in % with 95% Wilson intervals, cost = models x crops",
            fmt(*_table_section(record)),
            "p: exact McNemar test (two-sided) of the top-5 hits against the row with fewer crops, and of all "
            "members against the best member at the same crops; the best member is the one with the lowest "
            "top-1 error at the fewest crops.",
        ]
    if record.get("corruptions"):
        parts += _corruption_parts(record["corruptions"], fmt, head)
    if record["paired_tests"]:
        parts += [f"{head}Paired tests: exact McNemar on the same {n} images", fmt(*_tests_section(record))]
    if record.get("table"):
        parts += [f"{head}Every member", fmt(*_member_section(record))]
    if record["merges"]:
        parts += [f"{head}Merge modes: all {m} member(s), {n} images", fmt(*_merges_section(record))]
    if record["curve"]:
        parts += [
            f"{head}Ensemble size: error vs number of members, mean over member subsets ({record['merge']})",
            fmt(*_curve_section(record)),
        ]
    if n:
        who = "all members" if m > 1 else "the model"
        cal = record["calibration"]
        lines = _class_lines(record)
        if markdown:
            lines = [f"- {x.strip()}" if x.startswith("  ") else f"\n{x}\n" for x in lines]
        parts += [
            f"{head}Per class: {who}, {crops} crop(s), classes with images",
            "\n".join(lines).strip(),
            f"{head}Calibration: NLL {cal['nll']:.3f}, ECE {_pct(cal['ece'])} ({cal['ece_bins']} bins), "
            f"{who}, {crops} crop(s), {record['merge']}",
        ]
    return "\n\n".join(parts) + "\n"


def table_csv(cells: list[dict]) -> str:
    """table.csv: the columns are schema.TableCell's."""
    return csv_text("TableCell", cells)


def read_summary(run_dir: Path) -> dict:
    """A finished run's summary.json, with the fields a report reads checked (RunDirError otherwise)."""
    from .fileio import read_regular_file
    from .records import RunDirError

    path = Path(run_dir) / SUMMARY.name
    try:
        record = json.loads(read_regular_file(path, 256 << 20))
    except FileNotFoundError:
        raise RunDirError(f"{run_dir} holds no summary.json; pass the --out directory of a finished run") from None
    except (OSError, ValueError, RecursionError) as exc:
        raise RunDirError(f"{path} cannot be read ({exc.__class__.__name__}); evaluate again") from exc
    problem = _summary_problem(record)
    if problem:
        raise RunDirError(f"{path} is not a summary ensemble-eval wrote ({problem}); evaluate again")
    return record


def _summary_problem(record: object) -> str | None:
    if not isinstance(record, dict):
        return "not a JSON object"
    schema = record.get("schema_version", SCHEMA_VERSION)  # absent: written before there was one
    if type(schema) is not int or schema > SCHEMA_VERSION:
        return (
            f"schema_version {short_repr(schema)}; this ensemble-eval reads {SCHEMA_VERSION} and older "
            "(a newer version wrote it: upgrade ensemble-eval)"
        )
    models = record.get("models")
    if not isinstance(models, list) or not all(isinstance(m, dict) and isinstance(m.get("name"), str) for m in models):
        return "models is not a list of members"
    n = record.get("num_classes", 1000)
    if type(n) is not int or n < 1:
        return f"num_classes is {short_repr(n)}, not a positive integer"
    for key in ("crops", "merge", "device"):
        if key in record and not isinstance(record[key], str):
            return f"{key} is {short_repr(record[key])}, not a string"
    for key in ("seconds", "num_skipped"):
        if record.get(key) is not None and (isinstance(record[key], bool) or not isinstance(record[key], (int, float))):
            return f"{key} is {short_repr(record[key])}, not a number"
    return None


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None when matplotlib is not installed (the plots
    are optional: the [plot] extra)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def figure_png(fig, dpi: int) -> bytes:
    """The figure as PNG bytes (laid out tight), then closed."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=dpi, format="png")
    plt.close(fig)
    return png.getvalue()


def _corruption_parts(section: dict, fmt, head: str) -> list[str]:
    """ImageNet-C: one line per setting (mCE), then the last setting's errors (all members at the
    most crops) per corruption and severity, with each corruption's mean and CE."""
    severities = section["severities"]
    lines = []
    for s in section["settings"]:
        mce = "-" if s["mce"] is None else _pct(s["mce"])
        lines.append(f"{s['label']}, {s['crops']} crop(s): mCE {mce} over {s['corruptions_in_mce']} corruption(s)")
    last = section["settings"][-1]
    if not last["complete"]:
        lines.append(
            f"partial: {len(section['corruptions'])} corruption(s) at severities "
            f"{', '.join(map(str, severities))}; published mCE figures use the 15 corruptions at severities 1-5, "
            "so these are not comparable to them"
        )
    header = ["Corruption", *[f"sev {v}" for v in severities], "mean", "CE"]
    rows = []
    for c in section["corruptions"]:
        cells = last["errors"][c]
        row = [c, *[_pct(cells[str(v)]["top1_err"]) if str(v) in cells else "-" for v in severities]]
        ce = last["ce"].get(c)
        rows.append(row + [_pct(last["mean_error"][c]), "-" if ce is None else _pct(ce)])
    title = (
        f"{head}ImageNet-C: top-1 error in %, {last['label']}, {last['crops']} crop(s); "
        "CE and mCE relative to AlexNet (= 100%)"
    )
    return [title, "\n".join(lines), fmt(header, rows)]


def corruption_rows(section: dict) -> list[dict]:
    """corruptions.csv: one row per setting, corruption and severity."""
    rows = []
    for s in section["settings"]:
        for c in section["corruptions"]:
            for severity, cell in s["errors"][c].items():
                rows.append(
                    {"label": s["label"], "models": s["models"], "crops": s["crops"], "corruption": c}
                    | {"severity": int(severity)}
                    | cell
                    | {"ce": s["ce"].get(c)}
                )
    return rows


def plot_corruptions(section: dict) -> bytes | None:
    """corruptions.png: top-1 error against severity, one line per corruption, for the last
    setting (all members at the most crops); None without matplotlib."""
    plt = pyplot()
    if plt is None:
        return None
    last = section["settings"][-1]
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for c in section["corruptions"]:
        cells = last["errors"][c]
        xs = sorted(int(v) for v in cells)
        ax.plot(xs, [100 * cells[str(v)]["top1_err"] for v in xs], marker="o", label=c)
    ax.set_xlabel("severity")
    ax.set_ylabel("top-1 error (%)")
    ax.set_xticks(section["severities"])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=6, ncol=2)
    mce = "" if last["mce"] is None else f", mCE {_pct(last['mce'])}"
    ax.set_title(f"ImageNet-C: {last['label']}, {last['crops']} crop(s){mce}", fontsize=9)
    return figure_png(fig, 120)


def plot_curve(curve: list[dict], merge: str) -> bytes | None:
    """curve.png: top-1 and top-5 error against the number of members, one line per crop set.

    None when matplotlib is not installed.
    """
    plt = pyplot()
    if plt is None:
        return None
    points = [c for c in curve if c["merge"] == merge]
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharex=True)
    for ax, metric in zip(axes, ("top1", "top5")):
        for s in dict.fromkeys(c["crop_set"] for c in points):
            line = [c for c in points if c["crop_set"] == s]
            k = [c["models"] for c in line]
            ax.plot(
                k,
                [100 * c[f"{metric}_err_mean"] for c in line],
                marker="o",
                label=set_label(s, line[0]["crops"]) + " crop" + ("s" if line[0]["crops"] != 1 else ""),
            )
            lo = [100 * c[f"{metric}_err_min"] for c in line]
            hi = [100 * c[f"{metric}_err_max"] for c in line]
            ax.fill_between(k, lo, hi, alpha=0.15)
        ax.set_xlabel("members in the ensemble")
        ax.set_ylabel(f"{'top-1' if metric == 'top1' else 'top-5'} error (%)")
        ax.set_xticks(sorted({c["models"] for c in points}))
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.suptitle(f"Error vs ensemble size ({merge}; line: mean over member subsets, band: min-max)", fontsize=9)
    return figure_png(fig, 120)


# The files rendered from a run record: outputs.DERIVED names each with its function here.


def table_md(record: dict) -> str | None:
    return render_report(record, markdown=True) if record.get("table") else None


def table_csv_file(record: dict) -> str | None:
    return table_csv(record["table"]) if record.get("table") else None


def curve_csv(record: dict) -> str | None:
    return csv_text("CurvePoint", record["curve"]) if record["curve"] else None


def curve_png(record: dict) -> bytes | None:
    return plot_curve(record["curve"], record["merge"]) if record["curve"] else None


def merges_csv(record: dict) -> str | None:
    return csv_text("MergeRow", record["merges"]) if record["merges"] else None


def per_class_csv(record: dict) -> str | None:
    return csv_text("ClassRow", record["per_class"]["classes"]) if record["num_images"] else None


def corruptions_csv(record: dict) -> str | None:
    return csv_text("CorruptionRow", corruption_rows(record["corruptions"])) if record.get("corruptions") else None


def corruptions_png(record: dict) -> bytes | None:
    return plot_corruptions(record["corruptions"]) if record.get("corruptions") else None


def analysis_files(out: Path, record: dict) -> list[str]:
    """Write the derived files of a report record into `out` (outputs.DERIVED); the names written."""
    written = []
    for output in DERIVED:
        content = globals()[output.render](record)
        if content is None:
            continue
        if isinstance(content, bytes):
            atomic_write_bytes(out / output.name, content)
        else:
            atomic_write_text(out / output.name, content)
        written.append(output.name)
    return written


def write_summary(out: Path, record: dict, strict: bool = True) -> None:
    """summary.json, through the schema: a key it does not know is a SchemaError (a bug), not a
    silently missing field. `strict=False` (a report of an earlier release's run): keys that
    record holds and this schema no longer names are carried as they are."""
    write_json(out / SUMMARY.name, Summary.from_dict(record, strict=strict).to_dict())


def summary_line(record: dict, seconds: float | None, device: str | None) -> str:
    n = record["num_images"]
    if n == 0:
        return "no image could be evaluated\n"
    lo1, hi1 = record["top1_err_ci"]
    lo5, hi5 = record["top5_err_ci"]
    timing = f" ({seconds:.1f} s on {device})" if seconds is not None else ""
    real = ""
    if "real" in record:
        c = record["crop_sets"][record["crops"]]
        real = (
            f"ReaL labels: top-1 error {_pct(c['real_top1_err'])}, top-5 error {_pct(c['real_top5_err'])} "
            f"on the {c['real_num_images']} images with labels\n"
        )
    return (
        f"{record['num_models']} model(s) x {record['num_crops']} crop(s) on {n} images: "
        f"top-1 error {_pct(record['top1_err'])}, top-5 error {_pct(record['top5_err'])}{timing}\n"
        f"95% intervals: top-1 {100 * lo1:.2f}-{100 * hi1:.2f}%, top-5 {100 * lo5:.2f}-{100 * hi5:.2f}% "
        f"(Wilson; merge {record['merge']})\n"
    ) + real


def with_analysis(record: dict, analysis: dict, member_ids: list[int] | None = None) -> dict:
    """A summary record's result fields replaced by those of `analysis` (see analysis.analyze),
    for the members `member_ids` of the record (default: all)."""
    counts = analysis["crop_sets"][analysis["crops"]]
    record = dict(record)
    record.update(
        {
            "num_images": counts["num_images"],
            "top1_err": counts["top1_err"],
            "top5_err": counts["top5_err"],
            "top1_err_ci": counts["top1_err_ci"],
            "top5_err_ci": counts["top5_err_ci"],
            "top1_correct": counts["top1_correct"],
            "top5_correct": counts["top5_correct"],
        }
    )
    for key in ("crops", "merge", "crop_sets", "confidence_level", "interval", "best_member", "paired_tests", "curve"):
        record[key] = analysis[key]
    record["merges"] = analysis["merges"]
    record["per_class"] = analysis["per_class"]
    record["calibration"] = analysis["calibration"]
    if analysis["table"] is not None:
        record["table"] = analysis["table"]
    else:
        record.pop("table", None)
    for key in ("real", "corruptions"):
        if key in analysis:
            record[key] = analysis[key]
        else:
            record.pop(key, None)
    ids = range(len(record["models"])) if member_ids is None else member_ids
    record["models"] = [record["models"][i] | {"errors": m["errors"]} for i, m in zip(ids, analysis["members"])]
    record["num_models"] = len(record["models"])
    return record


def summary_record(config, members, result, device, choice, geometries=None) -> dict:
    """The run's metadata for summary.json; the result fields come from with_analysis.
    `geometries` (views.Geometries): each member's view, scales and views' cost per image."""
    from . import __version__
    from .environment import environment

    views = geometries.to_dict() if geometries is not None else [None] * len(members)
    return {
        "schema_version": SCHEMA_VERSION,
        "version": __version__,
        "environment": environment(device),
        "num_skipped": len(result.skipped),
        "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
        "num_classes": members[0].num_classes,
        "crops": result.requested_set,
        "num_crops": result.crops_per_set[result.requested_set],
        "num_models": len(members),
        "models": [
            {
                "name": m.name,
                "path": m.path,
                "sha256": m.sha256,
                "arch": m.arch.name,
                "num_classes": m.num_classes,
                "aux_heads": m.arch.aux_heads,
                "format": m.fmt,
                "input": m.convention.to_dict(),
                "view": view and view | _view_cost(view, result.crops_per_image, config.protocol.uncropped()),
            }
            for m, view in zip(members, views)
        ],
        "title": config.table_title(),
        "views": config.views,
        "resize_backend": config.resize_backend,
        "device": str(device),
        "batch_size": choice.batch_size,
        "batch_size_choice": choice.to_dict(),
        "compile": config.compile,
        "channels_last": config.channels_last,
        "precision": config.precision,
        "merges_computed": list(result.merges),
        "save_logits": config.save_logits,
        "seconds": round(result.seconds, 3),
        "resumed": bool(result.resumed),
        "sessions": int(result.sessions),
        "world_size": int(result.world_size),
        "images_per_second": round(result.num_images / result.seconds, 3) if result.seconds else None,
        "crops_per_image": result.crops_per_image,
        "crop_evals_per_second": round(result.num_images * result.crops_per_image * len(members) / result.seconds, 3)
        if result.seconds
        else None,
        "data": str(config.data),
        "labels": config.labels,
        "real_labels": config.real_labels,
        "limit": config.limit,
        "protocol": config.protocol.to_dict(),
        "command": sys.argv,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _view_cost(view: dict, per_image: int, uncropped: bool) -> dict:
    """Views and pixels one image costs a member (None for uncropped views: their size is the image's)."""
    pixels = None if uncropped else per_image * view["crop_size"] ** 2
    return {"views_per_image": per_image, "pixels_per_image": pixels}


def clear_outputs(out: Path, unchanged_only: bool = False) -> None:
    """Remove an earlier run's result files: none may stay beside the new ones (`unchanged_only`:
    only those the directory's marker records as written by the tool and unchanged since)."""
    from .rundir import remove_own

    remove_own(out, OUTPUT_FILES, unchanged_only)


def run_text(record: dict, written: list[str], out: Path, seconds: float | None, device: str | None) -> str:
    """What the terminal shows after a run or a report."""
    text = render_report(record) + "\n" + summary_line(record, seconds, device)
    skipped = record.get("skipped", [])
    if skipped:
        text += f"skipped {len(skipped)} undecodable image(s), listed in summary.json (skipped):\n"
        text += "".join(f"  {s['path']}: {s['reason']}\n" for s in skipped[:10])
        if len(skipped) > 10:
            text += f"  ... and {len(skipped) - 10} more\n"
    text += f"wrote {', '.join(written)} to {out}\n"
    if "curve.csv" in written and "curve.png" not in written:
        text += "curve.png not drawn: matplotlib is not installed (pip install matplotlib, or the [plot] extra)\n"
    return text


def _short_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def render_validation(inspections, quick: dict[str, dict]) -> str:
    """One row per checkpoint, then each file's errors, warnings and notes."""
    header = ["File", "SHA256", "Format", "Arch", "Params", "Classes", "Aux", "Input", "Verdict"]
    published = quick and any(i.convention.published for i in inspections)
    if quick:
        header[-1:-1] = ["View", "Top-1 err (95% CI)", "Top-5 err (95% CI)"]
    if published:
        header[-1:-1] = ["Published top-1", "Published top-5"]
    rows = []
    for ins in inspections:
        row = [
            printable(ins.name),
            (ins.sha256 or "-")[:12],
            ins.format + (f" ({ins.weights})" if ins.weights else ""),
            ins.arch.name if ins.arch else "-",
            _short_params(ins.num_params),
            "-" if ins.num_classes is None else str(ins.num_classes),
            "-" if ins.arch is None else ("yes" if ins.arch.aux_heads else "no"),
            ins.convention.describe() if ins.arch else "-",
            ins.verdict,
        ]
        if quick:
            q = quick.get(ins.path)
            row[-1:-1] = (
                [
                    f"{q['view'][0]}/{q['view'][1]}"
                    + (
                        f" {q['view_detail']['interpolation']}" if q.get("view_detail", {}).get("interpolation") else ""
                    ),
                    *(_pct_ci(q[f"{k}_err"], q[f"{k}_err_ci"]) for k in ("top1", "top5")),
                ]
                if q
                else ["-", "-", "-"]
            )
        if published:
            pub = ins.convention.published
            row[-1:-1] = [_pct(pub[0]), _pct(pub[1])] if pub else ["-", "-"]
        rows.append(row)
    lines = [format_text_table(header, rows), ""]
    for ins in inspections:
        for label, items in (("ERROR", ins.errors), ("WARN", ins.warnings), ("note", ins.notes)):
            lines += [printable(f"{ins.name}: {label}: {item}") for item in items]
    if quick:
        n = next(iter(quick.values()))["num_images"]
        lines.append(
            f"errors: 1 crop on the first {n} images, each checkpoint alone, on the view a run's 1-crop column uses; "
            "View = Resize/CenterCrop and interpolation (the member's published geometry, else 256/224 bilinear); "
            "a published error outside the 95% interval is a WARN"
        )
    usable = sum(not i.errors for i in inspections)
    lines.append(f"{usable} of {len(inspections)} checkpoint(s) usable")
    return "\n".join(lines) + "\n"


def validation_record(inspections, quick: dict[str, dict]) -> dict:
    return {
        "tool": VALIDATE_TOOL,
        "checkpoints": [i.to_dict() | ({"quick": quick[i.path]} if i.path in quick else {}) for i in inspections],
        "usable": all(not i.errors for i in inspections),
    }
