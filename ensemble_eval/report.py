"""Result records -> terminal table, Markdown, CSV, JSON and the predictions file.

Errors are fractions in JSON and CSV, percentages in the tables people read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .metrics import Counts, Tally


@dataclass(frozen=True)
class TableCell:
    """One row of the paper's Table 3."""

    label: str  # "best member (name)" or "all members"
    models: int
    crops: int
    cost: int  # models x crops
    top1_err: float
    top5_err: float
    delta_top5: float  # top5_err minus the 1-model, fewest-crops base


def best_member(tally: Tally, base_set: str) -> int:
    """Index of the member with the lowest top-1 error on `base_set` (first one on ties).

    This is how the paper chose its single-model rows.
    """
    correct = [m[base_set].top1 for m in tally.members]
    return max(range(len(correct)), key=lambda i: (correct[i], -i))


def table_cells(tally: Tally, crops_per_set: dict[str, int], member_names: list[str]) -> list[TableCell]:
    """Rows for the best single member and (with 2+ members) for all members, per crop set."""
    sets = sorted(tally.set_names, key=lambda s: (crops_per_set[s], tally.set_names.index(s)))
    best = best_member(tally, sets[0])
    base = tally.members[best][sets[0]].top5_err
    num_members = len(tally.members)
    groups: list[tuple[str, int, dict[str, Counts]]] = [(f"best member ({member_names[best]})", 1, tally.members[best])]
    if num_members > 1:
        groups.append(("all members", num_members, tally.ensemble))
    cells = []
    for label, models, counts in groups:
        for s in sets:
            c = counts[s]
            n = crops_per_set[s]
            cells.append(TableCell(label, models, n, models * n, c.top1_err, c.top5_err, c.top5_err - base))
    return cells


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def _rows(cells: list[TableCell]) -> list[list[str]]:
    # The first cell is the base (best member, fewest crops) the deltas are measured from.
    return [
        [
            c.label,
            str(c.models),
            str(c.crops),
            str(c.cost),
            _pct(c.top1_err),
            _pct(c.top5_err),
            "base" if i == 0 else f"{100 * c.delta_top5:+.2f}",
        ]
        for i, c in enumerate(cells)
    ]


TABLE_HEADER = ["Members", "Models", "Crops", "Cost", "Top-1 err", "Top-5 err", "Δ top-5 (pts)"]


def _member_rows(
    tally: Tally, crops_per_set: dict[str, int], member_names: list[str]
) -> tuple[list[str], list[list[str]]]:
    sets = sorted(tally.set_names, key=lambda s: crops_per_set[s])
    header = ["Member"] + [f"{label} @{crops_per_set[s]}" for s in sets for label in ("top-1", "top-5")]
    rows = []
    for name, counts in zip(member_names, tally.members):
        rows.append([name] + [_pct(getattr(counts[s], a)) for s in sets for a in ("top1_err", "top5_err")])
    return header, rows


def format_text_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        return "  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(r, widths)))

    sep = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), sep, *map(line, rows)])


def format_markdown_table(header: list[str], rows: list[list[str]]) -> str:
    out = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|",
    ]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(out)


def render_table(
    cells: list[TableCell], tally: Tally, crops_per_set: dict[str, int], member_names: list[str], markdown: bool = False
) -> str:
    fmt = format_markdown_table if markdown else format_text_table
    n = tally.ensemble[tally.set_names[0]].num_images
    title = f"Table 3 reproduction: {n} images, errors in %, cost = models x crops"
    member_header, member_rows = _member_rows(tally, crops_per_set, member_names)
    parts = [
        ("## " if markdown else "") + title,
        fmt(TABLE_HEADER, _rows(cells)),
        ("## " if markdown else "") + "Every member",
        fmt(member_header, member_rows),
    ]
    return "\n\n".join(parts) + "\n"


def table_csv(cells: list[TableCell]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    fields = list(asdict(cells[0]).keys()) if cells else []
    writer.writerow(fields)
    for c in cells:
        writer.writerow([asdict(c)[f] for f in fields])
    return buf.getvalue()


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path: Path, record: dict) -> None:
    atomic_write_text(path, json.dumps(record, indent=2) + "\n")


OUTPUT_FILES = ("summary.json", "predictions.npz", "table.md", "table.csv")


def summary_record(config, members, result, device, batch_size: int, cells: list[TableCell] | None) -> dict:
    """The flat result record written as summary.json (errors as fractions)."""
    from . import __version__

    counts = result.tally.ensemble[result.requested_set]
    record = {
        "version": __version__,
        "num_images": counts.num_images,
        "num_skipped": len(result.skipped),
        "skipped": [{"path": p, "reason": r} for p, r in result.skipped],
        "num_classes": members[0].num_classes,
        "crops": result.requested_set,
        "num_crops": result.crops_per_set[result.requested_set],
        "num_models": len(members),
        "models": [
            {
                "path": m.path,
                "sha256": m.sha256,
                "arch": m.arch.name,
                "num_classes": m.num_classes,
                "aux_heads": m.arch.aux_heads,
                "format": m.fmt,
                "input": m.convention.to_dict(),
                "errors": {s: result.tally.members[i][s].to_dict() for s in result.set_names},
            }
            for i, m in enumerate(members)
        ],
        "top1_err": counts.top1_err,
        "top5_err": counts.top5_err,
        "top1_correct": counts.top1,
        "top5_correct": counts.top5,
        "crop_sets": {
            s: result.tally.ensemble[s].to_dict() | {"num_crops": result.crops_per_set[s]} for s in result.set_names
        },
        "device": str(device),
        "batch_size": batch_size,
        "channels_last": config.channels_last,
        "precision": config.precision,
        "seconds": round(result.seconds, 3),
        "resumed": bool(getattr(result, "resumed", False)),
        "world_size": int(getattr(result, "world_size", 1)),
        "images_per_second": round(counts.num_images / result.seconds, 3) if result.seconds else None,
        "crops_per_image": result.crops_per_image,
        "crop_evals_per_second": round(counts.num_images * result.crops_per_image * len(members) / result.seconds, 3)
        if result.seconds
        else None,
        "data": str(config.data),
        "labels": config.labels,
        "limit": config.limit,
        "protocol": config.protocol.to_dict(),
        "command": sys.argv,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    if cells is not None:
        record["table"] = [
            {
                "label": c.label,
                "models": c.models,
                "crops": c.crops,
                "cost": c.cost,
                "top1_err": c.top1_err,
                "top5_err": c.top5_err,
                "delta_top5": c.delta_top5,
            }
            for c in cells
        ]
    return record


def clear_outputs(out: Path) -> None:
    """Remove an earlier run's result files (--overwrite): none may stay beside the new ones."""
    for stale in OUTPUT_FILES:
        (out / stale).unlink(missing_ok=True)


def write_run(out: Path, config, members, result, device, batch_size: int) -> str:
    """Write summary.json and the table files into `out` (predictions.npz is streamed there by
    runstate.assemble) and return the terminal text."""
    names = [m.name for m in members]
    cells = table_cells(result.tally, result.crops_per_set, names) if config.table else None
    out.mkdir(parents=True, exist_ok=True)
    text = ""
    written = ["summary.json", "predictions.npz"]
    if cells is not None:
        atomic_write_text(out / "table.md", render_table(cells, result.tally, result.crops_per_set, names, True))
        atomic_write_text(out / "table.csv", table_csv(cells))
        written += ["table.md", "table.csv"]
        text += render_table(cells, result.tally, result.crops_per_set, names) + "\n"
    record = summary_record(config, members, result, device, batch_size, cells)
    write_json(out / "summary.json", record)
    counts = result.tally.ensemble[result.requested_set]
    if counts.num_images == 0:
        text += "no image could be evaluated\n"
    else:
        text += (
            f"{len(members)} model(s) x {record['num_crops']} crop(s) on {counts.num_images} images: "
            f"top-1 error {100 * counts.top1_err:.2f}%, top-5 error {100 * counts.top5_err:.2f}% "
            f"({result.seconds:.1f} s on {device})\n"
        )
    if result.skipped:
        text += f"skipped {len(result.skipped)} undecodable image(s), listed in summary.json (skipped):\n"
        text += "".join(f"  {path}: {reason}\n" for path, reason in result.skipped[:10])
        if len(result.skipped) > 10:
            text += f"  ... and {len(result.skipped) - 10} more\n"
    text += f"wrote {', '.join(written)} to {out}\n"
    return text


def _short_params(n: int | None) -> str:
    return "-" if n is None else f"{n / 1e6:.2f}M"


def render_validation(inspections, quick: dict[str, dict]) -> str:
    """One row per checkpoint, then each file's errors, warnings and notes."""
    header = ["File", "SHA256", "Format", "Arch", "Params", "Classes", "Aux", "Input", "Verdict"]
    if quick:
        header[-1:-1] = ["Top-1 err", "Top-5 err"]
    rows = []
    for ins in inspections:
        row = [
            ins.name,
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
            row[-1:-1] = [_pct(q["top1_err"]), _pct(q["top5_err"])] if q else ["-", "-"]
        rows.append(row)
    lines = [format_text_table(header, rows), ""]
    for ins in inspections:
        for label, items in (("ERROR", ins.errors), ("WARN", ins.warnings), ("note", ins.notes)):
            lines += [f"{ins.name}: {label}: {item}" for item in items]
    if quick:
        n = next(iter(quick.values()))["num_images"]
        lines.append(f"errors: 1 crop (Resize 256 + CenterCrop 224) on the first {n} images, each checkpoint alone")
    usable = sum(not i.errors for i in inspections)
    lines.append(f"{usable} of {len(inspections)} checkpoint(s) usable")
    return "\n".join(lines) + "\n"


def validation_record(inspections, quick: dict[str, dict]) -> dict:
    return {
        "checkpoints": [i.to_dict() | ({"quick": quick[i.path]} if i.path in quick else {}) for i in inspections],
        "usable": all(not i.errors for i in inspections),
    }
