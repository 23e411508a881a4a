"""`--batch-size auto` (the default): the forward batch chosen by timing, cached per machine.

The best number of crops per forward pass depends on the machine (caches, cores, the GPU)
and on the members, so it is measured: every candidate size runs the members over the same
real crops of the run's first images, in interleaved rounds (so a slow spell of a shared
machine hits every candidate alike), and the fastest rate wins. The choice is cached in
`<cache dir>/batch-sizes-v1.json`, keyed by the machine (device, thread count, torch
version), the members' architectures, the view size, precision and memory format, so the
next run on the same machine starts at once. Delete that file to measure again.

Runs too small for the timing to pay (fewer than `MIN_TIMED_RUN` times the crops the
timing itself costs) take the device's default. A resumed run keeps the batch size it
started with: the batch size decides how images are grouped into batches, and so which
batches are already done. Results do not depend on the choice beyond float rounding: a
batch of crops computes each crop on its own.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from .environment import cpu_model
from .fileio import FileTooLarge, NotRegularFile, read_regular_file, write_json

CANDIDATES = {"cpu": (4, 8, 16, 32, 64), "cuda": (32, 64, 128, 256, 512, 1024)}
ROUNDS = 2  # interleaved timing rounds; each candidate's best round counts
MIN_TIMED_RUN = 50  # time only runs with at least this many times the timing's own crop passes
CACHE_NAME = "batch-sizes-v1.json"
MAX_CACHE_BYTES = 4 * 1024 * 1024  # thousands of entries; a larger file is ignored, then rewritten
_warned: set[str] = set()


@dataclass
class Choice:
    """The forward batch of a run and how it was decided (written to summary.json)."""

    batch_size: int
    source: str  # "given" (--batch-size N), "timed", "cache", "default", "resumed"
    crops_per_s: float | None = None  # the chosen size's rate: crops x members per second
    tried: dict[int, float] = field(default_factory=dict)  # batch size -> crops/s (timed or cached)
    note: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["tried"] = {str(b): round(r, 1) for b, r in self.tried.items()}
        d["crops_per_s"] = None if self.crops_per_s is None else round(self.crops_per_s, 1)
        return d

    def describe(self) -> str:
        """One line for the log."""
        rates = ", ".join(f"{b}: {r:.0f}" for b, r in sorted(self.tried.items()))
        measured = f"; forward passes/s at each size {rates}" if rates else ""
        return f"batch size {self.batch_size} crops per forward pass ({self.note}{measured})"


def machine_key(device: torch.device) -> dict:
    """What the speed of a batch size depends on, besides the members."""
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        capability = "".join(map(str, torch.cuda.get_device_capability(index)))
        name = f"{torch.cuda.get_device_name(index)} sm{capability} cudnn {torch.backends.cudnn.version()}"
    else:
        name = f"{cpu_model()} x{os.cpu_count()}"
    return {"device": f"{device.type}: {name}", "threads": torch.get_num_threads(), "torch": torch.__version__}


def cache_key(
    members, device: torch.device, crop_size: int | list[int], uncropped: bool, precision: str, channels_last: bool
) -> str:
    """The cache entry's key: the machine, every member's architecture (programs, whose
    architecture the file does not name, by their hash), the views and the arithmetic."""
    from .programs import PROGRAM_KINDS

    models = [
        f"{m.arch.name}:{m.sha256[:16]}" if m.arch.name in PROGRAM_KINDS or m.fmt.startswith("pickle") else m.arch.name
        for m in members
    ]
    key = machine_key(device) | {
        "members": models,
        "view": [crop_size, "uncropped" if uncropped else "crops"],
        "precision": precision,
        "channels_last": channels_last,
    }
    return json.dumps(key, sort_keys=True)


def cache_file() -> Path:
    from .signatures import cache_dir

    return cache_dir() / CACHE_NAME


def _warn_once(text: str) -> None:
    if text not in _warned:
        _warned.add(text)
        print(f"ensemble-eval: warning: {text}", file=sys.stderr)


def _no_constant(name: str):
    raise ValueError(f"{name} is not strict JSON")


def read_cache() -> dict:
    """The cache's entries; a missing or damaged file is an empty cache (it is only a cache).

    Only a regular file of at most MAX_CACHE_BYTES is read: a FIFO at the path would hang the
    reader, a directory or device has no JSON in it; those are an empty cache too, with one
    warning line (the next write replaces a FIFO or an oversized file)."""
    path = cache_file()
    try:
        raw = read_regular_file(path, MAX_CACHE_BYTES)
    except (NotRegularFile, FileTooLarge) as exc:
        _warn_once(f"ignoring the batch-size cache: {exc}; batch sizes are timed again")
        return {}
    except OSError:  # missing, or a directory above it is not one
        return {}
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return {}
    return data if isinstance(data, dict) else {}


def write_cache(key: str, choice: Choice) -> bool:
    """Add one entry (atomically, strict JSON); False when the cache directory cannot be written."""
    entries = read_cache()
    entries[key] = {
        "batch_size": choice.batch_size,
        "crops_per_s": choice.crops_per_s,
        "tried": {str(b): r for b, r in choice.tried.items()},
        "measured": time.strftime("%Y-%m-%d", time.gmtime()),
    }
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json(path, entries, indent=1, sort_keys=True)
    except (OSError, ValueError):
        return False
    return True


def _rate_ok(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value) and value > 0


def cached_choice(key: str, candidates: tuple[int, ...]) -> Choice | None:
    """The cached choice for `key`, or None (time again) unless every field of the entry is
    sound: a batch size within the range of the device's `candidates`, the rates finite and
    positive, the sizes timed within that range too. An entry edited by hand, damaged, or
    written for other candidates is not trusted: one loader batch of a billion crops would
    hold the whole data set."""
    entry = read_cache().get(key)
    low, high = min(candidates), max(candidates)
    if not isinstance(entry, dict):
        return None
    size, rate, tried, when = (entry.get(k) for k in ("batch_size", "crops_per_s", "tried", "measured"))
    tried = {} if tried is None else tried
    when = "?" if when is None else when
    if (
        type(size) is not int
        or not low <= size <= high
        or not (rate is None or _rate_ok(rate))
        or not isinstance(tried, dict)
        or len(tried) > 4 * len(candidates)
        or not all(
            isinstance(b, str) and b.isdigit() and len(b) <= 6 and low <= int(b) <= high and _rate_ok(r)
            for b, r in tried.items()
        )
        or not (isinstance(when, str) and 0 < len(when) <= 40)
    ):
        return None
    rates = {int(b): float(r) for b, r in tried.items()}
    rate = None if rate is None else float(rate)
    return Choice(size, "cache", rate, rates, f"auto: timed on {when}, cached in {cache_file()}")


def timing_crops(batch, count: int) -> list[torch.Tensor] | None:
    """Per geometry of the batch (one, or one per member view size), `count` real uint8 crops
    [count, 3, S, S] (views larger than S x S give their centre S x S), repeated when the batch
    holds fewer; None when it holds none."""
    per = [_repeated_crops(c, count) for c in (batch.crops if isinstance(batch.crops, list) else [batch.crops])]
    return None if any(p is None for p in per) else per


def _repeated_crops(crops, count: int) -> torch.Tensor | None:
    from .data import Views

    if isinstance(crops, Views):
        s = crops.crop_size
        pieces = []
        for views, _ in crops.groups:
            h, w = views.shape[-2:]
            top, left = (h - s) // 2, (w - s) // 2
            pieces.append(views[..., top : top + s, left : left + s])
        flat = torch.cat(pieces) if pieces else None
    else:
        flat = crops.reshape(-1, *crops.shape[2:]) if crops.numel() else None
    if flat is None or not len(flat):
        return None
    repeats = math.ceil(count / len(flat))
    return flat.repeat(repeats, 1, 1, 1)[:count].contiguous()


def measure(
    crops: list[torch.Tensor],
    runners,
    candidates: tuple[int, ...],
    channels_last: bool,
    precision: str,
    rounds: int = ROUNDS,
    of_member: tuple[int, ...] | None = None,
) -> dict[int, float]:
    """Forward passes per second (crops x members, as the progress bar counts them) of every
    candidate forward batch over the same `crops`.

    Each candidate is warmed up once (cudnn picks its kernels then) and timed once, smallest
    first; the search stops growing once two sizes in a row fall below 80% of the best rate,
    or at the first size that runs out of GPU memory (larger ones would too). Then the sizes
    within 85% of the best run `rounds - 1` more interleaved rounds, each keeping its fastest.
    crops: one [N, 3, S, S] per geometry, member i running on `crops[of_member[i]]` (default:
    every member on the first).
    """
    of_member = tuple(of_member) if of_member is not None else (0,) * len(runners)
    sync = torch.cuda.synchronize if crops[0].device.type == "cuda" else (lambda: None)
    best: dict[int, float] = {}
    worse_in_a_row = 0
    for b in sorted(candidates):
        try:
            _rate([c[:b] for c in crops], runners, b, channels_last, precision, sync, of_member)  # warm-up
            best[b] = _rate(crops, runners, b, channels_last, precision, sync, of_member)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            break
        worse_in_a_row = worse_in_a_row + 1 if best[b] < 0.8 * max(best.values()) else 0
        if worse_in_a_row == 2:
            break
    if not best:
        return best
    close = [b for b, r in best.items() if r >= 0.85 * max(best.values())]
    for _ in range(rounds - 1):
        for b in close:
            best[b] = max(best[b], _rate(crops, runners, b, channels_last, precision, sync, of_member))
    return best


def _rate(crops: list[torch.Tensor], runners, b, channels_last, precision, sync, of_member) -> float:
    from .ensemble import member_logits

    start = time.perf_counter()
    member_logits([c[None] for c in crops], runners, b, channels_last, precision, of_member)
    sync()
    return len(crops[0]) * len(runners) / max(time.perf_counter() - start, 1e-9)


@dataclass(frozen=True)
class Workload:
    """What a forward batch is chosen for: the views `indices` of `scheme` (each member on its own
    geometry, views.Geometries; None: all on `scheme`), on `device`, in `precision`, in the
    channels_last memory format or not."""

    scheme: Any
    indices: list[int]
    device: torch.device
    channels_last: bool = True
    precision: str = "fp32"
    geometries: Any = None


def choose(
    requested: int | str,
    members,
    samples,
    work: Workload,
    default: int,
    *,
    recorded: int | None = None,
    min_timed_run: int | None = None,
    use_cache: bool = True,
) -> Choice:
    """The run's forward batch: `requested` when it is a number; else the size `recorded` by
    the run being resumed; else the cached, or newly timed, best size; else `default`.
    `use_cache` False: time afresh and leave the cache alone (the benchmark)."""
    if requested != "auto":
        return Choice(int(requested), "given", note="--batch-size")
    if recorded is not None:
        return Choice(recorded, "resumed", note="the size this run started with")
    candidates = CANDIDATES.get(work.device.type, CANDIDATES["cpu"])
    geo, scheme = work.geometries, work.scheme
    sizes = [g.crop_size for g in geo.schemes] if geo else [scheme.crop_size]
    view_size = sizes[0] if len(sizes) == 1 else [sizes[g] for g in geo.of_member]
    uncropped = scheme.uncropped(work.indices)
    key = cache_key(members, work.device, view_size, uncropped, work.precision, work.channels_last)
    found = cached_choice(key, candidates) if use_cache else None
    if found is not None:
        return found
    timing_cost = max(candidates) * len(candidates) * ROUNDS
    min_timed_run = MIN_TIMED_RUN if min_timed_run is None else min_timed_run
    if len(samples) * len(work.indices) < min_timed_run * timing_cost:
        return Choice(default, "default", note="auto: the default, the run is too small for timing to pay off")
    choice = _timed(members, samples, work, candidates, default)
    if choice.source == "timed" and use_cache:
        where = cache_file()
        if write_cache(key, choice):
            choice.note += f", cached in {where}"
        else:
            print(
                f"ensemble-eval: cannot write the batch-size cache {where}; the next run times again", file=sys.stderr
            )
    return choice


def _timed(members, samples, work: Workload, candidates: tuple[int, ...], default: int) -> Choice:
    """The fastest of `candidates`, timed on the first images' crops; `default` when they cannot be."""
    geo, count = work.geometries, max(candidates)
    backend = geo.backend if geo else "tensor"
    crops = _first_crops(samples, list(geo.schemes) if geo else work.scheme, work.indices, count, backend)
    if crops is None:
        return Choice(default, "default", note="auto: the default, the first images could not be decoded for timing")
    from .ensemble import place_members, prepare_device

    prepare_device(work.device, not work.scheme.uncropped(work.indices))
    runners = place_members(members, work.device, work.channels_last)
    of_member = geo.of_member if geo else None
    on_device = [c.to(work.device) for c in crops]
    rates = measure(on_device, runners, candidates, work.channels_last, work.precision, of_member=of_member)
    if not rates:
        return Choice(default, "default", note=f"auto: the default, even {min(candidates)} crops ran out of GPU memory")
    size = max(rates, key=rates.get)
    return Choice(size, "timed", rates[size], rates, f"auto: timed on the first {count} crops")


def _first_crops(samples, scheme, indices: list[int], count: int, backend: str = "tensor"):
    """Per geometry (`scheme`: one, or a list), `count` crops of the first images (two spare
    ones for undecodable images), as the run extracts them."""
    from .data import crop_loader

    need = max(1, math.ceil(count / len(indices)))
    positions = list(range(min(len(samples), need + 2)))
    loader = crop_loader(samples, scheme, indices, [positions], workers=0, backend=backend)
    batch = next(iter(loader))
    return timing_crops(batch, count)
