"""The batched fast path against a naive per-crop, per-model computation."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from conftest import DEVICES, SMALL, set_sums
from reference_protocol import reference_probs

from ensemble_eval.checkpoints import Convention, Member
from ensemble_eval.crops import extract_crops
from ensemble_eval.engine import evaluate
from ensemble_eval.ensemble import Plan, place_members
from ensemble_eval.execution import Execution
from ensemble_eval.models import ArchSpec

# Two members with different input conventions: each must get its own normalization.
CONVENTIONS = [((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))]


def _members(demo_models):
    return [
        Member(
            f"m{i}.pt",
            "0" * 64,
            ArchSpec("torchvision-googlenet", 1000, False),
            copy.deepcopy(model),
            Convention(mean=mean, std=std),
        )
        for i, (model, (mean, std)) in enumerate(zip(demo_models, CONVENTIONS))
    ]


def _keys(name):
    keys = SMALL.keys()
    return [keys[i].as_tuple() for i in SMALL.set_indices(name)]


@pytest.mark.parametrize("channels_last", [True, False])
def test_set_sums_equal_naive_per_crop_reference(images, demo_models, channels_last):
    members = _members(demo_models)
    runners = place_members(members, torch.device("cpu"), channels_last)
    set_names = list(SMALL.crop_sets)
    positions = [SMALL.set_indices(n) for n in set_names]
    batch = torch.stack([extract_crops(im, SMALL) for im in images[:2]])  # [2, 72, 3, 64, 64]
    sums = set_sums(batch, runners, positions, chunk_size=40, channels_last=channels_last)
    assert sums.shape == (2, 2, 3, 1000) and sums.dtype == torch.float32
    for b, image in enumerate(images[:2]):
        for s, name in enumerate(set_names):
            n = len(positions[s])
            per_member = [
                reference_probs(image, [(m.model, m.mean, m.std)], _keys(name), crop_size=64) for m in members
            ]
            for m in range(2):
                assert torch.allclose(sums[m, b, s].double() / n, per_member[m], atol=1e-5, rtol=0)
            ensemble = reference_probs(image, [(m.model, m.mean, m.std) for m in members], _keys(name), crop_size=64)
            assert torch.allclose(sums[:, b, s].sum(0).double() / (2 * n), ensemble, atol=1e-5, rtol=0)
    # the models really look at their input: crop sets disagree, members disagree
    assert (sums[0, 0, 0] - sums[0, 0, 2] / 72).abs().max() > 1e-2
    assert (sums[0, 0, 2] - sums[1, 0, 2]).abs().max() > 1e-2


def test_chunk_size_does_not_change_results(images, demo_models):
    runners = place_members(_members(demo_models), torch.device("cpu"), True)
    batch = torch.stack([extract_crops(im, SMALL) for im in images[:2]])
    positions = [SMALL.set_indices("72")]
    a = set_sums(batch, runners, positions, chunk_size=144)
    b = set_sums(batch, runners, positions, chunk_size=7)
    # the mean probabilities over the 72 crops; float32 convolutions may round differently
    # for other batch sizes (seen: 2e-7), never by more than 1e-6
    assert torch.allclose(a / 72, b / 72, atol=1e-6, rtol=0)


def test_probabilities_are_averaged_not_logits(images, demo_models):
    """The paper averages softmax outputs; averaging logits gives a measurably different answer."""
    members = _members(demo_models)[:1]
    runners = place_members(members, torch.device("cpu"), False)
    crops = extract_crops(images[0], SMALL)
    (sums,) = set_sums(crops[None], runners, [list(range(72))], chunk_size=72, channels_last=False)[:, 0, 0]
    with torch.inference_mode():
        x = (crops.float() / 255 - runners[0].mean) / runners[0].std
        logits = members[0].model(x)
    mean_prob = torch.softmax(logits, 1).mean(0)
    softmax_of_mean_logit = torch.softmax(logits.mean(0), 0)
    assert torch.allclose(sums / 72, mean_prob, atol=1e-6)
    assert (mean_prob - softmax_of_mean_logit).abs().max() > 1e-3


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("workers", [0, 2])
def test_evaluate_matches_reference_and_counts(samples, images, demo_models, device, workers):
    members = _members(demo_models)
    plan = Plan.make(SMALL, ["1", "10", "72"], "10", batch_size=50, num_members=len(members))
    result = evaluate(samples, members, plan, Execution(torch.device(device), workers))
    assert result.probs.shape == (8, 1000) and result.probs.dtype == np.float32
    assert result.crops_per_set == {"1": 1, "10": 10, "72": 72} and result.crops_per_image == 72
    targets = torch.tensor([s.target for s in samples])
    refs = torch.stack(
        [
            reference_probs(im, [(m.model.cpu(), m.mean, m.std) for m in _members(demo_models)], _keys("10"), 64)
            for im in images
        ]
    )
    tol = 1e-5 if device == "cpu" else 2e-3  # CUDA convolutions and resize rounding differ slightly
    assert np.abs(result.probs - refs.numpy()).max() < tol
    c = result.tally.ensemble["10"]
    top5 = refs.topk(5, dim=1).indices
    assert c.num_images == 8
    if device == "cpu":
        assert c.top1 == int((refs.argmax(1) == targets).sum())
        assert c.top5 == int((top5 == targets[:, None]).any(1).sum())
    # every member was counted on every set
    assert all(result.tally.members[m][s].num_images == 8 for m in range(2) for s in ("1", "10", "72"))


def test_bf16_autocast_stays_close_and_keeps_float32_outputs(images, demo_models):
    runners = place_members(_members(demo_models), torch.device("cpu"), True)
    batch = torch.stack([extract_crops(im, SMALL) for im in images[:2]])
    positions = [SMALL.set_indices("10")]
    fp32 = set_sums(batch, runners, positions, chunk_size=72)
    bf16 = set_sums(batch, runners, positions, chunk_size=72, precision="bf16")
    assert bf16.dtype == torch.float32
    assert torch.allclose(bf16.sum(-1), fp32.sum(-1), atol=1e-4)  # still sums of probabilities
    diff = (bf16 - fp32).abs().max().item() / 10
    assert 0 < diff < 0.05  # bf16 really ran, and stayed close
