"""Loading torchvision-layout GoogLeNet checkpoints: wrappers, prefixes, and refusals."""

from __future__ import annotations

import argparse
import pathlib

import pytest
import torch
from conftest import save_checkpoint
from torchvision.models import GoogLeNet

from ensemble_eval.errors import CheckpointError
from ensemble_eval.members.inspection import load_member, load_members
from ensemble_eval.modelpaths import expand_model_paths


@pytest.fixture(scope="module")
def small_model():
    """A 10-class torchvision GoogLeNet with aux heads and non-trivial BatchNorm statistics."""
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=10, aux_logits=True, transform_input=False, init_weights=True)
    model.train()
    with torch.no_grad():
        model(torch.randn(4, 3, 96, 96))
    return model.eval()


@pytest.fixture(scope="module")
def probe():
    torch.manual_seed(1)
    return torch.randn(2, 3, 96, 96)


@pytest.mark.parametrize(
    "wrap,prefix",
    [
        (None, ""),
        ("state_dict", ""),
        ("model", ""),
        ("model_state_dict", ""),
        (None, "module."),
        ("state_dict", "module."),
        (None, "_orig_mod."),
        ("state_dict", "module._orig_mod."),
        ("state_dict", "model."),
    ],
)
def test_formats_load_to_the_same_outputs(tmp_path, small_model, probe, wrap, prefix):
    path = save_checkpoint(small_model, tmp_path / "m.pt", wrap=wrap, prefix=prefix)
    member = load_member(str(path))
    assert member.arch.name == "torchvision-googlenet"
    assert member.num_classes == 10 and member.arch.aux_heads
    assert member.model.aux1 is None  # dropped after the strict load
    with torch.inference_mode():
        assert torch.equal(member.model(probe), small_model(probe))
    assert len(member.sha256) == 64


def test_without_aux_heads_and_other_class_counts(tmp_path, probe):
    torch.manual_seed(2)
    model = GoogLeNet(num_classes=7, aux_logits=False, transform_input=False, init_weights=True).eval()
    member = load_member(str(save_checkpoint(model, tmp_path / "noaux.pt")))
    assert member.num_classes == 7 and not member.arch.aux_heads
    with torch.inference_mode():
        assert torch.equal(member.model(probe), model(probe))


def test_namespace_beside_weights_loads_safely(tmp_path, small_model, probe):
    """torchvision's reference scripts save {"model": ..., "args": Namespace(...)}."""
    path = tmp_path / "with_args.pt"
    torch.save({"model": small_model.state_dict(), "args": argparse.Namespace(lr=0.1, epochs=90)}, path)
    member = load_member(str(path))
    with torch.inference_mode():
        assert torch.equal(member.model(probe), small_model(probe))


def test_weights_only_refuses_other_pickled_objects(tmp_path, small_model):
    path = tmp_path / "with_path.pt"
    torch.save({"model": small_model.state_dict(), "root": pathlib.PurePosixPath("/data")}, path)
    with pytest.raises(CheckpointError, match="holds objects of type pathlib.PurePosixPath, which cannot be loaded"):
        load_member(str(path))
    whole = tmp_path / "whole.pt"
    torch.save(small_model, whole)
    with pytest.raises(CheckpointError, match=r"torchvision\.models\.googlenet\.GoogLeNet.*state_dict\(\)"):
        load_member(str(whole))


def test_broken_files(tmp_path, small_model):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty"):
        load_member(str(empty))
    good = save_checkpoint(small_model, tmp_path / "good.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt"):
        load_member(str(truncated))
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="is not a checkpoint"):
        load_member(str(text))
    not_weights = tmp_path / "list.pt"
    torch.save([1, 2, 3], not_weights)
    with pytest.raises(CheckpointError, match="no state dict found"):
        load_member(str(not_weights))


def test_wrong_architecture_names_the_first_mismatch(tmp_path, small_model):
    state = small_model.state_dict()
    # a real 5x5 branch (paper-style) does not fit torchvision's 3x3 "5x5" branch
    state["inception3a.branch3.1.conv.weight"] = torch.zeros(32, 16, 5, 5)
    path = tmp_path / "five.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"inception3a\.branch3\.1\.conv\.weight.*\[32, 16, 5, 5\]"):
        load_member(str(path))
    state = small_model.state_dict()
    del state["inception4b.branch1.bn.running_var"]
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="missing key 'inception4b.branch1.bn.running_var'"):
        load_member(str(path))
    state = small_model.state_dict()
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        load_member(str(path))
    torch.save({"layer.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CheckpointError, match="unknown architecture"):
        load_member(str(path))


def test_nan_weights_are_refused(tmp_path, small_model):
    state = small_model.state_dict()
    state["fc.weight"] = state["fc.weight"].clone()
    state["fc.weight"][0, 0] = float("nan")
    path = tmp_path / "nan.pt"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match="'fc.weight' holds NaN"):
        load_member(str(path))


def test_members_must_agree_on_classes(tmp_path, small_model):
    a = save_checkpoint(small_model, tmp_path / "a.pt")
    other = GoogLeNet(num_classes=5, aux_logits=False, transform_input=False, init_weights=False)
    b = save_checkpoint(other, tmp_path / "b.pt")
    with pytest.raises(CheckpointError, match="has 5 classes but 1 other member.s. have 10; an ensemble needs one"):
        load_members([str(a), str(b)])


def test_paths_and_globs(tmp_path, small_model):
    for name in ("b.pt", "a.pt", "c.pth"):
        save_checkpoint(small_model, tmp_path / name)
    assert expand_model_paths([str(tmp_path / "*.pt")]) == [str(tmp_path / "a.pt"), str(tmp_path / "b.pt")]
    assert expand_model_paths([str(tmp_path / "c.pth"), str(tmp_path / "a.pt")]) == [
        str(tmp_path / "c.pth"),
        str(tmp_path / "a.pt"),
    ]
    with pytest.raises(CheckpointError, match="matched no files"):
        expand_model_paths([str(tmp_path / "*.ckpt")])
    with pytest.raises(CheckpointError, match="does not exist"):
        expand_model_paths([str(tmp_path / "missing.pt")])
    with pytest.raises(CheckpointError, match="is a directory"):
        expand_model_paths([str(tmp_path)])
