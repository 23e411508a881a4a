"""Inspecting members: one Inspection per checkpoint (what it is, and a verdict), the checks
across members, and the Members an evaluation runs.

Nothing a file holds runs here: the format that recognises it reads it safely (registry.py),
and every problem of the file itself becomes an ERROR of its Inspection. Evaluation refuses
ERRORs; WARNs are logged.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, UserError, first_line
from ..modelpaths import expand_model_paths
from ..models import ArchSpec
from ..preload import Refusal
from . import registry
from .convention import Convention
from .format import FileFormat, build_from_state
from .tensors import sha256_file

log = logging.getLogger(__name__)

PROBE_IMAGES = 1  # images of seeded uint8 noise, one forward pass per member at inspection
PROBE_SEED = 0


@dataclass
class Inspection:
    """Everything known about one checkpoint, and whether it can be used."""

    path: str
    sha256: str | None = None
    size: int = 0
    format: str = "?"
    weights: str = ""  # "raw", "ema" or "" (only one set)
    arch: ArchSpec | None = None
    num_params: int | None = None
    convention: Convention = field(default_factory=Convention)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    model: nn.Module | None = None
    state_digest: str | None = None  # hash of the tensors, to spot identical members

    @property
    def verdict(self) -> str:
        return "ERROR" if self.errors else ("WARN" if self.warnings else "OK")

    @property
    def name(self) -> str:
        return Path(self.path).name if ":" not in self.path else self.path

    @property
    def num_outputs(self) -> int | None:
        return self.arch.num_classes if self.arch else None

    @property
    def num_classes(self) -> int | None:
        """Classes after dropping `class_offset` leading outputs (None if unknown or none left)."""
        if self.arch is None or self.convention.class_offset >= self.arch.num_classes:
            return None
        return self.arch.num_classes - self.convention.class_offset

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "sha256": self.sha256,
            "size": self.size,
            "format": self.format,
            "weights": self.weights or None,
            "arch": self.arch.name if self.arch else None,
            "num_params": self.num_params,
            "num_outputs": self.num_outputs,
            "num_classes": self.num_classes,
            "aux_heads": self.arch.aux_heads if self.arch else None,
            "input": self.convention.to_dict(),
            "verdict": self.verdict,
            "errors": self.errors,
            "warnings": self.warnings,
            "notes": self.notes,
        }


@dataclass
class Member:
    """One model of the ensemble, ready to run: the eval-mode module and its conventions."""

    path: str
    sha256: str
    arch: ArchSpec
    model: nn.Module
    convention: Convention = field(default_factory=Convention)
    fmt: str = "state dict"

    @property
    def name(self) -> str:
        return Path(self.path).name if ":" not in self.path else self.path

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes - self.convention.class_offset

    @property
    def mean(self) -> tuple[float, float, float]:
        return self.convention.mean

    @property
    def std(self) -> tuple[float, float, float]:
        return self.convention.std


# ---------------------------------------------------------------------------------------
# One member


def inspect_checkpoint(path: str, trust: bool = False, prefer: str | None = None) -> Inspection:
    """Read, recognise, build and check one checkpoint (eval-mode model on the CPU).

    Never raises for problems of the file itself: they become ERRORs of the Inspection.
    `prefer="ema"` picks the EMA weights of a file holding both (else its sidecar decides).
    Before any loader: the zip directory's declared sizes and the pickles' opcodes (no bombs, no
    pickled code, with or without `trust`); after it: the tensors (finite, below
    MAX_WEIGHT_MAGNITUDE) and one forward pass of noise images (finite outputs: probe_outputs).
    torch's own log lines and warnings are silenced meanwhile (quiet_torch).
    """
    ins = Inspection(path=path)
    with quiet_torch():
        _inspect(ins, path, trust, prefer)
        probe_outputs(ins)
    return ins


@contextlib.contextmanager
def quiet_torch():
    """torch's own logging and warnings silenced while a file is read: a corrupt program makes
    torch.export.load log a multi-line traceback before it raises, and the one-line verdict
    says what matters. (Loggers named torch and torch.*, at the level above CRITICAL; restored.)"""
    import warnings

    loggers = [logging.getLogger("torch")] + [
        lg
        for name, lg in list(logging.Logger.manager.loggerDict.items())
        if name.startswith("torch.") and isinstance(lg, logging.Logger)
    ]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL + 1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _open_file(path: str, ins: Inspection) -> FileFormat:
    """The file format of a checkpoint file (its size and sha256 into `ins`); Refusal if none."""
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise Refusal("is a directory; pass the checkpoint files in it")
        raise Refusal("is not a regular file" if os.path.exists(path) else "does not exist (or is a broken link)")
    ins.size = os.path.getsize(path)
    if ins.size == 0:
        raise Refusal("is empty (0 bytes); re-copy or re-download it")
    ins.sha256 = sha256_file(path)
    fmt = registry.sniff(path)
    if fmt is None:
        raise Refusal(f"is not a checkpoint (no {registry.known_headers()} header)")
    ins.format = fmt.label
    return fmt


def _inspect(ins: Inspection, path: str, trust: bool, prefer: str | None) -> None:
    try:
        fmt = registry.source_of(path) or _open_file(path, ins)
        loaded = fmt.read(path, trust, ins)
        ins.format = loaded.label or ins.format
        ins.convention = fmt.convention(path, loaded) or ins.convention
        state = fmt.weights(ins, path, trust, loaded, prefer)
    except (Refusal, UserError) as exc:  # CheckpointError (a bad sidecar), ProgramError, ArchitectureError
        ins.errors.append(str(exc))
        return
    except OSError as exc:
        ins.errors.append(f"cannot be read ({first_line(exc)})")
        return
    if state is not None:
        build_from_state(ins, state, loaded.arch or ins.convention.arch)


def probe_outputs(ins: Inspection) -> None:
    """One forward pass of PROBE_IMAGES fixed noise images at the member's input size (default 224)
    through its own input convention (channel order, input_scale, mean/std, class_offset and
    order, as evaluation runs it); outputs or probabilities that are not finite are an ERROR."""
    if ins.errors or ins.model is None or ins.arch is None:
        return
    from ..ensemble import member_logits, place_members
    from ..programs import DEFAULT_PROBE_SIZE

    size = ins.arch.input_size or ins.convention.input_size or DEFAULT_PROBE_SIZE
    generator = torch.Generator().manual_seed(PROBE_SEED)
    crops = torch.randint(0, 256, (PROBE_IMAGES, 1, 3, size, size), dtype=torch.uint8, generator=generator)
    try:
        runners = place_members([member_from(ins)], torch.device("cpu"), channels_last=False)
        logits = member_logits(crops, runners, PROBE_IMAGES, channels_last=False)[0, :, 0]
    except Exception as exc:  # a broken network can fail in any way
        hint = "" if ins.convention.input_size else " (set input_size: in a sidecar if it takes another size)"
        ins.errors.append(f"fails on a {size}x{size} probe image ({first_line(exc)}){hint}")
        return
    for what, values in (("outputs", logits), ("probabilities", torch.softmax(logits.float(), dim=-1))):
        bad = (~torch.isfinite(values)).nonzero()
        if len(bad):
            image, index = bad[0].tolist()
            value = float(values[image, index])
            ins.errors.append(
                f"{what} are not finite ({value} at class {index} of a {size}x{size} probe image); the weights "
                "or the input convention are broken"
            )
            return


# ---------------------------------------------------------------------------------------
# Members together


def check_together(inspections: list[Inspection], data_num_classes: int | None = None) -> None:
    """Checks across members, added to their verdicts: identical members, class counts."""
    _flag_duplicates(inspections)
    known = [ins for ins in inspections if ins.num_classes is not None]
    counts = Counter(ins.num_classes for ins in known)
    if len(counts) > 1:
        # the most common class count (the first member's on a tie) is the ensemble's
        usual = max(counts, key=lambda n: (counts[n], -next(i for i, x in enumerate(known) if x.num_classes == n)))
        for ins in known:
            if ins.num_classes != usual and data_num_classes is None:
                ins.errors.append(
                    f"has {ins.num_classes} classes but {counts[usual]} other member(s) have {usual}; "
                    "an ensemble needs one class list"
                )
    if data_num_classes is not None:
        for ins in inspections:
            if ins.num_classes is not None and ins.num_classes != data_num_classes:
                hint = " (set class_offset: 1 in a sidecar for a background class)" if ins.num_classes == 1001 else ""
                ins.errors.append(
                    f"has {ins.num_classes} classes but the data's labels are ImageNet-1k wnids "
                    f"({data_num_classes} classes){hint}"
                )


def _flag_duplicates(inspections: list[Inspection]) -> None:
    """WARN members byte-identical or tensor-identical (programs: code too) to an earlier one."""
    by_sha: dict[str, str] = {}
    by_state: dict[str, str] = {}
    for ins in inspections:
        if ins.sha256 and ins.sha256 in by_sha:
            ins.warnings.append(f"byte-identical to {by_sha[ins.sha256]}: the ensemble is smaller than it looks")
        elif ins.state_digest and ins.state_digest in by_state:
            same = "the same program and tensors" if registry.is_program(ins.format) else "same tensors"
            ins.warnings.append(f"{same} as {by_state[ins.state_digest]}: the ensemble is smaller than it looks")
        if ins.sha256:
            by_sha.setdefault(ins.sha256, ins.name)
        if ins.state_digest:
            by_state.setdefault(ins.state_digest, ins.name)


def member_from(ins: Inspection) -> Member:
    if ins.errors or ins.model is None or ins.arch is None:
        raise CheckpointError(f"checkpoint {ins.path}: {ins.errors[0] if ins.errors else 'not usable'}")
    return Member(ins.path, ins.sha256 or "", ins.arch, ins.model, ins.convention, ins.format)


def load_member(path: str, trust: bool = False, prefer: str | None = None) -> Member:
    """Read, recognise and check one checkpoint; CheckpointError (first reason) if unusable."""
    return member_from(inspect_checkpoint(path, trust=trust, prefer=prefer))


def load_members(
    patterns: list[str], trust: bool = False, prefer: str | None = None, data_num_classes: int | None = None
) -> list[Member]:
    """Every checkpoint matched by `patterns`, checked alone and together; warnings logged."""
    inspections = [inspect_checkpoint(p, trust=trust, prefer=prefer) for p in expand_model_paths(patterns)]
    check_together(inspections, data_num_classes)
    bad = next((i for i in inspections if i.errors), None)
    if bad is not None:
        more = sum(len(i.errors) for i in inspections) - 1
        extra = f" ({more} more problem(s): run `ensemble-eval validate` on the checkpoints)" if more else ""
        raise CheckpointError(f"checkpoint {bad.path}: {bad.errors[0]}{extra}")
    for ins in inspections:
        for w in ins.warnings:
            log.warning("%s: %s", ins.name, w)
        for n in ins.notes:
            log.info("%s: %s", ins.name, n)
    return [member_from(i) for i in inspections]


# ---------------------------------------------------------------------------------------
# Members against a protocol and against their published figures


def _view_shapes(scheme, indices: list[int] | None) -> list[tuple[int, int]]:
    """The input shapes the views of `scheme` at `indices` (default: all) give a member: its
    crops, and for uncropped views a 4:3 one at the smallest scale."""
    from ..crops import UNCROPPED

    keys = scheme.keys()
    chosen = [keys[i] for i in (range(len(keys)) if indices is None else indices)]
    size = scheme.crop_size
    uncropped = sorted({k.scale for k in chosen if k.crop == UNCROPPED})
    shapes = [(size, size)] if any(k.crop != UNCROPPED for k in chosen) else []
    if uncropped:
        shapes.append((uncropped[0], uncropped[0] * 4 // 3))
    return shapes


def _view_problem(m: Member, shape: tuple[int, int], crop: bool) -> str | None:
    """Why member `m` cannot take inputs of `shape`, or None."""
    from ..programs import probe

    need = m.arch.input_size
    if need is not None and (need, need) != shape:
        return f"takes only {need}x{need} {'crops' if crop else 'inputs'}"
    try:
        probe(m.model, shape, batch=1)
    except Exception as exc:
        return f"fails on them ({first_line(exc)}, tried on {shape[0]}x{shape[1]})"
    return None


def check_views(members: list[Member], scheme, indices: list[int] | None = None) -> None:
    """Refuse, before the first image, a member that cannot take the views of `scheme` at
    `indices` (default: all): crop_size x crop_size crops, and uncropped views, whose size is
    each image's own.

    A network with one fixed input size (a ViT, a program exported at a static size) says so;
    any other is tried on one view of zeros (a shape check: the numbers are not used): a
    crop, and for uncropped views a 4:3 one at the smallest scale.
    """
    size = scheme.crop_size
    shapes = _view_shapes(scheme, indices)
    for m in members:
        need = m.arch.input_size
        for shape in shapes:
            crop = shape == (size, size)
            problem = _view_problem(m, shape, crop)
            if problem:
                what = f"{size}x{size} crops" if crop else "uncropped views (whole images at their own size)"
                fit = f"crop_size: {need}" if need else "a crop_size it takes"
                if not crop:
                    fit = f"fixed crops ({fit})"
                raise CheckpointError(
                    f"member {m.name} cannot take the protocol's {what}: it {problem}; choose a "
                    f"protocol with {fit} (--protocol NAME or --config FILE.yaml) or leave the member out"
                )


def check_published(ins: Inspection, measured: dict) -> None:
    """Flag a member whose published 1-crop error falls outside the measured 95% interval.

    measured: `Counts.to_dict()` of the member alone on its own 1-crop view."""
    if ins.convention.published is None or ins.convention.unreproduced:
        return  # no published figure, or one measured on views this tool does not make (a WARN says so)
    for metric, published in zip(("top1", "top5"), ins.convention.published):
        low, high = measured[f"{metric}_err_ci"]
        if not low <= published <= high:
            ins.warnings.append(
                f"published {metric} error {100 * published:.2f}% is outside the measured 95% interval "
                f"{100 * low:.2f}-{100 * high:.2f}% ({measured['num_images']} images): different weights, "
                "input convention or data?"
            )
