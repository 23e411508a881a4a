"""`torchvision:<builder>[:<WEIGHTS>]`: torchvision's published weights, with their transform
and accuracy from the weights' metadata.

The file is downloaded once into torch.hub's cache and read as any torch.save file
(weights_only). Its sha256 must start with the one its published file name carries, or it is
an ERROR (a WARN under --trust-checkpoints, without the published accuracy).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import torch

from ..errors import CheckpointError, first_line, short_repr
from ..preload import Refusal
from .convention import IMAGENET_MEAN, IMAGENET_STD, TRANSFORM_INPUT_ARCHS, Convention
from .format import Loaded, PublishedSource
from .tensors import sha256_file
from .torch_pickle import torch_load


def published_sha256_prefix(url: str) -> str | None:
    """The start of the sha256 that torchvision's file names carry (resnet50-11ad3fa6.pth), if any."""
    found = re.search(r"-([a-f0-9]{8,})\.", os.path.basename(url))
    return found.group(1) if found else None


def _check_published_hash(url: str, file: str, trust: bool, ins) -> bool:
    """Whether the cached file is the published one; a different file is an ERROR unless `trust`
    (then a WARN, and its published accuracy is not claimed)."""
    prefix = published_sha256_prefix(url)
    if prefix is None or (ins.sha256 or "").startswith(prefix):
        return True
    problem = (
        f"the cached file's sha256 starts with {(ins.sha256 or '?')[: len(prefix)]}, not {prefix} as torchvision's "
        f"published file does: it is not the published file; delete {file} to download it again"
    )
    if not trust:
        raise Refusal(problem + ", or pass --trust-checkpoints to use it without the published accuracy")
    ins.warnings.append(problem + "; used as it is (--trust-checkpoints), without the published accuracy")
    return False


def _torchvision_file(builder: str, weights) -> str:
    """The cached file of torchvision's published weights, downloaded once; a clear refusal offline."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    target = cache / os.path.basename(weights.url)
    if not target.is_file():
        try:
            with contextlib.redirect_stdout(sys.stderr):  # torch.hub announces on stdout (validate --json -)
                torch.hub.load_state_dict_from_url(weights.url, model_dir=str(cache), progress=True, check_hash=True)
        except Exception as exc:
            # not download_hint's "a local file with arch:": such a file would lose the published view and
            # accuracy, and for GoogLeNet and Inception v3 the input transform (transform_input) with them
            raise Refusal(
                f"cannot download torchvision's weights ({first_line(exc)}); offline, fetch {weights.url} on a "
                f"machine with internet and put it at {target}: torchvision:{builder} then uses it as published "
                "(docs/real-data.md)"
            ) from exc
    return str(target)


def _view_of(weights) -> tuple[dict, int, int, str]:
    """(transform keywords, crop size, resize size, interpolation) of torchvision's weights."""
    kw = dict(getattr(weights.transforms, "keywords", {}))
    crop = kw.get("crop_size", 224)
    resize = kw.get("resize_size", 256)
    crop = crop[0] if isinstance(crop, (list, tuple)) else crop
    resize = resize[0] if isinstance(resize, (list, tuple)) else resize
    mode = kw.get("interpolation")
    interpolation = str(getattr(mode, "value", mode or "bilinear")).lower()
    return kw, crop, resize, interpolation


def torchvision_convention(builder: str, weights, published_file: bool = True) -> tuple[Convention, list[str]]:
    """Input convention and published figures from torchvision's weights metadata (the figures only
    for the published file)."""
    kw, crop, resize, interpolation = _view_of(weights)
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}) if published_file else {}
    published = None
    if "acc@1" in metrics and "acc@5" in metrics:
        published = (round(1 - metrics["acc@1"] / 100, 6), round(1 - metrics["acc@5"] / 100, 6))
    notes = [f"{weights}: published with Resize({resize}, {interpolation}) + CenterCrop({crop})"]
    if published:
        notes[0] += f", acc@1 {metrics['acc@1']}, acc@5 {metrics['acc@5']}"
    conv = Convention(
        mean=tuple(kw.get("mean", IMAGENET_MEAN)),
        std=tuple(kw.get("std", IMAGENET_STD)),
        transform_input=builder in TRANSFORM_INPUT_ARCHS,
        input_size=int(crop),
        resize_size=int(resize),
        interpolation=interpolation,
        antialias=bool(kw.get("antialias", True)),
        published=published,
        source="torchvision",
    )
    return conv, notes


class TorchvisionWeights(PublishedSource):
    kind = "torchvision"

    @property
    def label(self) -> str:
        return "torchvision weights"

    def resolve(self, spec: str):
        """`torchvision:<builder>[:<WEIGHTS>]` -> (builder, weights enum member)."""
        import difflib

        import torchvision.models as tvm

        builder, _, weights_name = spec.partition(":")[2].partition(":")
        builders = tvm.list_models(module=tvm)
        if builder not in builders:
            close = difflib.get_close_matches(builder, builders, n=3)
            raise CheckpointError(
                f"{short_repr(spec)}: torchvision has no classification builder {builder!r}"
                + (f"; closest: {', '.join(close)}" if close else "")
                + "; the form is torchvision:<builder>[:<WEIGHTS>], e.g. torchvision:resnet50:IMAGENET1K_V2"
            )
        enum = tvm.get_model_weights(builder)
        try:
            weights = enum.DEFAULT if weights_name in ("", "DEFAULT") else enum[weights_name]
        except KeyError:
            names = ", ".join(w.name for w in enum)
            raise CheckpointError(
                f"{spec}: {builder} has no weights {weights_name!r}; it has {names} (or DEFAULT)"
            ) from None
        return builder, weights

    def read(self, path: str, trust: bool, ins) -> Loaded:
        name, weights = self.resolve(path)
        file = _torchvision_file(name, weights)
        ins.format = self.label
        ins.size, ins.sha256 = os.path.getsize(file), sha256_file(file)
        published = _check_published_hash(weights.url, file, trust, ins)
        ins.convention, notes = torchvision_convention(name, weights, published)
        ins.notes += notes
        ins.notes.append(f"cached at {file}")
        return Loaded(torch_load(file, trust=False)[0], arch=name)


FORMAT = TorchvisionWeights()
