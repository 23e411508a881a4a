"""Make input-sensitive demo checkpoints from real images (offline).

    python scripts/make_demo_checkpoints.py --out ckpts --count 2
    python scripts/make_demo_checkpoints.py --out mixed --arch googlenet resnet18 mobilenet_v3_small --count 3

Writes ckpts/demo_0.pt, demo_1.pt, ...: torchvision state dicts (GoogLeNet by default; with
--arch, checkpoint i is of architecture i modulo the list) whose final layer is fitted to the
first --images images of --data (see tools/demo.py). By default --data is samples/fit, the 40
images shipped for fitting; the README's demo evaluates samples/eval, 8 other images of 8 other
classes, so the demo never reports on images the heads were fitted to. No sidecar is written:
the architecture is recognised from the keys. Even-numbered files are bare state dicts;
odd-numbered ones are saved the way DDP training scripts do
({"state_dict": {"module.<key>": ...}, "epoch": ...}) to exercise unwrapping.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from ensemble_eval.data import decode_image, list_samples

ROOT = Path(__file__).resolve().parent.parent
FIT_IMAGES = ROOT / "samples" / "fit"  # shipped with the repository (samples/README.md)
sys.path.insert(0, str(ROOT))  # the repository root: tools/ is not installed
from tools.demo import make_demo_googlenet, make_demo_model  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--data",
        default=str(FIT_IMAGES),
        help="ImageFolder-by-wnid root with real images to fit the heads to (default: the shipped samples/fit)",
    )
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
