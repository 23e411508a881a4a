"""From per-image records to every number a run reports.

A finished run keeps, per image, the five best classes, the true class's probability and the
top probability for each member alone and for the whole ensemble, per crop set and merge mode,
plus correct counts for every member subset of the ensemble-size curve (predictions.npz). All
reported numbers are computed here from those records, both at the end of a run and by
`ensemble-eval report RUN_DIR`, so the two always agree:

- top-1/top-5 errors with 95% Wilson score intervals (closed form; checked against scipy in the tests);
- the Table 3 cells and exact McNemar tests between them (more crops vs fewer, all members vs
  the best one), on the same images;
- the ensemble-size curve (error vs number of members, mean/min/max over member subsets);
- the merge modes side by side; per-class errors; NLL and expected calibration error;
- errors against ImageNet-ReaL labels.

With --save-logits, logits.npz keeps float16 per-group statistics per member, from which
records for any subset of members are rebuilt (records_from_logits) without the models.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .crops import set_label
from .errors import UserError
from .listing import CORRUPTION_TREE, IMAGENET_CLASSES
from .metrics import (
    CONFIDENCE_LEVEL,
    ECE_BINS,
    Counts,
    expected_calibration_error,
    mcnemar_exact,
    negative_log_likelihood,
)
from .records import RunDirError, RunRecords, npz_memmap, open_logits


def records_from_logits(
    run_dir: Path,
    members: list[int],
    merges: list[str],
    curve_samples: int,
    seed: int,
    requested_set: str,
    block: int = 256,
) -> RunRecords:
    """Records of the ensemble of `members` (ids into the run's members), rebuilt from logits.npz.

    The statistics are float16, so a near-tie may resolve differently from the live float32
    run; everything else is computed by the same code (merge.merge_records).
    """
    import torch

    from .merge import ClassRestriction, class_dtype, curve_subsets, merge_records, statistics_for

    path, small = open_logits(run_dir)
    available = [str(x) for x in small["merges"]]
    missing = [m for m in merges if m not in available]
    if missing:
        raise RunDirError(
            f"{path} holds statistics for {available}, not {missing}; evaluate again with --compare-merges"
        )
    set_names = [str(x) for x in small["set_names"]]
    groups = _logit_groups(small)
    names = list(statistics_for(merges))
    stats = {name: npz_memmap(path, name) for name in names}
    n = len(small["targets"])
    subsets = curve_subsets(len(members), curve_samples, seed)
    requested = set_names.index(requested_set)
    parts: dict[str, list[np.ndarray]] = {"top5": [], "target_prob": [], "confidence": []}
    correct = np.zeros((len(subsets), len(set_names), len(merges), 2), np.int64)
    targets = torch.from_numpy(small["targets"].astype(np.int64))
    restriction = None
    if "classes" in small:  # statistics of the restricted classes (--class-subset); records in canonical classes
        restriction = ClassRestriction(small.pop("classes"), IMAGENET_CLASSES)
        targets = restriction.targets(targets)
    for start in range(0, n, block):
        chunk = {
            name: torch.from_numpy(np.asarray(arr[start : start + block][:, members], dtype=np.float32)).transpose(0, 1)
            for name, arr in stats.items()
        }
        records, counts, probs = merge_records(
            chunk, targets[start : start + block], groups, subsets, merges, requested
        )
        if restriction is not None:
            records, _ = restriction.records(records, probs)
        for key in parts:
            parts[key].append(records[key])
        correct += counts
    num_classes = IMAGENET_CLASSES if restriction is not None else next(iter(stats.values())).shape[-1]
    rows = len(members) + 1
    empty = {
        "top5": np.zeros((0, rows, len(set_names), len(merges), 5), class_dtype(num_classes)),
        "target_prob": np.zeros((0, rows, len(set_names), len(merges)), np.float32),
        "confidence": np.zeros((0, rows, len(set_names), len(merges)), np.float32),
    }
    joined = {k: np.concatenate(v) if v else empty[k] for k, v in parts.items()}
    chosen = {
        "member_names": small["member_names"][members],
        "merges": np.array(merges, dtype=str),
        "subsets": np.array([[i in u for i in range(len(members))] for u in subsets], dtype=bool),
        "subset_correct": correct,
    }
    return RunRecords.from_arrays(small | joined | chosen)


def _logit_groups(small: dict[str, np.ndarray]):
    """The crop groups (merge.CropGroups) logits.npz records: their sizes, and the groups of each set."""
    from .merge import CropGroups

    sizes = [int(x) for x in small["group_sizes"]]
    starts = np.cumsum([0] + sizes)
    return CropGroups(
        tuple(tuple(range(starts[g], starts[g + 1])) for g in range(len(sizes))),
        tuple(tuple(int(g) for g in np.flatnonzero(row)) for row in small["set_groups"]),
    )


# ---------------------------------------------------------------------------------------------
# ImageNet-ReaL labels


def read_real_labels(path: str | os.PathLike, num_classes: int) -> dict[str, frozenset[int]]:
    """ReaL labels by file name: the official list form (entry i belongs to
    ILSVRC2012_val_{i+1:08d}.JPEG) or a mapping {file name: [class indices]}."""
    p = Path(path)
    if not p.is_file():
        raise UserError(f"--real-labels {p} does not exist; pass the ReaL real.json file")
    try:
        data = json.loads(p.read_text())
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(
            f"--real-labels {p} is not JSON ({exc.__class__.__name__}); pass the ReaL real.json file"
        ) from exc
    if isinstance(data, list):
        items = [(f"ILSVRC2012_val_{i + 1:08d}.JPEG", labels) for i, labels in enumerate(data)]
    elif isinstance(data, dict):
        items = [(Path(str(k)).name, v) for k, v in data.items()]
    else:
        raise UserError(f"--real-labels {p} must hold a list (real.json) or a mapping of file name to labels")
    out = {}
    for name, labels in items:
        if not isinstance(labels, list) or not all(type(x) is int and 0 <= x < num_classes for x in labels):
            raise UserError(
                f"--real-labels {p}: the entry for {name} is not a list of class indices 0..{num_classes - 1}; "
                "pass the ReaL real.json file"
            )
        out[name] = frozenset(labels)
    return out


def check_real_labels_cover(real: dict[str, frozenset[int]], paths, source: str) -> None:
    """Every image must have a ReaL entry (an empty one is allowed: ReaL leaves such images out)."""
    names = [Path(str(p)).name for p in paths]
    missing = [n for n in names if n not in real]
    if missing:
        raise UserError(
            f"--real-labels {source} has no entry for {len(missing)} of {len(names)} images (first: {missing[0]}); "
            "ReaL labels cover ImageNet val files named ILSVRC2012_val_XXXXXXXX.JPEG, or pass a mapping "
            "{file name: [class indices]}"
        )


def _real_hits(
    records: RunRecords, real: dict[str, frozenset[int]], source: str, num_classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """(bool [N] images with ReaL labels, bool [N', M + 1, S, 2] hits of those images, first merge)."""
    check_real_labels_cover(real, records.paths, source)
    names = [Path(str(p)).name for p in records.paths]
    labelled = np.array([bool(real[n]) for n in names], dtype=bool)
    allowed = np.zeros((int(labelled.sum()), num_classes + 1), dtype=bool)  # last column: the -1 padding
    for row, n in enumerate(n for n, keep in zip(names, labelled) if keep):
        allowed[row, list(real[n])] = True
    top5 = records.top5[labelled][:, :, :, 0].astype(np.int64)  # [N', M + 1, S, 5]
    picked = np.take_along_axis(allowed, top5.reshape(len(top5), -1), axis=1).reshape(top5.shape)
    return labelled, np.stack([picked[..., 0], picked.any(axis=-1)], axis=-1)


# ---------------------------------------------------------------------------------------------
# The analysis record


def _counts(hits: np.ndarray) -> dict:
    """Errors with Wilson intervals from bool hits [N, 2]."""
    return Counts(int(hits.shape[0]), int(hits[:, 0].sum()), int(hits[:, 1].sum())).to_dict()


def best_member(hits: np.ndarray, base_set: int) -> int:
    """The member with the lowest top-1 error on the base crop set (first on ties), as the paper chose.

    hits: bool [N, M + 1, S, R, 2].
    """
    correct = hits[:, :-1, base_set, 0, 0].sum(axis=0)
    return int(np.argmax(correct)) if len(correct) else 0


def _paired(a: np.ndarray, b: np.ndarray) -> dict:
    """McNemar on top-1 and top-5: a, b bool [N, 2]."""
    return {metric: mcnemar_exact(a[:, i], b[:, i]) for i, metric in enumerate(("top1", "top5"))}


def _class_names(num_classes: int) -> list[tuple[str, str]]:
    if num_classes == 1000:
        from .data import imagenet_classes

        return [(c.wnid, c.name) for c in imagenet_classes()]
    return [("", f"class {i}") for i in range(num_classes)]


@dataclass
class _Sections:
    """What every section of the analysis reads: the per-image hits and the crop sets in order."""

    records: RunRecords
    hits: np.ndarray  # bool [N, M + 1, S, R, 2]
    sets: list[str]  # crop set names, fewest crops first
    real_hits: np.ndarray | None = None  # bool [N, M + 1, S, 2] of the labelled images (ReaL)
    compared_with: dict[str, str | None] | None = None  # crops.nested_under; None: the previous set

    def fewer(self, j: int) -> str | None:
        """The set the j-th set's "p vs fewer crops" compares it with."""
        if self.compared_with is not None:
            return self.compared_with.get(self.sets[j])
        return self.sets[j - 1] if j > 0 else None  # a record without its protocol: the next smaller set

    @property
    def n(self) -> int:
        return self.records.num_images

    @property
    def m(self) -> int:
        return self.records.num_members

    @property
    def ens(self) -> int:
        return self.records.num_members  # the row of all members

    def index(self, s: str) -> int:
        return self.records.set_names.index(s)

    def cell_errors(self, row: int, s: int) -> dict:
        out = _counts(self.hits[:, row, s, 0])
        if self.real_hits is not None:
            rc = _counts(self.real_hits[:, row, s])
            out |= {f"real_{k}": v for k, v in rc.items() if k != "num_images"} | {"real_num_images": rc["num_images"]}
        return out


def crop_set_errors(v: _Sections) -> dict:
    """All members, every crop set: errors with intervals, NLL and ECE."""
    r, ens = v.records, v.ens
    out = {}
    for s in v.sets:
        i = v.index(s)
        out[s] = (
            v.cell_errors(ens, i)
            | {"num_crops": r.crops_per_set[s]}
            | {
                "nll": negative_log_likelihood(r.target_prob[:, ens, i, 0]),
                "ece": expected_calibration_error(r.confidence[:, ens, i, 0], v.hits[:, ens, i, 0, 0]),
            }
        )
    return out


def member_errors(v: _Sections) -> list[dict]:
    return [
        {"name": name, "errors": {s: v.cell_errors(j, v.index(s)) for s in v.sets}}
        for j, name in enumerate(v.records.member_names)
    ]


def table3(v: _Sections) -> tuple[int, list[dict], list[dict]]:
    """(best member, Table 3 cells, paired tests): the best member and all members at every crop
    set, with the change in top-5 error and exact McNemar tests against fewer crops and the best member."""
    r, hits, sets, ens, m = v.records, v.hits, v.sets, v.ens, v.m
    first = v.index(sets[0])
    best = best_member(hits, first)
    groups = [(f"best member ({r.member_names[best]})", 1, best)]
    if m > 1:
        groups.append(("all members", m, ens))
    base_top5 = hits[:, best, first, 0, 1].mean() if v.n else float("nan")
    cells, tests = [], []
    for label, models, row in groups:
        for j, s in enumerate(sets):
            i = v.index(s)
            cell = {"label": label, "models": models, "crops": r.crops_per_set[s], "crop_set": s}
            cell["cost"] = models * r.crops_per_set[s]
            cell |= v.cell_errors(row, i)
            cell["delta_top5"] = cell["top5_err"] - (1 - base_top5)
            under = v.fewer(j)
            if under is not None:
                p = _paired(hits[:, row, i, 0], hits[:, row, v.index(under), 0])
                cell |= {f"p_{k}_vs_fewer_crops": x["p_value"] for k, x in p.items()}
                fewer = set_label(under, r.crops_per_set[under])
                versus = f"{set_label(s, cell['crops'])} vs {fewer} crops, {label}"
                tests += [{"comparison": versus, "metric": k} | x for k, x in p.items()]
            if row == ens and m > 1:
                p = _paired(hits[:, ens, i, 0], hits[:, best, i, 0])
                cell |= {f"p_{k}_vs_best_member": x["p_value"] for k, x in p.items()}
                tests += [
                    {"comparison": f"all {m} members vs best member, {set_label(s, cell['crops'])} crops", "metric": k}
                    | x
                    for k, x in p.items()
                ]
            cells.append(cell)
    return best, cells, tests


def ensemble_size_curve(v: _Sections) -> list[dict]:
    """Error of k-member ensembles, k = 1..M: mean, min and max over the member subsets."""
    r, m, n = v.records, v.m, v.n
    sizes = r.subsets.sum(axis=1)
    curve = []
    if m < 2 or not n:
        return curve
    for ri, merge in enumerate(r.merges):
        for s in v.sets:
            for k in range(1, m + 1):
                errs = 1 - r.subset_correct[sizes == k, v.index(s), ri] / n  # [num_subsets, 2]
                curve.append(
                    {
                        "models": k,
                        "crop_set": s,
                        "crops": r.crops_per_set[s],
                        "merge": merge,
                        "num_subsets": int(len(errs)),
                        "all_subsets": len(errs) == math.comb(m, k),
                        "top1_err_mean": float(errs[:, 0].mean()),
                        "top1_err_min": float(errs[:, 0].min()),
                        "top1_err_max": float(errs[:, 0].max()),
                        "top5_err_mean": float(errs[:, 1].mean()),
                        "top5_err_min": float(errs[:, 1].min()),
                        "top5_err_max": float(errs[:, 1].max()),
                    }
                )
    return curve


def merge_comparison(v: _Sections) -> list[dict]:
    """Every merge mode side by side (all members), with paired tests against the reported one."""
    r, hits, ens = v.records, v.hits, v.ens
    merges = []
    if len(r.merges) < 2:
        return merges
    for ri, merge in enumerate(r.merges):
        for s in v.sets:
            i = v.index(s)
            entry = {"merge": merge, "crop_set": s, "crops": r.crops_per_set[s]}
            entry |= _counts(hits[:, ens, i, ri])
            entry["nll"] = negative_log_likelihood(r.target_prob[:, ens, i, ri])
            entry["ece"] = expected_calibration_error(r.confidence[:, ens, i, ri], hits[:, ens, i, ri, 0])
            if ri > 0:
                p = _paired(hits[:, ens, i, ri], hits[:, ens, i, 0])
                entry |= {f"p_{k}_vs_{r.merges[0]}": x["p_value"] for k, x in p.items()}
            merges.append(entry)
    return merges


def per_class_errors(v: _Sections, requested_set: str, num_classes: int) -> dict:
    """The ensemble's errors on each class that has images, at the reported crop set."""
    r = v.records
    names = _class_names(num_classes)
    per_image = v.hits[:, v.ens, v.index(requested_set), 0]  # [N, 2]
    count = np.bincount(r.targets, minlength=num_classes)
    right1 = np.bincount(r.targets, weights=per_image[:, 0], minlength=num_classes)
    right5 = np.bincount(r.targets, weights=per_image[:, 1], minlength=num_classes)
    per_class = [
        {
            "index": c,
            "wnid": names[c][0],
            "name": names[c][1],
            "num_images": int(count[c]),
            "top1_err": float(1 - right1[c] / count[c]),
            "top5_err": float(1 - right5[c] / count[c]),
            "top1_acc": float(right1[c] / count[c]),
            "top5_acc": float(right5[c] / count[c]),
        }
        for c in np.flatnonzero(count).tolist()
    ]
    worst = sorted(per_class, key=lambda e: (-e["top1_err"], -e["top5_err"], -e["num_images"], e["index"]))
    best_classes = sorted(per_class, key=lambda e: (e["top1_err"], e["top5_err"], -e["num_images"], e["index"]))
    shown = {e["index"] for e in worst[:5]}  # fewer than 10 classes: a class is in one list, not both
    best_classes = [e for e in best_classes if e["index"] not in shown]
    return {"crop_set": requested_set, "classes": per_class, "worst": worst[:5], "best": best_classes[:5]}


def corruption_order(names: set[str]) -> list[str]:
    """ImageNet-C's corruptions in the paper's order, then its extra ones, then any other, sorted."""
    from .benchmarks import ALEXNET_ERRORS, EXTRA_CORRUPTIONS

    known = [*ALEXNET_ERRORS, *EXTRA_CORRUPTIONS]
    return [c for c in known if c in names] + sorted(names - set(known))


def corruption_section(v: _Sections, best: int, requested_set: str, table: bool) -> dict:
    """ImageNet-C: per setting (the Table 3 rows with --table, else the best member and all members
    at the reported crop set), the errors per corruption and severity with intervals, the
    corruption errors (CE) against AlexNet's and their mean (mCE). An image's corruption and
    severity are the first two folders of its path (<corruption>/<severity>/<wnid>/...)."""
    from .benchmarks import SEVERITIES, corruption_and_severity, corruption_errors

    r = v.records
    # each image's group, as an index into the groups found: one pass over the paths, then the
    # counts of every group by one bincount per setting
    groups, of_image = np.unique(["/".join(str(p).split("/")[:2]) for p in r.paths], return_inverse=True)
    keys = [corruption_and_severity(str(g)) for g in groups]
    names = corruption_order({c for c, _ in keys})
    severities = sorted({s for _, s in keys})
    images = np.bincount(of_image, minlength=len(groups))
    rows = [(f"best member ({r.member_names[best]})", 1, best)] + ([("all members", v.m, v.ens)] if v.m > 1 else [])
    settings = []
    for label, models, row in rows:
        for s in v.sets if table else [requested_set]:
            hits = v.hits[:, row, v.index(s), 0]  # [N, 2]
            top1, top5 = (np.bincount(of_image, weights=hits[:, k], minlength=len(groups)) for k in (0, 1))
            errors: dict[str, dict[str, dict]] = {c: {} for c in names}
            for (c, severity), n, c1, c5 in zip(keys, images, top1, top5):
                errors[c][str(severity)] = Counts(int(n), int(c1), int(c5)).to_dict()
            errors = {c: dict(sorted(e.items(), key=lambda kv: int(kv[0]))) for c, e in errors.items()}
            score = corruption_errors({c: {int(k): e["top1_err"] for k, e in e.items()} for c, e in errors.items()})
            settings.append(
                {"label": label, "models": models, "crops": r.crops_per_set[s], "crop_set": s}
                | {"errors": errors, "mean_error": score["mean_error"]}
                | {k: score[k] for k in ("ce", "mce", "corruptions_in_mce", "complete")}
            )
    return {
        "corruptions": names,
        "severities": severities,
        "complete_severities": severities == list(SEVERITIES),
        "baseline": "AlexNet's errors from Hendrycks & Dietterich, ICLR 2019 (mean over severities 1-5)",
        "settings": settings,
    }


def analyze(
    records: RunRecords,
    requested_set: str,
    num_classes: int,
    table: bool,
    real: dict[str, frozenset[int]] | None = None,
    real_source: str = "",
    compared_with: dict[str, str | None] | None = None,
    data_layout: str | None = None,
) -> dict:
    """Every reported number, as one JSON-ready record (errors as fractions): one function per
    section (crop sets, members, Table 3 and paired tests, curve, merge modes, per class,
    calibration, ReaL). `compared_with` (crops.nested_under): the set each set's paired test
    compares it with; None: the next smaller set. `data_layout` (listing): an ImageNet-C tree adds
    the corruption section."""
    sets = sorted(records.set_names, key=lambda s: (records.crops_per_set[s], records.set_names.index(s)))
    labelled = real_hits = None
    if real is not None:
        labelled, real_hits = _real_hits(records, real, real_source, num_classes)
    v = _Sections(records, records.hits(), sets, real_hits, compared_with)
    record: dict = {
        "num_images": records.num_images,
        "confidence_level": CONFIDENCE_LEVEL,
        "interval": "wilson",
        "merge": records.merges[0],
        "crops": requested_set,
    }
    crop_sets = crop_set_errors(v)
    record["crop_sets"] = crop_sets
    record["members"] = member_errors(v)
    best, cells, tests = table3(v)
    record["best_member"] = records.member_names[best]
    record["table"] = cells if table else None
    record["paired_tests"] = [t for t in tests if table or t["comparison"].startswith("all ")]
    record["curve"] = ensemble_size_curve(v)
    record["merges"] = merge_comparison(v)
    record["per_class"] = per_class_errors(v, requested_set, num_classes)
    record["calibration"] = {
        "crop_set": requested_set,
        "nll": crop_sets[requested_set]["nll"],
        "ece": crop_sets[requested_set]["ece"],
        "ece_bins": ECE_BINS,
    }
    if data_layout == CORRUPTION_TREE:
        record["corruptions"] = corruption_section(v, best, requested_set, table)
    if real is not None:
        record["real"] = {
            "file": real_source,
            "num_images": int(labelled.sum()),
            "num_without_labels": int((~labelled).sum()),
        }
    return record
