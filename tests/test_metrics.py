"""Top-k counting against a plain loop; errors as integer counts divided once."""

from __future__ import annotations

import torch

from ensemble_eval.metrics import Counts, topk_correct, topk_hits


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
    assert topk_correct(scores, targets, (1, 5, 10)) == expected


def test_fewer_classes_than_k_and_empty_batches():
    scores = torch.tensor([[0.1, 0.9, 0.0], [0.5, 0.2, 0.3]])
    assert topk_correct(scores, torch.tensor([1, 1]), (1, 5)) == [1, 2]
    assert topk_correct(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long), (1, 5)) == [0, 0]


def test_counts_accumulate_integers():
    c = Counts()
    c.add(torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]]), torch.tensor([0, 0, 0]))
    c.add(torch.tensor([[0.3, 0.7]]), torch.tensor([1]))
    assert (c.num_images, c.top1, c.top5) == (4, 3, 4)
    assert c.top1_err == 0.25 and c.top5_err == 0.0
    assert Counts().to_dict()["num_images"] == 0


def test_batched_hits_equal_per_slice_counts():
    gen = torch.Generator().manual_seed(1)
    scores = torch.rand(3, 4, 20, 7, generator=gen)  # [members, sets, B, C]
    targets = torch.randint(0, 7, (20,), generator=gen)
    hits = topk_hits(scores, targets, (1, 5))
    assert hits.shape == (3, 4, 2) and hits.dtype == torch.int64
    for m in range(3):
        for s in range(4):
            assert hits[m, s].tolist() == topk_correct(scores[m, s], targets, (1, 5))
