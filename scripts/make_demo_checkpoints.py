"""Make input-sensitive demo checkpoints from real images (offline).

    python scripts/make_demo_checkpoints.py --data ../shared/data/imagenet-sample --out ckpts --count 2
    python scripts/make_demo_checkpoints.py --data ../shared/data/imagenet-sample --out mixed \
        --arch googlenet resnet18 mobilenet_v3_small --count 3

Writes ckpts/demo_0.pt, demo_1.pt, ...: torchvision state dicts (GoogLeNet by default; with
--arch, checkpoint i is of architecture i modulo the list) whose final layer is fitted to the
first --images images of --data (see ensemble_eval/demo.py). No sidecar is written: the
architecture is recognised from the keys. Even-numbered files are bare state dicts;
odd-numbered ones are saved the way DDP training scripts do
({"state_dict": {"module.<key>": ...}, "epoch": ...}) to exercise unwrapping.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ensemble_eval.data import decode_image, list_samples
from ensemble_eval.demo import make_demo_googlenet, make_demo_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="ImageFolder-by-wnid root with real images")
    p.add_argument("--out", required=True, help="directory for the checkpoints")
    p.add_argument("--count", type=int, default=2, help="number of checkpoints (different seeds)")
    p.add_argument("--images", type=int, default=64, help="images (sorted order) the heads are fitted to")
    p.add_argument("--no-aux", action="store_true", help="leave out the auxiliary heads (GoogLeNet)")
    p.add_argument(
        "--arch", nargs="+", default=["googlenet"], metavar="BUILDER", help="torchvision builders, used in turn"
    )
    args = p.parse_args()

    samples = list_samples(args.data)[: args.images]
    images = [decode_image(s.path) for s in samples]
    targets = [s.target for s in samples]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for i in range(args.count):
        arch = args.arch[i % len(args.arch)]
        if arch == "googlenet":
            model = make_demo_googlenet(images, targets, seed=i, aux_heads=not args.no_aux)
        else:
            model = make_demo_model(arch, images, targets, seed=i)
        state = model.state_dict()
        path = out / f"demo_{i}.pt"
        if i % 2:
            torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 90}, path)
        else:
            torch.save(state, path)
        print(f"wrote {path} ({arch}, fitted to {len(images)} images, seed {i})")


if __name__ == "__main__":
    from ensemble_eval.errors import UserError

    try:
        main()
    except UserError as exc:  # a missing or empty --data: one line, as the command says it
        print(f"make_demo_checkpoints.py: error: {exc}", file=sys.stderr)
        sys.exit(2)
