"""Top-k counting against a plain loop; errors as integer counts divided once."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ensemble_eval.metrics import Counts, mcnemar_exact, topk_hits, wilson_interval


def test_topk_correct_equals_plain_loop():
    gen = torch.Generator().manual_seed(0)
    scores = torch.rand(200, 50, generator=gen)
    targets = torch.randint(0, 50, (200,), generator=gen)
    expected = []
    for k in (1, 5, 10):
        hits = 0
        for row, t in zip(scores.tolist(), targets.tolist()):
            ranked = sorted(range(50), key=lambda c: -row[c])
            hits += t in ranked[:k]
        expected.append(hits)
    assert topk_hits(scores, targets, (1, 5, 10)).tolist() == expected


def test_fewer_classes_than_k_and_empty_batches():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]])
    assert topk_hits(scores, torch.tensor([1, 1]), (1, 5)).tolist() == [1, 2]
    assert topk_hits(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), (1, 5)).tolist() == [0, 0]


def test_integer_counts_divided_once():
    """Per-image hits from two batches -> integer counts per member and set -> errors."""
    import numpy as np

    from ensemble_eval.ensemble import Accumulator, BatchResult

    acc = Accumulator(num_members=1, set_names=["1", "10"])
    hits = np.zeros((3, 2, 2, 2), dtype=np.uint8)  # [B, M + 1, S, top-1/top-5]
    hits[:2, :, :, :] = 1  # two images right everywhere
    hits[2, :, :, 1] = 1  # the third: top-5 only
    acc.add(BatchResult(0, np.arange(3), np.zeros((3, 4), np.float32), hits, []))
    acc.add(BatchResult(1, np.arange(3, 4), np.zeros((1, 4), np.float32), hits[:1], [(4, "broken")]))
    tally = acc.tally()
    c = tally.ensemble["10"]
    assert (c.num_images, c.top1, c.top5) == (4, 3, 4)
    assert c.top1_err == 0.25 and c.top5_err == 0.0 and tally.members[0]["1"].top1 == 3
    assert acc.skipped == [(4, "broken")]
    assert Counts().to_dict()["num_images"] == 0


def test_batched_hits_equal_per_slice_counts():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(3, 4, 20, 7, generator=gen)  # [members, sets, B, C]
    targets = torch.randint(0, 7, (20,), generator=gen)
    hits = topk_hits(scores, targets, (1, 5))
    assert hits.shape == (3, 4, 2) and hits.dtype == torch.int64
    for m in range(3):
        for s in range(4):
            assert hits[m, s].tolist() == topk_hits(scores[m, s], targets, (1, 5)).tolist()


def test_wilson_interval_equals_the_closed_form():
    import math

    from ensemble_eval.metrics import wilson_interval

    z = 1.959963984540054  # the 97.5% normal quantile
    for errors, n in [(3, 10), (0, 8), (8, 8), (4500, 50000)]:
        p = errors / n
        centre = (p + z * z / (2 * n)) / (1 + z * z / n)
        half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        lo, hi = wilson_interval(errors, n)
        assert abs(lo - max(0.0, centre - half)) < 1e-12 and abs(hi - min(1.0, centre + half)) < 1e-12
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_exact_mcnemar_equals_a_plain_binomial_sum():
    import math

    import numpy as np

    from ensemble_eval.metrics import mcnemar_exact

    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 1, 0], dtype=bool)
    b = np.array([0, 0, 0, 0, 0, 1, 1, 0, 1, 0], dtype=bool)
    result = mcnemar_exact(a, b)
    assert (result["a_only_correct"], result["b_only_correct"], result["num_images"]) == (5, 1, 10)
    tail = sum(math.comb(6, i) for i in range(0, 2)) / 2**6  # P(X <= 1), X ~ Bin(6, 1/2)
    assert abs(result["p_value"] - 2 * tail) < 1e-12
    assert mcnemar_exact(a, a)["p_value"] == 1.0  # no discordant image


def test_nll_and_ece_by_hand():
    import numpy as np

    from ensemble_eval.metrics import expected_calibration_error, negative_log_likelihood

    assert abs(negative_log_likelihood(np.array([0.5, 0.25], np.float32)) - (np.log(2) + np.log(4)) / 2) < 1e-9
    assert np.isfinite(negative_log_likelihood(np.array([0.0], np.float32)))  # clipped, not inf
    conf = np.array([0.95, 0.95, 0.55, 0.55])
    correct = np.array([True, False, True, True])
    # bins (0.933, 1]: accuracy 0.5 vs confidence 0.95; (0.533, 0.6]: accuracy 1 vs 0.55
    assert abs(expected_calibration_error(conf, correct) - (0.5 * 0.45 + 0.5 * 0.45)) < 1e-12
    assert expected_calibration_error(np.array([1.0, 1.0]), np.array([True, True])) == 0.0


@pytest.mark.parametrize("n", [1, 2, 7, 100, 1001, 50000])
def test_closed_form_intervals_and_exact_p_values_equal_scipys(n):
    """No scipy at start-up: the stdlib forms must equal scipy.stats.binomtest's."""
    from scipy.stats import binomtest

    for k in sorted({0, 1, n // 3, n // 2, (n + 1) // 2, n - 1, n}):
        ci = binomtest(k, n).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)
        a = np.arange(n) < k
        assert mcnemar_exact(a, ~a)["p_value"] == pytest.approx(binomtest(k, n, 0.5).pvalue, abs=1e-12)
