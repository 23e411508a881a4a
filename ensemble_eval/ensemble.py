"""Running the members over crop batches and averaging softmax outputs on the device.

Each chunk of crops is converted to float once and reused by every member, each applying
its own mean/std. Softmax is taken per member per crop in float32 and summed per image
over every requested crop set (crop sets are nested subsets of one crop grid, so one pass
serves 1, 10 and 144 crops alike). The ensemble's prediction for a set is the mean over its
crops and over all members.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from .config import DEFAULT_CURVE_SAMPLES, DEFAULT_SEED
from .crops import CropScheme
from .data import Sample, Views, crop_loader
from .errors import UserError
from .execution import Execution
from .members.inspection import Member
from .merge import (
    ClassRestriction,
    CropGroups,
    curve_subsets,
    group_statistics,
    merge_records,
    statistics_for,
    table_rows,
)
from .merge_modes import DEFAULT_MERGE
from .metrics import Tally, hits_from_top5
from .records import per_image_layout
from .views import Geometries

log = logging.getLogger(__name__)


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}  # autocast dtype of the forward pass


@dataclass
class Runner:
    """A member placed on the device with its input convention as tensors.

    Crops arrive as 0-1 RGB floats [N, 3, S, S]; `prepare` applies the member's channel
    order, scale and mean/std; `outputs` drops leading background outputs and reorders
    the rest into the canonical class order.
    """

    model: nn.Module | Compiled
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


def prepare_device(device: torch.device, fixed_shapes: bool) -> None:
    """CUDA settings of a run: fp32 means fp32 (no TF32 in convolutions or matmuls), and
    cudnn.benchmark (kernels tuned once per input shape) when every view has one shape;
    with views sized by their image it would tune again at every new shape."""
    if device.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.benchmark = fixed_shapes


class Compiled:
    """A member under torch.compile; a failure to compile is one line naming the way out."""

    def __init__(self, model: nn.Module):
        self.compiled = torch.compile(model)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.compiled(x)
        except Exception as exc:  # dynamo/inductor raise many types; the first line says which
            from .errors import UserError

            reason = (str(exc).strip().splitlines() or [""])[0][:200]
            raise UserError(
                f"--compile: torch.compile failed ({type(exc).__name__}: {reason}); run without --compile"
            ) from exc


def place_members(
    members: list[Member], device: torch.device, channels_last: bool, compile: bool = False
) -> list[Runner]:
    """Each member on `device`, in eval mode and the memory format, with its conventions as tensors;
    `compile`: under torch.compile (compiled at its first batch of each shape)."""
    from .data import wnid_to_index

    runners = []
    for m in members:
        model = m.model.to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        model.eval()
        if compile:
            model = Compiled(model)
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
def member_logits(
    crops: torch.Tensor | Views | list,
    runners: list[Runner],
    chunk_size: int,
    channels_last: bool = True,
    precision: str = "fp32",
    of_member: tuple[int, ...] | list[int] | None = None,
) -> torch.Tensor:
    """Every member's logits for every view, in the canonical class order.

    crops: uint8 [B, K, 3, S, S], or `Views` (groups of equal shape), on the runners' device;
    or a list of those, one per geometry, member i taking `crops[of_member[i]]` (members of
    other view sizes: view k is the same view of the image at each member's own geometry).
    Returns float32 [M, B, K, C] on the same device. Forward passes run on at most
    `chunk_size` crops at a time (views larger than S x S: as many as fit in the pixels of
    `chunk_size` crops, at least one); every chunk is used by every member of its geometry
    before the next is made. `precision` bf16/fp16 runs the forward passes under autocast; the
    logits are returned (and softmax later taken) in float32.
    """
    if isinstance(crops, list):
        assert of_member is not None and len(of_member) == len(runners)
        out: torch.Tensor | None = None
        for g, views in enumerate(crops):
            mine = [i for i, j in enumerate(of_member) if j == g]
            if not mine:
                continue
            part = member_logits(views, [runners[i] for i in mine], chunk_size, channels_last, precision)
            if out is None:
                out = part.new_empty((len(runners), *part.shape[1:]))
            out[mine] = part
        return out
    if isinstance(crops, torch.Tensor):
        b, k = crops.shape[:2]
        chunks = _chunks(crops.reshape(b * k, *crops.shape[2:]), chunk_size, channels_last)
        logits: list[list[torch.Tensor]] = [[] for _ in runners]
        for x in chunks:
            for i, r in enumerate(runners):
                logits[i].append(forward(r, x, precision))
        return torch.stack([torch.cat(per_member).view(b, k, -1) for per_member in logits])
    b, k = crops.num_images, crops.per_image
    out = None
    for views, where in crops.groups:
        h, w = views.shape[-2:]
        per_pass = max(1, chunk_size * crops.crop_size**2 // (h * w))
        for start, x in zip(range(0, len(views), per_pass), _chunks(views, per_pass, channels_last)):
            rows = where[start : start + per_pass].to(views.device)
            for i, r in enumerate(runners):
                y = forward(r, x, precision)
                if out is None:
                    out = torch.empty((len(runners), b * k, y.shape[-1]), dtype=torch.float32, device=y.device)
                out[i, rows] = y
    return out.view(len(runners), b, k, -1)


def _chunks(flat: torch.Tensor, size: int, channels_last: bool) -> Iterator[torch.Tensor]:
    """Consecutive pieces of at most `size` uint8 views as 0-1 floats, converted once for every member."""
    for start in range(0, len(flat), size):
        x = flat[start : start + size].float().div_(255.0)
        yield x.contiguous(memory_format=torch.channels_last) if channels_last else x


def forward(runner: Runner, x: torch.Tensor, precision: str) -> torch.Tensor:
    """One member's logits for a float batch, under `precision`'s autocast; float32."""
    dtype = PRECISIONS[precision]
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        return runner.logits(x).float()


@dataclass(frozen=True)
class Plan:
    """What one pass computes: which crops of the grid, which sets, merges and member subsets.

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
    merges: tuple[str, ...] = (DEFAULT_MERGE,)  # the first is the reported one
    subsets: tuple[tuple[int, ...], ...] = ((0,),)  # member subsets: singletons, all, then the curve's
    save_statistics: bool = False  # keep float16 group statistics per image (--save-logits)
    geometries: Geometries | None = None  # each member's view and scaled scheme (given None: all on `scheme`)
    classes: tuple[int, ...] | None = None  # the prediction restricted to these classes (None: every output)

    def __post_init__(self) -> None:
        if self.geometries is None:  # every member on the scheme as it is
            object.__setattr__(self, "geometries", Geometries.single(self.scheme, self.num_members))

    @classmethod
    def make(
        cls,
        scheme: CropScheme,
        set_names: list[str],
        requested_set: str,
        batch_size: int,
        *,
        precision: str = "fp32",
        num_members: int = 1,
        merges: tuple[str, ...] = (DEFAULT_MERGE,),
        curve_samples: int = DEFAULT_CURVE_SAMPLES,
        seed: int = DEFAULT_SEED,
        save_statistics: bool = False,
        geometries: Geometries | None = None,
        classes: tuple[int, ...] | None = None,
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
            tuple(merges),
            tuple(curve_subsets(num_members, curve_samples, seed)),
            save_statistics,
            geometries,
            None if classes is None else tuple(classes),
        )

    @property
    def crops_per_image(self) -> int:
        return len(self.indices)

    @property
    def crops_per_set(self) -> dict[str, int]:
        return {n: len(p) for n, p in zip(self.set_names, self.set_positions)}

    @property
    def groups(self) -> CropGroups:
        return CropGroups.from_sets(self.set_positions)

    @property
    def num_members(self) -> int:
        return max(len(u) for u in self.subsets)

    @property
    def rows(self) -> list[int]:
        """Subset ids of the per-image rows: each member alone, then all members."""
        return table_rows(self.subsets)

    @property
    def loader_schemes(self) -> CropScheme | list[CropScheme]:
        """What the loader extracts per image: one scheme, or one per geometry."""
        schemes = self.geometries.schemes
        return schemes[0] if len(schemes) == 1 else list(schemes)

    def num_batches(self, num_samples: int) -> int:
        return -(-num_samples // self.images_per_batch)


@dataclass
class BatchResult:
    """Everything one batch contributes; small enough to persist per chunk of batches.

    Rows are the members, then the whole ensemble; R is the number of merge modes computed.
    """

    batch: int  # global batch id
    indices: np.ndarray  # int64 [B], sample positions of the evaluated images
    probs: np.ndarray  # float32 [B, C], ensemble probabilities of the requested set and first merge
    hits: np.ndarray  # uint8 [B, M + 1, S, 2]: top-1/top-5 hit per row and set (first merge)
    failures: list[tuple[int, str]]  # (sample position, reason) of undecodable images
    top5: np.ndarray | None = None  # int16 [B, M + 1, S, R, 5]: the five best classes, best first
    target_prob: np.ndarray | None = None  # float32 [B, M + 1, S, R]: probability of the true class
    confidence: np.ndarray | None = None  # float32 [B, M + 1, S, R]: the highest probability
    subset_correct: np.ndarray | None = None  # int64 [U, S, R, 2]: top-1/top-5 correct per member subset
    statistics: dict[str, np.ndarray] = field(default_factory=dict)  # float16 [B, M, G, C] per statistic
    files: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # int64 [B, 3]: size, mtime, digest
    failure_files: np.ndarray = field(default_factory=lambda: np.zeros((0, 3), np.int64))  # int64 [F, 3], likewise
    problem: str | None = None  # set (and nothing else) when a member's outputs were not finite: the batch is unusable


class NonFiniteOutputs(UserError):
    """A member gave NaN or infinite outputs: no number computed from them would be right."""


def nonfinite_problem(
    logits: torch.Tensor, statistics: dict[str, torch.Tensor], names: list[str], paths: list[str], views: list[str]
) -> str | None:
    """None when every logit and every per-group statistic is finite; else a line naming the first
    member, image and view where they are not.

    logits: float32 [M, B, K, C]; statistics: {name: float32 [M, B, G, C]}; names: M member names;
    paths: B image paths; views: K view names, or per member its K view names (members of other
    view sizes: their own scales)."""
    checks = [torch.isfinite(t).all() for t in (logits, *statistics.values())]
    if bool(torch.stack(checks).all()):  # one device sync per batch
        return None
    bad = ~torch.isfinite(logits).all(dim=-1)  # [M, B, K]
    where = "view"
    if not bool(bad.any()):  # finite logits whose averages overflow (|logit| near the float32 limit)
        bad = torch.stack([~torch.isfinite(s).all(dim=-1).any(dim=-1) for s in statistics.values()]).any(0)
        bad, where = bad[..., None], "average over its crops"
    m, b, k = (int(i) for i in bad.nonzero()[0])
    value = "NaN" if bool(torch.isnan(logits[m, b, k]).any()) else "infinite values"
    own = views[m] if views and isinstance(views[0], list) else views
    view = f"view {own[k]}" if where == "view" else where
    return (
        f"member {names[m]} gives {value} on {paths[b]} ({view}); no result is computed from it: check the "
        "member with `ensemble-eval validate --data`, its input convention (mean, std, input_scale) or --precision"
    )


FLOAT16_MAX = 65504.0


def empty_result(
    batch_id: int,
    plan: Plan,
    num_classes: int,
    failures: list[tuple[int, str]],
    failure_files: np.ndarray | None = None,
) -> BatchResult:
    empty = {f: np.zeros((0, *shape), dtype) for f, (dtype, shape) in per_image_layout(plan, num_classes).items()}
    counts = np.zeros((len(plan.subsets), len(plan.set_names), len(plan.merges), 2), np.int64)
    statistics = {f.removeprefix("stat_"): a for f, a in empty.items() if f.startswith("stat_")}
    per_image = {f: a for f, a in empty.items() if not f.startswith("stat_")}
    if failure_files is None:
        failure_files = np.zeros((0, 3), np.int64)
    return BatchResult(
        batch_id,
        np.zeros(0, np.int64),
        failures=failures,
        subset_correct=counts,
        statistics=statistics,
        failure_files=failure_files,
        **per_image,
    )


def run_batches(
    samples: list[Sample], batch_ids: list[int], plan: Plan, members: list[Member], execution: Execution
) -> Iterator[BatchResult]:
    """Evaluate the given global batches, in order, yielding one BatchResult each."""
    device, channels_last = execution.device, execution.channels_last
    prepare_device(device, not plan.scheme.uncropped(list(plan.indices)))
    runners = place_members(members, device, channels_last, execution.compile)
    groups = plan.groups
    names = statistics_for(plan.merges)
    member_names = [m.name for m in members]
    geometries = plan.geometries
    keys_of = [scheme.keys() for scheme in geometries.schemes]
    names_of = [["/".join(map(str, keys[i].as_tuple())) for i in plan.indices] for keys in keys_of]
    view_names = [names_of[g] for g in geometries.of_member]  # each member's views at its own scales
    num_classes = members[0].num_classes
    restriction = None if plan.classes is None else ClassRestriction(plan.classes, num_classes, device)
    loader = crop_loader(
        samples,
        plan.loader_schemes,
        list(plan.indices),
        [list(range(b * plan.images_per_batch, min((b + 1) * plan.images_per_batch, len(samples)))) for b in batch_ids],
        execution.workers,
        pin_memory=device.type == "cuda",
        backend=geometries.backend,
    )
    for batch_id, (batch, crops, targets) in zip(batch_ids, on_device(loader, device)):
        if batch.indices.numel() == 0:
            yield empty_result(batch_id, plan, num_classes, batch.failures, batch.failure_files.numpy())
            continue
        with torch.inference_mode():
            logits = member_logits(
                crops, runners, plan.batch_size, channels_last, plan.precision, geometries.of_member
            )  # [M, B, K, C]
            if restriction is not None:  # before any softmax: every merge is over these classes alone
                logits, targets = restriction.logits(logits), restriction.targets(targets)
            statistics = group_statistics(logits, groups, names)  # {name: [M, B, G, C]}
            paths = [samples[i].rel_path for i in batch.indices.tolist()]
            problem = nonfinite_problem(logits, statistics, member_names, paths, view_names)
            if problem is None:
                records, subset_correct, requested = merge_records(
                    statistics, targets, groups, plan.subsets, plan.merges, plan.set_names.index(plan.requested_set)
                )
                if restriction is not None:
                    records, requested = restriction.records(records, requested)
        if problem is not None:
            yield replace(empty_result(batch_id, plan, num_classes, []), problem=problem)
            continue
        hits = hits_from_top5(records["top5"][..., 0, :], batch.targets.numpy())  # first merge
        saved = {}
        if plan.save_statistics:
            saved = {
                name: stat.clamp(-FLOAT16_MAX, FLOAT16_MAX).permute(1, 0, 2, 3).to(torch.float16).cpu().numpy()
                for name, stat in statistics.items()
            }
        yield BatchResult(
            batch_id,
            batch.indices.numpy(),
            requested,
            hits.astype(np.uint8),
            batch.failures,
            records["top5"],
            records["target_prob"],
            records["confidence"],
            subset_correct,
            saved,
            batch.files.numpy(),
            batch.failure_files.numpy(),
        )


def on_device(loader, device: torch.device) -> Iterator[tuple]:
    """(batch, its views on `device`, its targets on `device`) for each loader batch.

    On CUDA the next batch's copy (from pinned memory) is issued on a side stream before the
    current batch is handed out, so it overlaps the current batch's forward passes; the
    compute stream waits for the copy, and the caching allocator is told the tensors are used
    there (record_stream) so their memory is not reused too early.
    """
    if device.type != "cuda":
        for batch in loader:
            yield batch, _to(batch.crops, device), batch.targets.to(device)
        return
    copy_stream = torch.cuda.Stream(device)

    def issue(batch):
        with torch.cuda.stream(copy_stream):
            return batch, _to(batch.crops, device, True), batch.targets.to(device, non_blocking=True)

    batches = iter(loader)
    first = next(batches, None)
    upcoming = None if first is None else issue(first)
    while upcoming is not None:
        batch, crops, targets = upcoming
        compute = torch.cuda.current_stream(device)
        compute.wait_stream(copy_stream)
        for t in (*_tensors(crops), targets):
            t.record_stream(compute)
        following = next(batches, None)
        upcoming = None if following is None else issue(following)
        yield batch, crops, targets


def _to(crops: torch.Tensor | Views | list, device: torch.device, non_blocking: bool = False):
    if isinstance(crops, list):
        return [c.to(device, non_blocking=non_blocking) for c in crops]
    return crops.to(device, non_blocking=non_blocking)


def _tensors(crops: torch.Tensor | Views | list) -> list[torch.Tensor]:
    if isinstance(crops, list):
        return [t for c in crops for t in _tensors(c)]
    return [v for v, _ in crops.groups] if isinstance(crops, Views) else [crops]


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
    merges: tuple[str, ...] = (DEFAULT_MERGE,)
    sessions: int = 1  # sessions of a resumed run (seconds covers them all)

    @property
    def num_images(self) -> int:
        return self.tally.ensemble[self.requested_set].num_images
