"""A run in progress on disk: its fingerprint, chunks of finished batches, and the final files.

    RUN_DIR/progress/manifest.json        what the run computes; --resume refuses anything else
    RUN_DIR/progress/chunk-00000012.npz   finished batches: ids, sample positions, probabilities,
                                          per-image hits, undecodable images

Every file is written to a temporary name and renamed, so a run killed at any moment
(SIGKILL included) leaves only whole chunks; --resume skips their batches. Batches are
identified globally (ensemble.Plan), so a resumed run computes every image in the same
batch as an uninterrupted one and ends with identical results. The predictions file is
streamed from the chunks at the end: memory does not grow with the number of images.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import zipfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .ensemble import PER_IMAGE_FIELDS, Accumulator, BatchResult, per_image_layout
from .errors import UserError
from .fileio import atomic_path, write_json
from .rundir import FINISHED_PROGRESS, PROGRESS_DIR, remove_own


class ResumeError(UserError):
    """A run directory that cannot be resumed (or must be resumed); the message says why."""


class DiskError(UserError):
    """The run directory cannot be written (full disk, permissions); progress up to the last whole chunk is kept."""


def disk_error(exc: OSError, out: Path, resume_command: str) -> DiskError:
    where = exc.filename or out
    return DiskError(
        f"cannot write {where}: {exc.strerror or exc}; progress is kept in {out / PROGRESS_DIR} up to the last "
        f"whole chunk: free some space or fix the permissions, then resume with: {resume_command}"
    )


def samples_digest(samples) -> str:
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.rel_path}\t{s.target}\n".encode())
    return digest.hexdigest()


def fingerprint(members, samples, plan) -> dict:
    """Everything that decides the numbers of a run (not where or how fast it runs)."""
    fp = {
        "models": [{"name": m.name, "sha256": m.sha256, "input": m.convention.to_dict()} for m in members],
        "num_images": len(samples),
        "data": samples_digest(samples),
        "protocol": plan.scheme.to_dict(),
        "crop_sets": list(plan.set_names),
        "crops": plan.requested_set,
        "batch_size": plan.batch_size,
        "precision": plan.precision,
        "merges": list(plan.merges),
        "subsets": [list(u) for u in plan.subsets],
        "save_logits": plan.save_statistics,
    }
    geo = plan.geometries
    if geo.backend != "tensor" or {s.geometry_key() for s in geo.schemes} != {plan.scheme.geometry_key()}:
        fp["views"] = geo.to_dict()  # members on views other than the protocol's (absent otherwise, as before)
    return fp


def _protocol(recorded: dict | None) -> dict | None:
    """A recorded protocol in today's spelling: runs started before regions had their name
    recorded them as squares (same meaning), and resume across that change."""
    if not isinstance(recorded, dict) or "squares" not in recorded:
        return recorded
    renamed = {("regions" if k == "squares" else k): v for k, v in recorded.items()}
    sets = renamed.get("crop_sets")
    if isinstance(sets, dict):
        renamed["crop_sets"] = {
            n: {("regions" if a == "squares" else a): v for a, v in sel.items()} if isinstance(sel, dict) else sel
            for n, sel in sets.items()
        }
    return renamed


def describe_changes(old: dict, new: dict) -> str:
    changes = []
    if old.get("models") != new.get("models"):
        was = ", ".join(m["name"] for m in old.get("models", []))
        changes.append(f"the checkpoints or their input conventions changed (the run used {was})")
    if old.get("num_images") != new.get("num_images") or old.get("data") != new.get("data"):
        changes.append(f"the images or labels changed (was {old.get('num_images')} images, now {new['num_images']})")
    if _protocol(old.get("protocol")) != new.get("protocol"):
        changes.append("the crop protocol changed")
    if old.get("crop_sets") != new.get("crop_sets") or old.get("crops") != new.get("crops"):
        changes.append(f"the crop sets changed (was {old.get('crop_sets')} reporting {old.get('crops')!r})")
    if old.get("precision", "fp32") != new.get("precision"):
        changes.append(f"the precision changed (resume with --precision {old.get('precision', 'fp32')})")
    if old.get("merges") != new.get("merges"):
        changes.append(f"the merge modes changed (the run computes {old.get('merges')})")
    if old.get("subsets") != new.get("subsets"):
        changes.append("the ensemble-size curve's member subsets changed (--curve-samples or --seed)")
    if old.get("save_logits") != new.get("save_logits"):
        changes.append(f"--save-logits changed (resume {'with' if old.get('save_logits') else 'without'} it)")
    if old.get("batch_size") != new.get("batch_size"):
        changes.append(f"the batch size changed (resume with --batch-size {old.get('batch_size')})")
    return "; ".join(changes)


def _read_manifest(manifest: Path) -> dict:
    from .fileio import read_regular_file

    try:
        data, why = json.loads(read_regular_file(manifest, 64 << 20, follow_links=False)), "not the run's description"
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        data, why = None, f"{type(exc).__name__}: {str(exc)[:80]}"
    if not isinstance(data, dict) or "models" not in data:
        raise ResumeError(
            f"{manifest} is damaged ({why}), so the finished chunks cannot be matched to this run; "
            "start over with --overwrite, or use another --out"
        )
    return data


CHUNK_ARRAYS = ("batches", "indices", "skipped_indices", "skipped_reasons", "subset_correct", "files", "skipped_files")


def check_chunk(path: Path, plan, num_samples: int, num_classes: int) -> tuple[dict[str, np.ndarray], str | None]:
    """(the chunk's arrays, None) for a whole chunk of this run, or ({}, what is wrong with it).

    Checked: a readable zip with good CRCs, every array the layout names with its dtype and
    shape, the identities of the files evaluated, known batch ids, and exactly the sample
    positions those batches hold."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            return {}, f"bad CRC in {bad}"
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return {}, f"unreadable: {type(exc).__name__}"
    layout = per_image_layout(plan, num_classes)
    missing = sorted({*CHUNK_ARRAYS, *layout} - set(arrays))
    if missing == ["files", "skipped_files"]:
        return {}, "written by an earlier version, without the identities of its files"
    if missing:
        return {}, f"no {missing[0]} array"
    batches, indices, skipped = arrays["batches"], arrays["indices"], arrays["skipped_indices"]
    if batches.dtype != np.int64 or indices.dtype != np.int64 or skipped.dtype != np.int64:
        return {}, "batch ids or positions are not int64"
    for name, (dtype, shape) in layout.items():
        a = arrays[name]
        if a.dtype != np.dtype(dtype) or a.shape != (len(indices), *shape):
            return {}, f"{name} is {a.dtype} {list(a.shape)}, expected {np.dtype(dtype)} {[len(indices), *shape]}"
    for name, n in (("files", len(indices)), ("skipped_files", len(skipped))):
        if arrays[name].dtype != np.int64 or arrays[name].shape != (n, 3):
            return {}, f"{name} has the wrong shape or type"
    counts = (len(plan.subsets), len(plan.set_names), len(plan.merges), 2)
    if arrays["subset_correct"].dtype != np.int64 or arrays["subset_correct"].shape != counts:
        return {}, "subset_correct has the wrong shape"
    if len(arrays["skipped_reasons"]) != len(skipped):
        return {}, "skipped images and reasons differ in number"
    ids = set(batches.tolist())
    if len(ids) != len(batches) or not all(0 <= b < plan.num_batches(num_samples) for b in ids):
        return {}, "unknown or repeated batch ids"
    per = plan.images_per_batch
    expected = sorted(i for b in ids for i in range(b * per, min((b + 1) * per, num_samples)))
    if sorted(indices.tolist() + skipped.tolist()) != expected or np.any(np.diff(indices) <= 0):
        return {}, "its image positions do not match its batches"
    return arrays, None


def changed_files(samples, positions: np.ndarray, recorded: np.ndarray, workers: int = 8) -> list[tuple[int, str]]:
    """(position, how) of the samples whose file is not the one recorded (size, mtime, content digest).

    The content decides: a file of another size has changed; one of the same size is read
    again and its digest compared (a copy with the same bytes and a new mtime has not changed)."""
    from .listing import NO_FILE, file_identity

    def check(job: tuple[int, np.ndarray]) -> tuple[int, str] | None:
        position, (size, _, digest) = job
        path = samples[position].path
        try:
            now = os.stat(path).st_size
        except OSError as exc:
            return None if size == NO_FILE[0] else (position, f"it can no longer be read ({exc.strerror})")
        if size == NO_FILE[0]:
            return position, "it could not be read then and can now"
        if now != size:
            return position, f"its size changed from {size:,} to {now:,} bytes"
        try:
            again = file_identity(path)[2]
        except OSError as exc:
            return position, f"it can no longer be read ({exc.strerror or exc})"
        return None if again == digest else (position, "its content changed (same size, other bytes)")

    jobs = list(zip(positions.tolist(), recorded))
    if len(jobs) < 64 or workers <= 1:
        found = map(check, jobs)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # reading and hashing release the GIL
            found = list(pool.map(check, jobs, chunksize=32))
    return [f for f in found if f is not None]


def _atomic_savez(path: Path, **arrays) -> None:
    with atomic_path(path, ".tmp.npz") as tmp:  # a partial chunk never stays behind
        np.savez(tmp, **arrays)


@dataclass
class Opened:
    """What a progress store holds when a run starts or resumes."""

    done: set[int] = field(default_factory=set)  # finished batch ids
    problems: list[str] = field(default_factory=list)  # one line per chunk set aside (damaged or stale)
    images: int = 0  # evaluated images in the finished batches
    skipped: int = 0  # undecodable images in them
    top1: int = 0  # the ensemble's top-1 hits on the requested crop set, over those images
    top5: int = 0
    seconds: float = 0.0  # evaluation time of the earlier sessions


class ProgressStore:
    """Chunks of finished batches under RUN_DIR/progress (written by the main process only)."""

    def __init__(self, out: Path):
        self.out = out
        self.dir = out / PROGRESS_DIR
        self.seq = 0
        self.saved: set[int] = set()  # batch ids in whole chunks on disk
        self.saved_images = 0  # images (evaluated and skipped) of those batches
        self.session_start = time.time()
        self.last_save = time.monotonic()

    def exists(self) -> bool:
        return (self.dir / "manifest.json").exists()

    def recorded_batch_size(self) -> int | None:
        """The forward batch of the run in progress here (None: no run, or none recorded)."""
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            return None
        size = _read_manifest(manifest).get("batch_size")
        return size if type(size) is int and size > 0 else None

    def open(
        self, fp: dict, plan, samples, num_classes: int, resume: bool, overwrite: bool, workers: int = 8
    ) -> Opened:
        """Start or continue the run: the finished batches, and one line per chunk set aside.

        `overwrite` (without `resume`) first removes the earlier results and progress here.
        On `resume` every chunk is checked (see check_chunk) and so is every file it
        evaluated (see changed_files); a damaged chunk, or one holding an image whose file
        changed since, is set aside as `.damaged-<name>` and its batches are computed again.
        """
        from .report import OUTPUT_FILES

        manifest = self.dir / "manifest.json"
        if overwrite and not resume:
            remove_own(self.out, OUTPUT_FILES)  # summary.json first gone: no result outlives its run
            if self.dir.exists():
                shutil.rmtree(self.dir)
        self.clean_finished()
        if manifest.exists():
            if not resume:
                raise ResumeError(
                    f"--out {self.out} holds an unfinished run; pass --resume to continue it, "
                    "or --overwrite to start it over"
                )
            old = _read_manifest(manifest)
            changes = describe_changes(old, fp)
            if changes:
                raise ResumeError(f"cannot resume {self.out}: {changes}; use another --out for a new run")
        else:
            if resume:
                raise ResumeError(f"nothing to resume in {self.out} (no {PROGRESS_DIR}/manifest.json); drop --resume")
            self.dir.mkdir(parents=True, exist_ok=True)
            for stale in self._chunk_paths():  # chunks without their manifest belong to no known run
                stale.unlink()
            write_json(manifest, fp)
        for leftover in self.dir.glob(".*.tmp*"):  # a write cut short by a kill
            leftover.unlink()
        opened = Opened()
        set_index = plan.set_names.index(plan.requested_set)
        for path in self._chunk_paths():
            self.seq = max(self.seq, int(path.stem.split("-")[1]) + 1)
            arrays, problem = check_chunk(path, plan, len(samples), num_classes)
            batches = set(arrays["batches"].tolist()) if problem is None else set()
            if problem is None and opened.done & batches:
                problem = f"batch {min(opened.done & batches)} is also in an earlier chunk"
            if problem is not None:
                problem = f"is damaged ({problem})"
            else:
                positions = np.concatenate([arrays["indices"], arrays["skipped_indices"]])
                recorded = np.concatenate([arrays["files"], arrays["skipped_files"]])
                changed = changed_files(samples, positions, recorded, workers)
                if changed:
                    position, how = changed[0]
                    more = f" (and {len(changed) - 1} more of its images)" if len(changed) > 1 else ""
                    problem = f"holds {samples[position].rel_path}, which changed since it was evaluated: {how}{more}"
            if problem is not None:
                path.rename(path.with_name(".damaged-" + path.name))
                opened.problems.append(f"{path.name} in {self.dir} {problem}; its batches will be computed again")
                continue
            opened.done |= batches
            hits = arrays["hits"][:, -1, set_index]
            opened.images += len(arrays["indices"])
            opened.skipped += len(arrays["skipped_indices"])
            opened.top1 += int(hits[:, 0].sum())
            opened.top5 += int(hits[:, 1].sum())
            opened.seconds += float(arrays["seconds"]) if "seconds" in arrays else 0.0
        self.saved = set(opened.done)
        self.saved_images = opened.images + opened.skipped
        self.last_save = time.monotonic()
        return opened

    def _chunk_paths(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.npz"))

    def write(self, results: list[BatchResult]) -> None:
        """One chunk from finished batches (any order; stored sorted by batch id). Batches already
        in a chunk are left out, so saving the same results twice (an interrupted save) is harmless."""
        results = sorted((r for r in results if r.batch not in self.saved), key=lambda r: r.batch)
        if not results:
            return
        now = time.monotonic()
        failures = [f for r in results for f in r.failures]
        _atomic_savez(
            self.dir / f"chunk-{self.seq:08d}.npz",
            batches=np.array([r.batch for r in results], dtype=np.int64),
            indices=np.concatenate([r.indices for r in results]),
            files=np.concatenate([r.files for r in results]).astype(np.int64).reshape(-1, 3),
            skipped_indices=np.array([i for i, _ in failures], dtype=np.int64),
            skipped_reasons=np.array([m for _, m in failures], dtype=str),
            skipped_files=np.concatenate([r.failure_files for r in results]).astype(np.int64).reshape(-1, 3),
            subset_correct=sum(r.subset_correct for r in results),
            seconds=np.array(now - self.last_save, dtype=np.float64),
            session_start=np.array(self.session_start, dtype=np.float64),
            **{f: np.concatenate([getattr(r, f) for r in results]) for f in PER_IMAGE_FIELDS},
            **{f"stat_{n}": np.concatenate([r.statistics[n] for r in results]) for n in results[0].statistics},
        )
        self.last_save = now
        self.seq += 1
        self.saved.update(r.batch for r in results)
        self.saved_images += sum(len(r.indices) + len(r.failures) for r in results)

    def chunks(self, fields: tuple[str, ...]) -> Iterator[dict[str, np.ndarray]]:
        """The chunks in batch order, each as {field: array} (only the fields asked for are read)."""
        order = []
        for path in self._chunk_paths():
            with np.load(path) as z:
                batches = z["batches"]
                order.append((int(batches.min()), int(batches.max()), path))
        order.sort()
        for (_, prev_max, prev), (next_min, _, path) in zip(order, order[1:]):
            if prev_max >= next_min:  # open() sets such chunks aside; this one appeared since
                raise ResumeError(f"{prev.name} and {path.name} in {self.dir} overlap; resume again with --resume")
        for _, _, path in order:
            with np.load(path) as z:
                yield {f: z[f] for f in fields}

    def finish(self) -> None:
        """The results are complete (summary.json written): progress/ goes, first renamed in one step
        so a kill during the removal leaves a finished run, not a damaged one."""
        if self.dir.is_dir():
            target = self.out / FINISHED_PROGRESS
            if target.exists():
                shutil.rmtree(target)
            os.rename(self.dir, target)
        self.clean_finished()

    def clean_finished(self) -> None:
        """Remove what a run killed while removing its finished progress left behind."""
        target = self.out / FINISHED_PROGRESS
        if target.is_dir() and not target.is_symlink():
            shutil.rmtree(target)


def _write_npy_stream(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple, blocks: Iterator[np.ndarray]):
    with zf.open(name + ".npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_2_0(
            fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        )
        for block in blocks:
            fh.write(np.ascontiguousarray(block, dtype=dtype).tobytes())


@dataclass
class Assembled:
    """What the chunks of a whole run add up to."""

    counts: Accumulator  # integer hits and the skipped images
    seconds: float  # evaluation time over every session of the run
    sessions: int  # how many sessions (1 + the number of resumes that evaluated something)


def assemble(store: ProgressStore, samples, plan, member_names: list[str], num_classes: int, out: Path) -> Assembled:
    """Counts and skipped images from the chunks; predictions.npz (and logits.npz) streamed from them.

    predictions.npz holds, for the evaluated images in sample order (undecodable ones left out):
    paths, targets, probs (float32 [N, C]: the ensemble, requested crop set, first merge), files
    (int64 [N, 3]: size, mtime_ns and content digest of each file as it was read) and the
    per-image records every table, test and curve is computed from (see analysis.load_records).
    logits.npz (--save-logits) holds the float16 group statistics [N, M, G, C] per merge mode.
    """
    acc = Accumulator(len(member_names), plan.set_names)
    evaluated: list[np.ndarray] = []
    subset_correct = np.zeros((len(plan.subsets), len(plan.set_names), len(plan.merges), 2), np.int64)
    seconds, sessions = 0.0, set()
    fields = ("indices", "hits", "skipped_indices", "skipped_reasons", "subset_correct", "seconds", "session_start")
    for chunk in store.chunks(fields):
        acc.add_hits(chunk["hits"], list(zip(chunk["skipped_indices"].tolist(), chunk["skipped_reasons"].tolist())))
        evaluated.append(chunk["indices"])
        subset_correct += chunk["subset_correct"]
        seconds += float(chunk["seconds"])
        sessions.add(float(chunk["session_start"]))
    positions = np.concatenate(evaluated) if evaluated else np.zeros(0, dtype=np.int64)
    if np.any(np.diff(positions) <= 0):
        raise ResumeError(f"the chunks in {store.dir} are out of sample order; resume again with --resume")
    n = len(positions)
    common = {
        "paths": np.array([samples[i].rel_path for i in positions], dtype=str),
        "targets": np.array([samples[i].target for i in positions], dtype=np.int64),
        "member_names": np.array(member_names, dtype=str),
        "set_names": np.array(plan.set_names, dtype=str),
        "crops_per_set": np.array([len(p) for p in plan.set_positions], dtype=np.int64),
        "merges": np.array(plan.merges, dtype=str),
    }
    layout = per_image_layout(plan, num_classes)
    fixed = {
        "subsets": np.array([[m in u for m in range(plan.num_members)] for u in plan.subsets], dtype=bool),
        "subset_correct": subset_correct,
    }
    per_image = {f: layout[f] for f in layout if not f.startswith("stat_") and f != "hits"}  # hits: from top5
    _write_npz(out / "predictions.npz", common | fixed, per_image | {"files": (np.int64, (3,))}, store, n)
    if plan.save_statistics:
        groups = plan.groups
        set_groups = np.array([[g in s for g in range(len(groups.positions))] for s in groups.sets], dtype=bool)
        stats = {f: layout[f] for f in layout if f.startswith("stat_")}
        extra = {"group_sizes": np.array(groups.sizes, dtype=np.int64), "set_groups": set_groups}
        _write_npz(out / "logits.npz", common | extra, stats, store, n)
    return Assembled(acc, seconds, max(1, len(sessions)))


def _write_npz(path: Path, arrays: dict[str, np.ndarray], streamed: dict, store: ProgressStore, n: int) -> None:
    """An uncompressed .npz: small arrays as they are, per-image arrays streamed chunk by chunk."""
    with atomic_path(path) as tmp:  # no partial result file; the chunks are still there
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, array, allow_pickle=False)
            for name, (dtype, shape) in streamed.items():
                blocks = (chunk[name] for chunk in store.chunks((name,)))
                _write_npy_stream(zf, name.removeprefix("stat_"), dtype, (n, *shape), blocks)
