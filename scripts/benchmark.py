"""Speed of ensemble-eval measured side by side with the models alone (at every candidate batch
size), the hardware's matrix-multiply ceiling and a naive per-crop evaluation, for ensembles of
each size given (see tools/benchmark.py).

    python scripts/benchmark.py --data ../shared/data/imagenet-sample --images 6 --models 1 2 --crops 144 \\
        --out bench.json

Prints, per ensemble size, the models alone at each batch size, the tool's own batch choice
and steady-state rate, the naive baseline and the ratios against the targets; then the
start-up (fresh processes: `import torch, torchvision`, `--help`, a 1-image 1-crop run). With
--loaders N, the crop loader alone over N images as a folder, Parquet shards and tar shards
(--loaders-only: that alone). Writes everything as JSON with --out (compare two machines or
versions).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ensemble_eval.config import DEFAULT_WORKERS, build_config
from ensemble_eval.data import list_samples
from ensemble_eval.members.inspection import load_members

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tools/ is not installed
from tools.benchmark import (  # noqa: E402
    Setting,
    loader_throughput,
    random_members,
    resize_backends,
    run_benchmark,
    startup,
)


def _batch_size(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image root (wnid folders) with real images")
    p.add_argument("--images", type=int, default=6, help="images (sorted order) for the tool and the naive runs")
    p.add_argument("--models", type=int, nargs="+", default=[1, 2], help="ensemble sizes of (untrained) GoogLeNets")
    p.add_argument("--checkpoints", nargs="+", help="use these checkpoint files (one ensemble) instead")
    p.add_argument("--crops", default="144", help="crop set (1, 10, 144 with the built-in protocol)")
    p.add_argument("--config", help="a YAML crop scheme (ensemble_eval/presets/ or your own)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=_batch_size, default="auto", help="the tool's crops per pass (default auto)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="autocast of the passes")
    p.add_argument("--compile", action="store_true", help="the tool's members under torch.compile")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement")
    p.add_argument("--naive-repeats", type=int, default=1, help="repeats of the (slow) naive baseline")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up timings (fresh processes)")
    p.add_argument("--no-backends", action="store_true", help="skip the tensor vs pil resize comparison")
    p.add_argument(
        "--loaders",
        type=int,
        default=0,
        metavar="N",
        help="also time the crop loader alone (no model) over the first N images as a folder, Parquet shards "
        "and tar shards (needs pyarrow; default 0: not timed)",
    )
    p.add_argument("--loaders-only", action="store_true", help="time only the loaders (--loaders N), nothing else")
    p.add_argument("--out", help="write the records as JSON here")
    args = p.parse_args()

    scheme = build_config(args.config, {"crops": args.crops}).protocol
    device = torch.device(args.device)
    if args.loaders_only:
        if args.loaders < 1:
            p.error("--loaders-only needs --loaders N (images)")
        output = {
            "loaders": loader_throughput(
                list_samples(args.data)[: args.loaders], scheme, args.crops, args.workers, args.repeats
            )
        }
        _print_loaders(output["loaders"])
        return _write(output, args.out)
    samples = list_samples(args.data)[: args.images]
    ensembles = [load_members(args.checkpoints)] if args.checkpoints else [random_members(n) for n in args.models]
    runs = []
    for members in ensembles:
        setting = Setting(
            samples,
            members,
            scheme,
            args.crops,
            device,
            args.batch_size,
            args.workers,
            precision=args.precision,
            compile=args.compile,
        )
        record = run_benchmark(setting, repeats=args.repeats, naive_repeats=args.naive_repeats)
        runs.append(record)
        _print(record)
    output = {"runs": runs}
    if not args.no_backends:
        tool_batch = runs[0]["end_to_end"]["batch_size"]
        first = Setting(samples, ensembles[0], scheme, args.crops, device, tool_batch, args.workers)
        output["resize_backends"] = resize_backends(first, args.repeats)
        _print_backends(output["resize_backends"])
    if not args.no_startup:
        output["startup"] = startup(samples, ensembles[0], args.repeats)
        _print_startup(output["startup"])
    if args.loaders:
        output["loaders"] = loader_throughput(
            list_samples(args.data)[: args.loaders], scheme, args.crops, args.workers, args.repeats
        )
        _print_loaders(output["loaders"])
    return _write(output, args.out)


def _write(output: dict, out: str | None) -> int:
    if out:
        with open(out, "w") as fh:
            json.dump(output, fh, indent=2)
        print(f"wrote {out}")
    return 0


def _print_loaders(lo: dict) -> None:
    print(
        f"crop loader alone ({lo['images']} images x {lo['crops_per_image']} crops, {lo['workers']} workers; "
        "read, decode, crop, no model)"
    )
    for name, rate in lo["images_per_s"].items():
        whole, read = lo["whole_pass_images_per_s"][name], lo["read_ms_per_image"][name]
        print(
            f"  {name:8s} {rate:8.2f} images/s steady state ({whole:.2f} over the whole pass, start included); "
            f"reading alone {read:.2f} ms/image"
        )
    print(f"  Parquet / folder x{lo['parquet_over_folder']:.2f}, tar / folder x{lo['tar_over_folder']:.2f}")


def _print_backends(rb: dict) -> None:
    ex, e2e = rb["extract_seconds_per_image"], rb["end_to_end_seconds_per_image"]
    print(f"resize backends ({rb['crops']} crops): a loader worker's seconds per image, then the tool end to end")
    for backend in ex:
        print(f"  {backend:6s} extract {ex[backend]:.4f} s/image   end to end {e2e[backend]:.3f} s/image")
    print(
        f"  pil / tensor: extract x{rb['pil_over_tensor_extract']:.2f}, "
        f"end to end x{rb['pil_over_tensor_end_to_end']:.2f}"
    )


def _print_startup(st: dict) -> None:
    print(f"import torch, torchvision {st['import_torch_torchvision_s']:6.2f} s")
    print(f"1-image 1-crop run        {st['one_image_one_crop_run_s']:6.2f} s")
    for name, t in st["targets"].items():
        print(f"{name:26s} {st[name]:6.2f} s (target <= {t['at_most']} s: {'met' if t['met'] else 'NOT met'})")


def _print(record: dict) -> None:
    m, s, r = record["machine"], record["settings"], record["ratios"]
    model, tool = record["model"], record["end_to_end"]
    print(f"{m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} threads), torch {m['torch']}, {m['device']}")
    print(
        f"{s['images']} images x {s['crops_per_image']} crops x {s['models']} models, {s['precision']}"
        f"{', compiled' if s['compile'] else ''} (crops/s count crops x models: one member's crops/s)"
    )
    print(f"matmul ceiling     {record['ceiling_gflops']['fp32']:8.1f} GFLOP/s fp32")
    table = "  ".join(f"{b}: {v:.1f}" for b, v in model["batches"].items())
    print(f"models alone       by batch  {table}")
    print(f"models alone       {model['crops_per_s']:8.1f} crops/s at their best batch {model['best_batch']}")
    choice = tool["choice"]
    chose = "  ".join(f"{b}: {v:.1f}" for b, v in choice["tried"].items())
    print(f"ensemble-eval      batch {tool['batch_size']} ({choice['source']}{'; timed ' + chose if chose else ''})")
    print(
        f"ensemble-eval      {tool['crops_per_s']:8.1f} crops/s steady state ({tool['seconds_per_image']:.3f} s/image)"
    )
    print(f"naive per-crop     {record['naive']['crops_per_s']:8.1f} crops/s")
    if "reference_1crop" in record:
        print(f"torchvision ref.   {record['reference_1crop']['crops_per_s']:8.1f} crops/s (1 crop)")
    for name, t in record["targets"].items():
        print(f"{name:26s} {r[name]:6.2f}  (target >= {t['target']}: {'met' if t['met'] else 'NOT met'})")
    hours = record["projection"]["full_protocol_hours"]
    print(f"full protocol (7 x 144 x 50,000 = 50.4 M passes) at this rate: {hours:.2f} h")
    print()


if __name__ == "__main__":
    sys.exit(main())
