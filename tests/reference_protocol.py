"""Plain, slow reference implementation of the GoogLeNet (ILSVRC 2014) multi-crop protocol.

Everything is computed one crop at a time from the decoded uint8 image with
torchvision.transforms.v2, so it can serve as ground truth for a fast implementation.
reference_crop uses torchvision primitives (Resize, crop, center_crop, five_crop) while
reference_box uses explicit integer arithmetic; the self-checks compare the two.
"""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms import v2
from torchvision.transforms.v2 import InterpolationMode
from torchvision.transforms.v2 import functional as F

CropKey = tuple[int, str, str, str]  # (scale, region, crop, flip)

SCALES = (256, 288, 320, 352)
SQUARES = ("first", "center", "last")
CROPS = ("tl", "tr", "bl", "br", "center", "full")
FLIPS = ("none", "mirror")

ONE_CROP: list[CropKey] = [(256, "center", "center", "none")]
TEN_CROPS: list[CropKey] = [
    (256, "center", c, f) for c in ("tl", "tr", "bl", "br", "center") for f in ("none", "mirror")
]


def decode(path) -> torch.Tensor:
    """Decode an image file to a uint8 RGB tensor [3, H, W] (grayscale/CMYK converted to RGB)."""
    with Image.open(path) as img:
        return F.pil_to_tensor(img.convert("RGB"))


def crop_keys(scales=SCALES, squares=SQUARES, crops=CROPS, flips=FLIPS) -> list[CropKey]:
    """All keys in canonical order: scale, then square, then crop, then flip (flip fastest)."""
    return [(s, q, c, f) for s in scales for q in squares for c in crops for f in flips]


def reference_crop(
    image: torch.Tensor,
    key: CropKey,
    crop_size: int = 224,
    grid: int = 0,
    interpolation: str = "bilinear",
    flip_mode: str = "crop",
) -> torch.Tensor:
    """uint8 [3, h, w] for one key, computed from scratch.

    Resize the image (shorter side = scale, at `interpolation`, antialiased), take the region
    (a square or the whole image), take the crop (a fixed one, a cell "r<i>c<j>" of the grid x
    grid grid, or the region uncropped), flip (flip_mode "crop": the crop mirrored; "image":
    the crop taken from the mirrored resized image, as TenCrop). The center crop of the center
    square is CenterCrop of the resized image. Every view is crop_size x crop_size except
    uncropped ones.
    """
    scale, region, crop, flip = key
    assert image.dtype == torch.uint8 and image.ndim == 3 and image.shape[0] == 3
    mode = InterpolationMode(interpolation)
    resized = v2.Resize(scale, interpolation=mode, antialias=True)(image)
    if flip == "mirror" and flip_mode == "image":
        resized = F.horizontal_flip(resized)
    h, w = resized.shape[-2:]
    assert min(h, w) == scale
    # The s x s square along the longer side, or the whole resized image.
    if region == "whole":
        sq = resized
    elif region == "center":
        sq = F.center_crop(resized, [scale, scale])
    elif region == "first":
        sq = F.crop(resized, 0, 0, scale, scale)
    elif region == "last":
        sq = F.crop(resized, h - scale, w - scale, scale, scale)
    else:
        raise ValueError(f"unknown region {region!r}")
    rh, rw = sq.shape[-2:]
    # The crop inside the region.
    if crop == "uncropped":
        out = sq
    elif crop == "full":
        out = v2.Resize((crop_size, crop_size), interpolation=mode, antialias=True)(sq)
    elif crop == "center" and region == "center":
        out = F.center_crop(resized, [crop_size, crop_size])  # CenterCrop of the resized image
    elif crop.startswith("r"):  # grid cell r<i>c<j>: corner at (i * (H - c) / (N - 1), j * (W - c) / (N - 1))
        i, j = (int(x) for x in crop[1:].split("c"))
        assert grid >= 2 and 0 <= i < grid and 0 <= j < grid
        top = int(round(i * (rh - crop_size) / (grid - 1)))
        left = int(round(j * (rw - crop_size) / (grid - 1)))
        out = F.crop(sq, top, left, crop_size, crop_size)
    else:
        tl, tr, bl, br, center = F.five_crop(sq, [crop_size, crop_size])
        out = {"tl": tl, "tr": tr, "bl": bl, "br": br, "center": center}[crop]
    # The flip.
    if flip == "mirror" and flip_mode == "crop":
        out = F.horizontal_flip(out)
    elif flip != "none":
        raise ValueError(f"unknown flip {flip!r}")
    expected = (3, rh, rw) if crop == "uncropped" else (3, crop_size, crop_size)
    assert out.dtype == torch.uint8 and tuple(out.shape) == expected
    return out


def reference_box(height: int, width: int, key: CropKey, crop_size: int = 224) -> dict:
    """Geometry of one crop in the coordinates of the image resized to shorter side = scale.

    Returns {"resized": (rh, rw), "square": (top, left), "crop": (top, left, size)}, where
    "crop" is relative to the square and is (0, 0, scale) for the "full" crop. The flip does
    not change the box.
    """
    scale, square, crop, _flip = key
    short, long = min(height, width), max(height, width)
    new_long = int(scale * long / short)
    rh, rw = (scale, new_long) if height <= width else (new_long, scale)
    offset = {"first": 0, "center": int(round((new_long - scale) / 2.0)), "last": new_long - scale}[square]
    sq_top, sq_left = (0, offset) if height <= width else (offset, 0)
    far = scale - crop_size
    mid = int(round((scale - crop_size) / 2.0))
    crop_box = {
        "tl": (0, 0, crop_size),
        "tr": (0, far, crop_size),
        "bl": (far, 0, crop_size),
        "br": (far, far, crop_size),
        "center": (mid, mid, crop_size),
        "full": (0, 0, scale),
    }[crop]
    if square == "center" and crop == "center":  # CenterCrop of the resized image
        top, left = int(round((rh - crop_size) / 2.0)), int(round((rw - crop_size) / 2.0))
        crop_box = (top - sq_top, left - sq_left, crop_size)
    return {"resized": (rh, rw), "square": (sq_top, sq_left), "crop": crop_box}


@torch.inference_mode()
def reference_probs(
    image: torch.Tensor,
    models: list[tuple[torch.nn.Module, tuple, tuple]],
    keys: list[CropKey],
    crop_size: int = 224,
    grid: int = 0,
    interpolation: str = "bilinear",
    flip_mode: str = "crop",
) -> torch.Tensor:
    """Equal-weight mean of per-crop, per-model softmax probabilities, as float64 [num_classes].

    models: (module in eval mode, mean, std). Crops are processed one by one (batch of 1,
    NCHW, each at its own size); for each crop the models are run one after another; softmax
    is taken in float32.
    """
    total, count = None, 0
    for key in keys:
        crop = reference_crop(image, key, crop_size, grid, interpolation, flip_mode)
        x = v2.ToDtype(torch.float32, scale=True)(crop)
        for model, mean, std in models:
            xn = v2.Normalize(mean=list(mean), std=list(std))(x).unsqueeze(0)
            logits = model(xn).float()
            probs = torch.softmax(logits, dim=1)[0].double()
            total = probs if total is None else total + probs
            count += 1
    return total / count


if __name__ == "__main__":
    import glob
    from pathlib import Path

    # Needs the shared sample beside the repository: python tests/reference_protocol.py
    root = str(Path(__file__).resolve().parents[2] / "shared" / "data" / "imagenet-sample")
    paths = {
        "landscape": f"{root}/n01484850/n01484850_great_white_shark.JPEG",  # 500x333
        "portrait": f"{root}/n01494475/n01494475_hammerhead.JPEG",  # 333x500
        "square": f"{root}/n01773797/n01773797_garden_spider.JPEG",  # 500x500
        "grayscale": f"{root}/n02815834/n02815834_beaker.JPEG",  # mode L
        "tiny": f"{root}/n03866082/n03866082_overskirt.JPEG",  # 68x121
        "tiny_square": f"{root}/n02817516/n02817516_bearskin.JPEG",  # 95x95
    }
    images = {name: decode(p) for name, p in paths.items()}
    for name, img in images.items():
        print(f"{name:12s} {tuple(img.shape)} {img.dtype}")

    # (1) ONE_CROP == torchvision's standard eval transform, exactly.
    standard = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    extra = sorted(glob.glob(f"{root}/*/*.JPEG"))[::47]
    for p in list(paths.values()) + extra:
        img = decode(p)
        assert torch.equal(reference_crop(img, ONE_CROP[0]), standard(img)), p
    print(f"(1) ONE_CROP equals Resize(256)+CenterCrop(224) exactly on {len(paths) + len(extra)} images")

    # (2) all 144 keys give valid 224x224 uint8 crops; square images: 3 squares coincide.
    keys = crop_keys()
    assert len(keys) == 144 and len(set(keys)) == 144
    assert set(ONE_CROP) <= set(keys) and set(TEN_CROPS) <= set(keys) and len(TEN_CROPS) == 10
    for name, img in images.items():
        crops = {k: reference_crop(img, k) for k in keys}
        assert all(c.dtype == torch.uint8 and tuple(c.shape) == (3, 224, 224) for c in crops.values())
        for k, c in crops.items():
            if k[3] == "mirror":
                assert torch.equal(c, crops[(k[0], k[1], k[2], "none")].flip(-1))
        h, w = img.shape[-2:]
        if h == w:
            for k in keys:
                assert torch.equal(crops[k], crops[(k[0], "first", k[2], k[3])])
                assert torch.equal(crops[k], crops[(k[0], "last", k[2], k[3])])
        else:
            # for non-square images, first/last squares generally differ
            n_diff = sum(
                not torch.equal(crops[(s, "first", "full", "none")], crops[(s, "last", "full", "none")]) for s in SCALES
            )
            assert n_diff > 0, name
        print(f"(2) {name:12s} {h}x{w}: 144 crops ok" + (", 3 squares identical" if h == w else ""))

    # (3) reference_box agrees with reference_crop.
    n = 0
    for name, img in images.items():
        h, w = img.shape[-2:]
        for k in keys:
            box = reference_box(h, w, k)
            resized = v2.Resize(k[0], antialias=True)(img)
            assert tuple(resized.shape[-2:]) == box["resized"], (name, k)
            st, sl = box["square"]
            ct, cl, cs = box["crop"]
            patch = resized[:, st + ct : st + ct + cs, sl + cl : sl + cl + cs]
            if k[2] == "full":
                assert cs == k[0]
                patch = v2.Resize((224, 224), antialias=True)(patch)
            if k[3] == "mirror":
                patch = patch.flip(-1)
            assert torch.equal(patch, reference_crop(img, k)), (name, k)
            n += 1
    print(f"(3) reference_box slices reproduce reference_crop for {n} (image, key) pairs")

    # (4) reference_probs on two tiny random models: a proper distribution equal to a manual loop.
    torch.manual_seed(0)

    def tiny_model() -> torch.nn.Module:
        return torch.nn.Sequential(
            torch.nn.Conv2d(3, 8, 7, stride=4),
            torch.nn.ReLU(),
            torch.nn.AdaptiveAvgPool2d(1),
            torch.nn.Flatten(),
            torch.nn.Linear(8, 10),
        ).eval()

    models = [(tiny_model(), (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), (tiny_model(), (0.5,) * 3, (0.5,) * 3)]
    img = images["landscape"]
    probs = reference_probs(img, models, TEN_CROPS)
    assert probs.dtype == torch.float64 and probs.shape == (10,) and abs(probs.sum().item() - 1) < 1e-6
    with torch.inference_mode():
        manual = torch.stack(
            [
                torch.softmax(
                    m(
                        (
                            (reference_crop(img, k).float() / 255 - torch.tensor(mu)[:, None, None])
                            / torch.tensor(sd)[:, None, None]
                        )[None]
                    ),
                    1,
                )[0].double()
                for k in TEN_CROPS
                for m, mu, sd in models
            ]
        ).mean(0)
    print(
        f"(4) reference_probs sums to {probs.sum().item():.12f}; max |diff| vs manual = "
        f"{(probs - manual).abs().max().item():.2e}"
    )
    assert torch.allclose(probs, manual, atol=1e-6)
    print("all self-checks passed")
