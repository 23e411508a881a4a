"""The multi-crop protocols of the papers that made them (ensemble_eval/presets): geometry against
hand-computed boxes, extraction against the per-view reference, and whole runs against an
independent per-view evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, DEVICES
from reference_protocol import decode, reference_crop, reference_probs

from ensemble_eval.cli import main
from ensemble_eval.config import build_config
from ensemble_eval.crops import CropScheme, SchemeError, extract_views, plan_crops
from ensemble_eval.errors import CheckpointError
from ensemble_eval.members.inspection import check_views

CONFIGS = Path(__file__).parent.parent / "ensemble_eval" / "presets"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
LANDSCAPE, PORTRAIT, SQUARE = (375, 500), (500, 375), (500, 500)  # height, width


def preset(name: str) -> CropScheme:
    return build_config(None, {"protocol": name}).protocol  # the preset shipped in the package


def absolute(box) -> tuple[int, int, int, int]:
    """(top, left, height, width) of a box's crop in the resized image."""
    return (box.region[0] + box.crop[0], box.region[1] + box.crop[1], box.crop[2], box.crop[3])


# VGG: resized size and the 5 row / 5 column offsets int(round(i * (side - 224) / 4)), by hand.
# 375x500 at Q=256 -> 256x341: columns 117 / 4 = 29.25 -> 0, 29, 58 (58.5, half to even), 88, 117.
VGG = {
    LANDSCAPE: {
        256: ((256, 341), (0, 8, 16, 24, 32), (0, 29, 58, 88, 117)),
        384: ((384, 512), (0, 40, 80, 120, 160), (0, 72, 144, 216, 288)),
        512: ((512, 682), (0, 72, 144, 216, 288), (0, 114, 229, 344, 458)),  # 114.5 -> 114, 343.5 -> 344
    },
    PORTRAIT: {
        256: ((341, 256), (0, 29, 58, 88, 117), (0, 8, 16, 24, 32)),
        384: ((512, 384), (0, 72, 144, 216, 288), (0, 40, 80, 120, 160)),
        512: ((682, 512), (0, 114, 229, 344, 458), (0, 72, 144, 216, 288)),
    },
    SQUARE: {
        256: ((256, 256), (0, 8, 16, 24, 32), (0, 8, 16, 24, 32)),
        384: ((384, 384), (0, 40, 80, 120, 160), (0, 40, 80, 120, 160)),
        512: ((512, 512), (0, 72, 144, 216, 288), (0, 72, 144, 216, 288)),
    },
}


@pytest.mark.parametrize("shape", [LANDSCAPE, PORTRAIT, SQUARE], ids=["landscape", "portrait", "square"])
def test_vgg_150_geometry_is_the_5x5_grid_over_the_whole_image(shape):
    scheme = preset("vgg-150")
    boxes = plan_crops(*shape, scheme)
    expected = [
        (q, (rows[i], cols[j], 224, 224), resized, flip == "mirror")
        for q, (resized, rows, cols) in VGG[shape].items()  # canonical order: scale, row, column, flip
        for i in range(5)
        for j in range(5)
        for flip in ("none", "mirror")
    ]
    got = [(b.key.scale, absolute(b), b.resized, b.mirror) for b in boxes]
    assert len(boxes) == 150 and got == expected
    assert all(b.region == (0, 0, *b.resized) and b.size == (224, 224) for b in boxes)
    assert [b.key.crop for b in boxes[:4]] == ["r0c0", "r0c0", "r0c1", "r0c1"]


# Inception at 299: resized size, square offsets along the longer side, and in each square the
# far corner (s - 299) and the center offset round((s - 299) / 2), by hand. The center crop of
# the center square is CenterCrop(299) of the resized image: round((long - 299) / 2) along the
# longer side (342 x 456: 78, where centering in the square, 57 + 22, would give 79).
INCEPTION = {
    342: ((342, 456), (0, 57, 114), 43, 22),  # 21.5 -> 22 (half to even)
    384: ((384, 512), (0, 64, 128), 85, 42),  # 42.5 -> 42
    427: ((427, 569), (0, 71, 142), 128, 64),
    470: ((470, 626), (0, 78, 156), 171, 86),  # 85.5 -> 86
}


@pytest.mark.parametrize("shape", [LANDSCAPE, PORTRAIT, SQUARE], ids=["landscape", "portrait", "square"])
def test_inception_299_geometry_is_googlenet_at_299(shape):
    scheme = preset("inception-299-144")
    assert scheme.scales == (342, 384, 427, 470) and scheme.scales == tuple(
        int(round(s * 299 / 224)) for s in (256, 288, 320, 352)
    )
    boxes = plan_crops(*shape, scheme)
    expected = []
    for s, ((rh, rw), along, far, c) in INCEPTION.items():
        if shape == PORTRAIT:
            rh, rw = rw, rh
        elif shape == SQUARE:
            rh, rw, along = s, s, (0, 0, 0)
        for k, a in enumerate(along):
            top, left = (a, 0) if shape == PORTRAIT else (0, a)
            corners = {"tl": (0, 0), "tr": (0, far), "bl": (far, 0), "br": (far, far), "center": (c, c)}
            if k == 1:  # the center square's center crop: CenterCrop of the resized image
                mid = int(round((max(rh, rw) - 299) / 2)) - a
                corners["center"] = (mid, c) if shape == PORTRAIT else (c, mid)
            for crop in ("tl", "tr", "bl", "br", "center", "full"):
                dt, dl = corners.get(crop, (0, 0))
                size = s if crop == "full" else 299
                for flip in (False, True):
                    expected.append(((rh, rw), (top, left, s, s), (top + dt, left + dl, size, size), flip))
    got = [(b.resized, b.region, absolute(b), b.mirror) for b in boxes]
    assert len(boxes) == 144 and got == expected
    assert all(b.size == (299, 299) for b in boxes)


DENSE = {
    LANDSCAPE: [(224, 298), (256, 341), (384, 512), (480, 640), (640, 853)],
    PORTRAIT: [(298, 224), (341, 256), (512, 384), (640, 480), (853, 640)],
    SQUARE: [(224, 224), (256, 256), (384, 384), (480, 480), (640, 640)],
}


@pytest.mark.parametrize("shape", [LANDSCAPE, PORTRAIT, SQUARE], ids=["landscape", "portrait", "square"])
def test_resnet_dense_views_are_whole_images_at_their_own_size(shape):
    boxes = plan_crops(*shape, preset("resnet-dense"))
    assert [b.size for b in boxes] == DENSE[shape] and not any(b.mirror for b in boxes)
    assert all(b.region == b.crop == (0, 0, *b.size) and b.resized == b.size for b in boxes)
    flipped = plan_crops(*shape, preset("resnet-dense-flip"))
    assert [(b.size, b.mirror) for b in flipped] == [(s, m) for s in DENSE[shape] for m in (False, True)]


@pytest.fixture(scope="module")
def shaped(images, samples):
    """A landscape (320x240), a portrait (240x320) and a square (160x160) real image."""
    by_class = {s.rel_path.split("/")[0]: im for s, im in zip(samples, images)}
    return [by_class["n04286575"], by_class["n04591157"], by_class["n03347037"]]


@pytest.mark.parametrize("name", ["vgg-150", "inception-299-144", "resnet-dense-flip"])
def test_extracted_views_equal_the_reference(shaped, name):
    scheme = preset(name)
    keys = [k.as_tuple() for k in scheme.keys()]
    for image in shaped:
        groups = extract_views(image, scheme)
        assert sorted(p for positions, _ in groups for p in positions) == list(range(len(keys)))
        for positions, views in groups:
            assert len({tuple(v.shape) for v in views}) == 1  # one shape per group
            for p, view in zip(positions, views):
                assert torch.equal(view, reference_crop(image, keys[p], scheme.crop_size, scheme.grid)), keys[p]


def test_vgg_one_crop_is_the_standard_center_crop(images):
    from torchvision.transforms import v2

    scheme = preset("vgg-150")
    standard = v2.Compose([v2.Resize(256, antialias=True), v2.CenterCrop(224)])
    for image in images:
        ((_, (crop,)),) = extract_views(image, scheme, scheme.set_indices("1"))
        assert torch.equal(crop, standard(image))


def test_the_googlenet_protocol_is_unchanged():
    old_spelling = {k: v for k, v in CropScheme().to_dict().items() if k != "regions"} | {
        "squares": ["first", "center", "last"]
    }
    assert preset("googlenet-144") == CropScheme() == CropScheme.from_dict(old_spelling)
    assert [k.as_tuple() for k in CropScheme().keys()][:2] == [
        (256, "first", "tl", "none"),
        (256, "first", "tl", "mirror"),
    ]


@pytest.mark.parametrize(
    "protocol,match",
    [
        ({"crops": {"grid": 0}}, "grid: N"),
        ({"crops": {"grid": 5}, "grid": 4}, "contradicts"),
        ({"regions": ["whole"], "squares": ["first"]}, "not both"),
        ({"crops": {"grid": 2}, "crop_sets": {"x": {"crops": ["r2c2"]}}}, "subset"),
        ({"crops": ["uncropped", "wide"]}, "crops"),
    ],
)
def test_bad_protocols_are_one_line(protocol, match):
    with pytest.raises(SchemeError, match=match) as err:
        CropScheme.from_dict(protocol)
    assert "\n" not in str(err.value)


def test_uncropped_views_need_no_scale_above_crop_size():
    scheme = CropScheme.from_dict(
        {"scales": [64, 96], "regions": ["whole"], "crops": ["uncropped"], "crop_sets": {"2": {}}}
    )
    assert scheme.uncropped() and [b.size for b in plan_crops(50, 100, scheme)] == [(64, 128)] * 2 + [(96, 192)] * 2


def _run_against_reference(tmp_path, models, config, chosen, extra=()):
    """Run the CLI with `models` (name -> eager model) as checkpoints on the `chosen` test
    images; return (summary, max abs difference from reference_probs)."""
    ckpts, data = tmp_path / "ckpts", tmp_path / "data"
    ckpts.mkdir()
    for name, model in models.items():
        torch.save(model.state_dict(), ckpts / f"{name}.pt")
    for rel in chosen:
        (data / rel).parent.mkdir(parents=True)
        (data / rel).write_bytes((DATA / rel).read_bytes())
    paths = sorted(str(p) for p in ckpts.glob("*.pt"))
    refs = [(models[Path(p).stem].eval(), IMAGENET_MEAN, IMAGENET_STD) for p in paths]
    out = tmp_path / "out"
    args = ["--models", *paths, "--data", str(data), "--config", str(CONFIGS / config), "--out", str(out)]
    assert main([*args, "--no-progress", *extra]) == 0
    pred, summary = np.load(out / "predictions.npz"), json.loads((out / "summary.json").read_text())
    scheme = preset(Path(config).stem)
    keys = [scheme.keys()[i].as_tuple() for i in scheme.set_indices(summary["crops"])]
    diff = 0.0
    for row, rel in enumerate(pred["paths"]):
        expected = reference_probs(decode(data / rel), refs, keys, scheme.crop_size, scheme.grid).numpy()
        diff = max(diff, float(np.abs(pred["probs"][row] - expected).max()))
    return summary, diff


LANDSCAPE_IMAGE = "n04286575/n04286575_spotlight.JPEG"  # 320x240
PORTRAIT_IMAGE = "n04591157/n04591157_Windsor_tie.JPEG"  # 240x320
SQUARE_IMAGE = "n03347037/n03347037_fire_screen.JPEG"  # 160x160
SAME_SHAPE_IMAGE = "n04328186/n04328186_stopwatch.JPEG"  # 300x225: every view the spotlight's shape


def test_vgg_150_run_equals_per_view_evaluation_and_tables_its_sets(tmp_path, mixed_models):
    models = {"mobilenet": mixed_models["mobilenet_v3_small"]}
    summary, diff = _run_against_reference(
        tmp_path, models, "vgg-150.yaml", [LANDSCAPE_IMAGE, PORTRAIT_IMAGE], ["--table"]
    )
    assert diff <= 1e-4, diff
    assert summary["crops"] == "150" and summary["num_crops"] == 150
    assert [c["crop_set"] for c in summary["table"]] == ["1", "Q256", "Q384", "Q512", "150"]
    assert [c["crops"] for c in summary["table"]] == [1, 50, 50, 50, 150]
    table = (tmp_path / "out" / "table.md").read_text()  # sets of equal size stay apart
    assert "| Q256 (50) |" in table and "| Q384 (50) |" in table
    comparisons = {t["comparison"] for t in summary["paired_tests"]}  # each set against fewer crops of its own
    assert comparisons == {
        "Q256 (50) vs 1 crops, best member (mobilenet.pt)",
        "150 vs Q256 (50) crops, best member (mobilenet.pt)",
    }
    q384 = next(c for c in summary["table"] if c["crop_set"] == "Q384")
    assert "p_top5_vs_fewer_crops" not in q384  # no 50-vs-50 test


def test_inception_299_run_equals_per_view_evaluation(tmp_path, mixed_models):
    models = {"mobilenet": mixed_models["mobilenet_v3_small"]}
    summary, diff = _run_against_reference(tmp_path, models, "inception-299-144.yaml", [PORTRAIT_IMAGE, SQUARE_IMAGE])
    assert diff <= 1e-4, diff
    assert summary["num_crops"] == 144 and summary["protocol"]["crop_size"] == 299


def test_resnet_dense_run_equals_per_view_evaluation(tmp_path, mixed_models):
    """Two members, the flipped variant, images of three shapes plus two of one shape in one
    loader batch (their views share forward passes), and a batch small enough that the
    largest views' group needs two forward passes."""
    models = {"resnet18": mixed_models["resnet18"], "mobilenet": mixed_models["mobilenet_v3_small"]}
    chosen = [LANDSCAPE_IMAGE, PORTRAIT_IMAGE, SQUARE_IMAGE, SAME_SHAPE_IMAGE]
    summary, diff = _run_against_reference(
        tmp_path, models, "resnet-dense-flip.yaml", chosen, ["--table", "--batch-size", "40"]
    )
    assert diff <= 1e-4, diff
    assert summary["num_images"] == 4 and summary["num_crops"] == 10
    assert [c["crop_set"] for c in summary["table"]][:4] == ["1", "2", "5", "10"]


def test_a_fixed_size_vit_is_refused_under_resnet_dense(tmp_path, capsys):
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=1000).eval()
    path = tmp_path / "vit.pt"
    torch.save(vit.state_dict(), path)
    (tmp_path / "vit.pt.yaml").write_text("arch: timm/vit_tiny_patch16_224\n")
    args = ["--models", str(path), "--data", str(DATA), "--out", str(tmp_path / "o"), "--no-progress"]
    code = main([*args, "--config", str(CONFIGS / "resnet-dense.yaml")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "vit.pt cannot take the protocol's uncropped views" in err and "takes only 224x224 inputs" in err
    assert "fixed crops (crop_size: 224)" in err and not (tmp_path / "o" / "progress").exists()


def test_a_network_that_fails_on_whole_images_is_refused_before_any_image():
    """A network without a stated size that breaks on non-square inputs is caught by the probe."""

    class SquareOnly(torch.nn.Module):
        def forward(self, x):
            assert x.shape[-1] == x.shape[-2], "square inputs only"
            return x.mean(dim=(2, 3)).repeat(1, 334)[:, :1000]

    with pytest.raises(CheckpointError, match="square.pt cannot take the protocol's uncropped views"):
        check_views([_member("square.pt", SquareOnly())], preset("resnet-dense"))
    check_views([_member("square.pt", SquareOnly())], preset("vgg-150"))  # square crops are fine


def _member(name, model):
    """Just what check_views reads of a Member."""
    from types import SimpleNamespace

    return SimpleNamespace(name=name, model=model, arch=SimpleNamespace(input_size=None))


def test_a_run_recorded_with_the_old_squares_spelling_still_resumes():
    from ensemble_eval.runstate import describe_changes

    old = {
        "scales": [256, 288, 320, 352],
        "crop_size": 224,
        "squares": ["first", "center", "last"],
        "crops": ["tl", "tr", "bl", "br", "center", "full"],
        "flips": ["none", "mirror"],
        "crop_sets": {
            "1": {"scales": [256], "squares": ["center"], "crops": ["center"], "flips": ["none"]},
            "10": {"scales": [256], "squares": ["center"], "crops": ["tl", "tr", "bl", "br", "center"]},
            "144": {},
        },
    }
    new = CropScheme.from_dict(old).to_dict()
    assert "crop protocol" not in describe_changes({"protocol": old}, {"protocol": new})
    moved = old | {"scales": [256, 288]}
    assert "crop protocol" in describe_changes({"protocol": moved}, {"protocol": new})


@pytest.mark.parametrize("device", DEVICES)
def test_views_of_mixed_shapes_go_through_the_members_unpadded(shaped, device):
    """member_logits on Views equals each view alone through the network, on any device."""
    from ensemble_eval.data import _group_views
    from ensemble_eval.ensemble import Runner, member_logits

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 5, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten()
    )
    net = net.eval().to(device)
    one = torch.ones(1, 3, 1, 1, device=device)
    runner = Runner(net, 0 * one, one, False, 0, None)
    scheme = preset("resnet-dense-flip")
    per_image = [extract_views(image, scheme) for image in shaped]
    views = _group_views(per_image, 10, scheme.crop_size).to(torch.device(device))
    logits = member_logits(views, [runner], chunk_size=12, channels_last=device == "cpu")  # [1, 3, 10, 8]
    assert logits.shape == (1, 3, 10, 8)
    with torch.inference_mode():
        for b, groups in enumerate(per_image):
            for positions, stack in groups:
                for p, view in zip(positions, stack):
                    alone = net(view[None].to(device).float() / 255)
                    torch.testing.assert_close(logits[0, b, p], alone[0], atol=1e-5, rtol=1e-4)


def test_each_set_is_compared_with_the_largest_set_nested_in_it():
    from ensemble_eval.crops import nested_under

    paper = preset("googlenet-144")
    assert nested_under(paper, ["1", "10", "144"]) == {"1": None, "10": "1", "144": "10"}
    vgg = preset("vgg-150")
    assert nested_under(vgg, list(vgg.crop_sets)) == {
        "1": None,
        "Q256": "1",  # r2c2 at 256 is one of Q256's 50 crops
        "Q384": None,  # no smaller set inside it: never a 50-vs-50 test
        "Q512": None,
        "150": "Q256",  # the first of the three 50-crop sets inside it
    }
    dense = preset("resnet-dense-flip")
    assert nested_under(dense, list(dense.crop_sets)) == {"1": None, "2": "1", "5": "1", "10": "5"}
