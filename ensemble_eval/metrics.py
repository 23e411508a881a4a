"""Top-k correct counts and errors: count integers per batch, divide once at the end."""

from __future__ import annotations

from dataclasses import dataclass, field

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
