"""Pure crop geometry and batched crop extraction.

The protocol (GoogLeNet, ILSVRC 2014): for each scale s the image is resized so its shorter
side is s; three s x s squares are taken along the longer side (first, center, last); from
each square the four corners, the center and the whole square resized give six crops; each
crop is used as is and mirrored. Canonical order: scale, square, crop, flip (flip fastest).

Nothing here knows about files, argv or devices: `plan_crops` is arithmetic on integers and
`extract_crops` works on whatever device the image tensor lives on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import UserError, short_repr

if TYPE_CHECKING:  # torch is imported where crops are made, so config checks stay instant
    import torch

SQUARES = ("first", "center", "last")
CROPS = ("tl", "tr", "bl", "br", "center", "full")
FLIPS = ("none", "mirror")


class SchemeError(UserError):
    """A crop scheme (from YAML or code) that cannot be used."""


def _center_offset(total: int, size: int) -> int:
    # The same expression torchvision's center_crop uses (Python's round: half to even).
    return int(round((total - size) / 2.0))


@dataclass(frozen=True)
class CropKey:
    """One crop of the scheme: which scale, square, crop and flip."""

    scale: int
    square: str
    crop: str
    flip: str

    def as_tuple(self) -> tuple[int, str, str, str]:
        return (self.scale, self.square, self.crop, self.flip)


@dataclass(frozen=True)
class CropBox:
    """Where one crop comes from, in the coordinates of the image resized for its scale.

    `resized` is (height, width) after the scale resize; `square` is (top, left) of the
    s x s square; `crop` is (top, left, size) inside the square ("full" is (0, 0, s) and is
    then resized to crop_size); `mirror` says whether the crop is flipped horizontally.
    """

    key: CropKey
    resized: tuple[int, int]
    square: tuple[int, int]
    crop: tuple[int, int, int]
    mirror: bool


@dataclass(frozen=True)
class CropScheme:
    """A multi-crop protocol: the full crop grid plus named, nested subsets of it.

    `crop_sets` maps a name (e.g. "1", "10", "144") to a selection of the grid: a dict with
    optional keys scales/squares/crops/flips, each a subset of the scheme's values (a missing
    key means all of them).
    """

    scales: tuple[int, ...] = (256, 288, 320, 352)
    crop_size: int = 224
    squares: tuple[str, ...] = SQUARES
    crops: tuple[str, ...] = CROPS
    flips: tuple[str, ...] = FLIPS
    crop_sets: dict[str, dict[str, tuple]] = field(
        default_factory=lambda: {
            "1": {"scales": (256,), "squares": ("center",), "crops": ("center",), "flips": ("none",)},
            "10": {
                "scales": (256,),
                "squares": ("center",),
                "crops": ("tl", "tr", "bl", "br", "center"),
                "flips": ("none", "mirror"),
            },
            "144": {},
        }
    )

    def __post_init__(self) -> None:
        if not self.scales or any(not isinstance(s, int) or s <= 0 for s in self.scales):
            raise SchemeError(f"scales must be positive integers, got {list(self.scales)}")
        if not isinstance(self.crop_size, int) or self.crop_size <= 0:
            raise SchemeError(f"crop_size must be a positive integer, got {self.crop_size!r}")
        if min(self.scales) < self.crop_size:
            raise SchemeError(f"every scale must be >= crop_size ({self.crop_size}), got scales {list(self.scales)}")
        for name, allowed, values in (
            ("squares", SQUARES, self.squares),
            ("crops", CROPS, self.crops),
            ("flips", FLIPS, self.flips),
        ):
            bad = [v for v in values if v not in allowed]
            if not values or bad or len(set(values)) != len(values):
                raise SchemeError(f"{name} must be distinct values from {list(allowed)}, got {list(values)}")
        if len(set(self.scales)) != len(self.scales):
            raise SchemeError(f"scales must be distinct, got {list(self.scales)}")
        if not self.crop_sets:
            raise SchemeError("a crop scheme needs at least one crop set")
        for set_name, selection in self.crop_sets.items():
            unknown = set(selection) - {"scales", "squares", "crops", "flips"}
            if unknown:
                raise SchemeError(f"crop set {set_name!r}: unknown keys {sorted(unknown)}")
            for axis, values in selection.items():
                extra = [v for v in values if v not in getattr(self, axis)]
                if extra or not values:
                    raise SchemeError(
                        f"crop set {set_name!r}: {axis} {list(values)} must be a non-empty subset of "
                        f"{list(getattr(self, axis))}"
                    )

    @property
    def num_crops(self) -> int:
        return len(self.scales) * len(self.squares) * len(self.crops) * len(self.flips)

    def keys(self) -> list[CropKey]:
        """All crops of the grid in canonical order (scale, square, crop, flip)."""
        return [CropKey(s, q, c, f) for s in self.scales for q in self.squares for c in self.crops for f in self.flips]

    def set_indices(self, name: str) -> list[int]:
        """Positions (in canonical order) of the crops that make up crop set `name`."""
        if name not in self.crop_sets:
            raise SchemeError(f"unknown crop set {name!r}; this scheme defines {list(self.crop_sets)}")
        sel = self.crop_sets[name]
        return [
            i
            for i, k in enumerate(self.keys())
            if k.scale in sel.get("scales", self.scales)
            and k.square in sel.get("squares", self.squares)
            and k.crop in sel.get("crops", self.crops)
            and k.flip in sel.get("flips", self.flips)
        ]

    def to_dict(self) -> dict:
        return {
            "scales": list(self.scales),
            "crop_size": self.crop_size,
            "squares": list(self.squares),
            "crops": list(self.crops),
            "flips": list(self.flips),
            "crop_sets": {n: {a: list(v) for a, v in s.items()} for n, s in self.crop_sets.items()},
        }

    @classmethod
    def from_dict(cls, data: dict) -> CropScheme:
        """A scheme from its YAML form (see configs/ilsvrc2014.yaml), with every value checked."""
        if not isinstance(data, dict):
            raise SchemeError(
                f"protocol must be a mapping (scales, crop_size, squares, crops, ...), got {short_repr(data)}"
            )
        known = {"scales", "crop_size", "squares", "crops", "flips", "crop_sets"}
        unknown = set(data) - known
        if unknown:
            raise SchemeError(f"unknown protocol keys {sorted(unknown)}; expected some of {sorted(known)}")
        kwargs: dict = {}
        for axis in ("scales", "squares", "crops", "flips"):
            if axis in data:
                kwargs[axis] = _as_tuple(data[axis], axis, int if axis == "scales" else str)
        if "crop_size" in data:
            if type(data["crop_size"]) is not int:
                raise SchemeError(f"crop_size must be an integer, got {short_repr(data['crop_size'])}")
            kwargs["crop_size"] = data["crop_size"]
        if "crop_sets" in data:
            sets = data["crop_sets"]
            if not isinstance(sets, dict):
                raise SchemeError(f"crop_sets must be a mapping of name -> selection, got {short_repr(sets)}")
            parsed = {}
            for name, selection in sets.items():
                selection = selection or {}
                if not isinstance(selection, dict):
                    raise SchemeError(
                        f"crop set {name!r} must be a mapping like {{scales: [256]}}, got {short_repr(selection)}"
                    )
                parsed[str(name)] = {
                    str(a): _as_tuple(v, f"crop set {name!r} {a}", int if a == "scales" else str)
                    for a, v in selection.items()
                }
            kwargs["crop_sets"] = parsed
        return cls(**kwargs)


def _as_tuple(value: object, what: str, kind: type) -> tuple:
    if not isinstance(value, (list, tuple)) or not all(type(v) is kind for v in value):
        example = "[256, 288]" if kind is int else "[first, center]"
        raise SchemeError(f"{what} must be a list of {kind.__name__} values like {example}, got {short_repr(value)}")
    return tuple(value)


def resized_size(height: int, width: int, scale: int) -> tuple[int, int]:
    """Size after resizing the shorter side to `scale` (torchvision's Resize(int) rule)."""
    if height <= width:
        return scale, int(scale * width / height)
    return int(scale * height / width), scale


def plan_crops(height: int, width: int, scheme: CropScheme, indices: list[int] | None = None) -> list[CropBox]:
    """Geometry of the crops at `indices` (default: all) for an image of height x width."""
    keys = scheme.keys()
    chosen = range(len(keys)) if indices is None else indices
    size = scheme.crop_size
    boxes = []
    for i in chosen:
        key = keys[i]
        s = key.scale
        rh, rw = resized_size(height, width, s)
        long_side = max(rh, rw)
        along = {"first": 0, "center": _center_offset(long_side, s), "last": long_side - s}[key.square]
        square = (0, along) if rw >= rh else (along, 0)
        c = _center_offset(s, size)
        crop = {
            "tl": (0, 0, size),
            "tr": (0, s - size, size),
            "bl": (s - size, 0, size),
            "br": (s - size, s - size, size),
            "center": (c, c, size),
            "full": (0, 0, s),
        }[key.crop]
        boxes.append(CropBox(key, (rh, rw), square, crop, key.flip == "mirror"))
    return boxes


def _resize(image: torch.Tensor, size: list[int]) -> torch.Tensor:
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    return TF.resize(image, size, interpolation=InterpolationMode.BILINEAR, antialias=True)


def extract_crops(image: torch.Tensor, scheme: CropScheme, indices: list[int] | None = None) -> torch.Tensor:
    """Crops of one decoded image, in the order of `indices` (default: the whole grid).

    image: uint8 [3, H, W] on any device. Returns uint8 [K, 3, crop_size, crop_size] on the
    same device. One resize per scale; squares and fixed crops are slices; the "full" crops
    of a scale's squares share one batched resize; mirrored crops are `torch.flip` copies.
    """
    import torch

    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 [3, H, W] image, got {image.dtype} {list(image.shape)}")
    height, width = image.shape[-2:]
    boxes = plan_crops(height, width, scheme, indices)
    size = scheme.crop_size
    out = torch.empty((len(boxes), 3, size, size), dtype=torch.uint8, device=image.device)

    by_scale: dict[int, list[int]] = {}
    for pos, box in enumerate(boxes):
        by_scale.setdefault(box.key.scale, []).append(pos)

    for scale, positions in by_scale.items():
        resized = _resize(image, [scale])
        full_squares = sorted({boxes[p].square for p in positions if boxes[p].key.crop == "full"})
        full_resized = {}
        if full_squares:
            stack = torch.stack([resized[:, top : top + scale, left : left + scale] for top, left in full_squares])
            for sq, crop in zip(full_squares, _resize(stack, [size, size])):
                full_resized[sq] = crop
        for p in positions:
            box = boxes[p]
            if box.key.crop == "full":
                crop = full_resized[box.square]
            else:
                top = box.square[0] + box.crop[0]
                left = box.square[1] + box.crop[1]
                crop = resized[:, top : top + size, left : left + size]
            out[p] = torch.flip(crop, dims=[-1]) if box.mirror else crop
    return out


def crops_per_set(scheme: CropScheme) -> dict[str, int]:
    return {name: len(scheme.set_indices(name)) for name in scheme.crop_sets}


def needed_indices(scheme: CropScheme, set_names: list[str]) -> list[int]:
    """Union of the crop sets' positions, in canonical order."""
    wanted: set[int] = set()
    for name in set_names:
        wanted.update(scheme.set_indices(name))
    return sorted(wanted)


__all__ = [
    "CROPS",
    "FLIPS",
    "SQUARES",
    "CropBox",
    "CropKey",
    "CropScheme",
    "SchemeError",
    "crops_per_set",
    "extract_crops",
    "needed_indices",
    "plan_crops",
    "resized_size",
]
