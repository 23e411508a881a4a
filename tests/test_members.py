"""Any classifier as a member: torchvision builders (named or recognised), published weights by
name, TorchScript and torch.export programs, timm models, mixed ensembles, published figures."""

from __future__ import annotations

import copy
import json
import sys
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import DATA, DEVICES, QUICK
from reference_protocol import ONE_CROP, TEN_CROPS, crop_keys, decode, reference_probs

from ensemble_eval import signatures
from ensemble_eval.cli import main
from ensemble_eval.crops import CropScheme
from ensemble_eval.errors import CheckpointError
from ensemble_eval.members import torchvision_published
from ensemble_eval.members.convention import IMAGENET_MEAN, IMAGENET_STD
from ensemble_eval.members.inspection import check_views, inspect_checkpoint, member_from
from ensemble_eval.modelpaths import expand_model_paths
from ensemble_eval.models import build_model, identify, required_size

MEAN_HALF = (0.5, 0.5, 0.5)


def _outputs(model, size=64, n=3):
    x = torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        return torch.softmax(model(x), dim=1)


class TinyNet(torch.nn.Module):
    """A network no torchvision builder has."""

    def __init__(self):
        super().__init__()
        self.stem = torch.nn.Conv2d(3, 8, 3)
        self.head = torch.nn.Linear(8, 1000)

    def forward(self, x):
        return self.head(self.stem(x).mean(dim=(2, 3)))


# ---------------------------------------------------------------------------------------
# Mixed ensembles against an independent per-crop evaluation


@pytest.mark.slow
def test_mixed_ensemble_equals_independent_per_crop_evaluation(tmp_path, mixed_models, samples):
    """GoogLeNet + ResNet-18 + MobileNetV3-small (own mean/std from a sidecar), no arch given:
    1, 10 and 144 crops equal a per-crop, per-model reference within 1e-4."""
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    reference = {}  # name -> (eager model, mean, std), used without the tool
    for name, model in mixed_models.items():
        torch.save({"state_dict": model.state_dict(), "epoch": 1}, ckpts / f"{name}.pt")
        if name == "mobilenet_v3_small":
            (ckpts / f"{name}.pt.yaml").write_text(f"mean: {list(MEAN_HALF)}\nstd: {list(MEAN_HALF)}\n")
            reference[name] = (model.eval(), MEAN_HALF, MEAN_HALF)
        else:
            reference[name] = (model.eval(), IMAGENET_MEAN, IMAGENET_STD)
    paths = sorted(str(p) for p in ckpts.glob("*.pt"))
    refs = [reference[Path(p).stem] for p in paths]
    # two images: one landscape, one portrait
    chosen = [s for s in samples if s.rel_path.startswith(("n03804744", "n04328186"))]
    data = tmp_path / "data"
    for s in chosen:
        (data / s.rel_path).parent.mkdir(parents=True)
        (data / s.rel_path).write_bytes(s.path.read_bytes())
    for crops, keys in (("1", ONE_CROP), ("10", TEN_CROPS), ("144", crop_keys())):
        out = tmp_path / f"run{crops}"
        table = ["--table"] if crops == "144" else []  # Table 3 and the curve, from the same mixed pass
        args = ["--models", *paths, "--data", str(data), "--crops", crops, *table, "--out", str(out)]
        assert main([*args, "--no-progress"]) == 0
        pred = np.load(out / "predictions.npz")
        summary = json.loads((out / "summary.json").read_text())
        if table:
            assert summary["table"][0]["label"].startswith("best member (") and len(summary["table"]) == 6
            assert (out / "curve.csv").read_text().count("\n") > 3
        assert [m["arch"] for m in summary["models"]] == ["torchvision-googlenet", "mobilenet_v3_small", "resnet18"]
        for row, rel in enumerate(pred["paths"]):
            expected = reference_probs(decode(data / rel), refs, keys).numpy()
            assert np.abs(pred["probs"][row] - expected).max() <= 1e-4, (crops, rel)
        assert pred["probs"].max() > 0.05  # peaked: a wrong crop or normalization would show


def test_each_member_applies_its_own_normalization(tmp_path, mixed_models):
    """The same ResNet-18 with two conventions gives different probabilities (the sidecar is used)."""
    model = mixed_models["resnet18"]
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    torch.save(model.state_dict(), a)
    torch.save(model.state_dict(), b)
    (tmp_path / "b.pt.yaml").write_text("mean: [0.5, 0.5, 0.5]\nstd: [0.5, 0.5, 0.5]\n")
    ia, ib = inspect_checkpoint(str(a)), inspect_checkpoint(str(b))
    assert ia.convention.mean != ib.convention.mean and ib.convention.std == MEAN_HALF


# ---------------------------------------------------------------------------------------
# Recognition from keys and shapes, and naming the architecture


def test_resnet18_without_sidecar_is_recognised_by_validate(tmp_path, mixed_models, capsys):
    path = tmp_path / "r18.pth"
    torch.save(mixed_models["resnet18"].state_dict(), path)
    code = main(["validate", str(path), "--json", str(tmp_path / "v.json")])
    out = capsys.readouterr().out
    record = json.loads((tmp_path / "v.json").read_text())["checkpoints"][0]
    assert code == 0 and record["arch"] == "resnet18" and record["num_classes"] == 1000
    assert "resnet18" in out.splitlines()[2] and "OK" in out.splitlines()[2]


@pytest.mark.parametrize(
    "builder, kwargs",
    [
        ("mobilenet_v3_small", {}),
        ("squeezenet1_1", {}),
        ("regnet_y_400mf", {}),  # its widths are computed with tensors: the meta-device build path
        ("inception_v3", {"aux_logits": True, "init_weights": False}),
        ("inception_v3", {"aux_logits": False, "init_weights": False}),
        ("efficientnet_b0", {}),
    ],
)
def test_builders_are_recognised_with_their_class_count(builder, kwargs):
    model = torchvision.models.get_model(builder, weights=None, num_classes=17, **kwargs)
    spec = identify(model.state_dict())
    assert (spec.name, spec.num_classes) == (builder, 17)
    assert spec.aux_heads == kwargs.get("aux_logits", False)


def test_a_vit_is_recognised_at_its_own_image_size():
    state = torchvision.models.vit_b_32(image_size=96, num_classes=5).state_dict()
    spec = identify(state)
    assert (spec.name, spec.num_classes, spec.input_size) == ("vit_b_32", 5, 96)


def test_named_arch_loads_and_mismatches_are_named(tmp_path, mixed_models):
    state = mixed_models["resnet18"].state_dict()
    path = tmp_path / "m.pt"
    torch.save(state, path)
    (tmp_path / "m.pt.yaml").write_text("arch: resnet18\n")
    ins = inspect_checkpoint(str(path))
    assert ins.verdict == "OK" and ins.arch.name == "resnet18"
    assert torch.equal(_outputs(ins.model), _outputs(mixed_models["resnet18"]))
    (tmp_path / "m.pt.yaml").write_text("arch: resnet34\n")
    assert inspect_checkpoint(str(path)).errors == ["weights do not fit resnet34: missing key 'layer1.2.conv1.weight'"]
    (tmp_path / "m.pt.yaml").write_text("arch: resnet19\n")
    (error,) = inspect_checkpoint(str(path)).errors
    assert "'resnet19' is not a torchvision classification builder" in error and "resnet18" in error


def test_old_batchnorm_states_without_num_batches_tracked_load(mixed_models):
    state = {k: v for k, v in mixed_models["resnet18"].state_dict().items() if "num_batches_tracked" not in k}
    model, spec = build_model(state)
    assert spec.name == "resnet18" and torch.equal(_outputs(model), _outputs(mixed_models["resnet18"]))


def test_unknown_network_is_one_line_naming_the_closest_exit_2(tmp_path, capsys):
    state = torchvision.models.resnet18().state_dict()
    state.pop("layer4.1.bn2.running_var")
    torch.save(state, tmp_path / "broken.pt")
    torch.save(TinyNet().state_dict(), tmp_path / "tiny.pt")
    for name, closest in (
        ("broken.pt", "resnet18 (101 of 102 keys, missing key 'layer4.1.bn2.running_var')"),
        ("tiny.pt", "closest: "),
    ):
        code = main(["--models", str(tmp_path / name), "--data", str(DATA), "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and "Traceback" not in err
        assert "unknown architecture" in err and closest in err and "arch:" in err


def test_signatures_are_cached_and_not_rebuilt(monkeypatch):
    signatures.signatures.cache_clear()
    assert signatures._cache_file().is_file()  # written by an earlier test's first use, or now
    monkeypatch.setattr(signatures, "_make_signatures", lambda: pytest.fail("rebuilt the signatures"))
    names = {s.builder for s in signatures.signatures()}
    assert {"resnet50", "vit_b_16", "convnext_tiny", "mobilenet_v3_small"} <= names and "googlenet" not in names
    assert len(names) == len(signatures.builder_names()) - 1


# ---------------------------------------------------------------------------------------
# Programs: TorchScript and torch.export


@pytest.fixture(scope="module")
def resnet_programs(mixed_models, tmp_path_factory):
    d = tmp_path_factory.mktemp("programs")
    model = copy.deepcopy(mixed_models["resnet18"]).eval()
    x = torch.zeros(2, 3, 64, 64)
    torch.jit.script(model).save(str(d / "r18.ts"))
    batch = torch.export.Dim("batch", min=1)
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes={"x": {0: batch}}), str(d / "r18.pt2"))
    torch.export.save(torch.export.export(model, (x,)), str(d / "r18_static.pt2"))  # batch 2, 64 px only
    return model, d


@pytest.mark.parametrize("name", ["r18.ts", "r18.pt2", "r18_static.pt2"])
def test_programs_give_the_eager_models_probabilities(resnet_programs, name):
    model, d = resnet_programs
    ins = inspect_checkpoint(str(d / name))
    assert ins.verdict == "OK", ins.errors
    assert ins.arch.name == ("torchscript" if name.endswith(".ts") else "torch.export")
    assert ins.num_classes == 1000 and ins.num_params == sum(p.numel() for p in model.parameters())
    got, want = _outputs(ins.model, n=5), _outputs(model, n=5)  # 5: the static program runs 2 + 2 + 1 (padded)
    assert (got - want).abs().max() <= 1e-5
    if name == "r18_static.pt2":
        assert ins.arch.input_size == 64 and ins.model.fixed_batch == 2


@pytest.mark.parametrize("device", DEVICES)
def test_program_runs_in_an_ensemble_like_its_eager_twin(tmp_path, resnet_programs, device):
    model, d = resnet_programs
    eager = tmp_path / "eager.pt"
    torch.save(model.state_dict(), eager)
    runs = {}
    for name, path in (("eager", eager), ("program", d / "r18_static.pt2")):
        out = tmp_path / name
        args = ["--models", str(path), "--data", str(DATA), "--config", QUICK, "--crops", "10"]
        assert main([*args, "--out", str(out), "--no-progress", "--device", device]) == 0
        runs[name] = np.load(out / "predictions.npz")["probs"]
    assert np.abs(runs["eager"] - runs["program"]).max() <= 1e-5


def test_program_input_convention_from_its_sidecar(resnet_programs, tmp_path):
    _, d = resnet_programs
    path = tmp_path / "p.pt2"
    path.write_bytes((d / "r18.pt2").read_bytes())
    (tmp_path / "p.pt2.yaml").write_text("mean: [0.5, 0.5, 0.5]\nstd: [0.5, 0.5, 0.5]\ncolor: BGR\n")
    ins = inspect_checkpoint(str(path))
    assert ins.convention.mean == MEAN_HALF and ins.convention.color == "BGR"


def test_a_program_whose_loading_would_unpickle_is_refused(resnet_programs, tmp_path):
    import zipfile

    _, d = resnet_programs
    src = zipfile.ZipFile(d / "r18.pt2")
    bad = tmp_path / "bad.pt2"
    with zipfile.ZipFile(bad, "w") as out:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("model_weights_config.json"):
                config = json.loads(data)
                first = next(iter(config["config"]))
                config["config"][first]["use_pickle"] = True
                data = json.dumps(config).encode()
            out.writestr(item, data)
    (error,) = inspect_checkpoint(str(bad)).errors
    assert "pickle" in error and "--trust-checkpoints" in error


def test_a_member_that_cannot_take_the_crop_size_is_refused_before_any_image(resnet_programs, tmp_path, capsys):
    _, d = resnet_programs
    args = ["--models", str(d / "r18_static.pt2"), "--data", str(DATA), "--views", "protocol"]
    code = main([*args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "r18_static.pt2 cannot take the protocol's 224x224 crops: it takes only 64x64 crops" in err
    assert "crop_size: 64" in err and not (tmp_path / "o" / "progress").exists()


def test_a_member_of_one_input_size_runs_the_protocol_scaled_to_it(resnet_programs, tmp_path, capsys):
    _, d = resnet_programs
    args = ["--models", str(d / "r18_static.pt2"), "--data", str(DATA), "--crops", "10", "--limit", "2"]
    assert main([*args, "--out", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "r18_static.pt2: Resize(73, bilinear) + CenterCrop(64) [network input size], scales 73/82/91/101" in err
    view = json.loads((tmp_path / "o" / "summary.json").read_text())["models"][0]["view"]
    assert (view["crop_size"], view["resize_size"], view["pixels_per_image"]) == (64, 73, 10 * 64 * 64)


def test_vit_needs_its_own_size():
    vit = torchvision.models.VisionTransformer(
        image_size=32, patch_size=16, num_layers=1, num_heads=1, hidden_dim=8, mlp_dim=8
    )
    assert required_size(vit) == 32 and required_size(torchvision.models.resnet18()) is None


# ---------------------------------------------------------------------------------------
# Published weights by name (never downloaded in tests)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_torchvision_weights_offline_say_where_the_file_goes(torch_home):
    (error,) = inspect_checkpoint("torchvision:resnet50:IMAGENET1K_V2").errors
    assert error.startswith("cannot download torchvision's weights (URLError")
    assert "resnet50-11ad3fa6.pth" in error and str(torch_home) in error
    # not "pass a local file with arch:": that file would lose the published view (and GoogLeNet its transform_input)
    assert "arch:" not in error and "torchvision:resnet50 then uses it as published" in error


def test_torchvision_weights_from_the_cache_with_their_metadata(torch_home, mixed_models, monkeypatch):
    torch_home.mkdir(parents=True)
    torch.save(mixed_models["resnet18"].state_dict(), torch_home / "resnet18-f37072fd.pth")
    (error,) = inspect_checkpoint("torchvision:resnet18:IMAGENET1K_V1").errors  # not the published file
    assert "sha256 starts with" in error and "not f37072fd" in error
    monkeypatch.setattr(
        torchvision_published, "published_sha256_prefix", lambda url: None
    )  # stand in for the real file
    ins = inspect_checkpoint("torchvision:resnet18:IMAGENET1K_V1")
    assert ins.errors == [] and ins.arch.name == "resnet18" and ins.format == "torchvision weights"
    conv = ins.convention
    assert conv.published == pytest.approx((1 - 0.69758, 1 - 0.89078)) and conv.source == "torchvision"
    assert (conv.resize_size, conv.input_size, conv.mean) == (256, 224, (0.485, 0.456, 0.406))
    assert torch.equal(_outputs(ins.model), _outputs(mixed_models["resnet18"]))


def test_published_figures_outside_the_measured_interval_are_flagged(
    torch_home, mixed_models, tmp_path, capsys, monkeypatch
):
    monkeypatch.setattr(
        torchvision_published, "published_sha256_prefix", lambda url: None
    )  # stand in for the real file
    torch_home.mkdir(parents=True)
    torch.manual_seed(0)  # random weights: about 100% error, far from the published 30.24%
    torch.save(torchvision.models.resnet18().state_dict(), torch_home / "resnet18-f37072fd.pth")
    good = tmp_path / "good.pt"
    torch.save(mixed_models["googlenet"].state_dict(), good)
    # the demo GoogLeNet is fitted to these 8 images: a published 0% error is within the interval
    (tmp_path / "good.pt.yaml").write_text("published: {top1_err: 0.0, top5_err: 0.0}\n")
    code = main(["validate", "torchvision:resnet18:IMAGENET1K_V1", str(good), "--data", str(DATA), "--workers", "0"])
    out = capsys.readouterr().out
    assert code == 0  # flags are warnings: the files are usable
    assert "Published top-1" in out and "30.24%" in out
    flag = [line for line in out.splitlines() if "published top1 error 30.24% is outside" in line]
    assert len(flag) == 1 and flag[0].startswith("torchvision:resnet18:IMAGENET1K_V1: WARN")
    assert not any(line.startswith("good.pt: WARN") for line in out.splitlines())


def test_model_spec_typos_name_the_closest(torch_home):
    with pytest.raises(CheckpointError, match="no classification builder 'resnet5O'; closest: resnet50"):
        expand_model_paths(["torchvision:resnet5O"])
    with pytest.raises(CheckpointError, match="has no weights 'V3'; it has IMAGENET1K_V1, IMAGENET1K_V2"):
        expand_model_paths(["torchvision:resnet50:V3"])
    assert expand_model_paths(["torchvision:googlenet", "torchvision:resnet50:DEFAULT"])


def test_bad_published_and_arch_fields_are_refused(tmp_path, mixed_models):
    path = tmp_path / "m.pt"
    torch.save(mixed_models["resnet18"].state_dict(), path)
    for text, message in (
        ("published: {top1_err: 23.9, top5_err: 7.1}\n", "fractions between 0 and 1"),
        ("published: 0.2\n", "published must be"),
        ("arch: 5\n", "arch must be a name"),
        ("input_size: -3\n", "input_size must be a size in pixels"),
    ):
        (tmp_path / "m.pt.yaml").write_text(text)
        (error,) = inspect_checkpoint(str(path)).errors
        assert message in error


# ---------------------------------------------------------------------------------------
# timm (the optional extra; the test extra installs it)


def test_timm_state_dict_named_in_the_sidecar(tmp_path):
    timm = pytest.importorskip("timm")
    model = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = tmp_path / "t.pt"
    torch.save(model.state_dict(), path)
    (tmp_path / "t.pt.yaml").write_text("arch: timm/resnet18\n")
    ins = inspect_checkpoint(str(path))
    assert ins.verdict == "OK" and ins.arch.name == "timm/resnet18" and ins.num_classes == 10
    assert (ins.convention.input_size, ins.convention.resize_size) == (224, 235)  # timm's crop_pct 0.95
    assert torch.equal(_outputs(ins.model), _outputs(model))


def test_timm_vit_is_refused_at_another_crop_size(tmp_path):
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False).eval()
    path = tmp_path / "vit.pt"
    torch.save(vit.state_dict(), path)
    (tmp_path / "vit.pt.yaml").write_text("arch: timm/vit_tiny_patch16_224\n")
    member = member_from(inspect_checkpoint(str(path)))
    assert member.arch.input_size == 224
    check_views([member], CropScheme())
    with pytest.raises(CheckpointError, match="vit.pt cannot take the protocol's 64x64 crops: it takes only 224x224"):
        check_views([member], CropScheme(scales=(72,), crop_size=64, crop_sets={"all": {}}))


def test_timm_weights_by_name_come_through_the_safe_reader(tmp_path, monkeypatch):
    timm = pytest.importorskip("timm")
    import huggingface_hub
    from safetensors.torch import save_file

    model = timm.create_model("resnet18", pretrained=False).eval()
    file = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(file))
    asked = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda repo, name, **kw: asked.append(repo) or str(file))
    ins = inspect_checkpoint("timm:resnet18")
    assert ins.verdict == "OK" and ins.format == "timm weights" and ins.arch.name == "timm/resnet18"
    assert asked == ["timm/resnet18.a1_in1k"] and ins.convention.source == "timm"
    assert torch.equal(_outputs(ins.model), _outputs(model))


def test_without_timm_the_message_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm -> ImportError
    path = tmp_path / "t.pt"
    torch.save(TinyNet().state_dict(), path)
    (tmp_path / "t.pt.yaml").write_text("arch: timm/resnet18\n")
    (error,) = inspect_checkpoint(str(path)).errors
    assert "pip install -e '.[timm]'" in error
    with pytest.raises(CheckpointError, match=r"timm:resnet18: timm models need the optional timm extra"):
        expand_model_paths(["timm:resnet18"])
