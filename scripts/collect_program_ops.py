"""What torchvision's classifiers name as programs: candidates for the allow-list of ensemble_eval/opcheck.py.

    python scripts/collect_program_ops.py                       # every builder up to 100M parameters
    python scripts/collect_program_ops.py --max-params 0        # every builder (slow: minutes, GBs)
    python scripts/collect_program_ops.py --only resnet18 vit_b_16 --keep /tmp/programs [--reuse]

Every torchvision classification builder is built (random init, eval mode), scripted
(torch.jit.script) and traced (torch.jit.trace on one 224x224 image), and a representative set
is torch.exported with a dynamic batch; each archive is saved and read back with
ensemble_eval.opcheck.archive_uses, the same reader the check uses (nothing is loaded with
torch.jit.load or torch.export.load). Prints, per kind (aten operators, prim operators,
builtins, types, attributes, pickle globals, Python functions of .pt2 graphs), every name
found, then the names the allow-list does not hold and the archives it would refuse, and the
check's time per archive.

The output is a list of candidates, not a list to copy: review every new name by hand before
adding it to opcheck.py (never an operator that touches files, storage sharing or memory
mapping, processes, the network, printing or logging, and no namespace but aten and prim).
"""

from __future__ import annotations

import argparse
import collections
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
import torchvision

from ensemble_eval import opcheck

EXPORTED = [  # a representative set: convolutions, inception branches, depthwise/SE blocks, attention, windows
    "resnet18",
    "googlenet",
    "inception_v3",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "vit_b_16",
    "convnext_tiny",
    "swin_t",
    "maxvit_t",
    "regnet_y_400mf",
    "densenet121",
    "squeezenet1_0",
    "shufflenet_v2_x0_5",
    "mnasnet0_5",
    "alexnet",
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="*", help="these builders only (default: all)")
    parser.add_argument(
        "--max-params", type=float, default=100, help="skip builders above this many millions (0: none)"
    )
    parser.add_argument("--no-export", action="store_true", help="TorchScript only")
    parser.add_argument("--keep", type=Path, help="keep the archives in this folder")
    parser.add_argument("--reuse", action="store_true", help="read archives already in --keep instead of remaking them")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    torch.set_grad_enabled(False)
    names = args.only or torchvision.models.list_models(module=torchvision.models)
    scratch = None if args.keep else tempfile.TemporaryDirectory(prefix="program_ops_")
    out = args.keep or Path(scratch.name)
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, set[str]] = collections.defaultdict(set)
    refused: dict[str, list[str]] = {}
    timings: list[tuple[str, float, int]] = []

    def read(path: Path, kind: str) -> None:
        start = time.perf_counter()
        uses = opcheck.archive_uses(str(path), kind)
        timings.append((path.name, time.perf_counter() - start, path.stat().st_size))
        bad = sorted({opcheck.refusal(u) for u in uses if not opcheck.allowed(u)})
        for u in uses:
            found[u.kind].add(u.name)
        if scratch is not None:
            path.unlink()  # archives of the large builders take GBs
        if bad:
            refused[path.name] = bad

    for name in names:
        params = next(iter(torchvision.models.get_model_weights(name))).meta["num_params"]
        if args.max_params and params > args.max_params * 1e6:
            print(f"skip {name} ({params / 1e6:.0f}M parameters; --max-params 0 includes it)", file=sys.stderr)
            continue
        start = time.perf_counter()
        x = torch.zeros(1, 3, 224, 224)
        model = None
        for suffix, kind in ((".scripted.ts", "torchscript"), (".traced.ts", "torchscript"), (".pt2", "torch.export")):
            path = out / f"{name}{suffix}"
            if suffix == ".pt2" and (args.no_export or name not in EXPORTED):
                continue
            if not (args.reuse and path.is_file()):
                model = model or torchvision.models.get_model(name).eval()
                try:
                    if suffix == ".scripted.ts":
                        torch.jit.script(model).save(str(path))
                    elif suffix == ".traced.ts":
                        torch.jit.trace(model, x, check_trace=False).save(str(path))
                    else:
                        batch = torch.export.Dim("batch", min=1, max=1024)
                        program = torch.export.export(model, (x.expand(2, -1, -1, -1),), dynamic_shapes=({0: batch},))
                        torch.export.save(program, str(path))
                except Exception as exc:  # e.g. a builder TorchScript cannot compile: say so, go on
                    print(f"{path.name}: not made ({type(exc).__name__}: {str(exc)[:100]})", file=sys.stderr)
                    continue
            read(path, kind)
        print(f"{name}: {time.perf_counter() - start:.1f} s", file=sys.stderr)

    for kind in sorted(found):
        print(f"\n## {kind} ({len(found[kind])})")
        print(" ".join(sorted(found[kind])))
    lists = opcheck._lists()
    print("\n## not on the allow-list")
    for kind in sorted(found):
        if kind in lists:
            missing = sorted(n for n in found[kind] if not opcheck.allowed(opcheck.Use(kind, n, "")))
            if missing:
                print(f"{kind}: {' '.join(missing)}")
    print(f"\n## refused archives ({len(refused)})")
    for archive, messages in sorted(refused.items()):
        print(f"{archive}: {len(messages)} refusal(s), e.g. {messages[0]}")
    print("\n## check time per archive (s, MB)")
    for archive, seconds, size in sorted(timings, key=lambda t: -t[1]):
        print(f"{archive}: {seconds:.3f} s, {size / 1e6:.1f} MB")
    if scratch is not None:
        scratch.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
