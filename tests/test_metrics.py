"""Top-k counting against a plain loop; errors as integer counts divided once."""

from __future__ import annotations

import torch

from ensemble_eval.metrics import Counts, topk_hits


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
