"""Command line: argv -> RunConfig -> run -> files and a table.

    ensemble-eval --models ... --data ...     evaluate (the main command)
    ensemble-eval validate CKPT ...           inspect checkpoints, one verdict per file
    ensemble-eval check-data DIR              decode every image first, list the problems
    ensemble-eval report RUN_DIR              rebuild a finished run's tables and curves
    ensemble-eval compare RUN_DIR ...         several evaluation sets side by side

Exit codes: 0 success; 1 `validate` found unusable checkpoints; 2 a user error (bad flag,
path, checkpoint, image, config), reported in one line; 3 finished, but undecodable images
were skipped (listed in summary.json); 130 interrupted (progress saved, --resume continues). Heavy imports
(torch) happen after argument parsing, so --help and most mistakes answer at once.
"""

from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path

from . import __version__
from .errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_UNUSABLE, EXIT_USER_ERROR, UserError, printable, stop_signals

log = logging.getLogger("ensemble_eval")

EPILOG = """\
examples:
  # the paper's evaluation: every checkpoint, 144 crops, averaged softmax
  ensemble-eval --models ckpts/*.pt --data /data/imagenet/val --crops 144

  # the paper's Table 3 (1/10/144 crops x best member/all members) in one pass
  ensemble-eval --models 'ckpts/*.pt' --data /data/imagenet/val --table --out runs/table3

  # a quick look: first 100 images, standard 1-crop evaluation, on the GPU
  ensemble-eval --models a.pt --data /data/imagenet/val --crops 1 --limit 100 --device cuda

  # a flat folder with a label file (rows: filename,wnid or filename,index)
  ensemble-eval --models a.pt --data val_flat/ --labels val_labels.csv

  # another paper's protocol: VGG 150 crops, ResNet dense multi-scale, Inception 144 at 299
  ensemble-eval --protocol vgg-150 --models a.pt b.pt --data val/ --table
  ensemble-eval --protocol resnet-dense --models resnet50.pth --data val/

  # a custom crop scheme or saved settings (command-line flags override the file)
  ensemble-eval --config my-protocol.yaml --models a.pt b.pt --data val/

  # check checkpoints first (format, architecture, classes, input convention, verdict)
  ensemble-eval validate ckpts/*

  # a mixed ensemble: a GoogLeNet, a ResNet state dict, published weights by name, a torch.export program
  ensemble-eval --models googlenet.pt resnet50.pth torchvision:mobilenet_v3_large model.pt2 --data val/

  # everything the paper's Table 3 needs, all four merge modes, and the raw material for `report`
  ensemble-eval --models 'ckpts/*.pt' --data val/ --table --compare-merges --save-logits --out runs/t3

  # rebuild tables, tests and curves from a finished run, without the models (here: 3 members)
  ensemble-eval report runs/t3 --members 0 2 5

  # one ensemble's Table 3 on several evaluation sets (finished runs) side by side
  ensemble-eval compare val=runs/val v2=runs/v2 sketch=runs/sketch --out runs/shift

outputs (in --out): summary.json, predictions.npz, per_class.csv; with --table table.md, table.csv;
with 2+ models curve.csv (and curve.png when matplotlib is installed); with --compare-merges
merges.csv; with --save-logits logits.npz. See docs/output-files.md.
"""

VALIDATE_EPILOG = """\
examples:
  ensemble-eval validate ckpts/*                       # one row and verdict per file
  ensemble-eval validate ckpts/*.pt --json report.json # the same as JSON (--json alone: stdout)
  ensemble-eval validate a.pt b.pt --data /data/imagenet/val --limit 200   # + quick 1-crop errors
  ensemble-eval validate torchvision:resnet50:IMAGENET1K_V2 timm:convnext_tiny   # published weights by name

exit status: 0 every file is usable (OK or WARN), 1 some file has an ERROR, 2 bad command line.
sidecar: a.pt.yaml or a.yaml beside a.pt sets arch (resnet50, timm/<name>), mean, std, color (RGB/BGR),
input_scale (1/255), transform_input, class_offset, classes, weights (ema/raw), input_size, resize_size,
published ({top1_err, top5_err}); see docs/checkpoints.md.
"""


def _number(parse, ok, expected: str):
    """An argparse type: `parse` the text, accept it when `ok(value)`; else one line saying `expected`."""

    def convert(text: str):
        try:
            value = parse(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return convert


_positive_int = _number(int, lambda v: v >= 1, "a positive integer")
_non_negative_int = _number(int, lambda v: v >= 0, "an integer >= 0")
_positive_float = _number(float, lambda v: v > 0 and math.isfinite(v), "a positive number")
_batch_size = _number(
    lambda t: t if t == "auto" else int(t), lambda v: v == "auto" or v >= 1, "a positive integer or auto"
)


def _workers(text: str) -> int:
    from .config import ConfigError, check_workers

    try:
        return check_workers(_non_negative_int(text))
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("workers (--workers) ")) from None


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the whole usage block
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


TYPES = {  # a RunConfig field's kind -> how its command-line text is parsed
    "positive_int": _positive_int,
    "positive_float": _positive_float,
    "count": _non_negative_int,
    "workers": _non_negative_int,  # capped in config.RunConfig.validate, for YAML and the command line alike
    "batch_size": _batch_size,
}


def _add_option(group, name: str, **override) -> None:
    """Add RunConfig field `name` as an option: its flag, help, choices and parsing come from the
    field's definition (config.option); `override` changes some for one command (its default)."""
    from .config import RUN_FIELDS

    f = RUN_FIELDS[name]
    spec = {**f.metadata, **override}
    flag = spec.get("flag") or "--" + name.replace("_", "-")
    kw: dict = {"dest": name, "help": spec["help"]}
    if "default" in spec:
        kw["default"] = spec["default"]
    if f.type == "bool":
        kw["action"] = "store_false" if flag.startswith("--no-") else "store_true"
        kw.setdefault("default", None)  # None: not given (the config file's or the built-in value holds)
    else:
        kw["metavar"] = spec.get("metavar")
        if spec.get("choices"):
            kw["choices"] = list(spec["choices"])
        if spec.get("kind") in TYPES or "type" in spec:
            kw["type"] = spec.get("type") or TYPES[spec["kind"]]
        if spec.get("kind") == "paths":
            kw["nargs"] = "+"
    group.add_argument(*([spec["short"]] if "short" in spec else []), flag, **kw)


def _add_run(commands) -> None:
    """The main command (`ensemble-eval [run]`): one option per RunConfig field, by group, and
    --protocol / --config, which choose the layers under the command line (config.build_config)."""
    from .config import GROUPS, command_options

    p = commands.add_parser(
        "run",
        prog="ensemble-eval",
        usage="ensemble-eval [run] --models CKPT [CKPT ...] --data DIR [options]",
        allow_abbrev=False,
        description="Multi-crop, multi-model evaluation of image classifiers (GoogLeNet ILSVRC 2014 protocol).\n\n"
        "commands: ensemble-eval [run] [--models ... --data ...] (evaluate, below; `run` may be left out); "
        + ", ".join(f"ensemble-eval {c} ..." for c in COMMANDS if c != "run")
        + " (each with --help)",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # unset flags don't override the YAML file
    )
    p.add_argument("--version", action="version", version=f"ensemble-eval {__version__}")
    groups = {name: p.add_argument_group(name) for name in GROUPS}
    groups["protocol"].add_argument(
        "--protocol",
        metavar="NAME",
        help="start from a preset: googlenet-144 (the default), vgg-150, resnet-dense, inception-299-144, ...; "
        "`--protocol list` describes them",
    )
    groups["protocol"].add_argument(
        "--config", metavar="FILE.yaml", help="your own YAML run config / crop scheme (over --protocol)"
    )
    for f in command_options():
        _add_option(groups[f.metadata["group"]], f.name)


def _add_column_options(g) -> None:
    """--image-column and --label-column (Parquet shards), with the run's defaults."""
    from .config import RUN_FIELDS

    for name in ("image_column", "label_column"):
        _add_option(g, name, default=RUN_FIELDS[name].default)


def _add_checkpoint_options(g) -> None:
    _add_option(g, "trust_checkpoints")
    _add_option(g, "ema")


def _add_validate(commands) -> None:
    p = commands.add_parser(
        "validate",
        allow_abbrev=False,
        description="Inspect checkpoints before spending compute: format, architecture, parameters, classes, "
        "aux heads, input convention and a verdict (OK / WARN / ERROR) for each file.",
        epilog=VALIDATE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "checkpoints",
        nargs="+",
        metavar="CKPT",
        help="checkpoint files, globs, torchvision:<builder>[:<WEIGHTS>] or timm:<name>",
    )
    p.add_argument("--json", nargs="?", const="-", metavar="FILE", help="write the report as JSON (to FILE or stdout)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an existing --json FILE that is not an earlier validate report (never a checkpoint given)",
    )
    _add_checkpoint_options(p)
    g = p.add_argument_group("quick accuracy check (1 crop per image, each checkpoint alone)")
    _add_option(g, "data", help="image root (wnid folders, flat with --labels, or shards)")
    _add_option(g, "labels", help="labels for a flat folder")
    _add_column_options(g)
    _add_option(g, "limit", default=VALIDATE_LIMIT, help=f"first N images (default {VALIDATE_LIMIT})")
    _add_option(g, "device", default="auto")
    _add_option(
        g,
        "resize_backend",
        default="tensor",
        help="tensor (default) or pil: as for a run (pil: the pixels of PIL-based reference pipelines)",
    )
    _add_option(g, "workers", type=_workers, default=None, help="image decoding processes")
    _add_option(g, "verbose", default=False)


VALIDATE_LIMIT = 100  # images of validate's quick 1-crop check


def run_validate(args: argparse.Namespace) -> int:
    from .modelpaths import expand_model_paths
    from .rundir import check_validate_json

    check_validate_json(args.json, [c for c in args.checkpoints if ":" not in c], args.overwrite)
    expand_model_paths(args.checkpoints, lenient=True, check_specs=False)  # before torch is imported

    from .api import validate
    from .fileio import atomic_write_text, strict_json

    found = validate(
        args.checkpoints,
        args.data,
        labels=args.labels,
        limit=args.limit,
        device=args.device,
        workers=args.workers,
        resize_backend=args.resize_backend,
        trust_checkpoints=args.trust_checkpoints,
        ema=args.ema,
        image_column=args.image_column,
        label_column=args.label_column,
    )
    if args.json:
        text = strict_json(found.record)
        if args.json == "-":
            sys.stdout.write(text)
        else:
            atomic_write_text(args.json, text)
    if args.json != "-":
        print(found.render(), end="")
    return EXIT_OK if found.usable else EXIT_UNUSABLE


def _add_check_data(commands) -> None:
    p = commands.add_parser(
        "check-data",
        allow_abbrev=False,
        description="List a dataset as a run does and decode every image (nothing else); print each problem "
        "(unreadable folders, special files, broken links, undecodable images) and what was ignored.",
        epilog="exit status: 0 every image is usable, 1 some image or entry is not (listed), 2 bad command line "
        "or dataset.",
    )
    p.add_argument(
        "data",
        metavar="DIR",
        help="image root: one folder per WordNet id or class index, an ImageNet-C tree, flat with --labels, or "
        "shards (a folder of .parquet or .tar files, a quoted glob, one shard file)",
    )
    _add_option(p, "labels", metavar="FILE", help="labels for a flat folder (CSV, LOC_val_solution.csv, devkit)")
    _add_option(
        p, "class_subset", default="auto", help="the classes a run would restrict the prediction to: auto, all or FILE"
    )
    _add_column_options(p)
    _add_option(p, "workers", type=_workers, default=None, help="decoding processes")
    _add_option(p, "progress", default=True)


def run_check_data(args: argparse.Namespace) -> int:
    from .api import class_subset
    from .listing import display_path, list_dataset

    # before torch is imported: bad --data answers at once
    listing = list_dataset(args.data, args.labels, args.image_column, args.label_column)
    print(listing.recognised_line())
    subset = class_subset(args.class_subset, listing.samples, say=False)
    if subset is not None:
        print(
            f"class subset: {subset.describe()}; a run restricts the prediction to them "
            "(--class-subset all: every output)"
        )

    from tqdm import tqdm

    from .config import DEFAULT_WORKERS
    from .crops import CropScheme
    from .data import scan_images

    samples = listing.samples
    workers = DEFAULT_WORKERS if args.workers is None else args.workers
    undecodable = []
    start = time.perf_counter()
    for sample, problem in tqdm(
        scan_images(samples, CropScheme(), workers),
        total=len(samples),
        unit="img",
        disable=not args.progress,
        desc="decoding",
    ):
        if problem:
            undecodable.append((sample.rel_path, problem))
    seconds = time.perf_counter() - start
    problems = sorted(listing.problems + undecodable)
    for rel_path, problem in problems:
        print(f"{display_path(rel_path)}: {problem}")
    if listing.ignored:
        print(listing.ignored_line())
    others = len(listing.problems)
    print(
        f"{len(samples)} images checked in {seconds:.1f} s: {len(samples) - len(undecodable)} usable, "
        f"{len(undecodable)} with problems"
        + (f"; {others} other {'entry' if others == 1 else 'entries'} of {args.data} cannot be used" if others else "")
        + (" (an evaluation skips them; --strict stops at them)" if undecodable else "")
    )
    return EXIT_UNUSABLE if problems else EXIT_OK


REPORT_EPILOG = """\
examples:
  ensemble-eval report runs/t3                          # rebuild every table, test and curve (exact)
  ensemble-eval report runs/t3 --real-labels real.json  # add ReaL error columns
  ensemble-eval report runs/t3 --merge max-crop         # another merge mode the run computed
  ensemble-eval report runs/t3 --members 0 2 a.pt       # a subset of members (needs --save-logits)

Without --members (or --curve-samples/--seed) the numbers come from predictions.npz and equal
the run's exactly. Member subsets are rebuilt from logits.npz, whose float16 statistics can turn a
near-tie the other way; the report says how many top-1 predictions then differ from the run's.
Files go to RUN_DIR/report unless --out says otherwise; the run's own files are never changed.
"""


def _add_report(commands) -> None:
    p = commands.add_parser(
        "report",
        allow_abbrev=False,
        description="Rebuild a finished run's tables, intervals, paired tests, curves and per-class errors "
        "from its run directory, without the models.",
        epilog=REPORT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="the --out directory of a finished evaluation")
    _add_option(p, "out", help="where the rebuilt files go (default RUN_DIR/report)")
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in --out that the report did not write or that were changed since it wrote them",
    )
    p.add_argument("--members", nargs="+", metavar="ID", help="members to keep: indices (0 = first) or file names")
    _add_option(p, "merge", help="the merge mode to report (default: the run's)")
    _add_option(p, "crops", help="the crop set of the summary line and per-class errors")
    _add_option(p, "real_labels")
    _add_option(p, "curve_samples", help="subsets per ensemble size (logits)")
    _add_option(p, "seed", help="seed of the curve's subset sample (logits)")


COMPARE_EPILOG = """\
examples:
  ensemble-eval compare val=runs/val v2=runs/v2 sketch=runs/sketch   # the table on stdout
  ensemble-eval compare runs/val runs/v2 --metric top5 --out runs/shift   # + compare.md, .csv, .png

Each RUN_DIR is the --out of a finished run of the same members (--table for every Table 3
row; a run without it gives its reported setting alone). A column is named NAME, else after
the run's --data folder. Cells: error % [95% Wilson interval]; — where a run lacks the setting.
"""


def _add_compare(commands) -> None:
    p = commands.add_parser(
        "compare",
        allow_abbrev=False,
        description="Finished runs of one ensemble on several evaluation sets side by side: rows the Table 3 "
        "settings (best member and all members at each crop set), columns the data sets.",
        epilog=COMPARE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("runs", nargs="+", metavar="[NAME=]RUN_DIR", help="finished run directories, each optionally named")
    _add_option(p, "out", help="write compare.md, compare.csv and compare.png there (default: print only)")
    p.add_argument(
        "--metric", choices=["top1", "top5"], default="top1", help="the error the table and plot show (default top1)"
    )
    p.add_argument(
        "--allow-different-members",
        action="store_true",
        help="compare runs whose members differ (refused otherwise; the difference is listed under the table)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace files in --out that the comparison did not write or that were changed since",
    )
    p.add_argument(
        "--clean",
        metavar="NAME",
        help="the column of clean ImageNet val: the ImageNet-C columns get their relative mCE against its "
        "top-1 errors (default: a column named val, if any)",
    )


COMMANDS = {
    "run": _add_run,
    "validate": _add_validate,
    "check-data": _add_check_data,
    "report": _add_report,
    "compare": _add_compare,
}


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: `ensemble-eval COMMAND ...`, one subparser per command (`run` is
    implied when the first argument names no command: see `main`)."""
    p = _Parser(prog="ensemble-eval", allow_abbrev=False)
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = p.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")
    for add in COMMANDS.values():
        add(commands)
    return p


def command_parser(name: str) -> argparse.ArgumentParser:
    """The parser of one command ("run", "validate", "check-data", "report", "compare")."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return commands.choices[name]


def run_report(args: argparse.Namespace) -> int:
    """`report`: rebuild.rebuild, then the headline and the report's text."""
    from .rebuild import Request, rebuild
    from .report import run_text

    request = Request(
        Path(args.run_dir),
        args.out,
        args.members,
        args.merge,
        args.crops,
        args.real_labels,
        args.curve_samples,
        args.seed,
        args.overwrite,
    )
    done = rebuild(request)
    print(done.headline())
    print(run_text(done.record, done.written, done.out, None, None), end="")
    return EXIT_OK


def run_compare(args: argparse.Namespace) -> int:
    """`compare`: comparison.compare over the runs given, then its text."""
    from .comparison import compare, request_from

    request = request_from(args.runs, args.out, args.metric, args.allow_different_members, args.overwrite, args.clean)
    done = compare(request)
    print(done.text(), end="")
    return EXIT_OK


def run_main(args: argparse.Namespace) -> int:
    """The main command: the run config (defaults < preset < --config < flags), then api.run."""
    values = vars(args)
    if values.get("protocol") == "list":
        from .presets import describe_presets

        print(describe_presets(), end="")
        return EXIT_OK
    from .api import run
    from .config import build_config

    config = build_config(values.pop("config", None), values)
    if config.verbose:  # -v, or verbose: true in the config file
        logging.getLogger().setLevel(logging.DEBUG)
    return run(config)


def _os_error_line(exc: OSError) -> str:
    """One line for a file-system failure no check foresaw (a path under /proc, a name too long, ...)."""
    where = f" {printable(str(exc.filename))}" if exc.filename else ""
    where = where if len(where) < 200 else where[:200] + "..."
    return f"cannot use{where}: {exc.strerror or exc}; check the path and its permissions"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    import signal

    # Ctrl-C and SIGTERM (a scheduler's pre-emption) both stop a run the same way: the finished
    # batches saved, the resume command printed. Installed explicitly (a process started in the
    # background by a script begins with SIGINT ignored), restored for a caller in the same process.
    with stop_signals(signal.default_int_handler):
        return _main(argv)


def _unknown_command(word: str) -> str | None:
    """A one-line refusal when `word` (the first argument, not a flag) looks like a mistyped
    command; None when it does not look like one (argparse says what is wrong then)."""
    import difflib

    close = difflib.get_close_matches(word, list(COMMANDS), n=1, cutoff=0.7)
    if not close:
        return None
    return (
        f"unknown command {word!r}; did you mean {close[0]}? The commands are {', '.join(COMMANDS)}, "
        "and `run` may be left out (ensemble-eval --models ... --data ...)"
    )


def with_command(argv: list[str]) -> list[str]:
    """argv naming its command: `run` inserted when the first argument names none (the main
    command takes no name; `ensemble-eval --help` is its help, which lists the commands)."""
    if argv and (argv[0] in COMMANDS or argv[0] == "--version"):
        return argv
    if argv and not argv[0].startswith("-") and _unknown_command(argv[0]):
        raise UserError(_unknown_command(argv[0]))
    return ["run", *argv]


def _main(argv: list[str]) -> int:
    verbose = "-v" in argv or "--verbose" in argv
    try:
        if not argv:
            command_parser("run").print_help()
            return EXIT_USER_ERROR
        args = build_parser().parse_args(with_command(argv))
        command = args.__dict__.pop("command")
        if getattr(args, "verbose", False):
            logging.getLogger().setLevel(logging.DEBUG)
        handler = {
            "run": run_main,
            "validate": run_validate,
            "check-data": run_check_data,
            "report": run_report,
            "compare": run_compare,
        }
        return handler[command](args)
    except UserError as exc:
        print(f"ensemble-eval: error: {printable(str(exc))}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as exc:  # the last net: a file-system failure is one line, never a traceback
        if verbose:
            log.exception("file-system error")
        print(f"ensemble-eval: error: {_os_error_line(exc)}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ensemble-eval: interrupted; no result files were written", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point() -> None:
    sys.exit(main())
