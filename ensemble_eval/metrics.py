"""Top-k correct counts and errors: count integers per batch, divide once at the end."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch


def topk_row_hits(scores: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Whether each row's target is among its k highest scores, for each k, on the device.

    scores: float [..., C] (probabilities or any monotone transform of them); targets: int64,
    broadcastable to scores.shape[:-1]. Returns bool [..., len(ks)]. k larger than C counts
    every row as a hit, as for a model with fewer classes than k.
    """
    kmax = min(max(ks), scores.shape[-1])
    top = scores.topk(kmax, dim=-1).indices  # [..., kmax]
    hits = top == targets.to(top.device).unsqueeze(-1)  # [..., kmax]
    return torch.stack([hits[..., : min(k, kmax)].any(dim=-1) for k in ks], dim=-1)


def topk_hits(scores: torch.Tensor, targets: torch.Tensor, ks: tuple[int, ...] = (1, 5)) -> torch.Tensor:
    """Per-k counts of rows [..., B, C] whose target (int64 [B]) is in the top k: int64 [..., len(ks)]."""
    return topk_row_hits(scores, targets.view(-1), ks).sum(dim=-2)


@dataclass
class Counts:
    """Integer top-1/top-5 correct counts over `num_images` images."""

    num_images: int = 0
    top1: int = 0
    top5: int = 0

    @property
    def top1_err(self) -> float:
        return (self.num_images - self.top1) / self.num_images if self.num_images else float("nan")

    @property
    def top5_err(self) -> float:
        return (self.num_images - self.top5) / self.num_images if self.num_images else float("nan")

    def to_dict(self) -> dict:
        return {
            "num_images": self.num_images,
            "top1_correct": self.top1,
            "top5_correct": self.top5,
            "top1_err": self.top1_err,
            "top5_err": self.top5_err,
            "top1_err_ci": list(wilson_interval(self.num_images - self.top1, self.num_images)),
            "top5_err_ci": list(wilson_interval(self.num_images - self.top5, self.num_images)),
            # accuracies beside the errors (timm's and torchvision's figures are acc@1 / acc@5), fractions
            "top1_acc": self.top1 / self.num_images if self.num_images else float("nan"),
            "top5_acc": self.top5 / self.num_images if self.num_images else float("nan"),
        }


@dataclass
class Tally:
    """Counts for every member and for the whole ensemble, for every crop set."""

    num_members: int
    set_names: list[str]
    members: list[dict[str, Counts]] = field(init=False)
    ensemble: dict[str, Counts] = field(init=False)

    def __post_init__(self) -> None:
        self.members = [{s: Counts() for s in self.set_names} for _ in range(self.num_members)]
        self.ensemble = {s: Counts() for s in self.set_names}

    @classmethod
    def from_correct(cls, correct: torch.Tensor, num_images: int, set_names: list[str]) -> Tally:
        """correct: int64 [M + 1, num_sets, 2] (members, then the ensemble; top-1, top-5)."""
        values = correct.tolist()
        tally = cls(len(values) - 1, list(set_names))
        for row, per_set in zip(tally.members + [tally.ensemble], values):
            for name, (top1, top5) in zip(set_names, per_set):
                row[name] = Counts(num_images, top1, top5)
        return tally


def hits_from_top5(top5: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Top-1 and top-5 hits from best-first class lists: top5 int [N, ..., 5], targets int [N] -> bool [N, ..., 2]."""
    t = np.asarray(targets).reshape((-1,) + (1,) * (top5.ndim - 1))
    return np.stack([top5[..., 0] == t[..., 0], (top5 == t).any(axis=-1)], axis=-1)


CONFIDENCE_LEVEL = 0.95
ECE_BINS = 15


def wilson_interval(errors: int, n: int, level: float = CONFIDENCE_LEVEL) -> tuple[float, float]:
    """Wilson score interval for an error rate of `errors` out of `n` images (NaN when n is 0).

    Closed form with the standard library's normal quantile (no scipy import at start-up);
    tests/test_stats_independent.py checks it against scipy.stats.binomtest."""
    if n == 0:
        return float("nan"), float("nan")
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.5 + level / 2)
    rate, z2 = errors / n, z * z
    center = (rate + z2 / (2 * n)) / (1 + z2 / n)
    half = z / (1 + z2 / n) * math.sqrt(rate * (1 - rate) / n + z2 / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> dict:
    """Exact (binomial) McNemar test of two classifiers' correctness on the same images.

    a_correct, b_correct: bool [N]. Only discordant images count: `a_only` right for A and
    wrong for B, `b_only` the reverse. Under the null hypothesis each discordant image is a
    fair coin; the two-sided p-value is 1 when there is no discordant image.
    """
    a_only = int(np.sum(a_correct & ~b_correct))
    b_only = int(np.sum(~a_correct & b_correct))
    p = _two_sided_half(min(a_only, b_only), a_only + b_only)
    return {"num_images": int(len(a_correct)), "a_only_correct": a_only, "b_only_correct": b_only, "p_value": p}


def _two_sided_half(k: int, n: int) -> float:
    """Two-sided exact binomial p-value of k (the smaller count) of n at p = 1/2: twice the
    lighter tail, summed exactly in integers (1 when n is 0)."""
    term, tail = 1, 1  # C(n, 0)
    for i in range(k):
        term = term * (n - i) // (i + 1)  # C(n, i + 1)
        tail += term
    return min(1.0, 2 * tail / 2**n) if n else 1.0


def negative_log_likelihood(target_prob: np.ndarray) -> float:
    """Mean -log p(true class); probabilities below float32's smallest normal count as that value."""
    if target_prob.size == 0:
        return float("nan")
    p = np.maximum(target_prob.astype(np.float64), float(np.finfo(np.float32).tiny))
    return float(-np.log(p).mean())


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = ECE_BINS) -> float:
    """ECE with equal-width confidence bins (Guo et al. 2017): sum over bins of |accuracy - confidence|
    weighted by the bin's share of images. confidence: float [N] (top probability); correct: bool [N] (top-1)."""
    if confidence.size == 0:
        return float("nan")
    conf = confidence.astype(np.float64)
    which = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)  # bin b holds (b/bins, (b+1)/bins]
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(correct[inside].mean() - conf[inside].mean())
    return float(total / conf.size)
