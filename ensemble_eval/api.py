"""The Python API: `evaluate`, `load_results` and `Results`; the command line is a layer over it.

    import ensemble_eval as ee

    results = ee.evaluate(["ckpts/a.pt", "ckpts/b.pt"], "/data/imagenet/val", crops="10", out="runs/ab")
    results.top1_err, results.top5_err      # the reported setting, fractions
    results.rows("members")                 # one dict per member (its errors per crop set)
    results.records["top5"]                 # per-image arrays (numpy), as predictions.npz holds them
    ee.load_results("runs/ab")              # the same Results from a finished run directory
    ee.compare_runs(["val=runs/val", "v2=runs/v2"])   # several evaluation sets side by side

Every run writes its run directory as the command does (summary.json, predictions.npz, the
report files), so a run started from Python can be read, reported and resumed from the shell
and the other way round. Problems a user can fix raise `ensemble_eval.errors.UserError`
subclasses with a one-line message (the command prints that line).

Nothing here imports torch at module level: `import ensemble_eval` stays instant.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import EXIT_INTERRUPTED, EXIT_OK, UserError

ROW_SECTIONS = ("table", "members", "crop_sets", "curve", "merges", "per_class")


@dataclass
class Results:
    """A finished run, read from its directory.

    `summary` is summary.json as a dict (docs/output-files.md); the properties name the fields
    used most. `records` are the per-image arrays of predictions.npz (read when first used).
    """

    run_dir: Path
    summary: dict[str, Any]
    _records: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def top1_err(self) -> float:
        """Top-1 error of the reported setting (all members, the run's crop set), a fraction."""
        return self.summary["top1_err"]

    @property
    def top5_err(self) -> float:
        return self.summary["top5_err"]

    @property
    def num_images(self) -> int:
        return self.summary["num_images"]

    @property
    def crops(self) -> str:
        """The reported crop set's name."""
        return self.summary["crops"]

    @property
    def table(self) -> list[dict[str, Any]]:
        """The Table 3 cells of a --table run (empty otherwise), best member first."""
        return list(self.summary.get("table") or [])

    @property
    def members(self) -> list[dict[str, Any]]:
        """Each member: name, path, sha256, arch, input convention, view, errors per crop set."""
        return list(self.summary["models"])

    @property
    def records(self) -> dict[str, Any]:
        """Per-image numpy arrays: paths, targets, top5 [N, M + 1, S, R, 5], target_prob, confidence,
        ... (records.RECORD_FIELDS; docs/output-files.md, predictions.npz)."""
        if self._records is None:
            from .records import read_predictions

            self._records = read_predictions(self.run_dir)
        return self._records

    def rows(self, section: str = "table") -> list[dict[str, Any]]:
        """A section of the results as a list of flat dicts (one per row), for csv.DictWriter,
        pandas.DataFrame(...) or printing: "table", "members" (errors per crop set flattened to
        `top1_err@SET`), "crop_sets", "curve", "merges", "per_class"."""
        if section not in ROW_SECTIONS:
            raise UserError(f"no section {section!r} in a run's results; choose one of {list(ROW_SECTIONS)}")
        if section == "members":
            return [_member_row(m) for m in self.members]
        if section == "crop_sets":
            return [{"crop_set": name} | _flat(cell) for name, cell in self.summary["crop_sets"].items()]
        if section == "per_class":
            return [dict(c) for c in (self.summary.get("per_class") or {}).get("classes", [])]
        return [_flat(c) for c in (self.summary.get(section) or [])]

    def to_frame(self, section: str = "table"):
        """`rows(section)` as a pandas DataFrame (pandas is not a dependency: install it to use this)."""
        try:
            import pandas as pd
        except ImportError:
            raise UserError("to_frame needs pandas (pip install pandas); rows() gives the same as dicts") from None
        return pd.DataFrame(self.rows(section))


def _flat(cell: dict[str, Any]) -> dict[str, Any]:
    """Intervals [low, high] as two columns; nested mappings left out (rows are flat)."""
    row: dict[str, Any] = {}
    for key, value in cell.items():
        if isinstance(value, list) and len(value) == 2 and key.endswith("_ci"):
            row[f"{key}_low"], row[f"{key}_high"] = value
        elif not isinstance(value, (dict, list)):
            row[key] = value
    return row


def _member_row(member: dict[str, Any]) -> dict[str, Any]:
    row = {k: member.get(k) for k in ("name", "path", "arch", "format", "sha256")}
    view = member.get("view") or {}
    row.update({f"view_{k}": view.get(k) for k in ("resize_size", "crop_size", "interpolation")})
    for crop_set, errors in (member.get("errors") or {}).items():
        row.update({f"{k}@{crop_set}": v for k, v in _flat(errors).items()})
    return row


def load_results(run_dir: str | Path) -> Results:
    """The Results of a finished run directory (its summary.json, checked; predictions.npz read
    when `records` is first used). RunDirError (a UserError) when it holds no finished run."""
    from .report import read_summary

    run_dir = Path(run_dir)
    return Results(run_dir, read_summary(run_dir))


def rebuild_report(
    run_dir: str | Path,
    out: str | Path | None = None,
    *,
    members: list[str | int] | None = None,
    merge: str | None = None,
    crops: str | None = None,
    real_labels: str | Path | None = None,
    curve_samples: int | None = None,
    seed: int | None = None,
    overwrite: bool = False,
) -> Results:
    """Rebuild a finished run's tables, tests, curves and per-class errors, without the models
    (`ensemble-eval report`); the Results of the report directory.

    run_dir: the finished run. out: where the report goes (default RUN_DIR/report; never the
    run directory itself, whose files are not changed). members: a subset, by index or file
    name (needs the run's --save-logits). merge, crops: the merge mode and crop set reported
    (default the run's). real_labels: ImageNet-ReaL labels (real.json) for ReaL columns.
    curve_samples, seed: the ensemble-size curve drawn again (from logits.npz). overwrite:
    replace files in `out` the report did not write. The Results' `records` are the run's own:
    `load_results(run_dir).records`."""
    from .rebuild import Request, rebuild

    request = Request(
        Path(run_dir),
        Path(out) if out is not None else None,
        [str(m) for m in members] if members is not None else None,
        merge,
        crops,
        str(real_labels) if real_labels is not None else None,
        curve_samples,
        seed,
        overwrite,
    )
    done = rebuild(request)
    return Results(done.out, done.record)


def compare_runs(
    runs: list[str | Path] | dict[str, str | Path],
    out: str | Path | None = None,
    *,
    metric: str = "top1",
    allow_different_members: bool = False,
    overwrite: bool = False,
    clean: str | None = None,
):
    """Several finished runs of one ensemble side by side (`ensemble-eval compare`): rows the
    Table 3 settings, columns the data sets; a comparison.Comparison.

    runs: run directories, each `NAME=RUN_DIR` or `RUN_DIR` (named after its --data folder), or
    a dict of names to run directories. out: where compare.md, compare.csv and compare.png go
    (None: nothing is written). metric: "top1" or "top5", the error the table and plot show
    (compare.csv holds both). allow_different_members: compare runs of other members too
    (refused otherwise). overwrite: replace files in `out` the comparison did not write.
    clean: the column of clean ImageNet val (default: one named "val"), against which the
    ImageNet-C columns get their relative mCE.
    Returns the Comparison: `render()` (the text the command prints; markdown=True: compare.md),
    `rows()` (compare.csv's rows as dicts), `columns`, `settings`, `notes`, `written`."""
    from .comparison import compare, request_from

    return compare(request_from(runs, out, metric, allow_different_members, overwrite, clean))


def evaluate(
    models: str | list[str],
    data: str | Path,
    *,
    protocol: str | None = None,
    config: str | Path | None = None,
    out: str | Path | None = None,
    print_report: bool = False,
    **options: Any,
) -> Results:
    """Evaluate an ensemble on a labelled image folder and return its Results.

    models: checkpoint paths, globs, `torchvision:<builder>[:<WEIGHTS>]` or `timm:<name>`
        (one string or a list), as --models.
    data: the image root (one folder per WordNet id, or a flat folder with labels=...), or
        shards: a folder of .parquet or .tar files, a glob, one shard file (image_column=,
        label_column= name a Parquet shard's columns).
    protocol: a preset name (`googlenet-144`, the default protocol; `vgg-150`, `resnet-dense`,
        `inception-299-144`, `tencrop`, ...; presets.preset_names()).
    config: your own YAML run config (over the preset).
    out: the run directory (default runs/<UTC time>); with overwrite=True an earlier run of
        the tool there is replaced, with resume=True an unfinished one continued.
    print_report: print the report the command prints (default: quiet; the progress bar,
        on stderr, follows `progress`).
    **options: any other setting of the command, by its config name (docs/usage.md):
        crops="10", table=True, limit=100, labels=..., views="native", resize_backend="pil",
        class_subset ("auto", "all" or a file of wnids), merge, compare_merges, save_logits,
        real_labels, device, batch_size, workers,
        precision, compile, channels_last, progress, strict, trust_checkpoints, ema, seed,
        curve_samples, save_every, save_interval, overwrite, resume.

    Raises a UserError subclass (one line naming the problem and the fix) for a bad input,
    KeyboardInterrupt when stopped (the finished images are saved: evaluate again with
    resume=True). Undecodable images are skipped and listed in `summary["skipped"]`
    (strict=True stops at the first instead).
    """
    from .config import FIELD_NAMES, build_config

    unknown = sorted(set(options) - FIELD_NAMES - {"protocol", "config"})
    if unknown:
        raise UserError(f"evaluate() got unknown option(s) {unknown}; options are the config's: {sorted(FIELD_NAMES)}")
    overrides = dict(options, models=[models] if isinstance(models, str) else list(models), data=str(data))
    overrides.update(protocol=protocol, out=None if out is None else str(out))
    run_config = build_config(None if config is None else str(config), overrides)
    sink = contextlib.nullcontext() if print_report else contextlib.redirect_stdout(io.StringIO())
    with sink:
        code = run(run_config)
    if code == EXIT_INTERRUPTED:
        raise KeyboardInterrupt(
            f"stopped; the finished images are saved in {run_config.out}: evaluate with resume=True"
        )
    return load_results(run_config.out)


@dataclass
class Validation:
    """What `validate` found: one members.inspection.Inspection per file (format, architecture,
    convention, OK / WARN / ERROR with reasons) and, with data, each usable one's 1-crop errors."""

    inspections: list
    measured: dict[str, dict]  # checkpoint path -> 1-crop errors on its own view (with data)

    @property
    def usable(self) -> bool:
        """Whether every checkpoint can be evaluated (no ERROR)."""
        return all(not i.errors for i in self.inspections)

    @property
    def record(self) -> dict[str, Any]:
        """The JSON-ready report (`ensemble-eval validate --json`)."""
        from .report import validation_record

        return validation_record(self.inspections, self.measured)

    def render(self) -> str:
        """The table and the reasons, as the command prints them."""
        from .report import render_validation

        return render_validation(self.inspections, self.measured)


def validate(
    checkpoints: str | list[str],
    data: str | Path | None = None,
    *,
    labels: str | None = None,
    limit: int = 100,
    device: str = "auto",
    workers: int | None = None,
    resize_backend: str = "tensor",
    trust_checkpoints: bool = False,
    ema: bool = False,
    image_column: str = "image",
    label_column: str = "label",
) -> Validation:
    """Inspect checkpoints before spending compute, as `ensemble-eval validate`.

    checkpoints: files, globs, `torchvision:...` or `timm:...` (one string or a list); a path
        that matches nothing is an ERROR of its own, not an exception.
    data: with an image folder (labels= for a flat one) or shards (image_column= and
        label_column= name a Parquet shard's columns), each usable checkpoint alone is
        evaluated on its own 1-crop view (the view a run's 1-crop column uses) over the first
        `limit` images, on `device` with `workers` loader processes and the `resize_backend`,
        and a published error outside the measured 95% interval is a WARN.
    trust_checkpoints: allow files that need full unpickling (can run code from the file).
    ema: the EMA weights of files holding EMA and raw weights.

    Returns a Validation (`usable`, `record`, `render()`); raises a UserError for a bad data
    folder or device.
    """
    from .members.inspection import check_together, inspect_checkpoint
    from .modelpaths import expand_model_paths

    paths = expand_model_paths([checkpoints] if isinstance(checkpoints, str) else list(checkpoints), lenient=True)
    samples = None
    if data is not None:
        from .data import list_samples

        samples = list_samples(str(data), labels, image_column, label_column)
    inspections = [inspect_checkpoint(p, trust=trust_checkpoints, prefer="ema" if ema else None) for p in paths]
    check_together(inspections, data_num_classes(samples) if samples is not None else None)
    measured: dict[str, dict] = {}
    if samples is not None:
        run_on = (resolve_device(device), workers, resize_backend)
        for ins in inspections:
            if not ins.errors:
                _measure_one_crop(ins, samples, samples[:limit], run_on, measured)
    return Validation(inspections, measured)


def _measure_one_crop(ins, samples, subset, run_on: tuple, measured: dict) -> None:
    """One checkpoint alone on its own 1-crop view (the run's, under the built-in protocol): its
    errors into `measured`, or the reason it cannot be into its verdict."""
    from .config import DEFAULT_WORKERS, default_batch_size
    from .crops import CropScheme
    from .engine import evaluate as evaluate_samples
    from .ensemble import NonFiniteOutputs, Plan
    from .execution import Execution
    from .members.inspection import check_published, check_views, member_from
    from .views import Geometries, one_crop_scheme, resolve_view

    device, workers, backend = run_on
    member = member_from(ins)
    view = resolve_view(ins.convention, member.arch.input_size, CropScheme())
    scheme = one_crop_scheme(view)
    try:
        check_index_labels_fit(samples, member.num_classes)
        check_views([member], scheme)
    except UserError as exc:  # the member cannot take these labels or this view: its verdict
        ins.errors.append(str(exc))
        return
    try:  # an undecodable image (DataError) is the data's problem: it stops validate, in one line
        geometries = Geometries((scheme,), (0,), (view,), backend)
        plan = Plan.make(scheme, ["1"], "1", default_batch_size(device.type), geometries=geometries)
        workers = DEFAULT_WORKERS if workers is None else workers
        result = evaluate_samples(subset, [member], plan, Execution(device, workers, strict=True))
    except NonFiniteOutputs as exc:  # a problem of the member, not of the data: its verdict
        ins.errors.append(str(exc))
        return
    measured[ins.path] = result.tally.ensemble["1"].to_dict() | {
        "view": [scheme.scales[0], scheme.crop_size],
        "view_detail": view.to_dict() | {"backend": backend},
    }
    check_published(ins, measured[ins.path])


# ---------------------------------------------------------------------------------------
# The run's lifecycle: every check, then the evaluation (the command's main path)


def resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def choose_out_dir(config) -> Path:
    """The run directory, checked (read-only) before any slow work; created when evaluation starts.
    Under torchrun only rank 0 checks it (the others would see rank 0's lock) and owns it."""
    from .distributed import world_from_env
    from .rundir import check_run_out

    if not world_from_env().is_main:
        return Path(config.out or "runs/rank0-chooses")  # rank 0's directory is broadcast to every process
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = Path("runs") / stamp
        n = 2
        while out.exists():  # two runs in the same second
            out = Path("runs") / f"{stamp}-{n}"
            n += 1
        config.out = str(out)
    return check_run_out(config.out, config.overwrite, config.resume).path


def check_index_labels_fit(samples, num_classes: int) -> None:
    """Index labels (flat folder + CSV) must be below the models' class count (checked before --limit)."""
    bad = next((s for s in samples if not 0 <= s.target < num_classes), None)
    if bad is not None:
        raise UserError(
            f"{bad.rel_path} has class index {bad.target} but the models have {num_classes} classes; "
            "use labels that fit the models"
        )


def data_num_classes(samples) -> int | None:
    """1000 when labels are ImageNet-1k wnids (the models must then have 1000 classes)."""
    from .listing import IMAGENET_CLASSES

    return IMAGENET_CLASSES if any(s.wnid is not None for s in samples) else None


def run(config) -> int:
    """Check every input, evaluate, write the result files, print the summary (and table);
    the exit status (errors.EXIT_*).

    Paths, the run directory and the data folder are checked before torch is imported; the
    directory is created and locked (one run at a time) only once every check passed."""
    from .distributed import world_from_env
    from .modelpaths import expand_model_paths

    if not config.models:
        raise UserError("no checkpoints given; pass --models A.pt [B.pt ...]")
    if not config.data:
        raise UserError("no data given; pass --data DIR (one folder per WordNet id, or a folder of shards)")
    out = choose_out_dir(config)
    if config.resume and (out / "summary.json").is_file():  # finished: only the cleanup can remain
        if not world_from_env().is_main:
            return EXIT_OK  # rank 0 shows it (a rank that cannot see --out would wait for rank 0 until a timeout)
        from .engine import finished_run

        return finished_run(out)
    expand_model_paths(config.models, check_specs=False)  # a mistyped path fails before torch is imported
    from .listing import DataError, display_path, list_dataset

    listing = list_dataset(config.data, config.labels, config.image_column, config.label_column)
    samples = listing.usable()
    if config.strict and listing.problems:
        rel, why = listing.problems[0]
        n = len(listing.problems)
        raise DataError(
            f"--strict: {n} {'entry' if n == 1 else 'entries'} of --data cannot be used (first: "
            f"{display_path(rel)[:200]}: {why}); fix them (`ensemble-eval check-data {config.data}` lists them) "
            "or drop --strict"
        )
    classes = class_subset(config.class_subset, samples)
    return _check_and_run(config, out, samples, listing.to_dict(), classes, listing.layout)


def class_subset(option: str, samples, say: bool = True):
    """The classes the prediction is restricted to (benchmarks.resolve_class_subset), said in one
    line on stderr when --class-subset auto chose them (and `say`); UserError for a subset that
    cannot be used."""
    from .benchmarks import AUTO, SubsetError, resolve_class_subset
    from .distributed import world_from_env

    try:
        subset = resolve_class_subset(option, samples)
    except SubsetError as exc:
        raise UserError(str(exc)) from None
    if say and subset is not None and option == AUTO and world_from_env().is_main:
        print(
            f"ensemble-eval: --data holds {subset.describe()}: the prediction is restricted to them, as the "
            "benchmark's protocol does (--class-subset all keeps every output)",
            file=sys.stderr,
        )
    return subset


def _check_and_run(config, out: Path, samples, data_report: dict, classes=None, layout: str | None = None) -> int:
    """Every image-free check (checkpoints, labels, crop size, ReaL), then the evaluation in the
    locked run directory."""
    from .distributed import world_from_env
    from .engine import Job, run_evaluation
    from .members.inspection import load_members
    from .rundir import RunLock, check_run_out, claim

    device = resolve_device(config.device)
    members = load_members(
        config.models,
        trust=config.trust_checkpoints,
        prefer="ema" if config.ema else None,
        data_num_classes=data_num_classes(samples),
    )
    set_names = list(config.protocol.crop_sets) if config.table else [config.crops]
    geometries = _member_views(config, members, set_names)
    check_index_labels_fit(samples, members[0].num_classes)
    if config.limit is not None:
        samples = samples[: config.limit]
    real = None
    if config.real_labels:
        from .analysis import check_real_labels_cover, read_real_labels

        real = read_real_labels(config.real_labels, members[0].num_classes)
        check_real_labels_cover(real, [s.rel_path for s in samples], config.real_labels)

    main_process = world_from_env().is_main
    if main_process:
        _say_views(config.protocol, members, geometries)
        claim(out, "run")
    # one run per directory, held to the last file written; the state is checked again under the lock
    with RunLock(out) if main_process else contextlib.nullcontext():
        if main_process:
            check_run_out(out, config.overwrite, config.resume)
        job = Job(config, out, samples, members, device, set_names, geometries, real, data_report, classes, layout)
        return run_evaluation(job)


def _member_views(config, members, set_names: list[str]):
    """Each member's views (views.member_geometries), every member checked on its own."""
    from .crops import needed_indices
    from .members.inspection import check_views
    from .views import member_geometries

    geometries = member_geometries(members, config.protocol, config.views, config.resize_backend)
    indices = needed_indices(config.protocol, set_names)
    for member, g in zip(members, geometries.of_member):
        check_views([member], geometries.schemes[g], indices)
    return geometries


def _say_views(scheme, members, geometries) -> None:
    """Every member's view on stderr, before the first image, when some member has one of its own."""
    if geometries.schemes == (scheme,):
        return
    for member, view, g in zip(members, geometries.views, geometries.of_member):
        scales = "/".join(map(str, geometries.schemes[g].scales))
        print(f"ensemble-eval: {member.name}: {view.describe()}, scales {scales}", file=sys.stderr)


__all__ = ["Results", "Validation", "compare_runs", "evaluate", "load_results", "rebuild_report", "run", "validate"]
