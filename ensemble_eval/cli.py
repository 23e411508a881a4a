"""Command line: argv -> RunConfig -> run -> files and a table. Exit codes:

0 success; 2 a user error (bad flag, path, checkpoint, image, config), reported in one
line; 130 interrupted. Heavy imports (torch) happen after argument parsing, so --help and
most mistakes answer at once.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from . import __version__
from .errors import UserError

log = logging.getLogger("ensemble_eval")

EXIT_OK = 0
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130

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

  # a custom crop scheme or saved settings (command-line flags override the file)
  ensemble-eval --config configs/ilsvrc2014.yaml --models a.pt b.pt --data val/

outputs (in --out): summary.json, predictions.npz, and with --table table.md, table.csv
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, not the whole usage block
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="ensemble-eval",
        description="Multi-crop, multi-model evaluation of image classifiers (GoogLeNet ILSVRC 2014 protocol).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        argument_default=argparse.SUPPRESS,  # unset flags don't override the YAML file
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    g = p.add_argument_group("inputs")
    g.add_argument("--models", nargs="+", metavar="CKPT", help="checkpoint files or shell globs (quoted or not)")
    g.add_argument(
        "--data", metavar="DIR", help="image root: one folder per WordNet id, or a flat folder with --labels"
    )
    g.add_argument(
        "--labels", metavar="FILE.csv", help="labels for a flat folder: rows filename,wnid or filename,index"
    )
    g.add_argument("--limit", type=_positive_int, metavar="N", help="evaluate only the first N images (sorted order)")

    g = p.add_argument_group("protocol")
    g.add_argument(
        "--crops",
        metavar="SET",
        help="crop set to report: 1, 10 or 144 with the built-in ILSVRC 2014 protocol (default 144)",
    )
    g.add_argument(
        "--table",
        action="store_true",
        default=None,
        help="run the full crop grid once and report every crop set x {best member, all members}",
    )
    g.add_argument("--config", metavar="FILE.yaml", help="YAML run config / crop scheme (see configs/ilsvrc2014.yaml)")

    g = p.add_argument_group("execution")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], help="where models run (default auto: cuda if present)")
    g.add_argument(
        "--batch-size", type=_positive_int, metavar="N", help="crops per forward pass (default 16 on CPU, 288 on CUDA)"
    )
    g.add_argument(
        "--workers",
        type=_non_negative_int,
        metavar="N",
        help="image decoding/cropping processes (default 2; 0 = in the main process)",
    )
    g.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        default=None,
        help="run models in NCHW instead of channels_last",
    )

    g = p.add_argument_group("outputs")
    g.add_argument("--out", metavar="DIR", help="run directory for the result files (default runs/<UTC time>)")
    g.add_argument("--overwrite", action="store_true", default=None, help="replace results already in --out")
    g.add_argument("--no-progress", dest="progress", action="store_false", default=None, help="no progress bar")
    g.add_argument("-v", "--verbose", action="store_true", default=None, help="debug logging")
    return p


def _resolve_device(name: str):
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu or auto")
    return torch.device(name)


def _prepare_out_dir(config) -> Path:
    if config.out is None:
        out = Path("runs") / time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    else:
        out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory")
    if (out / "summary.json").exists() and not config.overwrite:
        raise UserError(f"--out {out} already holds results (summary.json); pass --overwrite or choose another --out")
    return out


def run_eval(config) -> int:
    """Evaluate, write the result files, print the summary (and table)."""
    if not config.models:
        raise UserError("no checkpoints given; pass --models A.pt [B.pt ...]")
    if not config.data:
        raise UserError("no data given; pass --data DIR (one folder per WordNet id)")
    out = _prepare_out_dir(config)

    from .checkpoints import expand_model_paths, load_members
    from .data import list_samples

    expand_model_paths(config.models)  # fail on a bad path before any slow work
    samples = list_samples(config.data, config.labels)
    if config.limit is not None:
        samples = samples[: config.limit]
    device = _resolve_device(config.device)
    members = load_members(config.models)
    num_classes = members[0].num_classes
    top_target = max(s.target for s in samples)
    if top_target >= num_classes:
        bad = next(s for s in samples if s.target >= num_classes)
        raise UserError(
            f"{bad.rel_path} has class index {bad.target} but the models have {num_classes} classes; "
            "use data whose labels fit the models (ImageNet-1k needs 1000-class models)"
        )

    import numpy as np

    from .ensemble import evaluate
    from .report import atomic_write_text, render_table, table_cells, table_csv, write_json, write_predictions

    scheme = config.protocol
    set_names = list(scheme.crop_sets) if config.table else [config.crops]
    batch_size = config.batch_size_for(device.type)
    names = [m.name for m in members]
    log.info(
        "%d images, %d members, crop sets %s, device %s, batch %d",
        len(samples),
        len(members),
        set_names,
        device,
        batch_size,
    )
    result = evaluate(
        samples,
        members,
        scheme,
        set_names,
        config.crops,
        device,
        batch_size,
        config.workers,
        channels_last=config.channels_last,
        progress=config.progress,
    )

    counts = result.tally.ensemble[config.crops]
    num_crops = result.crops_per_set[config.crops]
    summary = {
        "version": __version__,
        "num_images": counts.num_images,
        "num_classes": num_classes,
        "crops": config.crops,
        "num_crops": num_crops,
        "num_models": len(members),
        "models": [
            {
                "path": m.path,
                "sha256": m.sha256,
                "arch": m.arch.name,
                "num_classes": m.num_classes,
                "aux_heads": m.arch.aux_heads,
                "mean": list(m.mean),
                "std": list(m.std),
                "errors": {s: result.tally.members[i][s].to_dict() for s in set_names},
            }
            for i, m in enumerate(members)
        ],
        "top1_err": counts.top1_err,
        "top5_err": counts.top5_err,
        "top1_correct": counts.top1,
        "top5_correct": counts.top5,
        "crop_sets": {
            s: result.tally.ensemble[s].to_dict() | {"num_crops": result.crops_per_set[s]} for s in set_names
        },
        "device": str(device),
        "batch_size": batch_size,
        "seconds": round(result.seconds, 3),
        "images_per_second": round(counts.num_images / result.seconds, 3) if result.seconds else None,
        "crops_per_image": result.crops_per_image,
        "crop_evals_per_second": round(counts.num_images * result.crops_per_image * len(members) / result.seconds, 3)
        if result.seconds
        else None,
        "data": str(config.data),
        "labels": config.labels,
        "limit": config.limit,
        "protocol": scheme.to_dict(),
        "command": sys.argv,
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.mkdir(parents=True, exist_ok=True)
    written = ["summary.json", "predictions.npz"]
    if config.table:
        cells = table_cells(result.tally, result.crops_per_set, names)
        summary["table"] = [
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
        atomic_write_text(
            out / "table.md", render_table(cells, result.tally, result.crops_per_set, names, markdown=True)
        )
        atomic_write_text(out / "table.csv", table_csv(cells))
        written += ["table.md", "table.csv"]
        print(render_table(cells, result.tally, result.crops_per_set, names))
    targets = np.array([s.target for s in samples], dtype=np.int64)
    write_predictions(out / "predictions.npz", [s.rel_path for s in samples], targets, result.probs)
    write_json(out / "summary.json", summary)

    print(
        f"{len(members)} model(s) x {num_crops} crop(s) on {counts.num_images} images: "
        f"top-1 error {100 * counts.top1_err:.2f}%, top-5 error {100 * counts.top5_err:.2f}% "
        f"({result.seconds:.1f} s on {device})"
    )
    print(f"wrote {', '.join(written)} to {out}")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    verbose = args.pop("verbose", False)
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not argv:
        parser.print_help()
        return EXIT_USER_ERROR

    from .config import build_config

    try:
        config = build_config(args.pop("config", None), args)
        return run_eval(config)
    except UserError as exc:
        print(f"ensemble-eval: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ensemble-eval: interrupted; no result files were written", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point() -> None:
    sys.exit(main())
