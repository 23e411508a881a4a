"""Every checkpoint flavour users hold, each broken kind's verdict, and input conventions."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
import yaml
from conftest import DATA, save_checkpoint, set_sums
from torchvision.models import GoogLeNet

from ensemble_eval.cli import main
from ensemble_eval.errors import CheckpointError
from ensemble_eval.members import torchvision_published
from ensemble_eval.members.convention import Convention
from ensemble_eval.members.inspection import check_together, inspect_checkpoint, load_member, load_members
from ensemble_eval.models import PaperGoogLeNet


def _calibrated(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    """Non-trivial BatchNorm statistics, so a wrong load shows in the outputs."""
    torch.manual_seed(seed)
    model.train()
    with torch.no_grad():
        model(torch.randn(2, 3, 224, 224))  # aux heads run in training mode and need 224 px
    return model.eval()


@pytest.fixture(scope="module")
def tv_model():
    torch.manual_seed(0)
    return _calibrated(GoogLeNet(num_classes=10, aux_logits=True, transform_input=False, init_weights=True), 0)


@pytest.fixture(scope="module")
def paper_model():
    torch.manual_seed(1)
    return _calibrated(PaperGoogLeNet(num_classes=10, aux_heads=True), 1)


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(2)
    return torch.randn(2, 3, 96, 96)


def _same_outputs(member_model, reference, probe):
    with torch.inference_mode():
        return torch.allclose(member_model(probe), reference(probe), atol=1e-5, rtol=0)


def test_paper_googlenet_has_the_stated_size_and_layout():
    model = PaperGoogLeNet(1000, aux_heads=True)
    assert sum(p.numel() for p in model.parameters()) == 13_385_816
    keys = model.state_dict()
    assert "inception3a.branch3.1.conv_block.0.weight" in keys
    assert tuple(keys["inception3a.branch3.1.conv_block.0.weight"].shape) == (32, 16, 5, 5)  # a real 5x5
    assert "conv1.conv_block.1.running_var" in keys and "conv2b.conv_block.0.weight" in keys
    assert model.conv1.conv_block[1].eps == 0.001
    assert model.maxpool1.padding == 1 and not model.maxpool1.ceil_mode
    assert PaperGoogLeNet(1000, aux_heads=False).eval()(torch.zeros(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("arch", ["tv", "paper"])
@pytest.mark.parametrize(
    "flavour",
    ["bare", "ddp", "lightning", "compiled", "legacy-pickle", "safetensors", "torchscript", "trusted-module"],
)
def test_every_format_loads_to_the_same_outputs(tmp_path, tv_model, paper_model, probe, arch, flavour):
    model = tv_model if arch == "tv" else paper_model
    path = tmp_path / "m.pt"
    state = model.state_dict()
    trust = False
    if flavour == "bare":
        torch.save(state, path)
    elif flavour == "ddp":
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, path)
    elif flavour == "lightning":
        torch.save({"state_dict": {f"model.{k}": v for k, v in state.items()}, "global_step": 7}, path)
    elif flavour == "compiled":
        torch.save({"model": {f"_orig_mod.{k}": v for k, v in state.items()}}, path)
    elif flavour == "legacy-pickle":
        torch.save(state, path, _use_new_zipfile_serialization=False)
    elif flavour == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "m.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    elif flavour == "torchscript":
        torch.jit.trace(copy.deepcopy(model).eval(), probe[:1]).save(str(path))
    elif flavour == "trusted-module":
        torch.save(model, path)
        trust = True
    ins = inspect_checkpoint(str(path), trust=trust)
    assert ins.verdict == "OK", ins.errors
    if flavour == "torchscript":  # a program, run as it is (its aux heads are the program's business)
        assert ins.arch.name == "torchscript" and ins.format == "torchscript"
    else:
        assert ins.arch.name == ("torchvision-googlenet" if arch == "tv" else "paper-googlenet")
        assert ins.arch.aux_heads
    assert ins.num_classes == 10
    assert _same_outputs(ins.model, model, probe)


def test_pickled_module_refused_without_trust_and_loaded_with_it(tmp_path, tv_model, probe):
    path = tmp_path / "whole.pt"
    torch.save(tv_model, path)
    ins = inspect_checkpoint(str(path))
    assert ins.verdict == "ERROR"
    assert "GoogLeNet" in ins.errors[0] and "--trust-checkpoints" in ins.errors[0] and "unsafe" in ins.errors[0]
    trusted = inspect_checkpoint(str(path), trust=True)
    assert trusted.verdict == "OK" and trusted.format.startswith("pickled module")
    assert _same_outputs(trusted.model, tv_model, probe)


def test_ema_and_raw_weights(tmp_path, tv_model, probe):
    other = _calibrated(copy.deepcopy(tv_model), 5)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.05)
    path = tmp_path / "both.pt"
    # torchvision's reference scripts: AveragedModel state = "module." keys + n_averaged
    ema_state = {f"module.{k}": v for k, v in other.state_dict().items()} | {"n_averaged": torch.tensor(10)}
    torch.save({"model": tv_model.state_dict(), "model_ema": ema_state, "epoch": 1}, path)
    raw = inspect_checkpoint(str(path))
    assert raw.weights == "raw" and any("using raw" in n for n in raw.notes)
    assert _same_outputs(raw.model, tv_model, probe)
    ema = inspect_checkpoint(str(path), prefer="ema")
    assert ema.weights == "ema" and _same_outputs(ema.model, other, probe)
    # a sidecar can choose per file
    (tmp_path / "both.pt.yaml").write_text("weights: ema\n")
    assert _same_outputs(inspect_checkpoint(str(path)).model, other, probe)
    only = tmp_path / "only_ema.pt"
    torch.save({"state_dict_ema": other.state_dict()}, only)
    ins = inspect_checkpoint(str(only))
    assert ins.weights == "ema" and _same_outputs(ins.model, other, probe)


def _errors_of(tmp_path, state_or_bytes, name="bad.pt"):
    path = tmp_path / name
    if isinstance(state_or_bytes, bytes):
        path.write_bytes(state_or_bytes)
    else:
        torch.save(state_or_bytes, path)
    ins = inspect_checkpoint(str(path))
    assert ins.verdict == "ERROR"
    return ins.errors[0]


def test_each_broken_kind_gets_its_verdict(tmp_path, tv_model):
    good = tmp_path / "good.pt"
    torch.save(tv_model.state_dict(), good)
    data = good.read_bytes()
    assert "empty" in _errors_of(tmp_path, b"")
    assert "truncated or corrupt" in _errors_of(tmp_path, data[: len(data) // 3])
    assert "is not a checkpoint" in _errors_of(tmp_path, b"just some text\n")
    assert "no state dict found" in _errors_of(tmp_path, {"epoch": 3, "lr": 0.1})
    assert "unknown architecture" in _errors_of(tmp_path, {"layer.weight": torch.zeros(2, 2)})
    state = tv_model.state_dict()
    state["inception3a.branch3.1.conv.weight"] = torch.zeros(32, 16, 5, 5)
    assert "'inception3a.branch3.1.conv.weight' has shape [32, 16, 5, 5]" in _errors_of(tmp_path, state)
    state = tv_model.state_dict()
    state["inception4a.branch2.0.bn.running_mean"] = torch.full_like(state["inception4a.branch2.0.bn.running_mean"], 1)
    state["inception4a.branch2.0.bn.running_mean"][3] = float("inf")
    assert "'inception4a.branch2.0.bn.running_mean' holds NaN or Inf" in _errors_of(tmp_path, state)
    state = tv_model.state_dict()
    state["conv2.bn.running_var"] = state["conv2.bn.running_var"].clone()
    state["conv2.bn.running_var"][0] = -1.0
    assert "BatchNorm 'conv2.bn.running_var' has values <= 0" in _errors_of(tmp_path, state)
    from safetensors.torch import save_file

    st = tmp_path / "x.safetensors"
    save_file({k: v.contiguous() for k, v in tv_model.state_dict().items()}, str(st))
    assert "truncated" in _errors_of(tmp_path, st.read_bytes()[:5000], "cut.safetensors")


def test_identical_members_warn_and_class_counts_must_agree(tmp_path, tv_model):
    a = save_checkpoint(tv_model, tmp_path / "a.pt")
    b = tmp_path / "b.pt"
    b.write_bytes(a.read_bytes())
    c = tmp_path / "c.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in tv_model.state_dict().items()}}, c)
    ins = [inspect_checkpoint(str(p)) for p in (a, b, c)]
    check_together(ins)
    assert [i.verdict for i in ins] == ["OK", "WARN", "WARN"]
    assert "byte-identical to a.pt" in ins[1].warnings[0]
    assert "same tensors as a.pt" in ins[2].warnings[0]
    other = save_checkpoint(GoogLeNet(num_classes=7, aux_logits=False, init_weights=False), tmp_path / "d.pt")
    with pytest.raises(CheckpointError, match="has 7 classes but 1 other member.s. have 10"):
        load_members([str(a), str(other)])
    mixed = [inspect_checkpoint(str(a))]
    check_together(mixed, data_num_classes=1000)
    assert "has 10 classes but the data's labels are ImageNet-1k" in mixed[0].errors[0]


def test_sidecar_and_embedded_conventions(tmp_path, tv_model):
    path = save_checkpoint(tv_model, tmp_path / "m.pt")
    (tmp_path / "m.yaml").write_text("mean: [103.94, 116.78, 123.68]\nstd: [1, 1, 1]\ncolor: BGR\ninput_scale: 255\n")
    conv = load_member(str(path)).convention
    assert conv == Convention(
        mean=(103.94, 116.78, 123.68), std=(1.0, 1.0, 1.0), color="BGR", input_scale=255.0, source="sidecar m.yaml"
    )
    assert conv.describe() == "BGR 0-255 mean=103.94,116.78,123.68 std=1,1,1"
    emb = tmp_path / "emb.pt"
    torch.save({"state_dict": tv_model.state_dict(), "ensemble_eval": {"color": "BGR"}}, emb)
    assert load_member(str(emb)).convention.color == "BGR"
    for text, needle in [
        ("colour: BGR\n", "unknown field"),
        ("mean: [1, 2]\n", "three numbers"),
        ("std: [1, 0, 1]\n", "positive"),
        ("color: bgr\n", "RGB or BGR"),
        ("class_offset: -1\n", "class_offset"),
        ("transform_input: 1\n", "true or false"),
        ("mean: [1, 2, [\n", "not valid YAML"),
        ("transform_input: true\nclass_offset: 10\n", "leaves no classes"),
    ]:
        (tmp_path / "m.yaml").write_text(text)
        ins = inspect_checkpoint(str(path))
        assert ins.verdict == "ERROR" and needle in ins.errors[0], (text, ins.errors)
    paper = save_checkpoint(PaperGoogLeNet(10, aux_heads=False), tmp_path / "p.pt")
    (tmp_path / "p.yaml").write_text("transform_input: true\n")
    assert "torchvision GoogLeNet / Inception v3 option" in inspect_checkpoint(str(paper)).errors[0]


def _member_probs(member, crops01):
    from ensemble_eval.ensemble import place_members

    (runner,) = place_members([member], torch.device("cpu"), channels_last=False)
    with torch.inference_mode():
        return torch.softmax(runner.logits(crops01), dim=1)


def test_mixed_ensemble_matches_each_members_own_pipeline(tmp_path, demo_models, images):
    """An RGB 0-1 member and a BGR 0-255 (Caffe-style) member, evaluated from the same crops."""
    from torchvision.transforms import v2

    from ensemble_eval.crops import CropScheme, extract_crops
    from ensemble_eval.ensemble import place_members

    rgb_model = demo_models[0]
    # A Caffe-style member made from demo model 1: it expects BGR 0-255 minus the Caffe mean.
    # conv1 is rescaled and its input channels reversed so its activations stay in range.
    caffe_mean = (103.94, 116.78, 123.68)
    imagenet_mean, imagenet_std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    bgr_model = copy.deepcopy(demo_models[1])
    with torch.no_grad():
        w = bgr_model.conv1.conv.weight  # [64, 3, 7, 7], conv without bias, then BN
        rgb_w = w / torch.tensor(imagenet_std).view(1, 3, 1, 1) / 255.0
        bgr_model.conv1.conv.weight.copy_(rgb_w[:, [2, 1, 0]])
    a = save_checkpoint(rgb_model, tmp_path / "rgb.pt")
    b = save_checkpoint(bgr_model, tmp_path / "bgr.pt")
    (tmp_path / "bgr.yaml").write_text(
        yaml.safe_dump({"mean": list(caffe_mean), "std": [1, 1, 1], "color": "BGR", "input_scale": 255})
    )
    members = load_members([str(a), str(b)])
    scheme = CropScheme(scales=(72,), crop_size=64, crop_sets={"all": {}})
    crops = torch.stack([extract_crops(im, scheme) for im in images[:2]])  # [2, 36, 3, 64, 64]
    runners = place_members(members, torch.device("cpu"), channels_last=False)
    sums = set_sums(crops, runners, [list(range(36))], chunk_size=36, channels_last=False)  # [2, 2, 1, C]
    flat = crops.reshape(-1, 3, 64, 64)
    with torch.inference_mode():
        rgb_in = v2.Normalize(imagenet_mean, imagenet_std)(flat.float() / 255)
        bgr_in = flat[:, [2, 1, 0]].float() - torch.tensor(caffe_mean).view(1, 3, 1, 1)  # Caffe: BGR 0-255 - mean
        p_rgb = torch.softmax(rgb_model(rgb_in), 1).view(2, 36, -1).mean(1)
        p_bgr = torch.softmax(bgr_model(bgr_in), 1).view(2, 36, -1).mean(1)
    assert torch.allclose(sums[0, :, 0] / 36, p_rgb, atol=1e-5)
    assert torch.allclose(sums[1, :, 0] / 36, p_bgr, atol=2e-5)
    ensemble = sums.sum(0)[:, 0] / 72
    assert torch.allclose(ensemble, (p_rgb + p_bgr) / 2, atol=2e-5)
    assert (p_rgb - p_bgr).abs().max() > 1e-3  # two different members, not one counted twice


def test_background_class_offset_and_own_class_order(tmp_path, demo_models, images):
    from ensemble_eval.crops import CropScheme, extract_crops
    from ensemble_eval.data import imagenet_classes

    base = demo_models[1]
    x = extract_crops(images[0], CropScheme(scales=(72,), crop_size=64, crop_sets={"a": {}})).float() / 255
    ref = _member_probs(load_member(str(save_checkpoint(base, tmp_path / "base.pt"))), x)
    # a TensorFlow-style port: 1001 outputs, background first
    tf = copy.deepcopy(base)
    with torch.no_grad():
        fc = torch.nn.Linear(1024, 1001)
        fc.weight.copy_(torch.cat([torch.zeros(1, 1024), base.fc.weight]))
        fc.bias.copy_(torch.cat([torch.tensor([5.0]), base.fc.bias]))
        tf.fc = fc
    path = save_checkpoint(tf, tmp_path / "tf.pt")
    assert "1001 outputs" in inspect_checkpoint(str(path)).warnings[0]
    (tmp_path / "tf.yaml").write_text("class_offset: 1\n")
    member = load_member(str(path))
    assert member.num_classes == 1000
    assert torch.allclose(_member_probs(member, x), ref, atol=1e-6)
    # outputs in a shuffled class order, declared by `classes`
    gen = torch.Generator().manual_seed(0)
    perm = torch.randperm(1000, generator=gen)
    shuffled = copy.deepcopy(base)
    with torch.no_grad():
        shuffled.fc.weight.copy_(base.fc.weight[perm])
        shuffled.fc.bias.copy_(base.fc.bias[perm])
    path = save_checkpoint(shuffled, tmp_path / "shuffled.pt")
    wnids = [c.wnid for c in imagenet_classes()]
    (tmp_path / "shuffled.yaml").write_text(yaml.safe_dump({"classes": [wnids[i] for i in perm.tolist()]}))
    assert torch.allclose(_member_probs(load_member(str(path)), x), ref, atol=1e-6)
    (tmp_path / "shuffled.yaml").write_text(yaml.safe_dump({"classes": wnids[:999] + ["n00000000"]}))
    assert "not" in inspect_checkpoint(str(path)).errors[0]


def test_torchvision_spec_offline_and_cached(tmp_path, monkeypatch, demo_models, images):
    from torchvision.models import GoogLeNet_Weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    ins = inspect_checkpoint("torchvision:googlenet")
    assert ins.verdict == "ERROR"
    url = GoogLeNet_Weights.IMAGENET1K_V1.url
    target = tmp_path / "torch" / "hub" / "checkpoints" / url.rsplit("/", 1)[1]
    assert url in ins.errors[0] and str(target) in ins.errors[0]
    # with the file where the message says, it loads, with torchvision's input convention
    target.parent.mkdir(parents=True)
    torch.save(demo_models[0].state_dict(), target)
    # not torchvision's bytes: its sha256 does not start as the published name's does
    assert "not the published file" in inspect_checkpoint("torchvision:googlenet").errors[0]
    monkeypatch.setattr(
        torchvision_published, "published_sha256_prefix", lambda url: None
    )  # stand in for the real file
    member = load_member("torchvision:googlenet")
    assert member.convention.transform_input and member.model.transform_input
    from torchvision.transforms import v2

    x = v2.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(
        v2.CenterCrop(224)(v2.Resize(256)(images[0])).float()[None] / 255
    )
    reference = copy.deepcopy(demo_models[0])
    reference.transform_input = True
    with torch.inference_mode():
        assert torch.allclose(member.model(x), reference(x), atol=1e-5)


def test_validate_command_tells_each_files_story(tmp_path, tv_model, demo_ckpts, capsys):
    good = save_checkpoint(tv_model, tmp_path / "good.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    torch.save(tv_model, tmp_path / "whole.pt")
    (tmp_path / "z_copy.pt").write_bytes(good.read_bytes())
    code = main(["validate", str(tmp_path / "*.pt")])
    out = capsys.readouterr()
    assert code == 1 and "Traceback" not in out.err
    rows = {line.split()[0]: line for line in out.out.splitlines() if line.endswith(("OK", "WARN", "ERROR"))}
    assert rows["good.pt"].endswith("OK") and "torchvision-googlenet" in rows["good.pt"]
    assert "RGB 0-1 imagenet" in rows["good.pt"] and "9.96M" in rows["good.pt"]  # params, aux heads included
    assert rows["z_copy.pt"].endswith("WARN") and rows["empty.pt"].endswith("ERROR")
    assert rows["whole.pt"].endswith("ERROR")
    assert "whole.pt: ERROR: holds objects of type torchvision.models.googlenet.GoogLeNet" in out.out
    assert "2 of 4 checkpoint(s) usable" in out.out
    # JSON to a file, and the exit status 0 when everything is usable
    report = tmp_path / "report.json"
    assert main(["validate", str(good), "--json", str(report)]) == 0
    record = json.loads(report.read_text())
    (entry,) = record["checkpoints"]
    assert record["usable"] and entry["verdict"] == "OK" and entry["num_classes"] == 10
    assert entry["arch"] == "torchvision-googlenet" and entry["input"]["color"] == "RGB"
    capsys.readouterr()
    # quick 1-crop accuracy on real images
    assert (
        main(["validate", *map(str, demo_ckpts), "--data", str(DATA), "--limit", "4", "--workers", "0", "--json"]) == 0
    )
    record = json.loads(capsys.readouterr().out)
    quick = [c["quick"] for c in record["checkpoints"]]
    assert all(q["num_images"] == 4 for q in quick)
    pred_err = [q["top1_err"] for q in quick]
    assert all(0 <= e <= 1 for e in pred_err)


def test_evaluation_refuses_unusable_members_before_reading_images(tmp_path, demo_ckpts, capsys):
    whole = tmp_path / "whole.pt"
    torch.save(GoogLeNet(num_classes=1000, aux_logits=False, init_weights=False), whole)
    code = main(["--models", str(demo_ckpts[0]), str(whole), "--data", str(DATA), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "--trust-checkpoints" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()
    code = main(
        [
            "--models",
            str(demo_ckpts[0]),
            str(whole),
            "--data",
            str(DATA),
            "--out",
            str(tmp_path / "o"),
            "--trust-checkpoints",
            "--limit",
            "1",
            "--crops",
            "1",
            "--no-progress",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "o" / "summary.json").read_text())
    assert summary["models"][1]["format"].startswith("pickled module")
    assert np.load(tmp_path / "o" / "predictions.npz")["probs"].shape == (1, 1000)


def _hostile_cases(tv_state):
    """(name, writer) pairs: each writes a file that must get an ERROR, never an exception."""
    from safetensors.torch import save_file

    def with_key(key, value):
        def write(path):
            state = dict(tv_state)
            state[key] = value
            torch.save(state, path)

        return write

    nested = ["x"] * 10
    for _ in range(7):
        nested = [nested] * 10  # 10**8 leaves when printed in full; tiny when pickled
    return [
        ("int-keys", lambda p: torch.save({i: v for i, v in enumerate(tv_state.values())}, p), "no state dict"),
        ("int-key-beside", lambda p: torch.save({"state_dict": {**tv_state, 7: torch.zeros(1)}}, p), "no state dict"),
        ("sparse", with_key("fc.weight", tv_state["fc.weight"].to_sparse()), "sparse"),
        ("float8", with_key("fc.weight", tv_state["fc.weight"].to(torch.float8_e4m3fn)), "floating point"),
        ("int8", with_key("fc.weight", tv_state["fc.weight"].to(torch.int8)), "floating point"),
        ("complex", with_key("fc.weight", tv_state["fc.weight"].to(torch.complex64)), "floating point"),
        ("meta", with_key("fc.weight", torch.empty(10, 1024, device="meta")), "on device meta"),
        (
            "quantized",
            with_key("fc.weight", torch.quantize_per_tensor(tv_state["fc.weight"], 0.1, 0, torch.qint8)),
            "quantized",
        ),
        ("expanded-huge", lambda p: torch.save({"fc.weight": torch.zeros(1).expand(10**6, 10**6)}, p), "elements"),
        ("expanded", lambda p: torch.save({"fc.weight": torch.zeros(1).expand(1 << 14, 1 << 14)}, p), "broadcast"),
        (
            "alias-bomb-embedded",
            lambda p: torch.save({"state_dict": tv_state, "ensemble_eval": nested}, p),
            "expected a mapping",
        ),
        (
            "deep-safetensors-meta",
            lambda p: save_file(
                {k: v.contiguous() for k, v in tv_state.items()},
                str(p),
                metadata={"ensemble_eval": "[" * 100000 + "]" * 100000},
            ),
            "nested too deeply",
        ),
        (
            "truncated-safetensors-header",
            lambda p: p.write_bytes(b'\xff\xff\xff\x00\x00\x00\x00\x00{"a":'),
            "cannot be read as safetensors",
        ),
    ]


def test_hostile_files_get_errors_not_tracebacks(tmp_path):
    tv_state = GoogLeNet(num_classes=10, aux_logits=False, init_weights=False).state_dict()
    for name, write, needle in _hostile_cases(tv_state):
        path = tmp_path / f"{name}.pt"
        write(path)
        ins = inspect_checkpoint(str(path))
        assert ins.verdict == "ERROR", name
        assert needle in ins.errors[0] and len(ins.errors[0]) < 400, (name, ins.errors[0][:400])


@pytest.mark.parametrize(
    "text,needle",
    [
        ("[" * 5000 + "]" * 5000, "nests deeper than 64 levels"),
        ("mean: [.nan, 0, 0]\n", "finite"),
        ("std: [.inf, 1, 1]\n", "finite"),
        ("input_scale: .inf\n", "input_scale"),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
            "c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
            "mean: [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n",
            "expands to more than 100,000 values",
        ),
    ],
)
def test_hostile_sidecars(tmp_path, text, needle):
    path = save_checkpoint(GoogLeNet(num_classes=10, aux_logits=False, init_weights=False), tmp_path / "m.pt")
    (tmp_path / "m.pt.yaml").write_text(text)
    ins = inspect_checkpoint(str(path))
    assert ins.verdict == "ERROR" and needle in ins.errors[0] and len(ins.errors[0]) < 400


def test_validate_reports_bad_paths_as_rows(tmp_path, capsys):
    good = save_checkpoint(GoogLeNet(num_classes=10, aux_logits=False, init_weights=False), tmp_path / "good.pt")
    (tmp_path / "dir.pt").mkdir()
    (tmp_path / "dangling.pt").symlink_to(tmp_path / "nowhere")
    code = main(
        ["validate", str(good), str(tmp_path / "dir.pt"), str(tmp_path / "dangling.pt"), str(tmp_path / "x.pt")]
    )
    out = capsys.readouterr().out
    assert code == 1
    assert "dir.pt: ERROR: is a directory" in out and "dangling.pt: ERROR: does not exist" in out
    assert "x.pt: ERROR: does not exist" in out and "1 of 4 checkpoint(s) usable" in out
