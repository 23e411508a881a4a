"""Merging crops and members into one prediction: the merge modes' arithmetic, crop groups, subsets.

Pure tensor code, used by the live run (ensemble.run_batches) and by `ensemble-eval report`
when it rebuilds results from saved group statistics (logits.npz): the same functions, so a
rebuilt number is computed exactly as the live one.

Crop sets are unions of disjoint crop *groups* (for nested sets 1 < 10 < 144: the 1 crop, the
other 9 of the 10, the other 134). Per member, per image, per group one statistic is kept per
merge mode, and every set, member subset and merge is derived from those (the modes are
defined in merge_modes.py; today's four):

    merge       statistic per group          per member and set         members -> probabilities
    mean-prob   mean softmax probability     group-size-weighted mean   mean (the paper's)
    mean-logit  mean logit                   weighted mean              softmax of the mean
    geo-mean    mean log-probability         weighted mean              softmax of the mean (normalised
                                                                        geometric mean of probabilities)
    max-crop    max softmax probability      max over the set's groups  mean, renormalised to sum 1
"""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import dataclass

import numpy as np
import torch

from .merge_modes import mode, statistic_parts
from .metrics import topk_row_hits


@dataclass(frozen=True)
class CropGroups:
    """Disjoint groups of a plan's crop positions, and which groups make up each crop set."""

    positions: tuple[tuple[int, ...], ...]  # per group: positions into the extracted crops
    sets: tuple[tuple[int, ...], ...]  # per crop set: its group ids

    @classmethod
    def from_sets(cls, set_positions: list[list[int]] | tuple[tuple[int, ...], ...]) -> CropGroups:
        """Group positions by the crop sets they belong to (positions in no set are dropped)."""
        signature: dict[int, tuple[bool, ...]] = {}
        for pos in sorted({p for s in set_positions for p in s}):
            signature[pos] = tuple(pos in s for s in set_positions)
        keys = sorted(set(signature.values()), key=lambda key: min(p for p, k in signature.items() if k == key))
        positions = tuple(tuple(p for p, k in signature.items() if k == key) for key in keys)
        sets = tuple(tuple(g for g, key in enumerate(keys) if key[s]) for s in range(len(set_positions)))
        return cls(positions, sets)

    @property
    def sizes(self) -> list[int]:
        return [len(p) for p in self.positions]

    def set_weights(self) -> torch.Tensor:
        """float64 [S, G]: group g's share of set s's crops (0 when g is not in s)."""
        w = torch.zeros(len(self.sets), len(self.positions), dtype=torch.float64)
        for s, groups in enumerate(self.sets):
            total = sum(len(self.positions[g]) for g in groups)
            for g in groups:
                w[s, g] = len(self.positions[g]) / total
        return w


def statistics_for(merges: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(mode(m).statistic for m in merges))


def group_statistics(logits: torch.Tensor, groups: CropGroups, names: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Per-group statistics of per-crop logits.

    logits: float32 [..., K, C] (K crops). Returns {name: float32 [..., G, C]} for the
    statistic names asked for (values of STATISTIC).
    """
    kinds = {statistic_parts(n)[0] for n in names}
    source = {"logit": logits}
    if "prob" in kinds:
        source["prob"] = torch.softmax(logits, dim=-1)
    if "logprob" in kinds:
        source["logprob"] = torch.log_softmax(logits, dim=-1)
    k = logits.shape[-2]
    out = {}
    for name in names:
        of, over = statistic_parts(name)
        x = source[of]
        parts = []
        for pos in groups.positions:
            part = x if len(pos) == k else x[..., list(pos), :]
            parts.append(part.amax(dim=-2) if over == "max" else part.mean(dim=-2))
        out[name] = torch.stack(parts, dim=-2)
    return out


def set_statistic(stat: torch.Tensor, name: str, groups: CropGroups) -> torch.Tensor:
    """A group statistic [..., G, C] combined into each crop set: [..., S, C] (float32)."""
    if statistic_parts(name)[1] == "max":
        return torch.stack([stat[..., list(g), :].amax(dim=-2) for g in groups.sets], dim=-2)
    w = groups.set_weights().to(device=stat.device, dtype=torch.float64)
    out = torch.einsum("sg,...gc->...sc", w, stat.double())
    return out.float()


def subset_matrix(subsets: list[tuple[int, ...]], num_members: int, device: torch.device | None = None) -> torch.Tensor:
    """float32 [U, M]: row u averages the members of subset u."""
    w = torch.zeros(len(subsets), num_members, dtype=torch.float32, device=device)
    for u, members in enumerate(subsets):
        w[u, list(members)] = 1.0 / len(members)
    return w


def merged_probabilities(set_stat: torch.Tensor, merge: str, weights: torch.Tensor) -> torch.Tensor:
    """Probabilities of member subsets for one merge mode.

    set_stat: float32 [M, B, S, C], the merge's statistic per member per crop set;
    weights: float32 [U, M] from subset_matrix. Returns float32 [U, B, S, C], each row a
    distribution over the classes.
    """
    m = set_stat.shape[0]
    mixed = (weights @ set_stat.reshape(m, -1)).view(weights.shape[0], *set_stat.shape[1:])
    over_members = mode(merge).over_members
    if over_members == "softmax":
        return torch.softmax(mixed, dim=-1)
    if over_members == "renormalise":
        return mixed / mixed.sum(dim=-1, keepdim=True)
    return mixed


def prediction_records(probs: torch.Tensor, targets: torch.Tensor, k: int = 5) -> dict[str, torch.Tensor]:
    """What is kept per image: the k best classes, the true class's probability, the top one.

    probs: float32 [U, B, S, C]; targets: int64 [B]. Returns top5 int64 [B, U, S, k] (padded
    with -1 when C < k), target_prob and confidence float32 [B, U, S].
    """
    kk = min(k, probs.shape[-1])
    values, top = probs.topk(kk, dim=-1)
    if kk < k:
        top = torch.cat([top, top.new_full((*top.shape[:-1], k - kk), -1)], dim=-1)
    t = targets.view(1, -1, 1, 1).expand(*probs.shape[:-1], 1)
    target_prob = probs.gather(-1, t)[..., 0]
    return {
        "top5": top.permute(1, 0, 2, 3),
        "target_prob": target_prob.permute(1, 0, 2),
        "confidence": values[..., 0].permute(1, 0, 2),
    }


def curve_subsets(num_members: int, per_size: int, seed: int) -> list[tuple[int, ...]]:
    """Member subsets for the ensemble-size curve, the table's rows first.

    The M singletons, then all M members, then for each size k = 2..M-1 every k-subset, or a
    seeded sample of `per_size` distinct ones when there are more. With one member: [(0,)].
    """
    singles = [(i,) for i in range(num_members)]
    if num_members == 1:
        return singles
    out = singles + [tuple(range(num_members))]
    rng = random.Random(seed)
    for k in range(2, num_members):
        if math.comb(num_members, k) <= per_size:
            out += list(itertools.combinations(range(num_members), k))
            continue
        chosen: set[tuple[int, ...]] = set()
        while len(chosen) < per_size:
            chosen.add(tuple(sorted(rng.sample(range(num_members), k))))
        out += sorted(chosen)
    return out


SUBSET_CHUNK = 128  # member subsets merged at a time (bounds memory for large ensembles)


def class_dtype(num_classes: int) -> type:
    """Storage type of class indices."""
    return np.int16 if num_classes < 2**15 else np.int32


def table_rows(subsets: list[tuple[int, ...]] | tuple[tuple[int, ...], ...]) -> list[int]:
    """Subset ids of the per-image rows (as curve_subsets orders them): each member alone, then all."""
    m = max(len(u) for u in subsets)
    return list(range(m)) + [m if len(subsets) > 1 else 0]


def merge_records(
    statistics: dict[str, torch.Tensor],
    targets: torch.Tensor,
    groups: CropGroups,
    subsets: list[tuple[int, ...]] | tuple[tuple[int, ...], ...],
    merges: list[str] | tuple[str, ...],
    requested_set: int,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]:
    """Per-image records of the table's rows, and correct counts of every member subset, per merge.

    statistics: {name: float32 [M, B, G, C]} (group_statistics); targets: int64 [B]. Returns
    ({top5 [B, M + 1, S, R, 5], target_prob and confidence [B, M + 1, S, R]} as numpy, int64
    [U, S, R, 2] correct counts per subset, float32 [B, C] probabilities of all members for
    crop set `requested_set` under the first merge).
    """
    num_members = max(len(u) for u in subsets)
    weights = subset_matrix(list(subsets), num_members, targets.device)
    rows = weights[table_rows(subsets)]
    records: dict[str, list[torch.Tensor]] = {"top5": [], "target_prob": [], "confidence": []}
    correct = []
    requested = None
    for merge in merges:
        name = mode(merge).statistic
        set_stat = set_statistic(statistics[name], name, groups)  # [M, B, S, C]
        probs = merged_probabilities(set_stat, merge, rows)  # [M + 1, B, S, C]
        for key, value in prediction_records(probs, targets).items():
            records[key].append(value)
        if requested is None:
            requested = probs[-1, :, requested_set]
        counts = [
            topk_row_hits(merged_probabilities(set_stat, merge, w), targets.view(1, -1, 1), (1, 5)).sum(dim=1)
            for w in weights.split(SUBSET_CHUNK)
        ]
        correct.append(torch.cat(counts))  # [U, S, 2]
    num_classes = requested.shape[-1]
    out = {
        "top5": torch.stack(records["top5"], dim=-2).cpu().numpy().astype(class_dtype(num_classes)),
        "target_prob": torch.stack(records["target_prob"], dim=-1).cpu().numpy(),
        "confidence": torch.stack(records["confidence"], dim=-1).cpu().numpy(),
    }
    return out, torch.stack(correct, dim=2).cpu().numpy().astype(np.int64), requested.cpu().numpy()


class ClassRestriction:
    """The prediction restricted to some classes (ImageNet-A's or -R's 200, --class-subset):
    the other outputs are dropped before any softmax, so every merge mode, crop set and member
    subset is computed over those classes alone, exactly as a softmax over them; the records
    keep canonical class indices (the restricted probabilities are 0 elsewhere).

    Live (ensemble.run_batches) and rebuilt from logits.npz (analysis.records_from_logits),
    whose statistics are the restricted ones."""

    def __init__(self, classes: tuple[int, ...] | list[int] | np.ndarray, num_classes: int, device=None):
        self.indices = np.asarray(classes, dtype=np.int64)
        self.num_classes = num_classes
        self.classes = torch.as_tensor(self.indices, device=device)
        position = torch.full((num_classes,), -1, dtype=torch.int64)
        position[torch.from_numpy(self.indices)] = torch.arange(len(self.indices))
        self.position = position.to(device)

    def logits(self, logits: torch.Tensor) -> torch.Tensor:
        """[..., C] -> [..., C'] the restricted classes' outputs."""
        return logits.index_select(-1, self.classes)

    def targets(self, targets: torch.Tensor) -> torch.Tensor:
        """Canonical class indices -> positions among the restricted classes (every target is one)."""
        return self.position.to(targets.device)[targets]

    def records(self, out: dict[str, np.ndarray], requested: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """merge_records' per-image records and requested probabilities, back in canonical classes."""
        top5 = out["top5"]
        canonical = np.where(top5 >= 0, self.indices[np.maximum(top5, 0)], -1).astype(class_dtype(self.num_classes))
        full = np.zeros((len(requested), self.num_classes), dtype=requested.dtype)
        full[:, self.indices] = requested
        return out | {"top5": canonical}, full
