"""Reading checkpoint files safely and turning them into evaluation members.

Always `torch.load(..., weights_only=True)`: a checkpoint is data, and unpickling arbitrary
objects from an untrusted file can run code. Wrapped (`state_dict`, `model`,
`model_state_dict`) and prefixed (`module.`, `model.`, `_orig_mod.`) state dicts are
unwrapped; the architecture comes from the keys and shapes (models.py).
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .errors import UserError
from .models import ArchitectureError, ArchSpec, build_model

log = logging.getLogger(__name__)

WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
PREFIXES = ("module.", "_orig_mod.", "model.")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class CheckpointError(UserError):
    """A checkpoint that cannot be used; the message names the file and what to do."""


@dataclass
class Member:
    """One model of the ensemble, ready to run.

    `mean`/`std` are applied to 0-1 RGB crops after cropping.
    """

    path: str
    sha256: str
    arch: ArchSpec
    model: nn.Module
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    notes: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return Path(self.path).name

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes


def expand_model_paths(patterns: list[str]) -> list[str]:
    """Paths and shell globs -> existing files, in the order given (each glob sorted)."""
    paths: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise CheckpointError(f"--models entries must be paths, got {pattern!r}")
        if glob.has_magic(pattern):
            matched = sorted(p for p in glob.glob(pattern) if os.path.isfile(p))
            if not matched:
                raise CheckpointError(
                    f"--models pattern {pattern!r} matched no files; check the path or quote the glob"
                )
            paths.extend(matched)
        elif os.path.isdir(pattern):
            raise CheckpointError(
                f"--models {pattern!r} is a directory; pass the files, e.g. {pattern.rstrip('/')}/*.pt"
            )
        elif not os.path.isfile(pattern):
            raise CheckpointError(f"checkpoint {pattern!r} does not exist; check the path given to --models")
        else:
            paths.append(pattern)
    if not paths:
        raise CheckpointError("no checkpoints given; pass --models A.pt [B.pt ...] (globs allowed)")
    seen: dict[str, str] = {}
    for p in paths:
        key = os.path.realpath(p)
        if key in seen:
            raise CheckpointError(
                f"checkpoint {p} is given twice (also as {seen[key]}); each member must appear once in --models"
            )
        seen[key] = p
    return paths


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def unwrap_state_dict(obj: object, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the weights inside a loaded checkpoint and strip wrapper prefixes.

    Accepts a bare state dict or one nested under `state_dict`, `model_state_dict` or
    `model` (possibly beside optimizer state, epoch numbers and the like). Prefixes
    `module.` (DataParallel/DDP), `_orig_mod.` (torch.compile) and `model.` (Lightning) are
    removed when every key carries them, repeatedly (`module._orig_mod.` too).
    """
    state = obj
    for _ in range(3):
        if _is_tensor_dict(state):
            break
        if isinstance(state, dict):
            inner = next((state[k] for k in WRAPPER_KEYS if k in state and isinstance(state[k], dict)), None)
            if inner is not None:
                state = inner
                continue
        break
    if not _is_tensor_dict(state):
        kind = type(obj).__name__
        keys = f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else ""
        raise CheckpointError(
            f"{source}: no state dict found (a {kind}{keys}); expected a dict of tensors, "
            f"bare or under one of {list(WRAPPER_KEYS)}"
        )
    state = dict(state)
    stripped = True
    while stripped:
        stripped = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped = True
    # BatchNorm's num_batches_tracked is bookkeeping some exporters drop; fine either way.
    return state


def read_state_dict(path: str) -> dict[str, torch.Tensor]:
    """Load a checkpoint file with weights_only=True and return its unwrapped state dict."""
    if os.path.getsize(path) == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); re-copy or re-download it")
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head != b"PK\x03\x04" and head[:1] != b"\x80":  # torch.save's zip format, or a legacy pickle
        raise CheckpointError(
            f"checkpoint {path} is not a PyTorch checkpoint (no zip or pickle header); pass files written by torch.save"
        )
    try:
        # argparse.Namespace (saved beside the weights by torchvision's reference scripts) is
        # plain data; allowing it keeps weights_only's protection against everything else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an untrusted file can make the unpickler fail in any way
        text = str(exc)
        if "Weights only load failed" in text:
            found = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            what = f"objects of type {found.group(1)}" if found else "non-tensor objects"
            raise CheckpointError(
                f"checkpoint {path} holds {what}, which cannot be loaded safely with weights_only=True; "
                "re-save it as a plain state dict: torch.save(model.state_dict(), path)"
            ) from exc
        first = text.strip().splitlines()[0].split(". ")[0][:120] if text.strip() else "no details"
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {first}); "
            "the file is truncated or not a PyTorch checkpoint"
        ) from exc
    return unwrap_state_dict(obj, source=f"checkpoint {path}")


def load_member(path: str) -> Member:
    """Read, recognise and build one checkpoint as an eval-mode model on the CPU."""
    state = read_state_dict(path)
    try:
        model, spec = build_model(state)
    except ArchitectureError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path}: tensor {bad[0]!r} holds NaN or Inf; the weights are corrupt")
    return Member(path=str(path), sha256=sha256_file(path), arch=spec, model=model)


def load_members(patterns: list[str]) -> list[Member]:
    """Every checkpoint matched by `patterns`, checked to agree on the class count."""
    members = [load_member(p) for p in expand_model_paths(patterns)]
    by_hash: dict[str, str] = {}
    for m in members:
        if m.sha256 in by_hash:
            log.warning(
                "%s and %s are byte-identical: the ensemble is smaller than it looks", by_hash[m.sha256], m.path
            )
        by_hash.setdefault(m.sha256, m.path)
    counts = {m.num_classes for m in members}
    if len(counts) > 1:
        detail = ", ".join(f"{m.name}: {m.num_classes}" for m in members)
        raise CheckpointError(f"members disagree on the number of classes ({detail}); an ensemble needs one class list")
    return members
