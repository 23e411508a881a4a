"""Each member's evaluation view, and the protocol's geometry for each member.

A member's makers evaluated it on one view: Resize(resize_size, interpolation) +
CenterCrop(crop_size), with their mean/std. `resolve_view` finds that view from what the
member's convention says (torchvision's weights metadata and `transforms()`, timm's pretrained
config, a sidecar's input_size / resize_size / interpolation / antialias), else from the
protocol. `member_geometries` gives every member the protocol scaled to its view
(`CropScheme.for_view`): the scale of the 1-crop set becomes the member's resize size, the
other scales are scaled by crop_size / the protocol's crop size, so the member's 1-crop view is
its library's eval transform and view k of every member is view k of the protocol. Members
whose geometry is the same share one set of views per image.

Nothing here touches images, files or devices.
"""

from __future__ import annotations

from dataclasses import dataclass

from .crops import CropScheme, SchemeError

VIEW_MODES = ("native", "protocol")  # each member on its own view (scaled protocol), or all on the protocol's


@dataclass(frozen=True)
class MemberView:
    """A member's 1-crop evaluation view: Resize(resize_size) + CenterCrop(crop_size)."""

    crop_size: int
    resize_size: int
    interpolation: str
    antialias: bool
    source: str  # where it comes from: "torchvision", "timm", "sidecar X.yaml", "embedded metadata", "protocol"

    def describe(self) -> str:
        aa = "" if self.antialias else ", no antialias"
        return f"Resize({self.resize_size}, {self.interpolation}{aa}) + CenterCrop({self.crop_size}) [{self.source}]"

    def to_dict(self) -> dict:
        return {
            "crop_size": self.crop_size,
            "resize_size": self.resize_size,
            "interpolation": self.interpolation,
            "antialias": self.antialias,
            "source": self.source,
        }


GEOMETRY_FIELDS = ("input_size", "resize_size", "interpolation", "antialias")


def protocol_view(scheme: CropScheme) -> MemberView:
    """The protocol's own 1-crop view: its base scale, crop size, interpolation and antialias."""
    return MemberView(scheme.crop_size, scheme.base_scale, scheme.interpolation, scheme.antialias, "protocol")


def resolve_view(convention, fixed_size: int | None, scheme: CropScheme, mode: str = "native") -> MemberView:
    """The member's 1-crop view under `scheme`.

    convention: the member's members.convention.Convention; fixed_size: the one input size its network
    takes (a ViT, a program exported at a static size), or None. "native" (the default): what
    the convention gives, each missing field from the protocol (a crop size other than the
    protocol's gets the base scale scaled with it); "protocol": the protocol's own view for
    every member (mean/std stay the member's)."""
    if mode == "protocol":
        return protocol_view(scheme)
    base = scheme.base_scale
    crop = convention.input_size or fixed_size or scheme.crop_size
    resize = convention.resize_size or (
        base if crop == scheme.crop_size else int(round(base * crop / scheme.crop_size))
    )
    given = any(getattr(convention, f) is not None for f in GEOMETRY_FIELDS)
    return MemberView(
        crop,
        max(resize, crop),
        convention.interpolation or scheme.interpolation,
        scheme.antialias if convention.antialias is None else convention.antialias,
        convention.source if given else ("network input size" if fixed_size else "protocol"),
    )


@dataclass(frozen=True)
class Geometries:
    """The distinct geometries of a run's members: `schemes[of_member[i]]` is member i's protocol."""

    schemes: tuple[CropScheme, ...]
    of_member: tuple[int, ...]
    views: tuple[MemberView, ...]  # per member
    backend: str = "tensor"  # the resize: torchvision's tensor kernels or PIL ("pil")

    @classmethod
    def single(cls, scheme: CropScheme, num_members: int = 1, backend: str = "tensor") -> Geometries:
        """Every member on `scheme` as it is."""
        return cls((scheme,), (0,) * num_members, (protocol_view(scheme),) * num_members, backend)

    def members_of(self, g: int) -> list[int]:
        return [i for i, j in enumerate(self.of_member) if j == g]

    def to_dict(self) -> list[dict]:
        """Per member: its view and its scaled protocol's scales and crop size."""
        return [
            v.to_dict() | {"scales": list(self.schemes[g].scales), "backend": self.backend}
            for v, g in zip(self.views, self.of_member)
        ]


def member_geometries(
    members, scheme: CropScheme, mode: str = "native", backend: str = "tensor", names: list[str] | None = None
) -> Geometries:
    """Each member's view and its copy of `scheme`, distinct geometries made once.

    members: objects with `.convention` and `.arch.input_size` (members.inspection.Member). The first
    geometry is the first member's. SchemeError names the member whose scaled scheme cannot be
    made (too large, or its resize size equal to another scale)."""
    if backend == "pil" and any(m.convention.antialias is False for m in members):
        raise SchemeError(
            "--resize-backend pil always antialiases; a member asks antialias: false: use the tensor backend"
        )
    schemes: list[CropScheme] = []
    keys: list[tuple] = []
    of_member: list[int] = []
    views: list[MemberView] = []
    for i, m in enumerate(members):
        view = resolve_view(m.convention, getattr(m.arch, "input_size", None), scheme, mode)
        try:
            mine = scheme.for_view(view.crop_size, view.resize_size, view.interpolation, view.antialias)
        except SchemeError as exc:
            name = names[i] if names else getattr(m, "name", f"member {i}")
            raise SchemeError(
                f"member {name} ({view.describe()}): the protocol scaled to this view cannot be made ({exc}); check "
                "its input_size / resize_size, or run every member on the protocol's views with --views protocol"
            ) from exc
        key = mine.geometry_key()
        if key not in keys:
            keys.append(key)
            schemes.append(mine)
        of_member.append(keys.index(key))
        views.append(view)
    return Geometries(tuple(schemes), tuple(of_member), tuple(views), backend)


def one_crop_scheme(view: MemberView) -> CropScheme:
    """A scheme of one view: the member's Resize(resize_size) + CenterCrop(crop_size), set "1"."""
    return CropScheme(
        scales=(view.resize_size,),
        crop_size=view.crop_size,
        regions=("center",),
        crops=("center",),
        flips=("none",),
        crop_sets={"1": {}},
        interpolation=view.interpolation,
        antialias=view.antialias,
    )


__all__ = ["VIEW_MODES", "Geometries", "MemberView", "member_geometries", "one_crop_scheme", "resolve_view"]
