"""bf16 and fp16 autocast against fp32: the ensemble's averaged probabilities, top-1 and top-5
on real images, at each crop set (see tools/benchmark.py, precision_agreement).

    python scripts/make_demo_checkpoints.py --data ../shared/data/imagenet-sample --out ckpts --count 2
    python scripts/precision_agreement.py --data ../shared/data/imagenet-sample --checkpoints ckpts/*.pt \\
        --sets 1=940 10=940 144=48 --out precision.json

Prints one Markdown table row per precision and crop set (the table in docs/speed.md).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from ensemble_eval.config import DEFAULT_BATCH_SIZE, DEFAULT_WORKERS, build_config
from ensemble_eval.data import list_samples
from ensemble_eval.members.inspection import load_members

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository root: tools/ is not installed
from tools.benchmark import Setting, precision_agreement  # noqa: E402


def _set(text: str) -> tuple[str, int]:
    name, _, n = text.partition("=")
    if not n.isdigit():
        raise argparse.ArgumentTypeError(f"expected SET=IMAGES (e.g. 144=48), got {text!r}")
    return name, int(n)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image root (wnid folders) with real images")
    p.add_argument("--checkpoints", nargs="+", required=True, help="the ensemble's checkpoint files")
    p.add_argument(
        "--sets",
        nargs="+",
        type=_set,
        default=[("1", 940), ("10", 940), ("144", 48)],
        metavar="SET=IMAGES",
        help="crop sets and how many (first) images each runs on",
    )
    p.add_argument("--config", help="a YAML crop scheme (ensemble_eval/presets/ or your own)")
    p.add_argument("--precisions", nargs="+", default=["bf16", "fp16"], choices=["bf16", "fp16"])
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch-size", type=int, help="crops per forward pass (default: the device's default)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()

    scheme = build_config(args.config, {}).protocol
    device = torch.device(args.device)
    samples = list_samples(args.data)
    members = load_members(args.checkpoints)
    batch = args.batch_size or DEFAULT_BATCH_SIZE[device.type]
    setting = Setting(samples, members, scheme, "", device, batch, args.workers)
    rows = precision_agreement(setting, dict(args.sets), args.precisions)
    print(f"{len(members)} members ({', '.join(m.name for m in members)}) on {device}")
    head = ["precision", "crops", "images", "max abs diff", "top-1 changed", "top-5 changed"]
    head += ["top-1 err fp32 ->", "top-5 err fp32 ->", "time vs fp32"]
    print("| " + " | ".join(head) + " |")
    print("|---|---:|---:|---:|---:|---:|---|---|---:|")
    for r in rows:
        p_ = r["precision"]
        t1, t5, s = r["top1_err"], r["top5_err"], r["seconds"]
        print(
            f"| {p_} | {r['crop_set']} | {r['images']} | {r['max_abs_diff']:.1e} | {r['top1_changed']} | "
            f"{r['top5_changed']} | {100 * t1['fp32']:.2f}% -> {100 * t1[p_]:.2f}% | "
            f"{100 * t5['fp32']:.2f}% -> {100 * t5[p_]:.2f}% | {s[p_] / s['fp32']:.2f} |"
        )
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(rows, fh, indent=2)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
