"""Cost of each multi-crop protocol (ensemble_eval/presets) measured side by side on this machine.

    python scripts/protocol_costs.py --data ../shared/data/imagenet-sample --images 8 --checkpoints ckpts/demo_0.pt

For every preset and crop set listed below it runs the tool's evaluation loop over the first
--images images and over half of them (sets cheaper than 144 crops: over proportionally more
images); the difference is the steady-state time per image (start-up cancels). Prints a
Markdown table: views per image, pixels per image in 224 x 224 crops, seconds per image and
the cost relative to the first row (the standard 1 crop, Resize(256) + CenterCrop(224)).
The members must take every protocol's views (e.g. GoogLeNet or a ResNet).
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
from tools.benchmark import protocol_costs, random_members  # noqa: E402

ROWS = [  # (preset, crop set)
    ("googlenet-144", "1"),
    ("googlenet-144", "10"),
    ("googlenet-144", "144"),
    ("vgg-150", "150"),
    ("resnet-dense", "5"),
    ("resnet-dense-flip", "10"),
    ("inception-299-144", "1"),
    ("inception-299-144", "144"),
]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="image root (wnid folders) with real images")
    p.add_argument("--images", type=int, default=8, help="images (sorted order) per costly measurement")
    p.add_argument("--checkpoints", nargs="+", help="members (default: one untrained GoogLeNet)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    p.add_argument(
        "--batch-size",
        type=int,
        help="crops per forward pass, one size for every preset (default 16 on CPU, 288 on CUDA)",
    )
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    p.add_argument("--out", help="write the rows as JSON here")
    args = p.parse_args()

    device = torch.device(args.device)
    samples = list_samples(args.data)
    members = load_members(args.checkpoints) if args.checkpoints else random_members(1)
    batch_size = args.batch_size or DEFAULT_BATCH_SIZE[device.type]
    protocols = [(name, build_config(None, {"protocol": name}).protocol, s) for name, s in ROWS]
    rows = protocol_costs(samples, members, protocols, device, batch_size, args.workers, args.images)
    print(f"{len(members)} member(s), batch {batch_size}, {device}")
    print("| preset | crop set | views | pixels (224 crops) | images | s / image | cost vs 1 crop |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['protocol']} | {r['crop_set']} | {r['views']} | {r['crops_224_equivalent']:.1f} | {r['images']} "
            f"| {r['seconds_per_image']:.3f} | {r['cost_vs_first']:.1f} |"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2) + "\n")
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
