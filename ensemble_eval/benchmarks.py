"""The evaluation sets researchers report beside ImageNet val, as facts the tool needs about them.

- Class subsets: ImageNet-A and ImageNet-R hold 200 of the 1,000 classes each, and both
  datasets' published protocols restrict the prediction to those 200 classes. Their WordNet
  ids are package data (`classes/benchmark_subsets.tsv`, the lists published with the
  datasets: github.com/hendrycks/natural-adv-examples and github.com/hendrycks/imagenet-r).
  `resolve_class_subset` turns `--class-subset auto|all|FILE` and the data's classes into the
  classes the prediction is restricted to (`ClassSubset`), or None (every output).
- ImageNet-C (Hendrycks & Dietterich, "Benchmarking Neural Network Robustness to Common
  Corruptions and Perturbations", ICLR 2019): the 15 corruptions of the mean corruption error,
  the 4 extra ones, AlexNet's top-1 errors on each (averaged over severities 1-5, as published
  with the dataset's code: github.com/hendrycks/robustness) and its clean error, and the
  arithmetic of CE, mCE, relative CE and relative mCE (`corruption_errors`).

Standard library only: the command line resolves the subset before torch is imported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

from .errors import short_repr
from .fileio import read_text

AUTO, ALL = "auto", "all"
MAX_SUBSET_FILE_BYTES = 1024 * 1024

# AlexNet's top-1 error (fraction) on each ImageNet-C corruption, the mean over severities 1-5;
# the denominators of the corruption error. In the order of the paper's tables.
ALEXNET_ERRORS = {
    "gaussian_noise": 0.886428,
    "shot_noise": 0.894468,
    "impulse_noise": 0.922640,
    "defocus_blur": 0.819880,
    "glass_blur": 0.826268,
    "motion_blur": 0.785948,
    "zoom_blur": 0.798360,
    "snow": 0.866816,
    "frost": 0.826572,
    "fog": 0.819324,
    "brightness": 0.564592,
    "contrast": 0.853204,
    "elastic_transform": 0.646056,
    "pixelate": 0.717840,
    "jpeg_compression": 0.606500,
}
# AlexNet's clean ImageNet val top-1 error, as the paper's Table 1 gives it (43.5%, one decimal):
# the baseline of the relative mCE.
ALEXNET_CLEAN_ERROR = 0.435
# Corruptions published with ImageNet-C for validation, outside the mCE.
EXTRA_CORRUPTIONS = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
SEVERITIES = (1, 2, 3, 4, 5)


class SubsetError(ValueError):
    """--class-subset cannot be used as given; the message says why and what to do."""


@dataclass(frozen=True)
class ClassSubset:
    """The classes (canonical ImageNet-1k indices, ascending) the prediction is restricted to."""

    name: str  # 'ImageNet-R', or the file it was read from
    indices: tuple[int, ...]

    def describe(self) -> str:
        return f"{self.name}'s {len(self.indices)} classes"

    def to_dict(self) -> dict:
        return {"name": self.name, "num_classes": len(self.indices), "indices": list(self.indices)}


@lru_cache(maxsize=1)
def known_subsets() -> dict[str, tuple[str, ...]]:
    """{benchmark: its wnids, sorted} for the benchmarks whose protocol restricts the prediction."""
    text = resources.files("ensemble_eval.classes").joinpath("benchmark_subsets.tsv").read_text()
    out: dict[str, list[str]] = {}
    for line in text.splitlines()[1:]:
        if line.strip():
            name, wnid = line.split("\t")
            out.setdefault(name, []).append(wnid)
    return {name: tuple(sorted(w)) for name, w in out.items()}


def _canonical():
    from .listing import wnid_to_index

    return wnid_to_index()


def known_subset_of(wnids: set[str]) -> str | None:
    """The benchmark whose classes are exactly `wnids`, or None."""
    return next((name for name, ws in known_subsets().items() if set(ws) == wnids), None)


def _read_subset_file(path: str) -> tuple[int, ...]:
    """Class indices from a file: one ImageNet-1k WordNet id or class index per line ('#' comments)."""
    text = read_text(
        path, MAX_SUBSET_FILE_BYTES, "--class-subset", "give a text file of WordNet ids, one per line", SubsetError
    )
    mapping = _canonical()
    found: set[int] = set()
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if line in mapping:
            found.add(mapping[line])
        elif re.fullmatch(r"[0-9]{1,4}", line) and int(line) < len(mapping):
            found.add(int(line))
        else:
            raise SubsetError(
                f"--class-subset {path} line {number}: {short_repr(line[:60])} is neither an ImageNet-1k WordNet id "
                f"nor a class index 0-{len(mapping) - 1}; fix that line"
            )
    if not found:
        raise SubsetError(f"--class-subset {path} names no class; list one WordNet id per line")
    return tuple(sorted(found))


def resolve_class_subset(option: str, samples) -> ClassSubset | None:
    """The classes the prediction is restricted to, or None (every output).

    option: 'all' (every output), 'auto' (restrict when the data's classes are exactly a known
    benchmark's: ImageNet-A's or ImageNet-R's 200), or a file of WordNet ids / class indices.
    samples: the listing's samples (their wnid set when labelled in the ImageNet-1k space).
    SubsetError when a file cannot be read, or does not hold every class of the data."""
    if option == ALL:
        return None
    labelled = [s for s in samples if s.wnid is not None]
    if option == AUTO:
        if not labelled or len(labelled) != len(samples):
            return None
        name = known_subset_of({s.wnid for s in samples})
        if name is None:
            return None
        mapping = _canonical()
        return ClassSubset(name, tuple(sorted(mapping[w] for w in known_subsets()[name])))
    if len(labelled) != len(samples):
        raise SubsetError(
            "--class-subset FILE restricts ImageNet-1k classes, but --data is labelled with class indices of "
            "another class space; drop --class-subset"
        )
    indices = _read_subset_file(option)
    chosen = set(indices)
    outside = sorted({s.target for s in samples} - chosen)
    if outside:
        example = next(s for s in samples if s.target == outside[0])
        raise SubsetError(
            f"--class-subset {option} leaves out {len(outside)} class(es) of --data, e.g. {example.wnid} "
            f"({example.rel_path}); add them to the file, or use --class-subset all"
        )
    if len(chosen) == len(_canonical()):
        return None  # every class: nothing to restrict
    return ClassSubset(str(Path(option)), indices)


# --- ImageNet-C ------------------------------------------------------------------------------


def corruption_errors(errors: dict[str, dict[int, float]], clean_error: float | None = None) -> dict:
    """Each corruption's mean error over its severities, CE per corruption, mCE and (given the
    clean top-1 error) relative CE and relative mCE.

    errors: {corruption: {severity: top-1 error (fraction)}} of one setting.
    CE_c = sum_s E_s,c / sum_s E_s,c(AlexNet); with AlexNet's published per-corruption means,
    that is mean_s E_s,c / mean(AlexNet, c) when all five severities are present. With fewer, the
    mean over the severities present is used and the result is marked partial (not comparable to
    published figures). Relative CE_c = sum_s (E_s,c - E_clean) / sum_s (E_s,c(AlexNet) - E_clean(AlexNet)).
    mCE and relative mCE: the mean over the corruptions of the 15 that are present.
    """
    ce, relative = {}, {}
    means = {name: sum(e.values()) / len(e) for name, e in errors.items() if e}
    for name, mean in means.items():
        if name not in ALEXNET_ERRORS:
            continue
        ce[name] = mean / ALEXNET_ERRORS[name]
        if clean_error is not None:
            relative[name] = (mean - clean_error) / (ALEXNET_ERRORS[name] - ALEXNET_CLEAN_ERROR)
    complete = set(ce) == set(ALEXNET_ERRORS) and all(set(errors[c]) == set(SEVERITIES) for c in ALEXNET_ERRORS)
    out = {
        "mean_error": means,
        "ce": ce,
        "mce": sum(ce.values()) / len(ce) if ce else None,
        "corruptions_in_mce": len(ce),
        "complete": complete,
    }
    if clean_error is not None:
        out["relative_ce"] = relative
        out["relative_mce"] = sum(relative.values()) / len(relative) if relative else None
        out["clean_error"] = clean_error
    return out


def corruption_and_severity(group: str) -> tuple[str, int]:
    """('fog', 3) of a sample group 'fog/3'."""
    name, _, severity = group.rpartition("/")
    return name, int(severity)
