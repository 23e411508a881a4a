"""Crop geometry, order, nesting, and extraction against the per-crop reference."""

from __future__ import annotations

import pytest
import torch
from conftest import DEVICES, SMALL
from reference_protocol import ONE_CROP, TEN_CROPS, crop_keys, reference_box, reference_crop
from torchvision.transforms import v2

from ensemble_eval.crops import CropScheme, SchemeError, extract_crops, plan_crops

PAPER = CropScheme()


def test_paper_scheme_has_144_crops_in_canonical_order():
    keys = [k.as_tuple() for k in PAPER.keys()]
    assert PAPER.num_crops == 144 and len(keys) == 144 and len(set(keys)) == 144
    assert keys == crop_keys()  # scale, then square, then crop, then flip (fastest)
    assert keys[:4] == [
        (256, "first", "tl", "none"),
        (256, "first", "tl", "mirror"),
        (256, "first", "tr", "none"),
        (256, "first", "tr", "mirror"),
    ]
    assert keys[-1] == (352, "last", "full", "mirror")


def test_crop_sets_are_the_stated_nested_subsets():
    keys = PAPER.keys()
    one = [keys[i].as_tuple() for i in PAPER.set_indices("1")]
    ten = [keys[i].as_tuple() for i in PAPER.set_indices("10")]
    assert one == ONE_CROP
    assert ten == TEN_CROPS
    assert PAPER.set_indices("144") == list(range(144))
    assert set(PAPER.set_indices("1")) < set(PAPER.set_indices("10")) < set(PAPER.set_indices("144"))


@pytest.mark.parametrize(
    "height,width",
    [(333, 500), (500, 333), (500, 500), (68, 121), (121, 68), (100, 100), (225, 300), (241, 400), (1, 1000)],
)
def test_plan_matches_reference_geometry(height, width):
    boxes = plan_crops(height, width, PAPER)
    assert len(boxes) == 144
    for box in boxes:
        ref = reference_box(height, width, box.key.as_tuple())
        assert box.resized == ref["resized"]
        assert box.region == (*ref["square"], box.key.scale, box.key.scale)
        assert box.crop == (*ref["crop"], ref["crop"][2])
        assert box.size == (224, 224)
        assert box.mirror == (box.key.flip == "mirror")
        rh, rw = box.resized
        top, left = box.region[:2]
        assert min(rh, rw) == box.key.scale
        assert 0 <= top <= rh - box.key.scale and 0 <= left <= rw - box.key.scale


def test_landscape_and_portrait_squares_run_along_the_longer_side():
    land = {b.key.region: b.region[:2] for b in plan_crops(333, 500, PAPER) if b.key.scale == 256}
    # 333x500 at shorter side 256 -> 256x384: squares at x = 0, 64, 128
    assert land == {"first": (0, 0), "center": (0, 64), "last": (0, 128)}
    port = {b.key.region: b.region[:2] for b in plan_crops(500, 333, PAPER) if b.key.scale == 256}
    assert port == {"first": (0, 0), "center": (64, 0), "last": (128, 0)}
    square = {b.key.region: b.region[:2] for b in plan_crops(500, 500, PAPER)}
    assert set(square.values()) == {(0, 0)}  # three squares coincide, still three entries
    assert len(plan_crops(500, 500, PAPER)) == 144


def test_center_offset_rounds_half_to_even_like_torchvision():
    # 221x320 at 288 -> 288x417: (417 - 288) / 2 = 64.5 -> 64 (Python round, as center_crop)
    box = next(b for b in plan_crops(221, 320, PAPER) if b.key.scale == 288 and b.key.region == "center")
    assert box.resized == (288, 417) and box.region == (0, 64, 288, 288)


@pytest.mark.parametrize("index", range(8))
def test_extract_crops_equals_reference_for_every_crop(images, index):
    image = images[index]
    crops = extract_crops(image, PAPER)
    assert crops.dtype == torch.uint8 and crops.shape == (144, 3, 224, 224)
    for i, key in enumerate(crop_keys()):
        assert torch.equal(crops[i], reference_crop(image, key)), key


def test_extract_subset_in_given_order(images):
    image = images[0]
    full = extract_crops(image, PAPER)
    picked = [143, 0, 77, 4]
    assert torch.equal(extract_crops(image, PAPER, picked), full[picked])


def test_small_scheme_equals_reference(images):
    keys = [k.as_tuple() for k in SMALL.keys()]
    for image in images[:3]:
        crops = extract_crops(image, SMALL)
        assert crops.shape == (72, 3, 64, 64)
        for i, key in enumerate(keys):
            assert torch.equal(crops[i], reference_crop(image, key, crop_size=64)), key


def test_one_crop_equals_torchvision_standard_eval_transform(images):
    standard = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    for image in images:
        (crop,) = extract_crops(image, PAPER, PAPER.set_indices("1"))
        assert torch.equal(crop, standard(image))


@pytest.mark.parametrize("device", DEVICES)
def test_extract_preserves_device_and_dtype(images, device):
    image = images[1].to(device)
    crops = extract_crops(image, SMALL)
    assert crops.device.type == device and crops.dtype == torch.uint8
    if device == "cuda":  # GPU resize rounds through float: allow off-by-one pixels only
        cpu = extract_crops(images[1], SMALL)
        assert (crops.cpu().int() - cpu.int()).abs().max() <= 1


def test_extract_rejects_non_uint8_rgb():
    with pytest.raises(ValueError, match="uint8"):
        extract_crops(torch.zeros(3, 300, 300), PAPER)
    with pytest.raises(ValueError, match=r"\[3, H, W\]"):
        extract_crops(torch.zeros(1, 300, 300, dtype=torch.uint8), PAPER)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"scales": (200,)}, "crop_size"),
        ({"regions": ("middle",)}, "regions"),
        ({"crops": ("r0c0",)}, "grid: N"),
        ({"grid": 2, "crops": ("r2c0",)}, "crops"),
        ({"crop_sets": {"x": {"regions": ("center",), "squares": ("center",)}}}, "not both"),
        ({"crops": ("tl", "tl")}, "crops"),
        ({"crop_sets": {"x": {"scales": (999,)}}}, "subset"),
        ({"crop_sets": {"x": {"colour": ("red",)}}}, "unknown keys"),
    ],
)
def test_bad_schemes_are_refused(kwargs, match):
    with pytest.raises(SchemeError, match=match):
        CropScheme(**kwargs)


def test_scheme_round_trips_through_dict():
    assert CropScheme.from_dict(PAPER.to_dict()) == PAPER
    assert CropScheme.from_dict(SMALL.to_dict()) == SMALL
