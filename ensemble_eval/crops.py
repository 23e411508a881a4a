"""Pure crop geometry and batched crop extraction: a small language for multi-crop protocols.

A scheme is a grid of four axes, in this canonical order (the last fastest):

- **scale**: the image is resized so its shorter side is s (the scheme's `interpolation`,
  bilinear by default, antialiased unless `antialias: false`);
- **region** of the resized image: an s x s square along the longer side ("first",
  "center", "last"), or the "whole" resized image;
- **crop** within the region: the fixed corners and center of crop_size ("tl", "tr", "bl",
  "br", "center"), the whole region resized to crop_size x crop_size ("full"), the cells of
  a regular N x N grid of crop_size crops ("r0c0" ... row-major, `grid: N`), or the region
  itself at its own size ("uncropped": a view whose size depends on the image);
- **flip**: as is ("none") and mirrored ("mirror"). `flip: crop` (the default, the papers'
  "reflections of the patches") mirrors each crop; `flip: image` takes the crop from the
  mirrored image, as torchvision's TenCrop does (the two differ by a pixel where a margin is odd).

Named crop sets select nested subsets of the grid. The GoogLeNet protocol (the default) is
4 scales x 3 squares x 6 crops x 2 flips = 144.

Nothing here knows about files, argv or devices: `plan_crops` is arithmetic on integers and
`extract_views` works on whatever device the image tensor lives on.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING

from .errors import UserError, short_repr

if TYPE_CHECKING:  # torch is imported where crops are made, so config checks stay instant
    import torch

SQUARES = ("first", "center", "last")
REGIONS = (*SQUARES, "whole")
CROPS = ("tl", "tr", "bl", "br", "center", "full")
UNCROPPED = "uncropped"
FLIPS = ("none", "mirror")
FLIP_MODES = ("crop", "image")  # what a mirrored view mirrors: the crop, or the image before the crop
INTERPOLATIONS = ("bilinear", "bicubic", "nearest")
BACKENDS = ("tensor", "pil")  # the resize: torchvision's uint8 tensor kernels, or PIL's Image.resize
AXES = ("scales", "regions", "crops", "flips")
_CELL = re.compile(r"r(\d+)c(\d+)")

# Bounds of a scheme, checked when it is built and before anything in proportion to the
# requested size is made (docs/protocol.md, "Limits"). The presets use 5 to 150 views per
# image and at most 13 M pixels of views (Inception's 144 crops of 299).
MIN_SIZE = 8  # crop_size and scales: torchvision's antialiased uint8 resize fails on a 1-pixel side
MAX_SIZE = 4096  # crop_size and scales: a 4:3 image at 4096 is 22 M pixels, within data.MAX_RESIZED_PIXELS
MAX_VIEWS = 1024  # views per image
MAX_GRID = 32  # N of `crops: {grid: N}` (32 x 32 = 1024 cells)
MAX_PIXELS = 64 * 1024 * 1024  # per image: resized images (s x s each) + views (144 crops of 600 px fit)
MAX_CROP_SETS = 64
MAX_SET_NAME = 64  # characters of a crop set's name (tables and messages show it)


class SchemeError(UserError):
    """A crop scheme (from YAML or code) that cannot be used."""


def _center_offset(total: int, size: int) -> int:
    # The same expression torchvision's center_crop uses (Python's round: half to even).
    return int(round((total - size) / 2.0))


def _shown(value: object) -> str:
    # short_repr, but an integer too long for str() (Python's 4300-digit limit) by its size
    if type(value) is int and value.bit_length() > 256:
        return f"an integer of {value.bit_length()} bits"
    return short_repr(value)


def _check_grid(n: object) -> None:
    """Before any cell name is made: N of an N x N grid, 0 (no grid) to MAX_GRID."""
    if type(n) is not int or not 0 <= n <= MAX_GRID:
        raise SchemeError(
            f"grid: {_shown(n)} is not an N from 1 to {MAX_GRID} (an N x N grid has N^2 cells per region, "
            f"and an image may have at most {MAX_VIEWS:,} views); use a coarser grid"
        )


def _check_size(key: str, value: object) -> None:
    if type(value) is not int or not MIN_SIZE <= value <= MAX_SIZE:
        raise SchemeError(
            f"{key}: {_shown(value)} is not a size from {MIN_SIZE} to {MAX_SIZE} pixels; give {key} within those bounds"
        )


def grid_cells(n: int) -> tuple[str, ...]:
    """The cell names of an n x n grid, row-major: r0c0, r0c1, ..., r{n-1}c{n-1}."""
    return tuple(f"r{i}c{j}" for i in range(n) for j in range(n))


def _grid_offset(index: int, n: int, total: int, size: int) -> int:
    # Cell `index` of n spread evenly from 0 to total - size; one cell is centered.
    if n == 1:
        return _center_offset(total, size)
    return int(round(index * (total - size) / (n - 1)))


@dataclass(frozen=True)
class CropKey:
    """One view of the scheme: which scale, region, crop and flip."""

    scale: int
    region: str
    crop: str
    flip: str

    def as_tuple(self) -> tuple[int, str, str, str]:
        return (self.scale, self.region, self.crop, self.flip)


@dataclass(frozen=True)
class CropBox:
    """Where one view comes from, in the coordinates of the image resized for its scale.

    `resized` is (height, width) after the scale resize; `region` is (top, left, height,
    width) of the square or whole image; `crop` is (top, left, height, width) inside the
    region ("full" and "uncropped" are the whole region); `size` is the (height, width) the
    view is given to the networks at ("full" resizes the region to it); `mirror` says whether
    the view is flipped horizontally.
    """

    key: CropKey
    resized: tuple[int, int]
    region: tuple[int, int, int, int]
    crop: tuple[int, int, int, int]
    size: tuple[int, int]
    mirror: bool


def _normalize_selection(name: str, selection: dict) -> dict:
    if "squares" in selection:
        if "regions" in selection:
            raise SchemeError(f"crop set {name!r}: give regions or squares (the old name), not both")
        selection = {("regions" if a == "squares" else a): v for a, v in selection.items()}
    return selection


@dataclass(frozen=True)
class CropScheme:
    """A multi-crop protocol: the full view grid plus named, nested subsets of it.

    `crop_sets` maps a name (e.g. "1", "10", "144") to a selection of the grid: a dict with
    optional keys scales/regions/crops/flips, each a subset of the scheme's values (a missing
    key means all of them; "squares" is accepted for "regions").
    """

    scales: tuple[int, ...] = (256, 288, 320, 352)
    crop_size: int = 224
    regions: tuple[str, ...] = SQUARES
    crops: tuple[str, ...] = CROPS
    flips: tuple[str, ...] = FLIPS
    crop_sets: dict[str, dict[str, tuple]] = field(
        default_factory=lambda: {
            "1": {"scales": (256,), "regions": ("center",), "crops": ("center",), "flips": ("none",)},
            "10": {
                "scales": (256,),
                "regions": ("center",),
                "crops": ("tl", "tr", "bl", "br", "center"),
                "flips": ("none", "mirror"),
            },
            "144": {},
        }
    )
    grid: int = 0  # N of the N x N grid cells among `crops` (0: no grid)
    interpolation: str = "bilinear"  # of every resize: bilinear, bicubic or nearest
    antialias: bool = True  # of the tensor resize when it shrinks (PIL's always antialiases)
    flip: str = "crop"  # mirrored views: the crop mirrored ("crop") or cut from the mirrored image ("image")

    def __post_init__(self) -> None:
        # Sizes first, so nothing in proportion to a hostile request (a grid's cell names, the
        # views, the crop sets) is made before it is refused.
        self._check_options()
        self._check_views()
        object.__setattr__(self, "crop_sets", self._normalized_sets())

    def _check_options(self) -> None:
        """The axes' lengths, the grid, the resize and flip options."""
        for axis in AXES:
            if len(getattr(self, axis)) > MAX_VIEWS:
                raise SchemeError(
                    f"{axis}: {len(getattr(self, axis)):,} values, more than the {MAX_VIEWS:,} views an image may have"
                )
        _check_grid(self.grid)
        if self.interpolation not in INTERPOLATIONS:
            raise SchemeError(f"interpolation: {_shown(self.interpolation)} is not one of {list(INTERPOLATIONS)}")
        if type(self.antialias) is not bool:
            raise SchemeError(f"antialias: {_shown(self.antialias)} must be true or false")
        if self.flip not in FLIP_MODES:
            raise SchemeError(
                f"flip: {_shown(self.flip)} is not one of {list(FLIP_MODES)} (crop: mirror each crop; image: crop "
                "the mirrored image, as torchvision's TenCrop)"
            )

    def _check_views(self) -> None:
        """The sizes, the number of views, each axis's values, the pixels an image costs."""
        _check_size("crop_size", self.crop_size)
        if not self.scales:
            raise SchemeError("scales must list at least one size, like [256]")
        for s in self.scales:
            _check_size("scales", s)
        views = self.num_crops
        if views > MAX_VIEWS:
            raise SchemeError(
                f"the scheme has {len(self.scales)} scales x {len(self.regions)} regions x {len(self.crops)} crops x "
                f"{len(self.flips)} flips = {views:,} views per image, more than the {MAX_VIEWS:,} allowed; "
                "use fewer scales, regions, crops or flips"
            )
        sized = [c for c in self.crops if c != UNCROPPED]
        if sized and min(self.scales) < self.crop_size:
            raise SchemeError(f"every scale must be >= crop_size ({self.crop_size}), got scales {list(self.scales)}")
        crops_allowed = {*CROPS, UNCROPPED, *grid_cells(self.grid)}
        for name, allowed, values in (
            ("regions", set(REGIONS), self.regions),
            ("crops", crops_allowed, self.crops),
            ("flips", set(FLIPS), self.flips),
        ):
            bad = [v for v in values if type(v) is not str or v not in allowed]
            if not values or bad or len(set(values)) != len(values):
                shown = [*CROPS, UNCROPPED, "r<i>c<j> with grid: N"] if name == "crops" else list(allowed)
                raise SchemeError(f"{name} must be distinct values from {shown}, got {short_repr(list(values))}")
        if len(set(self.scales)) != len(self.scales):
            raise SchemeError(f"scales must be distinct, got {short_repr(list(self.scales))}")
        pixels = self.pixels_per_image()
        if pixels > MAX_PIXELS:
            raise SchemeError(
                f"the scheme makes {pixels:,} pixels per image (its resized images and its {views} views), more "
                f"than the {MAX_PIXELS:,} allowed; use fewer or smaller views or scales"
            )

    def _normalized_sets(self) -> dict[str, dict[str, tuple]]:
        """The crop sets, each checked against the axes, as {name: {axis: values}}."""
        if not self.crop_sets:
            raise SchemeError("a crop scheme needs at least one crop set")
        if len(self.crop_sets) > MAX_CROP_SETS:
            raise SchemeError(
                f"crop_sets: {len(self.crop_sets):,} sets, more than the {MAX_CROP_SETS} allowed; name fewer sets"
            )
        normalized = {}
        for set_name, selection in self.crop_sets.items():
            if type(set_name) is not str or not 0 < len(set_name) <= MAX_SET_NAME:
                raise SchemeError(
                    f"crop set name {short_repr(set_name)} must be a string of 1 to {MAX_SET_NAME} characters"
                )
            selection = _normalize_selection(set_name, selection)
            unknown = set(selection) - set(AXES)
            if unknown:
                raise SchemeError(
                    f"crop set {set_name!r}: unknown keys {short_repr(sorted(map(str, unknown)))}; "
                    f"expected some of {AXES}"
                )
            for axis, values in selection.items():
                extra = [v for v in values if v not in getattr(self, axis)]
                if extra or not values:
                    raise SchemeError(
                        f"crop set {set_name!r}: {axis} {short_repr(list(values))} must be a non-empty subset of "
                        f"{short_repr(list(getattr(self, axis)))}"
                    )
            normalized[set_name] = {a: tuple(v) for a, v in selection.items()}
        return normalized

    def pixels_per_image(self) -> int:
        """Pixels one image costs: its resized images, counted s x s (the least an image gives),
        plus its views, crop_size^2 each (an uncropped view counted s x s as well)."""
        per_flip = len(self.regions) * len(self.flips)
        sized = sum(c != UNCROPPED for c in self.crops) * self.crop_size**2 * len(self.scales)
        uncropped = sum(s * s for s in self.scales) if UNCROPPED in self.crops else 0
        return sum(s * s for s in self.scales) + (sized + uncropped) * per_flip

    @property
    def num_crops(self) -> int:
        return len(self.scales) * len(self.regions) * len(self.crops) * len(self.flips)

    def keys(self) -> list[CropKey]:
        """All views of the grid in canonical order (scale, region, crop, flip)."""
        return [CropKey(s, r, c, f) for s in self.scales for r in self.regions for c in self.crops for f in self.flips]

    def set_indices(self, name: str) -> list[int]:
        """Positions (in canonical order) of the views that make up crop set `name`."""
        if name not in self.crop_sets:
            raise SchemeError(f"unknown crop set {short_repr(name)}; this scheme defines {list(self.crop_sets)}")
        sel = self.crop_sets[name]
        return [
            i
            for i, k in enumerate(self.keys())
            if k.scale in sel.get("scales", self.scales)
            and k.region in sel.get("regions", self.regions)
            and k.crop in sel.get("crops", self.crops)
            and k.flip in sel.get("flips", self.flips)
        ]

    def uncropped(self, indices: list[int] | None = None) -> bool:
        """Whether any view at `indices` (default: all) is uncropped, i.e. sized by the image."""
        keys = self.keys()
        return any(keys[i].crop == UNCROPPED for i in (range(len(keys)) if indices is None else indices))

    @property
    def base_scale(self) -> int:
        """The scale of the 1-crop view: the one scale of the crop set "1" where it names one,
        else the first scale. A member's own resize size takes its place (`for_view`)."""
        one = self.crop_sets.get("1", {}).get("scales", self.scales)
        return one[0] if len(one) == 1 else self.scales[0]

    def geometry_key(self) -> tuple:
        """What decides the pixels of the views (equal keys: the same views of every image)."""
        return (self.scales, self.crop_size, self.grid, self.interpolation, self.antialias, self.flip)

    def for_view(self, crop_size: int, resize_size: int, interpolation: str, antialias: bool = True) -> CropScheme:
        """This scheme for a member evaluated with Resize(resize_size) + CenterCrop(crop_size) at
        `interpolation`: the base scale (the 1-crop view's) becomes resize_size, every other
        scale s becomes int(round(s * crop_size / self.crop_size)), the crops crop_size; regions,
        crops, flips and the crop sets stay, so view k of the member is view k of the scheme.
        A scheme of uncropped views only (whole images: no center crop to match) scales every
        scale, the base too.

        With the scheme's own crop size and base scale the result equals the scheme.
        """
        ratio = crop_size / self.crop_size
        base = self.base_scale if any(c != UNCROPPED for c in self.crops) else None
        mapping = {s: resize_size if s == base else int(round(s * ratio)) for s in self.scales}
        scales = tuple(mapping[s] for s in self.scales)
        if len(set(scales)) != len(scales):
            raise SchemeError(
                f"scaled to crop {crop_size} with its own resize {resize_size}, the scales {list(self.scales)} become "
                f"{list(scales)}, which repeat a scale; give the member a resize_size that is not another scale"
            )
        sets = {
            name: {a: (tuple(mapping[s] for s in v) if a == "scales" else v) for a, v in sel.items()}
            for name, sel in self.crop_sets.items()
        }
        return replace(
            self,
            scales=scales,
            crop_size=crop_size,
            crop_sets=sets,
            interpolation=interpolation,
            antialias=antialias,
        )

    def to_dict(self) -> dict:
        d = {
            "scales": list(self.scales),
            "crop_size": self.crop_size,
            "regions": list(self.regions),
            "crops": list(self.crops),
            "flips": list(self.flips),
            "crop_sets": {n: {a: list(v) for a, v in s.items()} for n, s in self.crop_sets.items()},
        }
        if self.grid:
            d["grid"] = self.grid
        # written only when not the default, so the record of a default scheme stays what it was
        for key, default in (("interpolation", "bilinear"), ("antialias", True), ("flip", "crop")):
            if getattr(self, key) != default:
                d[key] = getattr(self, key)
        return d

    @classmethod
    def from_dict(cls, data: dict) -> CropScheme:
        """A scheme from its YAML form (see ensemble_eval/presets/), with every value checked.

        `squares` is accepted for `regions`; `crops: {grid: N}` means the N x N grid's cells."""
        if not isinstance(data, dict):
            raise SchemeError(
                f"protocol must be a mapping (scales, crop_size, regions, crops, ...), got {short_repr(data)}"
            )
        known = {f.name for f in fields(cls)} | {"squares"}
        unknown = set(data) - known
        if unknown:
            raise SchemeError(
                f"unknown protocol keys {short_repr(sorted(map(str, unknown)))}; expected some of {sorted(known)}"
            )
        if "regions" in data and "squares" in data:
            raise SchemeError("give regions or squares (the old name), not both")
        kwargs: dict = {}
        for key in ("crop_size", "grid"):
            if key in data:
                if type(data[key]) is not int:
                    raise SchemeError(f"{key} must be an integer, got {short_repr(data[key])}")
                kwargs[key] = data[key]
        for key in ("interpolation", "antialias", "flip"):
            if key in data:
                kwargs[key] = data[key]  # checked by the constructor
        if data.get("crops") is not None:
            kwargs.update(_parse_crops(data["crops"], kwargs.get("grid")))
        for axis, key in (("scales", "scales"), ("regions", "regions"), ("regions", "squares"), ("flips", "flips")):
            if key in data:
                kwargs[axis] = _as_tuple(data[key], key, int if axis == "scales" else str)
        if "crop_sets" in data:
            kwargs["crop_sets"] = _parse_crop_sets(data["crop_sets"])
        return cls(**kwargs)


def _parse_crops(crops: object, grid: int | None) -> dict:
    """The `crops` entry: a list of names, or {grid: N} for the N x N grid's cells (`grid`: the
    scheme's own grid entry, which must agree)."""
    if not isinstance(crops, dict):
        return {"crops": _as_tuple(crops, "crops", str)}
    if set(crops) != {"grid"} or type(crops["grid"]) is not int or crops["grid"] <= 0:
        raise SchemeError(f"crops as a mapping must be {{grid: N}} with N >= 1, got {short_repr(crops)}")
    _check_grid(crops["grid"])  # before its N^2 cell names are made
    if grid is not None and grid != crops["grid"]:
        raise SchemeError(f"grid: {grid} contradicts crops: {{grid: {crops['grid']}}}")
    return {"grid": crops["grid"], "crops": grid_cells(crops["grid"])}


def _parse_crop_sets(sets: object) -> dict[str, dict[str, tuple]]:
    """The `crop_sets` entry: {name: {axis: values}}, each value list checked for its type."""
    if not isinstance(sets, dict):
        raise SchemeError(f"crop_sets must be a mapping of name -> selection, got {short_repr(sets)}")
    if len(sets) > MAX_CROP_SETS:
        raise SchemeError(f"crop_sets: {len(sets):,} sets, more than the {MAX_CROP_SETS} allowed; name fewer sets")
    parsed = {}
    for name, selection in sets.items():
        selection = selection or {}
        if not isinstance(selection, dict):
            raise SchemeError(
                f"crop set {short_repr(name)} must be a mapping like {{scales: [256]}}, got {short_repr(selection)}"
            )
        parsed[str(name)] = {
            str(a): _as_tuple(v, f"crop set {short_repr(name)} {str(a)[:60]}", int if a == "scales" else str)
            for a, v in selection.items()
        }
    return parsed


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


def _region_box(region: str, rh: int, rw: int, s: int) -> tuple[int, int, int, int]:
    if region == "whole":
        return (0, 0, rh, rw)
    long_side = max(rh, rw)
    along = {"first": 0, "center": _center_offset(long_side, s), "last": long_side - s}[region]
    return (0, along, s, s) if rw >= rh else (along, 0, s, s)


def _crop_box(crop: str, gh: int, gw: int, size: int, grid: int) -> tuple[int, int, int, int]:
    if crop in ("full", UNCROPPED):
        return (0, 0, gh, gw)
    cell = _CELL.fullmatch(crop)
    if cell:
        i, j = int(cell[1]), int(cell[2])
        return (_grid_offset(i, grid, gh, size), _grid_offset(j, grid, gw, size), size, size)
    far_h, far_w = gh - size, gw - size
    top, left = {
        "tl": (0, 0),
        "tr": (0, far_w),
        "bl": (far_h, 0),
        "br": (far_h, far_w),
        "center": (_center_offset(gh, size), _center_offset(gw, size)),
    }[crop]
    return (top, left, size, size)


def plan_crops(height: int, width: int, scheme: CropScheme, indices: list[int] | None = None) -> list[CropBox]:
    """Geometry of the views at `indices` (default: all) for an image of height x width."""
    keys = scheme.keys()
    chosen = range(len(keys)) if indices is None else indices
    size = scheme.crop_size
    boxes = []
    for i in chosen:
        key = keys[i]
        rh, rw = resized_size(height, width, key.scale)
        region = _region_box(key.region, rh, rw, key.scale)
        crop = _crop_box(key.crop, region[2], region[3], size, scheme.grid)
        if key.region == "center" and key.crop == "center":
            # the center crop of the center square is the image's center crop (CenterCrop's
            # offsets on the resized image); centering twice would be a pixel off where both
            # margins are odd (Resize(342) + CenterCrop(299) of a 4:3 image)
            crop = (_center_offset(rh, size) - region[0], _center_offset(rw, size) - region[1], size, size)
        out = (region[2], region[3]) if key.crop == UNCROPPED else (size, size)
        boxes.append(CropBox(key, (rh, rw), region, crop, out, key.flip == "mirror"))
    return boxes


_PIL_FILTERS = {"bilinear": 2, "bicubic": 3, "nearest": 0}  # PIL.Image.Resampling values


def _resize(image: torch.Tensor, size: list[int], scheme: CropScheme, backend: str) -> torch.Tensor:
    """uint8 [..., 3, H, W] resized to `size` ([s]: shorter side s; [h, w]) at the scheme's
    interpolation: torchvision's tensor kernels (`antialias` as the scheme says), or PIL's
    Image.resize (backend "pil", always antialiased: what torchvision's Resize does to a PIL
    image, and timm's eval transform)."""
    if backend == "pil":
        return _pil_resize(image, size, scheme.interpolation)
    from torchvision.transforms.v2 import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    mode = InterpolationMode(scheme.interpolation)
    return TF.resize(image, size, interpolation=mode, antialias=scheme.antialias)


def _pil_resize(image: torch.Tensor, size: list[int], interpolation: str) -> torch.Tensor:
    import numpy as np
    import torch
    from PIL import Image

    if image.ndim == 4:
        return torch.stack([_pil_resize(one, size, interpolation) for one in image])
    height, width = image.shape[-2:]
    out_h, out_w = resized_size(height, width, size[0]) if len(size) == 1 else size
    pil = Image.fromarray(image.permute(1, 2, 0).contiguous().cpu().numpy(), "RGB")
    resized = np.asarray(pil.resize((out_w, out_h), _PIL_FILTERS[interpolation]))
    return torch.from_numpy(resized.copy()).permute(2, 0, 1).contiguous().to(image.device)


def _views(image: torch.Tensor, boxes: list[CropBox], scheme: CropScheme, backend: str = "tensor"):
    """(position, uint8 [3, h, w] view) for every box, one resize per scale; crops are slices,
    the "full" crops of a scale share one batched resize per region shape. With `flip: image`
    a mirrored view is cut at its box from the mirrored resized image (torchvision's TenCrop)."""
    import torch

    by_scale: dict[int, list[int]] = {}
    for pos, box in enumerate(boxes):
        by_scale.setdefault(box.key.scale, []).append(pos)
    from_mirrored = scheme.flip == "image"
    for scale, positions in by_scale.items():
        resized = _resize(image, [scale], scheme, backend)
        sources = {False: resized}
        if from_mirrored and any(boxes[p].mirror for p in positions):
            sources[True] = torch.flip(resized, dims=[-1])
        fulls = [boxes[p] for p in positions if boxes[p].key.crop == "full"]
        full_regions = sorted({(from_mirrored and b.mirror, b.region) for b in fulls})
        full_resized = {}
        for shape in sorted({r[2:] for _, r in full_regions}):
            same = [(m, r) for m, r in full_regions if r[2:] == shape]
            stack = torch.stack([sources[m][:, t : t + h, lf : lf + w] for m, (t, lf, h, w) in same])
            full_resized.update(zip(same, _resize(stack, list(fulls[0].size), scheme, backend)))  # all crop_size
        for p in positions:
            box = boxes[p]
            mirrored_image = from_mirrored and box.mirror
            if box.key.crop == "full":
                view = full_resized[(mirrored_image, box.region)]
            else:
                top, left = box.region[0] + box.crop[0], box.region[1] + box.crop[1]
                view = sources[mirrored_image][:, top : top + box.crop[2], left : left + box.crop[3]]
            yield p, (torch.flip(view, dims=[-1]) if box.mirror and not mirrored_image else view)


def _plan_image(image: torch.Tensor, scheme: CropScheme, indices: list[int] | None) -> list[CropBox]:
    import torch

    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(f"expected a uint8 [3, H, W] image, got {image.dtype} {list(image.shape)}")
    height, width = image.shape[-2:]
    return plan_crops(height, width, scheme, indices)


def extract_crops(
    image: torch.Tensor, scheme: CropScheme, indices: list[int] | None = None, backend: str = "tensor"
) -> torch.Tensor:
    """Crops of one decoded image, in the order of `indices` (default: the whole grid), for
    schemes whose views all have crop_size (no "uncropped" view among `indices`).

    image: uint8 [3, H, W] on any device. Returns uint8 [K, 3, crop_size, crop_size] on the
    same device. One resize per scale; squares and fixed crops are slices; the "full" crops
    of a scale's regions share one batched resize; mirrored crops are `torch.flip` copies.
    `backend` "pil" resizes with PIL (the image must be on the CPU).
    """
    import torch

    boxes = _plan_image(image, scheme, indices)
    size = scheme.crop_size
    if any(b.size != (size, size) for b in boxes):
        raise ValueError("uncropped views have the image's own size: use extract_views")
    out = torch.empty((len(boxes), 3, size, size), dtype=torch.uint8, device=image.device)
    for p, view in _views(image, boxes, scheme, backend):
        out[p] = view
    return out


def extract_views(
    image: torch.Tensor, scheme: CropScheme, indices: list[int] | None = None, backend: str = "tensor"
) -> list[tuple[list[int], torch.Tensor]]:
    """The views of one decoded image grouped by shape: [(positions, uint8 [n, 3, h, w])].

    `positions` index into `indices` (default: the whole grid), ascending within a group;
    groups come in the order of their first view. Views of one shape share a tensor, so
    they share forward passes; nothing is padded or resized to make shapes agree.
    """
    import torch

    boxes = _plan_image(image, scheme, indices)
    groups: dict[tuple[int, int], list[tuple[int, torch.Tensor]]] = {}
    for p, view in _views(image, boxes, scheme, backend):
        groups.setdefault(tuple(view.shape[-2:]), []).append((p, view))
    return [
        ([p for p, _ in members], torch.stack([v for _, v in members]))
        for members in (sorted(g, key=lambda pv: pv[0]) for g in groups.values())
    ]


def set_label(name: str, crops: int) -> str:
    """A crop set as tables name it: its crop count where that is its name ("144"), else its
    name with the count ("Q256 (50)"), so sets of equal size stay apart."""
    return str(crops) if name == str(crops) else f"{name} ({crops})"


def crops_per_set(scheme: CropScheme) -> dict[str, int]:
    return {name: len(scheme.set_indices(name)) for name in scheme.crop_sets}


def nested_under(scheme: CropScheme, set_names: list[str]) -> dict[str, str | None]:
    """For each set, the set it is compared with in a results table: the largest of the other
    sets whose views are all among its own (the first of `set_names` on ties), or None.

    GoogLeNet: 10 -> 1, 144 -> 10. VGG: Q256 -> 1, 150 -> Q256, and Q384 / Q512 (which hold
    no smaller set) -> None: a set is compared with fewer crops of its own, never with another
    set of the same size."""
    views = {name: set(scheme.set_indices(name)) for name in set_names}
    under: dict[str, str | None] = {}
    for name in set_names:
        inside = [other for other in set_names if views[other] < views[name]]
        under[name] = max(inside, key=lambda o: (len(views[o]), -set_names.index(o)), default=None)
    return under


def needed_indices(scheme: CropScheme, set_names: list[str]) -> list[int]:
    """Union of the crop sets' positions, in canonical order."""
    wanted: set[int] = set()
    for name in set_names:
        wanted.update(scheme.set_indices(name))
    return sorted(wanted)


__all__ = [
    "BACKENDS",
    "CROPS",
    "FLIP_MODES",
    "INTERPOLATIONS",
    "FLIPS",
    "REGIONS",
    "SQUARES",
    "UNCROPPED",
    "CropBox",
    "CropKey",
    "CropScheme",
    "SchemeError",
    "crops_per_set",
    "extract_crops",
    "extract_views",
    "grid_cells",
    "needed_indices",
    "nested_under",
    "plan_crops",
    "resized_size",
    "set_label",
]
