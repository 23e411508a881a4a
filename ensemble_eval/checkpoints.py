"""Reading every checkpoint format safely, input conventions, and validation verdicts.

A checkpoint is data from somewhere else, so nothing here runs code from a file unless the
user says `--trust-checkpoints`, and nothing a file declares is allocated before it is checked
against the file (preload.check_torch_file, preload.check_archive_sizes):

- ``torch.save`` files are read with ``torch.load(..., weights_only=True)`` (an
  ``argparse.Namespace`` beside the weights is allowed as plain data); a whole pickled module
  needs the trust flag;
- safetensors files hold tensors only;
- TorchScript archives and torch.export programs run as they are (programs.py says what
  loading them can and cannot execute);
- ``torchvision:<builder>[:<WEIGHTS>]`` and ``timm:<name>`` name published weights (cached
  downloads, read by the same safe readers);
- a pickle that calls anything running processes, code, files or the network is refused even
  with the trust flag, which is for pickled model classes.

Every file gets an `Inspection`: what it is (format, architecture, classes, input
convention) and a verdict, OK / WARN / ERROR with reasons. Evaluation refuses ERRORs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import zipfile
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .crops import INTERPOLATIONS
from .errors import CheckpointError, UserError, first_line, short_repr
from .modelpaths import SPEC_PREFIXES, expand_model_paths  # noqa: F401  (expand_model_paths: for callers)
from .models import ArchitectureError, ArchSpec, build_model, count_parameters, import_timm
from .preload import MAX_TENSOR_ELEMENTS, check_archive_sizes, check_torch_file
from .preload import Refusal as _Refusal
from .programs import PROGRAM_KINDS, is_pt2_archive, load_program

log = logging.getLogger(__name__)

RAW_KEYS = ("state_dict", "model_state_dict", "model")
EMA_KEYS = ("state_dict_ema", "model_ema", "ema_state_dict", "ema", "ema_model", "module_ema")
PREFIXES = ("module.", "_orig_mod.", "model.")
META_KEY = "ensemble_eval"  # embedded input-convention entry (torch.save dict or safetensors metadata)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
TRANSFORM_INPUT_ARCHS = ("torchvision-googlenet", "googlenet", "inception_v3")  # torchvision's transform_input


@dataclass(frozen=True)
class Convention:
    """How a member wants its input and how its outputs map onto the canonical classes.

    Crops arrive as 0-1 RGB floats; the member sees `(x[channels] * input_scale - mean) / std`
    with channels reversed for BGR. `class_offset` leading outputs (a background class) are
    dropped before the softmax; `classes` (wnids in output order) reorders the rest into
    the canonical sorted-wnid order.
    """

    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    color: str = "RGB"
    input_scale: float = 1.0
    transform_input: bool = False
    class_offset: int = 0
    classes: tuple[str, ...] | None = None
    weights: str | None = None  # "ema" or "raw": which weights of a file holding both
    arch: str | None = None  # the architecture of a state dict: a torchvision builder, timm/<name>
    input_size: int | None = None  # the crop size the member was made for (its 1-crop check uses it)
    resize_size: int | None = None  # the shorter side it resizes to before its 1-crop center crop
    interpolation: str | None = None  # of that resize: bilinear, bicubic or nearest (None: the protocol's)
    antialias: bool | None = None  # of the tensor resize (None: the protocol's, true by default)
    unreproduced: str | None = None  # why its library's eval view is not Resize + CenterCrop (timm: squash, ...)
    published: tuple[float, float] | None = None  # published 1-crop (top1_err, top5_err), fractions
    source: str = "default"  # "default", "embedded", "sidecar NAME", "torchvision", "timm"
    given: frozenset[str] = field(default=frozenset(), compare=False)  # fields the source set (win over defaults)

    def describe(self) -> str:
        if self.mean == IMAGENET_MEAN and self.std == IMAGENET_STD:
            norm = "imagenet"
        else:
            norm = "mean=" + ",".join(f"{v:g}" for v in self.mean) + " std=" + ",".join(f"{v:g}" for v in self.std)
        scale = "0-255" if self.input_scale == 255 else ("0-1" if self.input_scale == 1 else f"x{self.input_scale:g}")
        parts = [self.color, scale, norm]
        if self.transform_input:
            parts.append("transform_input")
        if self.class_offset:
            parts.append(f"offset {self.class_offset}")
        if self.classes is not None:
            parts.append("own class order")
        return " ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mean": list(self.mean),
            "std": list(self.std),
            "color": self.color,
            "input_scale": self.input_scale,
            "transform_input": self.transform_input,
            "class_offset": self.class_offset,
            "classes": list(self.classes) if self.classes is not None else None,
            "arch": self.arch,
            "input_size": self.input_size,
            "resize_size": self.resize_size,
            **{k: getattr(self, k) for k in ("interpolation", "antialias") if getattr(self, k) is not None},
            "published": dict(zip(("top1_err", "top5_err"), self.published)) if self.published else None,
            "source": self.source,
        }

    def over(self, base: Convention) -> Convention:
        """`base` (an architecture's or published weights' defaults) with the fields this one set."""
        return replace(base, **{f: getattr(self, f) for f in self.given}, source=self.source, given=self.given)


CONVENTION_FIELDS = {
    "mean",
    "std",
    "color",
    "input_scale",
    "transform_input",
    "class_offset",
    "classes",
    "weights",
    "arch",
    "input_size",
    "resize_size",
    "interpolation",
    "antialias",
    "published",
}


def parse_convention(data: object, source: str) -> Convention:
    """Validate a sidecar / embedded mapping into a Convention (CheckpointError on bad values)."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: expected a mapping of {sorted(CONVENTION_FIELDS)}, got {short_repr(data)}")
    unknown = set(data) - CONVENTION_FIELDS
    if unknown:
        raise CheckpointError(f"{source}: unknown field(s) {sorted(unknown)}; known: {sorted(CONVENTION_FIELDS)}")
    kw: dict[str, Any] = {"source": source}
    for name in ("mean", "std"):
        if name in data:
            v = data[name]
            if (
                not isinstance(v, (list, tuple))
                or len(v) != 3
                or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
            ):
                raise CheckpointError(
                    f"{source}: {name} must be three numbers like [0.485, 0.456, 0.406], got {short_repr(v)}"
                )
            if not all(math.isfinite(x) and abs(x) <= FLOAT32_MAX for x in v):
                raise CheckpointError(
                    f"{source}: {name} must be finite numbers in float32's range (|value| <= 3.4e38), "
                    f"got {short_repr(v)}"
                )
            if name == "std" and any(x <= 0 for x in v):
                raise CheckpointError(f"{source}: std must be positive, got {short_repr(v)}")
            kw[name] = tuple(float(x) for x in v)
    if "color" in data:
        if data["color"] not in ("RGB", "BGR"):
            raise CheckpointError(f"{source}: color must be RGB or BGR, got {short_repr(data['color'])}")
        kw["color"] = data["color"]
    if "input_scale" in data:
        v = data["input_scale"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= FLOAT32_MAX:
            raise CheckpointError(
                f"{source}: input_scale must be 1 (0-1 input) or 255 (0-255 input), got {short_repr(v)}"
            )
        kw["input_scale"] = float(v)
    if "transform_input" in data:
        if not isinstance(data["transform_input"], bool):
            raise CheckpointError(
                f"{source}: transform_input must be true or false, got {short_repr(data['transform_input'])}"
            )
        kw["transform_input"] = data["transform_input"]
    if "class_offset" in data:
        v = data["class_offset"]
        if type(v) is not int or v < 0:
            raise CheckpointError(
                f"{source}: class_offset must be an integer >= 0 (1: background first), got {short_repr(v)}"
            )
        kw["class_offset"] = v
    if "classes" in data and data["classes"] is not None:
        v = data["classes"]
        if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
            raise CheckpointError(f"{source}: classes must be a list of WordNet ids in output order")
        kw["classes"] = tuple(v)
    if "weights" in data and data["weights"] is not None:
        if data["weights"] not in ("ema", "raw"):
            raise CheckpointError(f"{source}: weights must be ema or raw, got {short_repr(data['weights'])}")
        kw["weights"] = data["weights"]
    if data.get("arch") is not None:
        if not isinstance(data["arch"], str) or not data["arch"]:
            raise CheckpointError(f"{source}: arch must be a name like resnet50 or timm/convnext_tiny")
        kw["arch"] = data["arch"]
    for name in ("input_size", "resize_size"):
        if data.get(name) is not None:
            v = data[name]
            if type(v) is not int or not 1 <= v <= 4096:
                raise CheckpointError(f"{source}: {name} must be a size in pixels like 224, got {short_repr(v)}")
            kw[name] = v
    if data.get("interpolation") is not None:
        if data["interpolation"] not in INTERPOLATIONS:
            raise CheckpointError(
                f"{source}: interpolation must be one of {list(INTERPOLATIONS)}, "
                f"got {short_repr(data['interpolation'])}"
            )
        kw["interpolation"] = data["interpolation"]
    if data.get("antialias") is not None:
        if not isinstance(data["antialias"], bool):
            raise CheckpointError(f"{source}: antialias must be true or false, got {short_repr(data['antialias'])}")
        kw["antialias"] = data["antialias"]
    if data.get("published") is not None:
        kw["published"] = _parse_published(data["published"], source)
    conv = Convention(**kw, given=frozenset(k for k in kw if k != "source"))
    problem = input_range_problem(conv)
    if problem:
        raise CheckpointError(f"{source}: {problem}")
    return conv


FLOAT32_MAX = float(torch.finfo(torch.float32).max)
MAX_NORMALISED_INPUT = 1e4  # |(x * input_scale - mean) / std| for pixels x in 0-1; real conventions: 3 to ~150


def input_range_problem(conv: Convention) -> str | None:
    """Why `conv` cannot give a network sane inputs, or None.

    The member sees (x * input_scale - mean) / std for pixels x in [0, 1]: ImageNet's mean/std
    give at most about 2.6, a Caffe port (0-255 input, std 1) about 150. Beyond
    MAX_NORMALISED_INPUT the numbers only come from a wrong field (a std of 1e-45, a mean of
    1e30, a std in the wrong scale), and float32 activations overflow downstream."""
    scale = conv.input_scale
    by_scale = max(scale / s for s in conv.std)  # the pixels' range, in units of std
    by_mean = max(abs(m) / s for m, s in zip(conv.mean, conv.std))
    extent = max(max(abs(m), abs(scale - m)) / s for m, s in zip(conv.mean, conv.std))
    if math.isfinite(extent) and extent <= MAX_NORMALISED_INPUT:
        return None
    if by_mean > by_scale:
        culprit = "mean"
    else:
        culprit = "std" if "std" in conv.given or "input_scale" not in conv.given else "input_scale"
    value = getattr(conv, culprit)
    shown = f"{value:g}" if isinstance(value, float) else "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return (
        f"{culprit} {shown} gives normalised inputs up to {extent:.3g} ((x * input_scale - mean) / std for pixels "
        f"0-1, with input_scale {scale:g}); real conventions stay within a few hundred (the bound is "
        f"{MAX_NORMALISED_INPUT:g}): the outputs could not be finite; check {culprit}"
    )


def _parse_published(v: object, source: str) -> tuple[float, float]:
    if not isinstance(v, dict) or set(v) != {"top1_err", "top5_err"}:
        raise CheckpointError(
            f"{source}: published must be {{top1_err: 0.2385, top5_err: 0.0713}}, got {short_repr(v)}"
        )
    values = tuple(v[k] for k in ("top1_err", "top5_err"))
    if not all(isinstance(x, (int, float)) and not isinstance(x, bool) and 0 <= x <= 1 for x in values):
        raise CheckpointError(
            f"{source}: published errors are fractions between 0 and 1 (23.85% is 0.2385), got {short_repr(v)}"
        )
    return float(values[0]), float(values[1])


def sidecar_path(path: str) -> Path | None:
    """`a.pt.yaml` or `a.yaml` beside `a.pt`, if present."""
    p = Path(path)
    for candidate in (p.with_name(p.name + ".yaml"), p.with_suffix(".yaml")):
        if candidate != p and candidate.is_file():
            return candidate
    return None


MAX_SIDECAR_BYTES = 1 << 20  # a sidecar: a few fields, at most a list of 1000 wnids (about 12 KB)


def read_sidecar(path: Path) -> Convention:
    """The Convention of a sidecar YAML file, read with the bounds of a --config file."""
    from .config import ConfigError, load_yaml_file

    try:
        data = load_yaml_file(path, "sidecar", MAX_SIDECAR_BYTES, "fix or remove the sidecar") or {}
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return parse_convention(data, f"sidecar {path.name}")


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


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def state_digest(state: dict[str, torch.Tensor]) -> str | None:
    """A hash of the tensors themselves (names, dtypes, shapes, values), whatever the file format;
    None for no tensors (nothing to compare: two members without tensors are not the same)."""
    if not state:
        return None
    digest = hashlib.sha256()
    for key in sorted(state):
        t = state[key].detach().cpu().contiguous()
        digest.update(f"{key}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------
# Reading files


def sniff_format(path: str) -> str:
    """'torch', 'torchscript', 'torch.export', 'safetensors' or 'unknown', from the file's first bytes."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    if head[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return "torch"  # a damaged zip: torch.load will say so
        if is_pt2_archive(names):
            return "torch.export"
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            return "torchscript"
        return "torch"
    if len(head) == 9 and head[8:9] == b"{":
        # 8-byte header length, then the JSON header (maybe truncated); before the pickle test: a
        # length like 0x8d80 starts with 0x80 too, and a legacy torch.save file has its magic number there
        return "safetensors"
    if head[:1] == b"\x80":
        return "torch"  # legacy (pre-1.6) torch.save pickle
    return "unknown"


def _torch_load(path: str, trust: bool) -> tuple[object, bool]:
    """(object, was_trusted_load). Raises _Refusal with the reason.

    The file is checked first (check_torch_file): declared sizes that do not fit, and pickled
    code, are refused before torch.load reads anything, with or without `trust`."""
    with open(path, "rb") as fh:
        check_torch_file(fh, os.fstat(fh.fileno()).st_size)
    try:
        # argparse.Namespace (saved beside the weights by torchvision's reference scripts) is
        # plain data; allowing it keeps weights_only's protection against everything else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True), False
    except Exception as exc:  # an untrusted file can make the unpickler fail in any way
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:  # not an unsafe object: a damaged or foreign file
            detail = first_line(exc).split("WeightsUnpickler error: ")[-1]
            raise _Refusal(f"cannot be read ({detail}); the file is truncated or corrupt") from exc
        what = f"objects of type {found.group(1)}"
        if not trust:
            raise _Refusal(
                f"holds {what}, which cannot be loaded without unpickling code (unsafe for untrusted files); "
                "if you trust the file pass --trust-checkpoints, or re-save it as a state dict: "
                "torch.save(model.state_dict(), path)"
            ) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False), True
    except Exception as exc:
        raise _Refusal(f"cannot be read even with --trust-checkpoints ({first_line(exc)})") from exc


def _is_tensor_dict(obj: object) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj)
        and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())
    )


def _strip_prefixes(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                stripped.append(prefix)
                changed = True
    return state, stripped


def _state_of(obj: object) -> dict[str, torch.Tensor] | None:
    """A tensor dict from a state dict, an EMA wrapper's dict or a module."""
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    if isinstance(obj, dict):
        tensors = {k: v for k, v in obj.items() if k != "n_averaged"}  # torch.optim.swa_utils.AveragedModel
        if _is_tensor_dict(tensors):
            return tensors
    return None


def unwrap_state_dict(obj: object, prefer: str | None = None) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Find the weights inside a loaded checkpoint: (state dict, which weights, notes).

    Accepts a bare state dict, one nested under `state_dict`, `model_state_dict` or `model`
    (beside optimizer state, epochs, args...), EMA weights under `state_dict_ema`,
    `model_ema`, `ema`, ... (raw weights are used unless `prefer == "ema"` or there are no
    others), and a whole module. Prefixes `module.`, `_orig_mod.` and `model.` are removed
    when every key carries them (repeatedly: `module._orig_mod.` too).
    """
    notes: list[str] = []
    raw = ema = None
    raw_key = ema_key = ""
    direct = _state_of(obj)
    if direct is not None:
        raw, raw_key = direct, "(top level)"
    elif isinstance(obj, dict):
        for key in RAW_KEYS:
            if key in obj and (s := _state_of(obj[key])) is not None:
                raw, raw_key = s, key
                break
        if raw is None:  # one more level, e.g. {"model": {"state_dict": ...}}
            for key in RAW_KEYS:
                if isinstance(obj.get(key), dict):
                    inner = next((_state_of(obj[key][k]) for k in RAW_KEYS if k in obj[key]), None)
                    if inner is not None:
                        raw, raw_key = inner, f"{key}.…"
                        break
        for key in EMA_KEYS:
            if key in obj and (s := _state_of(obj[key])) is not None:
                ema, ema_key = s, key
                break
    if raw is None and ema is None:
        kind = type(obj).__name__
        keys = f" with keys {sorted(map(str, obj))[:6]}" if isinstance(obj, dict) else ""
        raise _Refusal(
            f"no state dict found (a {kind}{keys}); expected a dict of tensors, bare or under one of "
            f"{list(RAW_KEYS + EMA_KEYS)}"
        )
    if raw is not None and ema is not None:
        which = "ema" if prefer == "ema" else "raw"
        other = "raw weights (weights: raw)" if which == "ema" else "EMA weights (--ema, or weights: ema in a sidecar)"
        notes.append(f"holds raw ('{raw_key}') and EMA ('{ema_key}') weights; using {which}, choose {other}")
        state = ema if which == "ema" else raw
    elif ema is not None:
        which, state = "ema", ema
        notes.append(f"only EMA weights ('{ema_key}')")
    else:
        if prefer == "ema":
            raise _Refusal("EMA weights were asked for (--ema or weights: ema) but the file holds none")
        which, state = "", raw
    state, stripped = _strip_prefixes(dict(state))
    if stripped:
        notes.append("stripped prefix " + "".join(stripped))
    return state, which, notes


def _read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except (SafetensorError, OSError, ValueError) as exc:
        raise _Refusal(f"cannot be read as safetensors ({first_line(exc)}); the file is truncated or corrupt") from exc


def resolve_spec(spec: str):
    """`torchvision:<builder>[:<WEIGHTS>]` -> (builder, weights enum member); `timm:<name>` -> (name, None).

    Checked without any download: an unknown builder, weights or timm name is a CheckpointError
    naming the closest ones.
    """
    import difflib

    kind, _, rest = spec.partition(":")
    if kind == "timm":
        try:
            timm = import_timm()
        except ArchitectureError as exc:
            raise CheckpointError(f"{spec}: {exc}") from None
        if not timm.is_model(rest) or not timm.models.get_pretrained_cfg(rest):
            close = difflib.get_close_matches(rest, timm.list_models(pretrained=True), n=3)
            raise CheckpointError(
                f"timm has no pretrained model {rest!r}" + (f"; closest: {', '.join(close)}" if close else "")
            )
        return rest, None
    import torchvision.models as tvm

    builder, _, weights_name = rest.partition(":")
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


def _download_hint(what: str, where: str, arch: str) -> str:
    return (
        f"cannot download {what}; offline, {where}, or pass a local file "
        f"(--models FILE.pth with 'arch: {arch}' in FILE.pth.yaml)"
    )


def _torchvision_file(builder: str, weights) -> str:
    """The cached file of torchvision's published weights, downloaded once; a clear refusal offline."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    target = cache / os.path.basename(weights.url)
    if not target.is_file():
        try:
            with contextlib.redirect_stdout(sys.stderr):  # torch.hub announces on stdout (validate --json -)
                torch.hub.load_state_dict_from_url(weights.url, model_dir=str(cache), progress=True, check_hash=True)
        except Exception as exc:
            raise _Refusal(
                _download_hint(
                    f"torchvision's weights ({first_line(exc)})",
                    f"fetch {weights.url} elsewhere and put it at {target}",
                    builder,
                )
            ) from exc
    return str(target)


def _torchvision_convention(builder: str, weights, published_file: bool = True) -> tuple[Convention, list[str]]:
    """Input convention and published figures from torchvision's weights metadata (the figures only
    for the published file)."""
    kw = dict(getattr(weights.transforms, "keywords", {}))
    metrics = weights.meta.get("_metrics", {}).get("ImageNet-1K", {}) if published_file else {}
    published = None
    if "acc@1" in metrics and "acc@5" in metrics:
        published = (round(1 - metrics["acc@1"] / 100, 6), round(1 - metrics["acc@5"] / 100, 6))
    crop = kw.get("crop_size", 224)
    resize = kw.get("resize_size", 256)
    crop = crop[0] if isinstance(crop, (list, tuple)) else crop
    resize = resize[0] if isinstance(resize, (list, tuple)) else resize
    mode = kw.get("interpolation")
    interpolation = str(getattr(mode, "value", mode or "bilinear")).lower()
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
        raise _Refusal(f"timm's {name} has no weights on the Hugging Face hub; save a state dict and pass it")
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
    raise _Refusal(
        _download_hint(
            f"timm's weights ({errors[-1]})",
            f"download the Hugging Face hub repo {repo} into the hub cache on a connected machine",
            f"timm/{name}",
        )
    )


FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _check_tensor_kinds(state: dict[str, torch.Tensor]) -> None:
    """Refuse tensors that are not plain dense float weights, before anything touches their data."""
    for key, t in state.items():
        if t.layout != torch.strided or t.is_quantized or t.device.type != "cpu":
            kind = (
                "quantized"
                if t.is_quantized
                else (f"on device {t.device.type}" if t.device.type != "cpu" else "sparse")
            )
            raise _Refusal(f"tensor {key!r} is {kind}; only dense float weights are supported")
        if t.numel() > MAX_TENSOR_ELEMENTS:
            raise _Refusal(f"tensor {key!r} declares {t.numel():,} elements, far more than any supported layer")
        if t.numel() and t.numel() * t.element_size() > t.untyped_storage().nbytes():
            raise _Refusal(f"tensor {key!r} is a broadcast view without its data (stride 0); re-save real weights")
        if key.endswith("num_batches_tracked"):
            continue
        if t.dtype not in FLOAT_DTYPES:
            raise _Refusal(
                f"tensor {key!r} has dtype {str(t.dtype).replace('torch.', '')}; weights must be floating point"
            )


MAX_WEIGHT_MAGNITUDE = 1e30  # trained weights stay far below; float32 sums of such values overflow


def _check_tensors(state: dict[str, torch.Tensor], ins: Inspection) -> None:
    for key, tensor in state.items():
        if not tensor.is_floating_point() or not tensor.numel():
            continue
        low, high = torch.aminmax(tensor.detach())
        biggest = max(-float(low), float(high))
        if not math.isfinite(biggest):  # NaN propagates through aminmax
            ins.errors.append(f"tensor {key!r} holds NaN or Inf; the weights are corrupt")
            return
        if biggest > MAX_WEIGHT_MAGNITUDE:
            ins.errors.append(
                f"tensor {key!r} holds values of magnitude {biggest:.3g} (above {MAX_WEIGHT_MAGNITUDE:g}), which "
                "overflow float32 arithmetic; the weights are corrupt"
            )
            return
    for key, tensor in state.items():
        if key.endswith("running_var") and tensor.is_floating_point() and (tensor <= 0).any():
            ins.errors.append(f"BatchNorm {key!r} has values <= 0; the statistics are corrupt")
            return


def _check_convention(ins: Inspection) -> None:
    from .data import imagenet_classes

    conv, arch = ins.convention, ins.arch
    problem = input_range_problem(conv)  # a sidecar's fields over an architecture's defaults
    if problem:
        ins.errors.append(f"input convention ({conv.source}): {problem}")
    if conv.unreproduced:
        ins.warnings.append(
            f"its library evaluates it with {conv.unreproduced}, which ensemble-eval does not reproduce: its views "
            f"are Resize({conv.resize_size}) + CenterCrop({conv.input_size}), so its published accuracy is not "
            "compared (set input_size / resize_size in a sidecar to choose the view)"
        )
    if arch is None:
        return
    if conv.class_offset >= arch.num_classes:
        ins.errors.append(f"class_offset {conv.class_offset} leaves no classes of the {arch.num_classes} outputs")
    if conv.transform_input and arch.name not in TRANSFORM_INPUT_ARCHS:
        ins.errors.append(f"transform_input is a torchvision GoogLeNet / Inception v3 option; {arch.name} has none")
    if conv.classes is not None:
        canonical = [c.wnid for c in imagenet_classes()]
        if len(conv.classes) != arch.num_classes - conv.class_offset:
            ins.errors.append(
                f"classes lists {len(conv.classes)} wnids but the model has {arch.num_classes - conv.class_offset} "
                "classes (after class_offset)"
            )
        elif sorted(conv.classes) != sorted(canonical):
            missing = next((w for w in conv.classes if w not in set(canonical)), None) or "duplicates"
            ins.errors.append(f"classes must be the 1000 ImageNet-1k wnids in the model's order ({missing!r} is not)")
    if arch.num_classes == 1001 and conv.class_offset == 0:
        ins.warnings.append(
            "1001 outputs: a TensorFlow port with background at index 0? set class_offset: 1 in a sidecar"
        )


def _read_file(path: str, trust: bool, ins: Inspection) -> tuple[object, object]:
    """(loaded object, embedded convention entry or None) of a checkpoint file; fills size/sha/format."""
    if not os.path.isfile(path):
        if os.path.isdir(path):
            raise _Refusal("is a directory; pass the checkpoint files in it")
        raise _Refusal("is not a regular file" if os.path.exists(path) else "does not exist (or is a broken link)")
    ins.size = os.path.getsize(path)
    if ins.size == 0:
        raise _Refusal("is empty (0 bytes); re-copy or re-download it")
    ins.sha256 = sha256_file(path)
    kind = sniff_format(path)
    if kind == "unknown":
        raise _Refusal("is not a checkpoint (no torch.save, TorchScript, torch.export or safetensors header)")
    ins.format = {"torch": "torch.save"}.get(kind, kind)
    if kind in PROGRAM_KINDS:
        check_archive_sizes(path)  # declared sizes, and the .pt files inside a .pt2, before any loader
        return None, None  # read by programs.load_program once the sidecar is known
    if kind == "safetensors":
        tensors, meta = _read_safetensors(path)
        if META_KEY not in meta:
            return tensors, None
        try:
            return tensors, json.loads(meta[META_KEY])
        except (json.JSONDecodeError, RecursionError) as exc:
            what = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise _Refusal(f"safetensors metadata '{META_KEY}' is not usable JSON ({what})") from exc
    obj, trusted = _torch_load(path, trust)
    if trusted:
        ins.format = "pickled module (trusted)" if isinstance(obj, nn.Module) else "pickle (trusted)"
    else:
        ins.format = "state dict"
    return obj, (obj.get(META_KEY) if isinstance(obj, dict) else None)


def published_sha256_prefix(url: str) -> str | None:
    """The start of the sha256 that torchvision's file names carry (resnet50-11ad3fa6.pth), if any."""
    found = re.search(r"-([a-f0-9]{8,})\.", os.path.basename(url))
    return found.group(1) if found else None


def _check_published_hash(url: str, file: str, trust: bool, ins: Inspection) -> bool:
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
        raise _Refusal(problem + ", or pass --trust-checkpoints to use it without the published accuracy")
    ins.warnings.append(problem + "; used as it is (--trust-checkpoints), without the published accuracy")
    return False


def _read_published(path: str, trust: bool, ins: Inspection) -> tuple[object, str | None]:
    """(loaded object, arch) of `torchvision:...` / `timm:...`: published weights, read safely."""
    name, weights = resolve_spec(path)
    if weights is not None:
        file = _torchvision_file(name, weights)
        ins.format = "torchvision weights"
        ins.size, ins.sha256 = os.path.getsize(file), sha256_file(file)
        published = _check_published_hash(weights.url, file, trust, ins)
        ins.convention, notes = _torchvision_convention(name, weights, published)
        ins.notes += notes
    else:
        file = _timm_file(name)
        ins.format = "timm weights"
        ins.convention = timm_convention(name)
        cfg = import_timm().models.get_pretrained_cfg(name)
        ins.notes.append(
            f"timm's {name}: published with Resize({ins.convention.resize_size}, {cfg.interpolation}) "
            f"+ CenterCrop({ins.convention.input_size})"
        )
    ins.notes.append(f"cached at {file}")
    ins.size, ins.sha256 = os.path.getsize(file), sha256_file(file)
    if weights is not None:
        return _torch_load(file, trust=False)[0], name
    if sniff_format(file) == "safetensors":
        return _read_safetensors(file)[0], f"timm/{name}"
    return _torch_load(file, trust=False)[0], f"timm/{name}"


def _program_text(module) -> str:
    """The program's own code (TorchScript's inlined graph, an exported program's graph code)."""
    program = module.program
    try:
        graph = program.inlined_graph if module.kind == "torchscript" else program.graph
        return str(graph)
    except Exception:  # a program kind without a printable graph: its tensors alone tell
        return ""


def _inspect_program(path: str, trust: bool, ins: Inspection) -> Inspection:
    """A TorchScript or torch.export member: its own program, probed once for its outputs."""
    module, outputs, fixed_size = load_program(path, ins.format, trust, ins.convention.input_size)
    state = module.state_dict_tensors()
    ins.num_params = count_parameters(state)
    # two programs are the same member only with the same code and the same tensors (none, for some)
    ins.state_digest = hashlib.sha256(
        (state_digest(state) or "no tensors").encode() + _program_text(module).encode()
    ).hexdigest()
    _check_tensors(state, ins)
    ins.model, ins.arch = module, ArchSpec(ins.format, outputs, False, fixed_size)
    if module.fixed_batch:
        ins.notes.append(f"the program takes batches of exactly {module.fixed_batch}; it runs in pieces of that size")
    _check_convention(ins)
    return ins


PROBE_IMAGES = 1  # images of seeded uint8 noise, one forward pass per member at inspection
PROBE_SEED = 0


def probe_outputs(ins: Inspection) -> None:
    """One forward pass of PROBE_IMAGES fixed noise images at the member's input size (default 224)
    through its own input convention (channel order, input_scale, mean/std, class_offset and
    order, as evaluation runs it); outputs or probabilities that are not finite are an ERROR."""
    if ins.errors or ins.model is None or ins.arch is None:
        return
    from .ensemble import member_logits, place_members
    from .programs import DEFAULT_PROBE_SIZE

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


def _inspect(ins: Inspection, path: str, trust: bool, prefer: str | None) -> None:
    try:
        if path.startswith(SPEC_PREFIXES):
            obj, arch = _read_published(path, trust, ins)
        else:
            obj, embedded = _read_file(path, trust, ins)
            sidecar = sidecar_path(path)
            if sidecar is not None:
                ins.convention = read_sidecar(sidecar)
            elif embedded is not None:
                ins.convention = parse_convention(embedded, "embedded metadata")
            if ins.format in PROGRAM_KINDS:
                _inspect_program(path, trust, ins)
                return
            arch = ins.convention.arch
            if arch is not None and arch.startswith("timm/"):
                ins.convention = ins.convention.over(timm_convention(arch[len("timm/") :]))
        state, ins.weights, notes = unwrap_state_dict(obj, prefer or ins.convention.weights)
        ins.notes += notes
        _check_tensor_kinds(state)
    except (_Refusal, UserError) as exc:  # CheckpointError (a bad sidecar), ProgramError, ArchitectureError
        ins.errors.append(str(exc))
        return
    except OSError as exc:
        ins.errors.append(f"cannot be read ({first_line(exc)})")
        return

    ins.num_params = count_parameters(state)
    ins.state_digest = state_digest(state)
    _check_tensors(state, ins)
    try:
        ins.model, ins.arch = build_model(state, arch, ins.convention.input_size)
    except ArchitectureError as exc:
        ins.errors.append(str(exc))
        return
    if ins.convention.transform_input and ins.arch.name in TRANSFORM_INPUT_ARCHS:
        ins.model.transform_input = True
    _check_convention(ins)


def check_together(inspections: list[Inspection], data_num_classes: int | None = None) -> None:
    """Checks across members, added to their verdicts: identical members, class counts."""
    by_sha: dict[str, str] = {}
    by_state: dict[str, str] = {}
    for ins in inspections:
        if ins.sha256 and ins.sha256 in by_sha:
            ins.warnings.append(f"byte-identical to {by_sha[ins.sha256]}: the ensemble is smaller than it looks")
        elif ins.state_digest and ins.state_digest in by_state:
            same = "the same program and tensors" if ins.format in PROGRAM_KINDS else "same tensors"
            ins.warnings.append(f"{same} as {by_state[ins.state_digest]}: the ensemble is smaller than it looks")
        if ins.sha256:
            by_sha.setdefault(ins.sha256, ins.name)
        if ins.state_digest:
            by_state.setdefault(ins.state_digest, ins.name)
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


def check_views(members: list[Member], scheme, indices: list[int] | None = None) -> None:
    """Refuse, before the first image, a member that cannot take the views of `scheme` at
    `indices` (default: all): crop_size x crop_size crops, and uncropped views, whose size is
    each image's own.

    A network with one fixed input size (a ViT, a program exported at a static size) says so;
    any other is tried on one view of zeros (a shape check: the numbers are not used): a
    crop, and for uncropped views a 4:3 one at the smallest scale.
    """
    from .crops import UNCROPPED
    from .programs import probe

    keys = scheme.keys()
    chosen = [keys[i] for i in (range(len(keys)) if indices is None else indices)]
    size = scheme.crop_size
    uncropped = sorted({k.scale for k in chosen if k.crop == UNCROPPED})
    shapes = [(size, size)] if any(k.crop != UNCROPPED for k in chosen) else []
    if uncropped:
        shapes.append((uncropped[0], uncropped[0] * 4 // 3))
    for m in members:
        need = m.arch.input_size
        for h, w in shapes:
            crop = (h, w) == (size, size)
            what = f"{size}x{size} crops" if crop else "uncropped views (whole images at their own size)"
            problem = None
            if need is not None and (need, need) != (h, w):
                problem = f"takes only {need}x{need} {'crops' if crop else 'inputs'}"
            else:
                try:
                    probe(m.model, (h, w), batch=1)
                except Exception as exc:
                    problem = f"fails on them ({first_line(exc)}, tried on {h}x{w})"
            if problem:
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
