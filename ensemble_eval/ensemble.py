"""Running the members over crop batches and averaging softmax outputs on the device.

Each chunk of crops is converted to float once and reused by every member, each applying
its own mean/std. Softmax is taken per member per crop in float32 and summed per image
over every requested crop set (crop sets are nested subsets of one crop grid, so one pass
serves 1, 10 and 144 crops alike). The ensemble's prediction for a set is the mean over its
crops and over all members.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .checkpoints import Member
from .crops import CropScheme
from .data import DataError, Sample, crop_loader
from .metrics import Tally, topk_row_hits

log = logging.getLogger(__name__)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of the forward pass


@dataclass
class Runner:
    """A member placed on the device with its input convention as tensors.

    Crops arrive as 0-1 RGB floats [N, 3, S, S]; `prepare` applies the member's channel
    order, scale and mean/std; `outputs` drops leading background outputs and reorders
    the rest into the canonical class order.
    """

    model: nn.Module
    mean: torch.Tensor  # float32 [1, 3, 1, 1], in the member's input scale divided by that scale
    std: torch.Tensor  # float32 [1, 3, 1, 1], likewise
    bgr: bool
    class_offset: int
    order: torch.Tensor | None  # int64 [C]: canonical class i is output order[i]

    def logits(self, x01: torch.Tensor) -> torch.Tensor:
        x = x01[:, [2, 1, 0]] if self.bgr else x01
        logits = self.model((x - self.mean) / self.std)
        if self.class_offset:
            logits = logits[:, self.class_offset :]
        if self.order is not None:
            logits = logits[:, self.order]
        return logits


def place_members(members: list[Member], device: torch.device, channels_last: bool) -> list[Runner]:
    from .data import wnid_to_index

    runners = []
    for m in members:
        model = m.model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.eval()
        conv = m.convention
        # (x * scale - mean) / std == (x - mean / scale) / (std / scale)
        mean = torch.tensor(conv.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1) / conv.input_scale
        std = torch.tensor(conv.std, dtype=torch.float32, device=device).view(1, 3, 1, 1) / conv.input_scale
        order = None
        if conv.classes is not None:
            index = wnid_to_index()
            position = {index[w]: j for j, w in enumerate(conv.classes)}
            order = torch.tensor([position[i] for i in range(len(conv.classes))], dtype=torch.int64, device=device)
        runners.append(Runner(model, mean, std, conv.color == "BGR", conv.class_offset, order))
    return runners


@torch.inference_mode()
def member_set_sums(
    crops: torch.Tensor,
    runners: list[Runner],
    set_positions: list[list[int]],
    chunk_size: int,
    channels_last: bool = True,
    precision: str = "fp32",
) -> torch.Tensor:
    """Per member, per image, per crop set: the sum of softmax probabilities over the set's crops.

    crops: uint8 [B, K, 3, S, S] on the runners' device. set_positions: for each crop set,
    positions into the K crops. Returns float32 [M, B, num_sets, C] on the same device.
    Forward passes run on at most `chunk_size` crops at a time; every chunk is used by every
    member before the next is made. `precision` bf16/fp16 runs the forward passes under
    autocast; softmax and the sums stay float32.
    """
    autocast_dtype = PRECISIONS[precision]
    b, k = crops.shape[:2]
    flat = crops.reshape(b * k, *crops.shape[2:])
    probs: list[list[torch.Tensor]] = [[] for _ in runners]
    for start in range(0, b * k, chunk_size):
        x = flat[start : start + chunk_size].float().div_(255.0)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        for i, r in enumerate(runners):
            with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                logits = r.logits(x)
            probs[i].append(torch.softmax(logits.float(), dim=1))  # softmax and sums in float32
    out = []
    all_positions = list(range(k))
    for member_probs in probs:
        p = torch.cat(member_probs).view(b, k, -1)  # [B, K, C]
        per_set = [p.sum(dim=1) if pos == all_positions else p[:, pos].sum(dim=1) for pos in set_positions]
        out.append(torch.stack(per_set, dim=1))  # [B, num_sets, C]
    return torch.stack(out)


@dataclass(frozen=True)
class Plan:
    """What one pass computes: which crops of the grid, which sets, how images are batched.

    Batch b holds samples [b * images_per_batch, (b + 1) * images_per_batch): batch ids are
    global, so a resumed or sharded run groups every image exactly as a plain run does.
    """

    scheme: CropScheme
    set_names: tuple[str, ...]
    requested_set: str
    indices: tuple[int, ...]  # grid positions extracted per image (union of the sets)
    set_positions: tuple[tuple[int, ...], ...]  # per set: positions into `indices`
    batch_size: int  # crops per forward pass
    images_per_batch: int
    precision: str = "fp32"

    @classmethod
    def make(
        cls, scheme: CropScheme, set_names: list[str], requested_set: str, batch_size: int, precision: str = "fp32"
    ) -> Plan:
        assert requested_set in set_names
        indices = sorted({i for name in set_names for i in scheme.set_indices(name)})
        where = {idx: pos for pos, idx in enumerate(indices)}
        positions = tuple(tuple(where[i] for i in scheme.set_indices(n)) for n in set_names)
        return cls(
            scheme,
            tuple(set_names),
            requested_set,
            tuple(indices),
            positions,
            batch_size,
            max(1, batch_size // len(indices)),
            precision,
        )

    @property
    def crops_per_image(self) -> int:
        return len(self.indices)

    @property
    def crops_per_set(self) -> dict[str, int]:
        return {n: len(p) for n, p in zip(self.set_names, self.set_positions)}

    def num_batches(self, num_samples: int) -> int:
        return -(-num_samples // self.images_per_batch)


@dataclass
class BatchResult:
    """Everything one batch contributes; small enough to persist per chunk of batches."""

    batch: int  # global batch id
    indices: np.ndarray  # int64 [B], sample positions of the evaluated images
    probs: np.ndarray  # float32 [B, C], ensemble mean probabilities of the requested set
    hits: np.ndarray  # uint8 [B, M + 1, S, 2]: top-1/top-5 hit per member (then ensemble) and set
    failures: list[tuple[int, str]]  # (sample position, reason) of undecodable images


def run_batches(
    samples: list[Sample],
    batch_ids: list[int],
    plan: Plan,
    members: list[Member],
    device: torch.device,
    workers: int,
    channels_last: bool = True,
) -> Iterator[BatchResult]:
    """Evaluate the given global batches, in order, yielding one BatchResult each."""
    runners = place_members(members, device, channels_last)
    divisor = len(members) * plan.crops_per_set[plan.requested_set]
    req = plan.set_names.index(plan.requested_set)
    positions = [list(p) for p in plan.set_positions]
    loader = crop_loader(
        samples,
        plan.scheme,
        list(plan.indices),
        [list(range(b * plan.images_per_batch, min((b + 1) * plan.images_per_batch, len(samples)))) for b in batch_ids],
        workers,
        pin_memory=device.type == "cuda",
    )
    for batch_id, batch in zip(batch_ids, loader):
        if batch.indices.numel() == 0:
            yield BatchResult(
                batch_id,
                np.zeros(0, np.int64),
                np.zeros((0, members[0].num_classes), np.float32),
                np.zeros((0, len(members) + 1, len(positions), 2), np.uint8),
                batch.failures,
            )
            continue
        crops = batch.crops.to(device, non_blocking=True)
        targets = batch.targets.to(device, non_blocking=True)
        sums = member_set_sums(crops, runners, positions, plan.batch_size, channels_last, plan.precision)
        ensemble = sums.sum(dim=0)  # [B, S, C]
        scores = torch.cat([sums, ensemble[None]])  # [M + 1, B, S, C]
        hits = topk_row_hits(scores, targets.view(1, -1, 1), (1, 5))  # [M + 1, B, S, 2]
        yield BatchResult(
            batch_id,
            batch.indices.numpy(),
            (ensemble[:, req] / divisor).cpu().numpy(),
            hits.permute(1, 0, 2, 3).to(torch.uint8).cpu().numpy(),
            batch.failures,
        )


class Accumulator:
    """Integer counts, skipped images and progress figures from a stream of BatchResults."""

    def __init__(self, num_members: int, set_names: list[str] | tuple[str, ...]):
        self.set_names = list(set_names)
        self.correct = np.zeros((num_members + 1, len(self.set_names), 2), dtype=np.int64)
        self.num_images = 0
        self.skipped: list[tuple[int, str]] = []

    def add(self, result: BatchResult) -> None:
        self.add_hits(result.hits, result.failures)

    def add_hits(self, hits: np.ndarray, failures: list[tuple[int, str]]) -> None:
        """hits: uint8 [B, M + 1, S, 2] of B evaluated images; failures: (position, reason)."""
        self.correct += hits.sum(axis=0, dtype=np.int64)
        self.num_images += int(hits.shape[0])
        self.skipped.extend(failures)

    def tally(self) -> Tally:
        return Tally.from_correct(torch.from_numpy(self.correct), self.num_images, self.set_names)

    def running_errors(self, set_name: str) -> tuple[float, float]:
        if not self.num_images:
            return float("nan"), float("nan")
        top1, top5 = self.correct[-1, self.set_names.index(set_name)]
        return (self.num_images - top1) / self.num_images, (self.num_images - top5) / self.num_images


def progress_bar(total: int, enabled: bool, initial: int = 0):
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        unit="img",
        disable=not enabled,
        dynamic_ncols=True,
        desc="evaluating",
        smoothing=0.1,
    )


def show_progress(bar, acc: Accumulator, plan: Plan, num_members: int, done_here: int, start: float) -> None:
    elapsed = max(time.perf_counter() - start, 1e-9)
    top1_err, top5_err = acc.running_errors(plan.requested_set)
    bar.set_postfix(
        {
            "crops/s": f"{done_here * plan.crops_per_image * num_members / elapsed:.1f}",
            "top1_err": f"{100 * top1_err:.2f}%",
            "top5_err": f"{100 * top5_err:.2f}%",
        },
        refresh=False,
    )


@dataclass
class EvalResult:
    samples: list[Sample]  # the evaluated samples, in order (skipped ones left out)
    set_names: list[str]
    crops_per_set: dict[str, int]
    crops_per_image: int  # crops extracted and evaluated per image (union of the sets)
    tally: Tally
    probs: np.ndarray | None  # float32 [N, C] ensemble means of the requested set (None: streamed to disk)
    requested_set: str
    seconds: float
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    resumed: bool = False
    world_size: int = 1


def evaluate(
    samples: list[Sample],
    members: list[Member],
    scheme: CropScheme,
    set_names: list[str],
    requested_set: str,
    device: torch.device,
    batch_size: int,
    workers: int,
    channels_last: bool = True,
    progress: bool = True,
    strict: bool = True,
    precision: str = "fp32",
) -> EvalResult:
    """Evaluate the ensemble on `samples` for every crop set in `set_names`, in memory.

    Only the crops some set needs are extracted. `batch_size` is the number of crops per
    forward pass; a loader batch holds max(1, batch_size // K) images. Undecodable images
    raise DataError when `strict`, else they are left out and listed in `skipped`.
    """
    plan = Plan.make(scheme, set_names, requested_set, batch_size, precision)
    acc = Accumulator(len(members), set_names)
    probs = np.zeros((len(samples), members[0].num_classes), dtype=np.float32)
    evaluated = np.zeros(len(samples), dtype=bool)
    bar = progress_bar(len(samples), progress)
    start = time.perf_counter()
    try:
        for result in run_batches(
            samples, list(range(plan.num_batches(len(samples)))), plan, members, device, workers, channels_last
        ):
            if result.failures and strict:
                position, reason = result.failures[0]
                raise DataError(f"cannot decode image {samples[position].path}: {reason}", reason=reason)
            acc.add(result)
            probs[result.indices] = result.probs
            evaluated[result.indices] = True
            if progress:
                show_progress(bar, acc, plan, len(members), acc.num_images, start)
            bar.update(int(result.indices.shape[0]) + len(result.failures))
    finally:
        bar.close()
    seconds = time.perf_counter() - start
    return EvalResult(
        [s for s, ok in zip(samples, evaluated) if ok],
        list(set_names),
        plan.crops_per_set,
        plan.crops_per_image,
        acc.tally(),
        probs[evaluated],
        requested_set,
        seconds,
        [(samples[i].rel_path, reason) for i, reason in acc.skipped],
    )
