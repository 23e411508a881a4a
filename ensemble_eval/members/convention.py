"""Input conventions: how a member wants its input and how its outputs map onto the classes.

A Convention comes from a sidecar YAML file (`a.pt.yaml` or `a.yaml` beside `a.pt`), from an
entry embedded in the file (META_KEY), from published weights' metadata, or is the default
(RGB, 0-1, ImageNet mean/std). Everything a user can write is validated here, field by
field, into typed values; `convention_problems` judges a convention against the network it
feeds (its verdict lines).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..crops import INTERPOLATIONS
from ..errors import CheckpointError, short_repr

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
META_KEY = "ensemble_eval"  # embedded input-convention entry (torch.save dict or safetensors metadata)
TRANSFORM_INPUT_ARCHS = ("torchvision-googlenet", "googlenet", "inception_v3")  # torchvision's transform_input
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
MAX_NORMALISED_INPUT = 1e4  # |(x * input_scale - mean) / std| for pixels x in 0-1; real conventions: 3 to ~150
MAX_SIDECAR_BYTES = 1 << 20  # a sidecar: a few fields, at most a list of 1000 wnids (about 12 KB)


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


# ---------------------------------------------------------------------------------------
# Reading a user's mapping: one parser per field, (value, source) -> the typed value


def _parse_triple(name: str, v: object, source: str) -> tuple[float, ...]:
    if (
        not isinstance(v, (list, tuple))
        or len(v) != 3
        or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    ):
        raise CheckpointError(f"{source}: {name} must be three numbers like [0.485, 0.456, 0.406], got {short_repr(v)}")
    if not all(math.isfinite(x) and abs(x) <= FLOAT32_MAX for x in v):
        raise CheckpointError(
            f"{source}: {name} must be finite numbers in float32's range (|value| <= 3.4e38), got {short_repr(v)}"
        )
    if name == "std" and any(x <= 0 for x in v):
        raise CheckpointError(f"{source}: std must be positive, got {short_repr(v)}")
    return tuple(float(x) for x in v)


def _parse_color(name: str, v: object, source: str) -> str:
    if v not in ("RGB", "BGR"):
        raise CheckpointError(f"{source}: color must be RGB or BGR, got {short_repr(v)}")
    return v


def _parse_input_scale(name: str, v: object, source: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not 0 < v <= FLOAT32_MAX:
        raise CheckpointError(f"{source}: input_scale must be 1 (0-1 input) or 255 (0-255 input), got {short_repr(v)}")
    return float(v)


def _parse_flag(name: str, v: object, source: str) -> bool:
    if not isinstance(v, bool):
        raise CheckpointError(f"{source}: {name} must be true or false, got {short_repr(v)}")
    return v


def _parse_class_offset(name: str, v: object, source: str) -> int:
    if type(v) is not int or v < 0:
        raise CheckpointError(
            f"{source}: class_offset must be an integer >= 0 (1: background first), got {short_repr(v)}"
        )
    return v


def _parse_classes(name: str, v: object, source: str) -> tuple[str, ...]:
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise CheckpointError(f"{source}: classes must be a list of WordNet ids in output order")
    return tuple(v)


def _parse_weights(name: str, v: object, source: str) -> str:
    if v not in ("ema", "raw"):
        raise CheckpointError(f"{source}: weights must be ema or raw, got {short_repr(v)}")
    return v


def _parse_arch(name: str, v: object, source: str) -> str:
    if not isinstance(v, str) or not v:
        raise CheckpointError(f"{source}: arch must be a name like resnet50 or timm/convnext_tiny")
    return v


def _parse_size(name: str, v: object, source: str) -> int:
    if type(v) is not int or not 1 <= v <= 4096:
        raise CheckpointError(f"{source}: {name} must be a size in pixels like 224, got {short_repr(v)}")
    return v


def _parse_interpolation(name: str, v: object, source: str) -> str:
    if v not in INTERPOLATIONS:
        raise CheckpointError(f"{source}: interpolation must be one of {list(INTERPOLATIONS)}, got {short_repr(v)}")
    return v


def _parse_published(name: str, v: object, source: str) -> tuple[float, float]:
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


# field -> (parser, whether null means "not set"); checked in this order, the first bad field named
FIELD_PARSERS = {
    "mean": (_parse_triple, False),
    "std": (_parse_triple, False),
    "color": (_parse_color, False),
    "input_scale": (_parse_input_scale, False),
    "transform_input": (_parse_flag, False),
    "class_offset": (_parse_class_offset, False),
    "classes": (_parse_classes, True),
    "weights": (_parse_weights, True),
    "arch": (_parse_arch, True),
    "input_size": (_parse_size, True),
    "resize_size": (_parse_size, True),
    "interpolation": (_parse_interpolation, True),
    "antialias": (_parse_flag, True),
    "published": (_parse_published, True),
}
CONVENTION_FIELDS = set(FIELD_PARSERS)


def parse_convention(data: object, source: str) -> Convention:
    """Validate a sidecar / embedded mapping into a Convention (CheckpointError on bad values)."""
    if not isinstance(data, dict):
        raise CheckpointError(f"{source}: expected a mapping of {sorted(CONVENTION_FIELDS)}, got {short_repr(data)}")
    unknown = set(data) - CONVENTION_FIELDS
    if unknown:
        raise CheckpointError(f"{source}: unknown field(s) {sorted(unknown)}; known: {sorted(CONVENTION_FIELDS)}")
    kw: dict[str, Any] = {"source": source}
    for name, (parse, nullable) in FIELD_PARSERS.items():
        if name in data and not (nullable and data[name] is None):
            kw[name] = parse(name, data[name], source)
    conv = Convention(**kw, given=frozenset(k for k in kw if k != "source"))
    problem = input_range_problem(conv)
    if problem:
        raise CheckpointError(f"{source}: {problem}")
    return conv


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


# ---------------------------------------------------------------------------------------
# Where a file's convention comes from: its sidecar, else its embedded entry, else the default


def sidecar_path(path: str) -> Path | None:
    """`a.pt.yaml` or `a.yaml` beside `a.pt`, if present."""
    p = Path(path)
    for candidate in (p.with_name(p.name + ".yaml"), p.with_suffix(".yaml")):
        if candidate != p and candidate.is_file():
            return candidate
    return None


def read_sidecar(path: Path) -> Convention:
    """The Convention of a sidecar YAML file, read with the bounds of a --config file."""
    from ..config import ConfigError, load_yaml_file

    try:
        data = load_yaml_file(path, "sidecar", MAX_SIDECAR_BYTES, "fix or remove the sidecar") or {}
    except ConfigError as exc:
        raise CheckpointError(str(exc)) from None
    return parse_convention(data, f"sidecar {path.name}")


def file_convention(path: str, embedded: object) -> Convention:
    """A checkpoint file's convention: its sidecar's, else its embedded entry's, else the default."""
    sidecar = sidecar_path(path)
    if sidecar is not None:
        return read_sidecar(sidecar)
    if embedded is not None:
        return parse_convention(embedded, "embedded metadata")
    return Convention()


# ---------------------------------------------------------------------------------------
# Judging a convention against the network it feeds


def convention_problems(conv: Convention, arch) -> tuple[list[str], list[str]]:
    """(errors, warnings) of `conv` for a network `arch` (a models.ArchSpec, or None if unbuilt)."""
    errors: list[str] = []
    warnings: list[str] = []
    problem = input_range_problem(conv)  # a sidecar's fields over an architecture's defaults
    if problem:
        errors.append(f"input convention ({conv.source}): {problem}")
    if conv.unreproduced:
        warnings.append(
            f"its library evaluates it with {conv.unreproduced}, which ensemble-eval does not reproduce: its views "
            f"are Resize({conv.resize_size}) + CenterCrop({conv.input_size}), so its published accuracy is not "
            "compared (set input_size / resize_size in a sidecar to choose the view)"
        )
    if arch is None:
        return errors, warnings
    if conv.class_offset >= arch.num_classes:
        errors.append(f"class_offset {conv.class_offset} leaves no classes of the {arch.num_classes} outputs")
    if conv.transform_input and arch.name not in TRANSFORM_INPUT_ARCHS:
        errors.append(f"transform_input is a torchvision GoogLeNet / Inception v3 option; {arch.name} has none")
    if conv.classes is not None:
        errors += _class_list_problems(conv, arch.num_classes)
    if arch.num_classes == 1001 and conv.class_offset == 0:
        warnings.append("1001 outputs: a TensorFlow port with background at index 0? set class_offset: 1 in a sidecar")
    return errors, warnings


def _class_list_problems(conv: Convention, num_outputs: int) -> list[str]:
    from ..data import imagenet_classes

    canonical = [c.wnid for c in imagenet_classes()]
    if len(conv.classes) != num_outputs - conv.class_offset:
        return [
            f"classes lists {len(conv.classes)} wnids but the model has {num_outputs - conv.class_offset} "
            "classes (after class_offset)"
        ]
    if sorted(conv.classes) != sorted(canonical):
        missing = next((w for w in conv.classes if w not in set(canonical)), None) or "duplicates"
        return [f"classes must be the 1000 ImageNet-1k wnids in the model's order ({missing!r} is not)"]
    return []
