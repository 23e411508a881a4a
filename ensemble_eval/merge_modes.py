"""The merge modes: how the crops of a set and the members of an ensemble become one prediction.

One definition per mode, in `MODES` (torch-free, so the command line's choices and help, the
config's check and the docs read it without loading torch). A mode is three choices, carried
out by merge.py's generic code:

    of             what is kept per crop: "prob" (softmax), "logit", or "logprob" (log-softmax)
    over_crops     how the crops of a group, then the groups of a set, are combined:
                   "mean" (the group-size-weighted mean) or "max"
    over_members   how the members' per-set values become probabilities: "mean" (already
                   probabilities), "softmax" (of the mean), or "renormalise" (the mean, scaled
                   to sum 1)

Adding a mode is one `MergeMode(...)` line here plus its test; removing one is deleting its line.
The first mode is the default (the paper's: the mean of softmax probabilities).
"""

from __future__ import annotations

from dataclasses import dataclass

SOURCES = ("prob", "logit", "logprob")
OVER_CROPS = ("mean", "max")
OVER_MEMBERS = ("mean", "softmax", "renormalise")


@dataclass(frozen=True)
class MergeMode:
    name: str
    of: str
    over_crops: str
    over_members: str
    help: str  # a few words, for --help and the docs

    @property
    def statistic(self) -> str:
        """The per-group statistic this mode keeps (its name in logits.npz): e.g. prob_mean."""
        return f"{self.of}_{self.over_crops}"


MODES = (
    MergeMode("mean-prob", "prob", "mean", "mean", "mean of softmax probabilities (the paper's)"),
    MergeMode("mean-logit", "logit", "mean", "softmax", "softmax of the mean logit"),
    MergeMode("geo-mean", "logprob", "mean", "softmax", "normalised geometric mean of probabilities"),
    MergeMode("max-crop", "prob", "max", "renormalise", "max over crops, then mean over members"),
)
BY_NAME = {m.name: m for m in MODES}
MERGES = tuple(BY_NAME)  # the names, the default first
DEFAULT_MERGE = MERGES[0]
STATISTIC = {m.name: m.statistic for m in MODES}  # mode -> the statistic it keeps


def mode(name: str) -> MergeMode:
    """The mode called `name` (ValueError for an unknown one: callers check names at the config)."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown merge mode {name!r}; the modes are {list(MERGES)}") from None


def statistic_parts(statistic: str) -> tuple[str, str]:
    """(of, over_crops) of a statistic name such as prob_max."""
    of, _, over = statistic.rpartition("_")
    return of, over


def describe() -> str:
    """The modes as one help sentence: `name` (what it does), ..."""
    return "; ".join(f"{m.name}: {m.help}" for m in MODES)
