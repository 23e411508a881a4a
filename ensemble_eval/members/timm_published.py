"""timm (optional extra): `timm:<name>` published weights, and state dicts of `arch: timm/<name>`.

Published weights come from the Hugging Face hub cache (downloaded once) and are read by the
file formats' readers without trust; their mean, std and 1-crop geometry come from timm's
pretrained config. This source also owns the `timm/` architecture namespace: models.py asks
the registry for it to identify and create `timm/<name>` networks.
"""

from __future__ import annotations

import difflib
import math
import os

import torch
from torch import nn

from ..crops import INTERPOLATIONS
from ..errors import CheckpointError, first_line
from ..models import ArchitectureError, ArchSpec
from ..preload import Refusal
from .convention import Convention
from .format import Loaded, PublishedSource, download_hint
from .tensors import sha256_file

TIMM_EXTRA = "timm models need the optional timm extra: pip install -e '.[timm]' (or pip install timm)"


def import_timm():
    try:
        import timm
    except ImportError:
        raise ArchitectureError(TIMM_EXTRA) from None
    return timm


def timm_convention(name: str) -> Convention:
    """mean, std and the 1-crop geometry of timm's pretrained config for `name`."""
    cfg = import_timm().models.get_pretrained_cfg(name)
    if cfg is None:
        return Convention(source="timm")
    size = int(cfg.input_size[-1])
    crop_pct = cfg.crop_pct or 0.875
    return Convention(
        mean=tuple(float(x) for x in cfg.mean),
        std=tuple(float(x) for x in cfg.std),
        input_size=size,
        resize_size=int(math.floor(size / crop_pct)),
        interpolation=cfg.interpolation if cfg.interpolation in INTERPOLATIONS else "bicubic",
        unreproduced=_timm_unreproduced(cfg, size, crop_pct),
        source="timm",
    )


def _timm_unreproduced(cfg, size: int, crop_pct: float) -> str | None:
    """Why timm's eval transform for `cfg` is not Resize(floor(size / crop_pct)) + CenterCrop(size)."""
    if (cfg.crop_mode or "center") != "center":
        return f"crop_mode {cfg.crop_mode}"
    if cfg.input_size[-2] != cfg.input_size[-1]:
        return f"a non-square input of {cfg.input_size[-2]}x{cfg.input_size[-1]}"
    if math.floor(size / crop_pct) < size:
        return f"crop_pct {crop_pct}: its center crop is larger than the resized image and padded with zeros"
    return None


def _reachable(url: str) -> bool:
    """Whether the host of `url` resolves (offline, the hub client would retry for a minute)."""
    import socket
    from urllib.parse import urlparse

    try:
        socket.getaddrinfo(urlparse(url).hostname or "", 443)
    except OSError:
        return False
    return True


def _timm_file(name: str) -> str:
    """timm's published weights for `name` from the Hugging Face hub cache (downloaded once)."""
    cfg = import_timm().models.get_pretrained_cfg(name)
    repo = getattr(cfg, "hf_hub_id", None)
    if not repo:
        raise Refusal(f"timm's {name} has no weights on the Hugging Face hub; save a state dict and pass it")
    import huggingface_hub

    errors = []
    for local_only in (True, False):  # the hub cache first; then one try online, unless offline
        if not local_only and not _reachable(huggingface_hub.constants.ENDPOINT):
            errors.append("no network")
            break
        for filename in ("model.safetensors", "pytorch_model.bin"):
            try:
                return huggingface_hub.hf_hub_download(repo, filename, local_files_only=local_only)
            except Exception as exc:  # not cached, offline, missing file, gated repo
                errors.append(first_line(exc))
    raise Refusal(
        download_hint(
            f"timm's weights ({errors[-1]})",
            f"download the Hugging Face hub repo {repo} into the hub cache on a connected machine",
            f"timm/{name}",
        )
    )


class TimmWeights(PublishedSource):
    kind = "timm"
    arch_prefix = "timm/"

    @property
    def label(self) -> str:
        return "timm weights"

    def resolve(self, spec: str):
        """`timm:<name>` -> (name, None)."""
        name = spec.partition(":")[2]
        try:
            timm = import_timm()
        except ArchitectureError as exc:
            raise CheckpointError(f"{spec}: {exc}") from None
        if not timm.is_model(name) or not timm.models.get_pretrained_cfg(name):
            close = difflib.get_close_matches(name, timm.list_models(pretrained=True), n=3)
            raise CheckpointError(
                f"timm has no pretrained model {name!r}" + (f"; closest: {', '.join(close)}" if close else "")
            )
        return name, None

    def read(self, path: str, trust: bool, ins) -> Loaded:
        from .registry import read_weights_file

        name, _ = self.resolve(path)
        file = _timm_file(name)
        ins.format = self.label
        ins.convention = timm_convention(name)
        cfg = import_timm().models.get_pretrained_cfg(name)
        ins.notes.append(
            f"timm's {name}: published with Resize({ins.convention.resize_size}, {cfg.interpolation}) "
            f"+ CenterCrop({ins.convention.input_size})"
        )
        ins.notes.append(f"cached at {file}")
        ins.size, ins.sha256 = os.path.getsize(file), sha256_file(file)
        return Loaded(read_weights_file(file), arch=f"{self.arch_prefix}{name}")

    # the timm/ architecture namespace

    def arch_convention(self, name: str) -> Convention:
        return timm_convention(name)

    def arch_spec(self, name: str, state: dict[str, torch.Tensor]) -> ArchSpec:
        timm = import_timm()
        if not timm.is_model(name):
            close = difflib.get_close_matches(name, timm.list_models(), n=3)
            raise ArchitectureError(f"timm has no model {name!r}" + (f"; closest: {', '.join(close)}" if close else ""))
        classifier = timm.models.get_pretrained_cfg(name).classifier
        head = classifier[0] if isinstance(classifier, (list, tuple)) else classifier
        weight = state.get(f"{head}.weight")
        if weight is None:
            raise ArchitectureError(f"missing key {head + '.weight'!r}: the classifier of timm/{name}")
        return ArchSpec(f"timm/{name}", int(weight.shape[0]), False)

    def create(self, name: str, spec: ArchSpec) -> nn.Module:
        return import_timm().create_model(name, pretrained=False, num_classes=spec.num_classes)


FORMAT = TimmWeights()
