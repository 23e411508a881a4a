"""The per-image arrays of a run: their layout, the chunks of a run in progress, the result files.

    RUN_DIR/progress/chunk-00000012.npz   finished batches: ids, sample positions, the per-image
                                          arrays of PER_IMAGE_FIELDS, undecodable images
    RUN_DIR/predictions.npz               every evaluated image in sample order (see assemble)
    RUN_DIR/logits.npz                    --save-logits: float16 group statistics per member

This module is the one place that knows which arrays exist, their dtypes and shapes
(per_image_layout, CHUNK_ARRAYS, RECORD_FIELDS), how a chunk is written and checked, how the
result files are streamed from the chunks, and how they are read back (load_records,
read_predictions, open_logits). Which chunks belong to a run, and resuming, are runstate's.

Every file is written to a temporary name and renamed (a kill leaves only whole files). The
result files are streamed chunk by chunk: memory does not grow with the number of images
beyond the records the analysis needs (top5, target_prob, confidence), which assemble hands on
in memory, so a finished run never reads predictions.npz back.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .errors import UserError
from .fileio import atomic_path
from .rundir import PROGRESS_DIR


class ResumeError(UserError):
    """A run directory that cannot be resumed (or must be resumed); the message says why."""


class RunDirError(UserError):
    """A run directory (or one of its files) that cannot be read back."""


# ---------------------------------------------------------------------------------------------
# The layout

PER_IMAGE_FIELDS = ("probs", "hits", "top5", "target_prob", "confidence")  # BatchResult arrays with an image axis
CHUNK_ARRAYS = ("batches", "indices", "skipped_indices", "skipped_reasons", "subset_correct", "files", "skipped_files")
RECORD_FIELDS = ("paths", "targets", "member_names", "set_names", "crops_per_set", "merges", "top5")
RECORD_FIELDS += ("target_prob", "confidence", "subsets", "subset_correct")
STREAMED_RECORDS = ("top5", "target_prob", "confidence")  # per-image records handed on in memory


PREDICTIONS_ARRAYS = (  # (name, dtype [shape], what it is): predictions.npz, for docs/output-files.md
    ("paths", "str `[N]`", "image paths relative to `--data`, in evaluation order"),
    ("targets", "int64 `[N]`", "class indices"),
    ("member_names", "str `[M]`", "the members"),
    ("set_names", "str `[S]`", "the crop sets"),
    ("crops_per_set", "int64 `[S]`", "crops of each set"),
    ("merges", "str `[R]`", "the merge modes, the reported one first"),
    ("subsets", "bool `[U, M]`", "the member subsets of the curve"),
    ("subset_correct", "int64 `[U, S, R, 2]`", "their top-1 and top-5 correct counts"),
    ("probs", "float32 `[N, num_classes]`", "the averaged probabilities of the reported setting"),
    (
        "top5",
        "int16 `[N, M+1, S, R, 5]`",
        "the five best classes, best first, of each member alone and then of all members, per crop set and "
        "merge mode (int32 beyond 32,767 classes)",
    ),
    ("target_prob", "float32 `[N, M+1, S, R]`", "the true class's probability"),
    ("confidence", "float32 `[N, M+1, S, R]`", "the top probability"),
    (
        "files",
        "int64 `[N, 3]`",
        "each image file's size, mtime in ns and a 64-bit BLAKE2b digest of the bytes evaluated, to check "
        "the data against the result later",
    ),
)


def per_image_layout(plan, num_classes: int) -> dict[str, tuple[type, tuple[int, ...]]]:
    """dtype and per-image shape of every BatchResult array kept per image (plan: ensemble.Plan);
    the group statistics (--save-logits) are named stat_<statistic>."""
    from .merge import class_dtype, statistics_for

    rows, sets, merges = len(plan.rows), len(plan.set_names), len(plan.merges)
    per_image = [
        (np.float32, (num_classes,)),
        (np.uint8, (rows, sets, 2)),
        (class_dtype(num_classes), (rows, sets, merges, 5)),
        (np.float32, (rows, sets, merges)),
        (np.float32, (rows, sets, merges)),
    ]
    layout = dict(zip(PER_IMAGE_FIELDS, per_image))
    if plan.save_statistics:
        groups = len(plan.groups.positions)
        width = num_classes if plan.classes is None else len(plan.classes)  # restricted: those classes' columns
        for name in statistics_for(plan.merges):
            layout[f"stat_{name}"] = (np.float16, (plan.num_members, groups, width))
    return layout


@dataclass
class RunRecords:
    """The per-image records of a run (rows: each member alone, then all members)."""

    paths: np.ndarray  # str [N], relative to the data root
    targets: np.ndarray  # int64 [N]
    member_names: list[str]
    set_names: list[str]
    crops_per_set: dict[str, int]
    merges: list[str]  # the first is the reported one
    top5: np.ndarray  # int [N, M + 1, S, R, 5]: the five best classes, best first
    target_prob: np.ndarray  # float32 [N, M + 1, S, R]
    confidence: np.ndarray  # float32 [N, M + 1, S, R]
    subsets: np.ndarray  # bool [U, M]: members of each subset of the curve
    subset_correct: np.ndarray  # int64 [U, S, R, 2]: top-1/top-5 correct counts

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray]) -> RunRecords:
        """From the arrays RECORD_FIELDS names, as predictions.npz holds them."""
        set_names = [str(x) for x in a["set_names"]]
        return cls(
            a["paths"],
            a["targets"].astype(np.int64),
            [str(x) for x in a["member_names"]],
            set_names,
            dict(zip(set_names, (int(c) for c in a["crops_per_set"]))),
            [str(x) for x in a["merges"]],
            a["top5"],
            a["target_prob"],
            a["confidence"],
            a["subsets"].astype(bool),
            a["subset_correct"].astype(np.int64),
        )

    @property
    def num_images(self) -> int:
        return int(len(self.targets))

    @property
    def num_members(self) -> int:
        return len(self.member_names)

    def hits(self) -> np.ndarray:
        """bool [N, M + 1, S, R, 2]: top-1 and top-5 hits."""
        from .metrics import hits_from_top5

        return hits_from_top5(self.top5, self.targets)

    def with_merge_first(self, merge: str) -> RunRecords:
        if merge not in self.merges:
            raise RunDirError(
                f"the run computed the merge modes {self.merges}, not {merge!r}; "
                "evaluate again with --compare-merges (or --merge " + merge + ")"
            )
        order = [self.merges.index(merge)] + [i for i, m in enumerate(self.merges) if m != merge]
        return replace(
            self,
            merges=[self.merges[i] for i in order],
            top5=self.top5[:, :, :, order],
            target_prob=self.target_prob[:, :, :, order],
            confidence=self.confidence[:, :, :, order],
            subset_correct=self.subset_correct[:, :, order],
        )


# ---------------------------------------------------------------------------------------------
# Chunks of a run in progress


def _atomic_savez(path: Path, **arrays) -> None:
    with atomic_path(path, ".tmp.npz") as tmp:  # a partial chunk never stays behind
        np.savez(tmp, **arrays)


def write_chunk(path: Path, results: list, seconds: float, session_start: float) -> None:
    """One chunk from finished batches (ensemble.BatchResult, sorted by batch id), atomically."""
    failures = [f for r in results for f in r.failures]
    _atomic_savez(
        path,
        batches=np.array([r.batch for r in results], dtype=np.int64),
        indices=np.concatenate([r.indices for r in results]),
        files=np.concatenate([r.files for r in results]).astype(np.int64).reshape(-1, 3),
        skipped_indices=np.array([i for i, _ in failures], dtype=np.int64),
        skipped_reasons=np.array([m for _, m in failures], dtype=str),
        skipped_files=np.concatenate([r.failure_files for r in results]).astype(np.int64).reshape(-1, 3),
        subset_correct=sum(r.subset_correct for r in results),
        seconds=np.array(seconds, dtype=np.float64),
        session_start=np.array(session_start, dtype=np.float64),
        **{f: np.concatenate([getattr(r, f) for r in results]) for f in PER_IMAGE_FIELDS},
        **{f"stat_{n}": np.concatenate([r.statistics[n] for r in results]) for n in results[0].statistics},
    )


def chunk_batch_span(path: Path) -> tuple[int, int]:
    """(first, last) batch id a chunk holds."""
    with np.load(path) as z:
        batches = z["batches"]
        return int(batches.min()), int(batches.max())


def read_chunk(path: Path, fields: tuple[str, ...]) -> dict[str, np.ndarray]:
    """The arrays `fields` of one chunk."""
    with np.load(path) as z:
        return {f: z[f] for f in fields}


def _read_whole_chunk(path: Path) -> tuple[dict[str, np.ndarray], str | None]:
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            return {}, f"bad CRC in {bad}"
        with np.load(path, allow_pickle=False) as z:
            return {name: z[name] for name in z.files}, None
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return {}, f"unreadable: {type(exc).__name__}"


def _layout_problem(arrays: dict[str, np.ndarray], plan, num_classes: int) -> str | None:
    """What is wrong with the arrays of a chunk against the layout, or None."""
    layout = per_image_layout(plan, num_classes)
    missing = sorted({*CHUNK_ARRAYS, *layout} - set(arrays))
    if missing == ["files", "skipped_files"]:
        return "written by an earlier version, without the identities of its files"
    if missing:
        return f"no {missing[0]} array"
    indices, skipped = arrays["indices"], arrays["skipped_indices"]
    if arrays["batches"].dtype != np.int64 or indices.dtype != np.int64 or skipped.dtype != np.int64:
        return "batch ids or positions are not int64"
    for name, (dtype, shape) in layout.items():
        a = arrays[name]
        if a.dtype != np.dtype(dtype) or a.shape != (len(indices), *shape):
            return f"{name} is {a.dtype} {list(a.shape)}, expected {np.dtype(dtype)} {[len(indices), *shape]}"
    for name, n in (("files", len(indices)), ("skipped_files", len(skipped))):
        if arrays[name].dtype != np.int64 or arrays[name].shape != (n, 3):
            return f"{name} has the wrong shape or type"
    counts = (len(plan.subsets), len(plan.set_names), len(plan.merges), 2)
    if arrays["subset_correct"].dtype != np.int64 or arrays["subset_correct"].shape != counts:
        return "subset_correct has the wrong shape"
    if len(arrays["skipped_reasons"]) != len(skipped):
        return "skipped images and reasons differ in number"
    return None


def check_chunk(path: Path, plan, num_samples: int, num_classes: int) -> tuple[dict[str, np.ndarray], str | None]:
    """(the chunk's arrays, None) for a whole chunk of this run, or ({}, what is wrong with it).

    Checked: a readable zip with good CRCs, every array the layout names with its dtype and
    shape, the identities of the files evaluated, known batch ids, and exactly the sample
    positions those batches hold."""
    arrays, problem = _read_whole_chunk(path)
    if problem is None:
        problem = _layout_problem(arrays, plan, num_classes)
    if problem is not None:
        return {}, problem
    batches, indices, skipped = arrays["batches"], arrays["indices"], arrays["skipped_indices"]
    ids = set(batches.tolist())
    if len(ids) != len(batches) or not all(0 <= b < plan.num_batches(num_samples) for b in ids):
        return {}, "unknown or repeated batch ids"
    per = plan.images_per_batch
    expected = sorted(i for b in ids for i in range(b * per, min((b + 1) * per, num_samples)))
    if sorted(indices.tolist() + skipped.tolist()) != expected or np.any(np.diff(indices) <= 0):
        return {}, "its image positions do not match its batches"
    return arrays, None


def chunk_files(arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(int64 [F] sample positions, int64 [F, 3] file identities) of every image a chunk read,
    evaluated or undecodable."""
    positions = np.concatenate([arrays["indices"], arrays["skipped_indices"]])
    return positions, np.concatenate([arrays["files"], arrays["skipped_files"]])


@dataclass
class ChunkTally:
    """What a whole chunk adds to a resumed run's progress."""

    images: int  # evaluated images
    skipped: int  # undecodable images
    top1: int  # the ensemble's top-1 hits on the requested crop set
    top5: int
    seconds: float  # evaluation time the chunk records


def chunk_tally(arrays: dict[str, np.ndarray], set_index: int) -> ChunkTally:
    """The progress figures of a chunk's arrays (as check_chunk returns them); `set_index`: the
    requested crop set's position."""
    hits = arrays["hits"][:, -1, set_index]  # the row of all members
    seconds = float(arrays["seconds"]) if "seconds" in arrays else 0.0
    return ChunkTally(
        len(arrays["indices"]), len(arrays["skipped_indices"]), int(hits[:, 0].sum()), int(hits[:, 1].sum()), seconds
    )


# ---------------------------------------------------------------------------------------------
# The result files, streamed from the chunks

Chunks = Callable[[tuple[str, ...]], Iterator[dict[str, np.ndarray]]]  # fields -> the chunks in batch order


@dataclass
class Assembled:
    """What the chunks of a whole run add up to."""

    counts: object  # ensemble.Accumulator: integer hits and the skipped images
    seconds: float  # evaluation time over every session of the run
    sessions: int  # how many sessions (1 + the number of resumes that evaluated something)
    records: RunRecords  # the per-image records predictions.npz holds, in memory


def _write_npy_stream(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple, blocks: Iterator[np.ndarray]):
    with zf.open(name + ".npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_2_0(
            fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        )
        for block in blocks:
            fh.write(np.ascontiguousarray(block, dtype=dtype).tobytes())


def _kept(blocks: Iterator[np.ndarray], into: list[np.ndarray]) -> Iterator[np.ndarray]:
    for block in blocks:
        into.append(block)
        yield block


def _write_npz(path: Path, arrays: dict[str, np.ndarray], streamed: dict, chunks: Chunks, n: int) -> dict:
    """An uncompressed .npz: small arrays as they are, per-image arrays streamed chunk by chunk.
    Returns the STREAMED_RECORDS arrays it wrote, joined (the same bytes as in the file)."""
    kept: dict[str, list[np.ndarray]] = {name: [] for name in streamed if name in STREAMED_RECORDS}
    with atomic_path(path) as tmp:  # no partial result file; the chunks are still there
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, array, allow_pickle=False)
            for name, (dtype, shape) in streamed.items():
                blocks = (chunk[name] for chunk in chunks((name,)))
                if name in kept:
                    blocks = _kept(blocks, kept[name])
                _write_npy_stream(zf, name.removeprefix("stat_"), dtype, (n, *shape), blocks)
    return {
        name: np.concatenate([np.asarray(b, dtype=streamed[name][0]) for b in blocks])
        if blocks
        else np.zeros((0, *streamed[name][1]), streamed[name][0])
        for name, blocks in kept.items()
    }


def _small_arrays(samples, plan, member_names: list[str], positions: np.ndarray) -> dict[str, np.ndarray]:
    """The arrays predictions.npz and logits.npz share: who was evaluated and how."""
    return {
        "paths": np.array([samples[i].rel_path for i in positions], dtype=str),
        "targets": np.array([samples[i].target for i in positions], dtype=np.int64),
        "member_names": np.array(member_names, dtype=str),
        "set_names": np.array(plan.set_names, dtype=str),
        "crops_per_set": np.array([len(p) for p in plan.set_positions], dtype=np.int64),
        "merges": np.array(plan.merges, dtype=str),
    }


def _write_logits(out: Path, common: dict, layout: dict, chunks: Chunks, plan, n: int) -> None:
    groups = plan.groups
    set_groups = np.array([[g in s for g in range(len(groups.positions))] for s in groups.sets], dtype=bool)
    stats = {f: layout[f] for f in layout if f.startswith("stat_")}
    extra = {"group_sizes": np.array(groups.sizes, dtype=np.int64), "set_groups": set_groups}
    if plan.classes is not None:  # the statistics' columns are these classes (--class-subset)
        extra["classes"] = np.array(plan.classes, dtype=np.int64)
    _write_npz(out / "logits.npz", common | extra, stats, chunks, n)


def assemble(chunks: Chunks, samples, plan, member_names: list[str], num_classes: int, out: Path) -> Assembled:
    """Counts and skipped images from the chunks; predictions.npz (and logits.npz) streamed from them.

    predictions.npz holds, for the evaluated images in sample order (undecodable ones left out):
    paths, targets, probs (float32 [N, C]: the ensemble, requested crop set, first merge), files
    (int64 [N, 3]: size, mtime_ns and content digest of each file as it was read) and the
    per-image records every table, test and curve is computed from (RECORD_FIELDS), which are
    also returned in memory. logits.npz (--save-logits) holds the float16 group statistics
    [N, M, G, C] per merge mode.
    """
    from .ensemble import Accumulator

    acc = Accumulator(len(member_names), plan.set_names)
    evaluated: list[np.ndarray] = []
    subset_correct = np.zeros((len(plan.subsets), len(plan.set_names), len(plan.merges), 2), np.int64)
    seconds, sessions = 0.0, set()
    fields = ("indices", "hits", "skipped_indices", "skipped_reasons", "subset_correct", "seconds", "session_start")
    for chunk in chunks(fields):
        acc.add_hits(chunk["hits"], list(zip(chunk["skipped_indices"].tolist(), chunk["skipped_reasons"].tolist())))
        evaluated.append(chunk["indices"])
        subset_correct += chunk["subset_correct"]
        seconds += float(chunk["seconds"])
        sessions.add(float(chunk["session_start"]))
    positions = np.concatenate(evaluated) if evaluated else np.zeros(0, dtype=np.int64)
    if np.any(np.diff(positions) <= 0):
        raise ResumeError(f"the chunks in {out / PROGRESS_DIR} are out of sample order; resume again with --resume")
    n = len(positions)
    common = _small_arrays(samples, plan, member_names, positions)
    layout = per_image_layout(plan, num_classes)
    fixed = {
        "subsets": np.array([[m in u for m in range(plan.num_members)] for u in plan.subsets], dtype=bool),
        "subset_correct": subset_correct,
    }
    per_image = {f: layout[f] for f in layout if not f.startswith("stat_") and f != "hits"}  # hits: from top5
    kept = _write_npz(out / "predictions.npz", common | fixed, per_image | {"files": (np.int64, (3,))}, chunks, n)
    if plan.save_statistics:
        _write_logits(out, common, layout, chunks, plan, n)
    records = RunRecords.from_arrays(common | fixed | kept)
    return Assembled(acc, seconds, max(1, len(sessions)), records)


# ---------------------------------------------------------------------------------------------
# Reading the result files back


def _open_npz(path: Path, what: str):
    if not path.is_file():
        raise RunDirError(f"{path} does not exist; pass the --out directory of a finished run ({what})")
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunDirError(
            f"{path} cannot be read ({exc.__class__.__name__}); it is not a file ensemble-eval wrote"
        ) from exc


def _read(z, path: Path, name: str) -> np.ndarray:
    try:
        return z[name]
    except KeyError:
        raise RunDirError(
            f"{path} has no {name!r} array (written by an older ensemble-eval, or not by it); evaluate again"
        ) from None
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise RunDirError(f"{path}: array {name!r} cannot be read ({exc.__class__.__name__}); evaluate again") from exc


def read_predictions(run_dir: Path) -> dict[str, np.ndarray]:
    """Every array of RUN_DIR/predictions.npz, as it is stored."""
    path = Path(run_dir) / "predictions.npz"
    with _open_npz(path, "predictions.npz") as z:
        return {name: _read(z, path, name) for name in z.files}


def load_records(run_dir: Path) -> RunRecords:
    """The records saved in RUN_DIR/predictions.npz, with their shapes checked."""
    path = Path(run_dir) / "predictions.npz"
    with _open_npz(path, "predictions.npz") as z:
        a = {name: _read(z, path, name) for name in RECORD_FIELDS}
    n, m, s, r = len(a["targets"]), len(a["member_names"]), len(a["set_names"]), len(a["merges"])
    expected = {
        "paths": (n,),
        "crops_per_set": (s,),
        "top5": (n, m + 1, s, r, 5),
        "target_prob": (n, m + 1, s, r),
        "confidence": (n, m + 1, s, r),
        "subset_correct": (len(a["subsets"]), s, r, 2),
    }
    for name, shape in expected.items():
        if a[name].shape != shape:
            raise RunDirError(f"{path}: {name!r} has shape {a[name].shape}, expected {shape}; the file is damaged")
    if a["subsets"].ndim != 2 or a["subsets"].shape[1] != m:
        raise RunDirError(f"{path}: 'subsets' has shape {a['subsets'].shape}; the file is damaged")
    return RunRecords.from_arrays(a)


LOGITS_SMALL = ("paths", "targets", "member_names", "set_names", "crops_per_set", "merges", "group_sizes", "set_groups")


def open_logits(run_dir: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """(RUN_DIR/logits.npz, its small arrays LOGITS_SMALL); the statistics: npz_memmap(path, name)."""
    path = Path(run_dir) / "logits.npz"
    with _open_npz(path, "logits.npz, written with --save-logits") as z:
        small = {k: _read(z, path, k) for k in LOGITS_SMALL}
        if "classes" in z.files:  # a restricted prediction (--class-subset): its classes
            small["classes"] = _read(z, path, "classes")
        return path, small


def _npy_header(fh, path: Path, name: str) -> tuple[tuple, np.dtype]:
    try:
        version = np.lib.format.read_magic(fh)
        read_header = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in read_header:
            raise ValueError(f"npy version {version}")
        shape, fortran, dtype = read_header[version](fh)
    except ValueError as exc:
        raise RunDirError(f"{path}: array {name!r} has a bad header; the file is damaged") from exc
    if fortran or dtype.hasobject:
        raise RunDirError(f"{path}: array {name!r} is not a plain array; the file is damaged")
    return shape, dtype


def npz_memmap(path: Path, name: str) -> np.ndarray:
    """A read-only memory map of one array of an uncompressed .npz (as ensemble-eval writes them)."""
    with zipfile.ZipFile(path) as zf:
        try:
            info = zf.getinfo(name + ".npy")
        except KeyError:
            raise RunDirError(f"{path} has no {name!r} array; evaluate again with --save-logits") from None
        if info.compress_type != zipfile.ZIP_STORED:
            raise RunDirError(f"{path} is compressed; only files written by ensemble-eval can be read")
        with open(path, "rb") as fh:
            fh.seek(info.header_offset)
            local = fh.read(30)
            if local[:4] != b"PK\x03\x04":
                raise RunDirError(f"{path} is damaged (bad zip entry for {name!r})")
            name_len, extra_len = int.from_bytes(local[26:28], "little"), int.from_bytes(local[28:30], "little")
            fh.seek(info.header_offset + 30 + name_len + extra_len)
            shape, dtype = _npy_header(fh, path, name)
            offset = fh.tell()
    size = int(np.prod(shape)) * dtype.itemsize
    if offset + size > os.path.getsize(path):
        raise RunDirError(f"{path}: array {name!r} is cut short; the file is damaged")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape)
