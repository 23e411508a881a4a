"""Each member's own eval view: the resolver, the scaled protocol, the libraries' pixels.

The 1-crop view of a member must be its library's eval transform: torchvision's
`weights.transforms()` and timm's `create_transform(**resolve_data_config(...))`. Two
references per library:

- the tensor path: the library transform's own parameters (resize, crop, interpolation,
  mean/std read from the transform object) run with torchvision's v2 tensor kernels, which
  the tool's tensor backend uses (torchvision's v1 functional, which `weights.transforms()`
  calls on a tensor, resizes in float and rounds: one grey level off on ~17% of values, see
  docs/protocol.md), to 1e-5 in probabilities;
- the PIL path: the library's transform object itself on the PIL image, against the tool's
  `pil` backend, to 1e-6.

Models are random-init with BatchNorm recalibrated and a nearest-class-mean head on the test
images (demo.fit_demo_head), so a view a pixel off moves the probabilities; each test also
shows the protocol's own view differing, so it could fail.
"""

from __future__ import annotations

import pytest
import torch
from conftest import DATA
from PIL import Image
from reference_protocol import reference_probs
from torchvision.transforms import v2

from ensemble_eval.checkpoints import Member, _torchvision_convention, timm_convention
from ensemble_eval.crops import CropScheme, SchemeError, extract_crops
from ensemble_eval.data import list_samples
from ensemble_eval.demo import fit_demo_head
from ensemble_eval.engine import evaluate
from ensemble_eval.ensemble import Plan
from ensemble_eval.execution import Execution
from ensemble_eval.models import ArchSpec
from ensemble_eval.views import Geometries, member_geometries, one_crop_scheme, resolve_view

PAPER = CropScheme()
NUM = 4  # images per library check


@pytest.fixture(scope="module")
def few(samples, images):
    return samples[:NUM], images[:NUM]


def _sensitive(model, images, samples, crop):
    torch.manual_seed(0)
    return fit_demo_head(model, images, [s.target for s in samples], crop_size=crop).eval()


def _tool_probs(member, samples, backend="tensor", mode="native"):
    geo = member_geometries([member], PAPER, mode, backend)
    result = evaluate(samples, [member], Plan.make(PAPER, ["1"], "1", 4, geometries=geo), Execution())
    return torch.from_numpy(result.probs), geo


@torch.inference_mode()
def _probs(model, views):
    return torch.softmax(model(torch.stack(views)), dim=1)


def _pil(sample):
    with Image.open(sample.path) as img:
        return img.convert("RGB")


def _v2_equivalent(resize, crop, interpolation, mean, std):
    """The library transform's own parameters, run with torchvision's v2 tensor kernels."""
    return v2.Compose(
        [
            v2.Resize(resize, interpolation=interpolation, antialias=True),
            v2.CenterCrop(crop),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(list(mean), list(std)),
        ]
    )


def _check_against_library(member, samples, images, transform, params, other_than_protocol: bool) -> None:
    """The member's 1-crop probabilities: tensor backend against the transform's parameters on
    v2 kernels (1e-5), pil backend against the transform itself on PIL images (1e-6); and, where
    its view is not the protocol's, the protocol's view measurably different (the check can fail)."""
    ours, geo = _tool_probs(member, samples)
    assert geo.schemes[0].base_scale == geo.views[0].resize_size
    tensor_ref = _probs(member.model, [_v2_equivalent(*params)(im) for im in images])
    assert (ours - tensor_ref).abs().max() <= 1e-5
    pil_ours, _ = _tool_probs(member, samples, backend="pil")
    pil_ref = _probs(member.model, [transform(_pil(s)) for s in samples])
    assert (pil_ours - pil_ref).abs().max() <= 1e-6
    if other_than_protocol:
        protocol, _ = _tool_probs(member, samples, mode="protocol")
        assert (protocol - tensor_ref).abs().max() > 1e-3


TORCHVISION = [
    ("resnet18", "ResNet18_Weights.IMAGENET1K_V1", (224, 256, "bilinear")),
    ("regnet_y_400mf", "RegNet_Y_400MF_Weights.IMAGENET1K_V2", (224, 232, "bilinear")),
    ("efficientnet_b0", "EfficientNet_B0_Weights.IMAGENET1K_V1", (224, 256, "bicubic")),
    ("efficientnet_b1", "EfficientNet_B1_Weights.IMAGENET1K_V2", (240, 255, "bilinear")),
    ("vit_b_32", "ViT_B_32_Weights.IMAGENET1K_V1", (224, 256, "bilinear")),
]


@pytest.mark.parametrize("builder,weights_name,geometry", TORCHVISION, ids=[t[0] for t in TORCHVISION])
def test_one_crop_is_torchvision_weights_transforms(few, builder, weights_name, geometry):
    import torchvision.models as tvm

    samples, images = few
    weights = tvm.get_weight(weights_name)
    conv, _ = _torchvision_convention(builder, weights, published_file=False)
    view = resolve_view(conv, None, PAPER)
    assert (view.crop_size, view.resize_size, view.interpolation) == geometry
    model = _sensitive(tvm.get_model(builder, weights=None), images, samples, geometry[0])
    fixed = geometry[0] if builder.startswith("vit") else None
    member = Member(f"torchvision:{builder}", "", ArchSpec(builder, 1000, False, fixed), model, conv)
    transform = weights.transforms()  # the library's own eval transform

    params = (transform.resize_size, transform.crop_size, transform.interpolation, transform.mean, transform.std)
    _check_against_library(member, samples, images, transform, params, geometry != (224, 256, "bilinear"))


TIMM = [
    ("resnet18", (224, 235, "bicubic")),  # crop_pct 0.95
    ("mobilenetv3_small_100", (224, 256, "bicubic")),  # crop_pct 0.875
    ("vit_tiny_patch16_224", (224, 248, "bicubic")),  # crop_pct 0.9, mean/std 0.5
]


@pytest.mark.parametrize("name,geometry", TIMM, ids=[t[0] for t in TIMM])
def test_one_crop_is_timm_eval_transform(few, name, geometry):
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config

    samples, images = few
    conv = timm_convention(name)
    view = resolve_view(conv, None, PAPER)
    assert (view.crop_size, view.resize_size, view.interpolation) == geometry
    torch.manual_seed(0)
    model = _sensitive(timm.create_model(name, pretrained=False), images, samples, geometry[0])
    transform = create_transform(**resolve_data_config({}, model=model))  # timm's eval transform (PIL)
    resize, crop, _, normalize = transform.transforms
    assert torch.as_tensor(normalize.mean).tolist() == pytest.approx(conv.mean)
    member = Member(f"timm:{name}", "", ArchSpec(f"timm/{name}", 1000, False), model, conv)

    params = (resize.size, crop.size, resize.interpolation, normalize.mean, normalize.std)
    _check_against_library(member, samples, images, transform, params, other_than_protocol=True)


def test_the_protocol_for_its_own_view_is_the_protocol():
    assert PAPER.for_view(224, 256, "bilinear") == PAPER  # the GoogLeNet numbers cannot move
    inception = PAPER.for_view(299, 342, "bilinear")
    assert inception.scales == (342, 384, 427, 470)  # the inception-299-144 preset's scales
    assert inception.crop_sets["1"]["scales"] == (342,) and inception.crop_sets["10"]["scales"] == (342,)
    regnet = PAPER.for_view(224, 232, "bicubic")
    assert regnet.scales == (232, 288, 320, 352) and regnet.interpolation == "bicubic"
    assert regnet.set_indices("1") == PAPER.set_indices("1")  # view k is view k of the protocol
    with pytest.raises(SchemeError, match="repeat a scale"):
        PAPER.for_view(224, 288, "bilinear")


def test_members_without_a_view_follow_the_protocol_and_share_its_views(demo_models):
    one = {"scales": (72,), "regions": ("center",), "crops": ("center",), "flips": ("none",)}
    quick = CropScheme(scales=(72, 88), crop_size=64, crop_sets={"1": one, "all": {}})
    members = [Member(f"m{i}", "", ArchSpec("paper-googlenet", 1000, True), m) for i, m in enumerate(demo_models)]
    geo = member_geometries(members, quick)
    assert geo.schemes == (quick,) and geo.of_member == (0, 0)
    assert geo.views[0].describe() == "Resize(72, bilinear) + CenterCrop(64) [protocol]"


def test_center_crop_of_the_center_square_is_centercrop_at_odd_margins(images):
    scheme = PAPER.for_view(299, 342, "bilinear")
    for image in images:
        (one,) = extract_crops(image, scheme, scheme.set_indices("1"))
        assert torch.equal(one, v2.CenterCrop(299)(v2.Resize(342, antialias=True)(image)))


@pytest.mark.parametrize("mode", ["crop", "image"])
def test_flip_modes_against_torchvision(images, mode):
    five = ("tl", "tr", "bl", "br", "center")
    scheme = CropScheme(scales=(342,), crop_size=299, regions=("whole",), crops=five, crop_sets={"10": {}}, flip=mode)
    differs = 0
    for image in images:
        resized = v2.Resize(342, antialias=True)(image)
        if mode == "image":  # TenCrop: the five crops of the image, then of the mirrored image
            ten = v2.TenCrop(299)(resized)
            expected = [ten[i // 2 + 5 * (i % 2)] for i in range(10)]
        else:  # each of the five crops, then it mirrored
            fc = v2.FiveCrop(299)(resized)
            expected = [fc[i // 2] if i % 2 == 0 else fc[i // 2].flip(-1) for i in range(10)]
        ours = extract_crops(image, scheme)
        assert torch.equal(ours, torch.stack(expected))
        other = extract_crops(image, CropScheme(**{**scheme.__dict__, "flip": "crop" if mode == "image" else "image"}))
        differs += not torch.equal(ours, other)
    assert differs  # odd margins make the two modes differ on these images


def test_pil_backend_full_and_flip_image_are_pil_resized(images):
    scheme = CropScheme(scales=(256,), crop_size=224, crops=("full", "tl"), crop_sets={"all": {}}, flip="image")
    image = images[0]
    for backend in ("tensor", "pil"):
        crops = extract_crops(image, scheme, backend=backend)
        assert crops.shape == (len(scheme.keys()), 3, 224, 224)
    pil = extract_crops(image, scheme, backend="pil")
    tensor = extract_crops(image, scheme)
    assert 0 < (pil.int() - tensor.int()).abs().max() <= 3  # near, not the same kernel


def test_mixed_resolution_ensemble_equals_a_per_member_reference(tmp_path, samples, images, capsys):
    """A 224 member (bicubic, resize 232) and a 299 TorchScript program (resize 342) at 10 crops."""
    from ensemble_eval.checkpoints import load_members
    from ensemble_eval.demo import make_demo_model

    picked, pictures = samples[:2], images[:2]
    targets = [s.target for s in samples]
    small = make_demo_model("resnet18", images, targets, seed=4)
    torch.save(small.state_dict(), tmp_path / "small.pt")
    (tmp_path / "small.pt.yaml").write_text(
        "arch: resnet18\ninput_size: 224\nresize_size: 232\ninterpolation: bicubic\n"
    )
    big = make_demo_model("mobilenet_v3_small", images, targets, seed=5, crop_size=299)
    torch.jit.save(torch.jit.trace(big, torch.zeros(1, 3, 299, 299)), tmp_path / "big.ts")
    (tmp_path / "big.ts.yaml").write_text("input_size: 299\nresize_size: 342\n")
    members = load_members([str(tmp_path / "small.pt"), str(tmp_path / "big.ts")])
    geo = member_geometries(members, PAPER)
    assert [s.crop_size for s in geo.schemes] == [224, 299] and geo.of_member == (0, 1)
    plan = Plan.make(PAPER, ["10"], "10", 8, num_members=2, geometries=geo)
    result = evaluate(picked, members, plan, Execution())

    five = ("tl", "tr", "bl", "br", "center")
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    for i, image in enumerate(pictures):
        per_member = [
            reference_probs(
                image,
                [(small, mean, std)],
                [(232, "center", c, f) for c in five for f in ("none", "mirror")],
                224,
                interpolation="bicubic",
            ),
            reference_probs(
                image, [(big, mean, std)], [(342, "center", c, f) for c in five for f in ("none", "mirror")], 299
            ),
        ]
        expected = (per_member[0] + per_member[1]) / 2
        assert (torch.from_numpy(result.probs[i]).double() - expected).abs().max() <= 1e-5


def test_validate_and_the_run_use_the_same_one_crop_view():
    conv, _ = _torchvision_convention(
        "regnet_y_400mf",
        __import__("torchvision").models.get_weight("RegNet_Y_400MF_Weights.IMAGENET1K_V2"),
        published_file=False,
    )
    view = resolve_view(conv, None, PAPER)
    run_scheme = PAPER.for_view(view.crop_size, view.resize_size, view.interpolation)
    validate_scheme = one_crop_scheme(view)
    image = torch.randint(0, 256, (3, 300, 411), dtype=torch.uint8)
    assert torch.equal(
        extract_crops(image, run_scheme, run_scheme.set_indices("1")), extract_crops(image, validate_scheme)
    )
    assert Geometries.single(PAPER).views[0].resize_size == 256


def test_sidecar_interpolation_is_checked(tmp_path):
    from ensemble_eval.checkpoints import CheckpointError, parse_convention

    assert parse_convention({"interpolation": "bicubic"}, "sidecar").interpolation == "bicubic"
    with pytest.raises(CheckpointError, match="interpolation must be one of"):
        parse_convention({"interpolation": "lanczos"}, "sidecar")
    with pytest.raises(CheckpointError, match="antialias must be true or false"):
        parse_convention({"antialias": "yes"}, "sidecar")


def test_list_samples_of_tests_data_has_images():
    assert len(list_samples(DATA)) >= NUM


def test_a_run_prints_and_records_each_members_view(demo_ckpts, tmp_path, capsys):
    import json
    import shutil

    from ensemble_eval.cli import main

    member = shutil.copy(demo_ckpts[0], tmp_path / "own.pt")
    (tmp_path / "own.pt.yaml").write_text("resize_size: 232\ninterpolation: bicubic\n")
    args = ["--models", str(member), str(demo_ckpts[0]), "--data", str(DATA), "--crops", "10", "--limit", "2"]
    assert main([*args, "--resize-backend", "pil", "--out", str(tmp_path / "run")]) == 0
    captured = capsys.readouterr()
    assert (
        "own.pt: Resize(232, bicubic) + CenterCrop(224) [sidecar own.pt.yaml], scales 232/288/320/352" in captured.err
    )
    assert "a.pt: Resize(256, bilinear) + CenterCrop(224) [protocol], scales 256/288/320/352" in captured.err
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    views = [m["view"] for m in summary["models"]]
    assert [v["resize_size"] for v in views] == [232, 256] and {v["backend"] for v in views} == {"pil"}
    assert views[0]["views_per_image"] == 10 and views[0]["pixels_per_image"] == 10 * 224 * 224
    assert summary["resize_backend"] == "pil" and summary["views"] == "native"
    from ensemble_eval.report import _view_cells

    assert _view_cells(views[0]) == ["232/224 bicubic", "1.00"]  # the members table (--table) names each view
    assert _view_cells({"resize_size": "232", "crop_size": 224}) is None  # a damaged record: no column


@pytest.mark.parametrize(
    "text,message",
    [
        ("views: [native]\n", "views (--views) must be one of ['native', 'protocol']"),
        ("resize_backend: 3\n", "resize_backend (--resize-backend) must be one of ['tensor', 'pil']"),
        ("protocol: {interpolation: lanczos}\n", "interpolation: 'lanczos' is not one of"),
        ("protocol: {flip: both}\n", "flip: 'both' is not one of ['crop', 'image']"),
        ("protocol: {antialias: 'no'}\n", "antialias: 'no' must be true or false"),
    ],
)
def test_bad_view_settings_in_a_config_are_one_line(tmp_path, text, message):
    from ensemble_eval.config import build_config
    from ensemble_eval.errors import UserError

    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(UserError, match=None) as info:
        build_config(str(tmp_path / "c.yaml"), {})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_a_changed_view_or_backend_is_a_different_run_but_old_runs_keep_their_fingerprint(demo_ckpts, samples):
    from ensemble_eval.checkpoints import load_members
    from ensemble_eval.ensemble import Plan
    from ensemble_eval.runstate import fingerprint

    members = load_members([str(demo_ckpts[0])])
    plain = Plan.make(PAPER, ["1"], "1", 4)
    assert "views" not in fingerprint(members, samples, plain)  # runs started before member views resume
    pil = Plan.make(PAPER, ["1"], "1", 4, geometries=member_geometries(members, PAPER, backend="pil"))
    assert fingerprint(members, samples, pil)["views"][0]["backend"] == "pil"


def test_pil_backend_refuses_a_member_without_antialias():
    conv = _torchvision_convention("resnet18", __import__("torchvision").models.get_weight("ResNet18_Weights.DEFAULT"))[
        0
    ]
    from dataclasses import replace

    member = Member("m.pt", "", ArchSpec("resnet18", 1000, False), torch.nn.Identity(), replace(conv, antialias=False))
    with pytest.raises(SchemeError, match="pil always antialiases"):
        member_geometries([member], PAPER, backend="pil")
    assert member_geometries([member], PAPER).schemes[0].antialias is False


def _member(name, **view):
    from ensemble_eval.checkpoints import Convention

    conv = Convention(**view, source="sidecar " + name, given=frozenset(view))
    return Member(name, "", ArchSpec("resnet18", 1000, False), torch.nn.Identity(), conv)


def test_members_of_five_resolutions_get_one_geometry_each_and_share_equal_ones():
    members = [
        _member("a224", input_size=224, resize_size=232),
        _member("b240", input_size=240, resize_size=255),
        _member("c256", input_size=256, resize_size=292),
        _member("d299", input_size=299, resize_size=342),
        _member("e384", input_size=384, resize_size=384, interpolation="bicubic"),
        _member("f224", input_size=224, resize_size=232),  # the same view as a224: shares its views
    ]
    geo = member_geometries(members, PAPER)
    assert [s.crop_size for s in geo.schemes] == [224, 240, 256, 299, 384]
    assert geo.of_member == (0, 1, 2, 3, 4, 0)
    assert geo.schemes[3].scales == (342, 384, 427, 470) and geo.schemes[4].interpolation == "bicubic"
    assert all(s.keys()[i].crop == PAPER.keys()[i].crop for s in geo.schemes for i in range(144))


def test_the_one_crop_view_nests_in_the_ten_at_the_members_resize(images):
    scheme = PAPER.for_view(224, 232, "bicubic")
    ten = scheme.set_indices("10")
    (one,) = scheme.set_indices("1")
    assert one in ten
    image = images[0]
    views = extract_crops(image, scheme, ten)
    one_view = extract_crops(image, scheme, [one])[0]
    assert torch.equal(views[ten.index(one)], one_view)
    expected = v2.CenterCrop(224)(v2.Resize(232, interpolation=v2.InterpolationMode.BICUBIC, antialias=True)(image))
    assert torch.equal(one_view, expected)


def test_batch_timing_runs_each_member_on_its_own_geometry():
    from ensemble_eval.autobatch import measure
    from ensemble_eval.ensemble import place_members

    class Needs(torch.nn.Module):
        def __init__(self, size):
            super().__init__()
            self.size, self.fc = size, torch.nn.Linear(3, 10)

        def forward(self, x):
            assert x.shape[-1] == self.size  # a member fed another geometry's views would fail here
            return self.fc(x.mean(dim=(2, 3)))

    members = [Member(f"m{s}", "", ArchSpec("x", 10, False), Needs(s)) for s in (16, 24)]
    runners = place_members(members, torch.device("cpu"), channels_last=False)
    crops = [torch.zeros(8, 3, 16, 16, dtype=torch.uint8), torch.zeros(8, 3, 24, 24, dtype=torch.uint8)]
    rates = measure(crops, runners, (2, 4), channels_last=False, precision="fp32", rounds=1, of_member=(0, 1))
    assert set(rates) == {2, 4} and all(r > 0 for r in rates.values())


def test_a_sidecar_view_the_protocol_cannot_take_is_one_line_before_any_image(demo_ckpts, tmp_path, capsys):
    import shutil

    from ensemble_eval.cli import main

    member = shutil.copy(demo_ckpts[0], tmp_path / "odd.pt")
    (tmp_path / "odd.pt.yaml").write_text("resize_size: 288\n")  # the protocol's second scale
    code = main(["--models", str(member), "--data", str(DATA), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
    assert "member odd.pt (Resize(288, bilinear) + CenterCrop(224)" in err and "repeat a scale" in err
    assert "--views protocol" in err and not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------
# Every torchvision weights enum and every distinct timm eval config: the member's normalised
# 1-crop input (what its network receives, through the run's own Runner) against the library's
# transform on the PIL image (pil backend) and its v2 tensor equivalent (tensor backend).


def _network_input(conv, view, image, backend):
    """The normalised [3, S, S] the tool feeds a member with `conv` on its 1-crop view."""
    from ensemble_eval.ensemble import place_members

    member = Member("m", "", ArchSpec("x", 1000, False), torch.nn.Identity(), conv)
    (runner,) = place_members([member], torch.device("cpu"), channels_last=False)
    crop = extract_crops(image, one_crop_scheme(view), backend=backend)
    return runner.logits(crop.float().div(255))[0]


def _torchvision_enums():
    import torchvision.models as tvm

    return [w for name in tvm.list_models(module=tvm) for w in tvm.get_model_weights(name)]


def test_every_torchvision_weights_enum_gives_its_transforms_input(samples, images):
    import torchvision.models as tvm

    checked = 0
    for weights in _torchvision_enums():
        builder = next(n for n in tvm.list_models(module=tvm) if weights in list(tvm.get_model_weights(n)))
        conv, _ = _torchvision_convention(builder, weights, published_file=False)
        view = resolve_view(conv, None, PAPER)
        transform = weights.transforms()
        for sample, image in zip(samples[:2], images[:2]):
            ours = _network_input(conv, view, image, "pil")
            assert ours.shape == transform(_pil(sample)).shape, weights
            reference = transform(_pil(sample))
            tolerance = 1e-6 * max(1.0, float(reference.abs().max()))  # float32 rounding of the normalised values
            assert (ours - reference).abs().max() <= tolerance, weights
            params = (
                transform.resize_size,
                transform.crop_size,
                transform.interpolation,
                transform.mean,
                transform.std,
            )
            tensor_ref = _v2_equivalent(*params)(image)
            assert (_network_input(conv, view, image, "tensor") - tensor_ref).abs().max() <= tolerance, weights
        checked += 1
    assert checked > 100  # torchvision 0.29 has 120 classification weights enums


def test_every_distinct_timm_eval_config_gives_its_transforms_input(samples, images):
    timm = pytest.importorskip("timm")
    from timm.data import create_transform, resolve_data_config
    from timm.models import get_pretrained_cfg

    seen, unreproduced = {}, 0
    for name in timm.list_pretrained():
        cfg = get_pretrained_cfg(name)
        if cfg is None:
            continue
        if timm_convention(name).unreproduced:  # squash/border crops, non-square inputs, crop_pct > 1: a WARN
            unreproduced += 1
            continue
        seen.setdefault((cfg.input_size[-1], cfg.crop_pct, cfg.interpolation, tuple(cfg.mean), tuple(cfg.std)), name)
    assert len(seen) > 50 and unreproduced < 200  # of about 1,800 configs
    for name in seen.values():
        conv = timm_convention(name)
        view = resolve_view(conv, None, PAPER)
        transform = create_transform(**resolve_data_config({}, pretrained_cfg=get_pretrained_cfg(name).to_dict()))
        sample, image = samples[0], images[0]
        expected = transform(_pil(sample))
        ours = _network_input(conv, view, image, "pil")
        tolerance = 1e-6 * max(1.0, float(expected.abs().max()))
        assert ours.shape == expected.shape and (ours - expected).abs().max() <= tolerance, name


def test_non_finite_outputs_name_the_view_at_the_members_own_scale():
    from ensemble_eval.ensemble import nonfinite_problem

    logits = torch.zeros(2, 1, 2, 3)
    logits[1, 0, 1, 0] = float("nan")
    views = [["256/center/center/none", "256/center/tl/none"], ["342/center/center/none", "342/center/tl/none"]]
    problem = nonfinite_problem(logits, {}, ["a.pt", "b.ts"], ["x.JPEG"], views)
    assert "member b.ts gives NaN on x.JPEG (view 342/center/tl/none)" in problem
