"""Speed of ensemble-eval measured side by side with the model alone, the hardware's matrix-multiply
ceiling and a naive per-crop evaluation (see ensemble_eval/benchmark.py).

    python scripts/benchmark.py --data ../shared/data/imagenet-sample --images 8 --models 2 --crops 144 \\
        --out bench.json

Prints the figures and the ratios, and the start-up (fresh processes: `import torch, torchvision`,
`--help`, a 1-image 1-crop run), and writes them as JSON (compare two machines or versions).
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

from ensemble_eval.benchmark import random_members, run_benchmark
from ensemble_eval.checkpoints import load_members
from ensemble_eval.config import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, build_config
from ensemble_eval.data import list_samples


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image root (wnid folders) with real images")
    p.add_argument("--images", type=int, default=8, help="images (sorted order) for the end-to-end and naive runs")
    p.add_argument("--models", type=int, default=2, help="number of (untrained) GoogLeNets in the ensemble")
    p.add_argument("--checkpoints", nargs="+", help="use these checkpoint files instead of untrained models")
    p.add_argument("--crops", default="144", help="crop set (1, 10, 144 with the built-in protocol)")
    p.add_argument("--config", help="a YAML crop scheme (configs/)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, help="crops per forward pass (default as ensemble-eval)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--repeats", type=int, default=3, help="timed repeats per measurement (median reported)")
    p.add_argument("--naive-repeats", type=int, default=1, help="repeats of the (slow) naive baseline")
    p.add_argument("--no-startup", action="store_true", help="skip the start-up timings (fresh processes)")
    p.add_argument("--out", help="write the record as JSON here")
    args = p.parse_args()

    scheme = build_config(args.config, {"crops": args.crops}).protocol
    device = torch.device(args.device)
    samples = list_samples(args.data)[: args.images]
    members = load_members(args.checkpoints) if args.checkpoints else random_members(args.models)
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE[device.type]
    record = run_benchmark(
        samples,
        members,
        scheme,
        args.crops,
        device,
        batch_size,
        args.workers,
        repeats=args.repeats,
        naive_repeats=args.naive_repeats,
        measure_startup=not args.no_startup,
    )
    m, s, r = record["machine"], record["settings"], record["ratios"]
    print(f"{m['cpu']} ({m['cpu_cores']} cores, {m['torch_threads']} threads), torch {m['torch']}, {m['device']}")
    print(f"{s['images']} images x {s['crops_per_image']} crops x {s['models']} models, batch {s['batch_size']}")
    print(f"matmul ceiling     {record['ceiling_gflops']['fp32']:8.1f} GFLOP/s fp32")
    print(f"model alone        {record['model']['crops_per_s']:8.1f} crops/s  {record['model']['gflops']:7.1f} GFLOP/s")
    print(f"ensemble-eval      {record['end_to_end']['crops_per_s']:8.1f} crops/s")
    print(f"naive per-crop     {record['naive']['crops_per_s']:8.1f} crops/s")
    if "reference_1crop" in record:
        print(f"torchvision ref.   {record['reference_1crop']['crops_per_s']:8.1f} crops/s (1 crop)")
    for name, t in record["targets"].items():
        print(f"{name:26s} {r[name]:6.2f}  (target >= {t['target']}: {'met' if t['met'] else 'NOT met'})")
    if "startup" in record:
        st = record["startup"]
        print(f"import torch, torchvision {st['import_torch_torchvision_s']:6.2f} s")
        print(f"1-image 1-crop run        {st['one_image_one_crop_run_s']:6.2f} s")
        for name, t in st["targets"].items():
            print(f"{name:26s} {st[name]:6.2f} s (target <= {t['at_most']} s: {'met' if t['met'] else 'NOT met'})")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(record, fh, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
