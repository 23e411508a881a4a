"""Merge modes, crop groups and member subsets against a plain per-crop computation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from ensemble_eval.merge import (
    CropGroups,
    curve_subsets,
    group_statistics,
    merge_records,
    merged_probabilities,
    prediction_records,
    set_statistic,
    subset_matrix,
)
from ensemble_eval.merge_modes import STATISTIC

MERGES = tuple(STATISTIC)


def naive(logits: torch.Tensor, members: tuple[int, ...], crops: list[int], merge: str) -> torch.Tensor:
    """One image's probabilities from per-crop logits [M, K, C], the obvious way, in float64."""
    x = logits.double()[list(members)][:, crops]  # [m, k, C]
    if merge == "mean-prob":
        return torch.softmax(x, -1).mean((0, 1))
    if merge == "mean-logit":
        return torch.softmax(x.mean((0, 1)), -1)
    if merge == "geo-mean":
        g = torch.log_softmax(x, -1).mean((0, 1)).exp()
        return g / g.sum()
    p = torch.softmax(x, -1).amax(1).mean(0)  # max over crops, then mean over members
    return p / p.sum()


def test_groups_of_nested_and_overlapping_sets():
    nested = CropGroups.from_sets([[4], [0, 1, 2, 3, 4], list(range(12))])
    assert nested.positions == ((0, 1, 2, 3), (4,), tuple(range(5, 12)))
    assert nested.sets == ((1,), (0, 1), (0, 1, 2))
    w = nested.set_weights()
    assert torch.allclose(w.sum(1), torch.ones(3, dtype=torch.float64))
    assert w[1].tolist() == [0.8, 0.2, 0.0]
    overlapping = CropGroups.from_sets([[0, 1, 2], [2, 3]])  # neither contains the other
    assert overlapping.positions == ((0, 1), (2,), (3,)) and overlapping.sets == ((0, 1), (1, 2))


@pytest.mark.parametrize("merge", MERGES)
def test_every_merge_subset_and_set_equals_the_plain_computation(merge):
    gen = torch.Generator().manual_seed(0)
    m, b, k, c = 3, 2, 12, 9
    logits = torch.randn(m, b, k, c, generator=gen) * 4
    sets = [[4], [0, 1, 2, 3, 4], list(range(12)), [5, 6, 11]]
    groups = CropGroups.from_sets(sets)
    name = STATISTIC[merge]
    stats = group_statistics(logits, groups, (name,))
    assert stats[name].shape == (m, b, len(groups.positions), c)
    subsets = curve_subsets(m, 64, 0)
    probs = merged_probabilities(set_statistic(stats[name], name, groups), merge, subset_matrix(subsets, m))
    assert probs.shape == (len(subsets), b, len(sets), c)
    for u, members in enumerate(subsets):
        for i in range(b):
            for s, crops in enumerate(sets):
                expected = naive(logits[:, i], members, crops, merge)
                assert torch.allclose(probs[u, i, s].double(), expected, atol=1e-6), (merge, members, s)


def test_merges_differ_except_geo_mean_which_is_the_mean_logit():
    """The normalised geometric mean of softmax outputs is the softmax of the mean logit: each
    crop's log-softmax differs from its logits by a constant over the classes."""
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 1, 6, 5, generator=gen) * 3
    answers = dict(zip(MERGES, (naive(logits[:, 0], (0, 1), list(range(6)), m) for m in MERGES)))
    assert torch.allclose(answers["geo-mean"], answers["mean-logit"], atol=1e-12)
    for a, b in itertools.combinations(["mean-prob", "mean-logit", "max-crop"], 2):
        assert (answers[a] - answers[b]).abs().max() > 1e-3


def test_curve_subsets_order_exhaustive_and_seeded_sample():
    assert curve_subsets(1, 64, 0) == [(0,)]
    three = curve_subsets(3, 64, 0)
    assert three == [(0,), (1,), (2,), (0, 1, 2), (0, 1), (0, 2), (1, 2)]
    seven = curve_subsets(7, 64, 0)
    assert len(seven) == 2**7 - 1 and len(set(seven)) == len(seven)  # every subset of 7 members
    big = curve_subsets(12, 10, 3)
    assert big[:13] == [(i,) for i in range(12)] + [tuple(range(12))]
    for k in range(2, 12):
        of_k = [u for u in big if len(u) == k]
        assert len(of_k) == min(10, math.comb(12, k)) and len(set(of_k)) == len(of_k)
    assert big == curve_subsets(12, 10, 3) and big != curve_subsets(12, 10, 4)


def test_prediction_records_and_padding():
    probs = torch.tensor([[[[0.1, 0.6, 0.3]]]])  # [U=1, B=1, S=1, C=3]
    rec = prediction_records(probs, torch.tensor([2]))
    assert rec["top5"].tolist() == [[[[1, 2, 0, -1, -1]]]]
    assert rec["target_prob"].tolist() == [[[pytest.approx(0.3)]]]
    assert rec["confidence"].tolist() == [[[pytest.approx(0.6)]]]


def test_merge_records_counts_every_subset():
    gen = torch.Generator().manual_seed(2)
    m, b, k, c = 3, 5, 4, 7
    logits = torch.randn(m, b, k, c, generator=gen) * 3
    targets = torch.randint(0, c, (b,), generator=gen)
    groups = CropGroups.from_sets([[0], [0, 1, 2, 3]])
    subsets = curve_subsets(m, 64, 0)
    names = tuple(dict.fromkeys(STATISTIC.values()))
    records, correct, requested = merge_records(
        group_statistics(logits, groups, names), targets, groups, subsets, MERGES, 1
    )
    assert records["top5"].shape == (b, m + 1, 2, 4, 5) and correct.shape == (len(subsets), 2, 4, 2)
    for r, merge in enumerate(MERGES):
        for u, members in enumerate(subsets):
            for s, crops in enumerate([[0], [0, 1, 2, 3]]):
                p = torch.stack([naive(logits[:, i], members, crops, merge) for i in range(b)])
                top1 = int((p.argmax(1) == targets).sum())
                top5 = int((p.topk(5, 1).indices == targets[:, None]).any(1).sum())
                assert correct[u, s, r].tolist() == [top1, top5]
    expected = torch.stack([naive(logits[:, i], (0, 1, 2), [0, 1, 2, 3], "mean-prob") for i in range(b)])
    assert torch.allclose(torch.from_numpy(requested).double(), expected, atol=1e-6)
