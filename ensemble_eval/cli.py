"""Command line: argv -> RunConfig -> run -> files and a table. Exit codes:

0 success; 2 a user error (bad flag, path, checkpoint, image, config), reported in one
line; 130 interrupted. Heavy imports (torch) happen after argument parsing, so --help and
most mistakes answer at once.
"""

from __future__ import annotations

import argparse
import logging
import os
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
        allow_abbrev=False,
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


def _choose_out_dir(config) -> Path:
    """The run directory, checked before any slow work; created only when evaluation starts."""
    if config.out is None:
        stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
        out = Path("runs") / stamp
        n = 2
        while out.exists():  # two runs in the same second
            out = Path("runs") / f"{stamp}-{n}"
            n += 1
        return out
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; pass a directory")
    if (out / "summary.json").exists() and not config.overwrite:
        raise UserError(f"--out {out} already holds results (summary.json); pass --overwrite or choose another --out")
    existing = next((p for p in [out, *out.parents] if p.exists()), Path("."))
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"--out {out} cannot be created ({existing} is not a writable directory); choose another --out")
    return out


def _check_labels_fit(samples, num_classes: int) -> None:
    """The models' class count must cover every label of the dataset (checked before --limit)."""
    if any(s.wnid is not None for s in samples) and num_classes != 1000:
        hint = (
            " (1001 outputs: a TensorFlow port with a background class at index 0; class offsets come "
            "with checkpoint sidecars, not yet supported)"
            if num_classes == 1001
            else ""
        )
        raise UserError(
            f"the models have {num_classes} classes but the labels are ImageNet-1k WordNet ids (1000 classes){hint}; "
            "use 1000-class checkpoints, or a flat folder with --labels filename,index for other class lists"
        )
    bad = next((s for s in samples if not 0 <= s.target < num_classes), None)
    if bad is not None:
        raise UserError(
            f"{bad.rel_path} has class index {bad.target} but the models have {num_classes} classes; "
            "use labels that fit the models"
        )


def run_eval(config) -> int:
    """Check every input, evaluate, write the result files, print the summary (and table)."""
    if not config.models:
        raise UserError("no checkpoints given; pass --models A.pt [B.pt ...]")
    if not config.data:
        raise UserError("no data given; pass --data DIR (one folder per WordNet id)")
    out = _choose_out_dir(config)

    from .checkpoints import expand_model_paths, load_members
    from .data import list_samples

    expand_model_paths(config.models)  # fail on a bad path before any slow work
    samples = list_samples(config.data, config.labels)
    device = _resolve_device(config.device)
    members = load_members(config.models)
    _check_labels_fit(samples, members[0].num_classes)
    if config.limit is not None:
        samples = samples[: config.limit]

    from .ensemble import evaluate
    from .report import write_run

    scheme = config.protocol
    set_names = list(scheme.crop_sets) if config.table else [config.crops]
    batch_size = config.batch_size_for(device.type)
    if device.type == "cuda":  # fp32 means fp32: no TF32 in convolutions or matmuls
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
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

    text = write_run(out, config, members, result, device, batch_size)
    print(text, end="")
    return EXIT_OK


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = vars(parser.parse_args(argv))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not argv:
        parser.print_help()
        return EXIT_USER_ERROR

    from .config import build_config

    try:
        config = build_config(args.pop("config", None), args)
        if config.verbose:
            logging.getLogger().setLevel(logging.DEBUG)
        return run_eval(config)
    except UserError as exc:
        print(f"ensemble-eval: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("ensemble-eval: interrupted; no result files were written", file=sys.stderr)
        return EXIT_INTERRUPTED


def entry_point() -> None:
    sys.exit(main())
