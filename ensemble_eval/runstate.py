"""A run in progress on disk: its fingerprint, which chunks of finished batches it holds, resuming.

    RUN_DIR/progress/manifest.json        what the run computes; --resume refuses anything else
    RUN_DIR/progress/chunk-00000012.npz   finished batches: ids, sample positions, probabilities,
                                          per-image hits, undecodable images

Every file is written to a temporary name and renamed, so a run killed at any moment
(SIGKILL included) leaves only whole chunks; --resume skips their batches. Batches are
identified globally (ensemble.Plan), so a resumed run computes every image in the same
batch as an uninterrupted one and ends with identical results. What a chunk holds, how it
is written and checked, and the result files streamed from the chunks: records.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import UserError
from .fileio import write_json
from .records import ResumeError, check_chunk, chunk_batch_span, chunk_files, chunk_tally, read_chunk, write_chunk
from .rundir import FINISHED_PROGRESS, PROGRESS_DIR, remove_own


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
    if plan.classes is not None:  # absent when every output counts (as before class subsets)
        fp["classes"] = list(plan.classes)
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


def changed_files(samples, positions: np.ndarray, recorded: np.ndarray, workers: int = 8) -> list[tuple[int, str]]:
    """(position, how) of the samples whose file is not the one recorded (size, mtime, content digest).

    The content decides: a file of another size has changed; one of the same size is read
    again and its digest compared (a copy with the same bytes and a new mtime has not changed).
    A member of a shard (Parquet row, tar member) is read again and its bytes' digest compared."""
    from .listing import NO_FILE, DataError, file_identity, read_sample

    def check_member(sample, size: int, digest: int) -> str | None:
        try:
            _, (now, _, again) = read_sample(sample)
        except DataError as exc:
            return None if size == NO_FILE[0] else f"it can no longer be read ({exc.reason})"
        if size == NO_FILE[0]:
            return "it could not be read then and can now"
        if now != size:
            return f"its size changed from {size:,} to {now:,} bytes"
        return None if again == digest else "its content changed (same size, other bytes)"

    def check(job: tuple[int, np.ndarray]) -> tuple[int, str] | None:
        position, (size, _, digest) = job
        if samples[position].member is not None:
            how = check_member(samples[position], size, digest)
            return None if how is None else (position, how)
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
    parquet = any(samples[p].member is not None and samples[p].member[0] == "parquet" for p in positions.tolist())
    if len(jobs) < 64 or workers <= 1 or parquet:  # Parquet: in order, each row group read once (shards.py)
        found = map(check, jobs)
    else:
        with ThreadPoolExecutor(max_workers=workers) as pool:  # reading and hashing release the GIL
            found = list(pool.map(check, jobs, chunksize=32))
    return [f for f in found if f is not None]


def _changed_problem(samples, arrays: dict, workers: int) -> str | None:
    """What makes a whole chunk stale (an image file changed since it was evaluated), or None."""
    changed = changed_files(samples, *chunk_files(arrays), workers)
    if not changed:
        return None
    position, how = changed[0]
    more = f" (and {len(changed) - 1} more of its images)" if len(changed) > 1 else ""
    return f"holds {samples[position].rel_path}, which changed since it was evaluated: {how}{more}"


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

    def add(self, tally) -> None:
        """A whole chunk's figures (records.ChunkTally)."""
        self.images += tally.images
        self.skipped += tally.skipped
        self.top1 += tally.top1
        self.top5 += tally.top5
        self.seconds += tally.seconds


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
        self._start(fp, resume, overwrite)
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
                problem = _changed_problem(samples, arrays, workers)
            if problem is not None:
                path.rename(path.with_name(".damaged-" + path.name))
                opened.problems.append(f"{path.name} in {self.dir} {problem}; its batches will be computed again")
                continue
            opened.done |= batches
            opened.add(chunk_tally(arrays, set_index))
        self.saved = set(opened.done)
        self.saved_images = opened.images + opened.skipped
        self.last_save = time.monotonic()
        return opened

    def _start(self, fp: dict, resume: bool, overwrite: bool) -> None:
        """The manifest checked against `fp` (resume) or written (a new run); leftovers removed."""
        from .outputs import OUTPUT_FILES

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

    def _chunk_paths(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.npz"))

    def write(self, results: list) -> None:
        """One chunk from finished batches (any order; stored sorted by batch id). Batches already
        in a chunk are left out, so saving the same results twice (an interrupted save) is harmless."""
        results = sorted((r for r in results if r.batch not in self.saved), key=lambda r: r.batch)
        if not results:
            return
        now = time.monotonic()
        write_chunk(self.dir / f"chunk-{self.seq:08d}.npz", results, now - self.last_save, self.session_start)
        self.last_save = now
        self.seq += 1
        self.saved.update(r.batch for r in results)
        self.saved_images += sum(len(r.indices) + len(r.failures) for r in results)

    def chunks(self, fields: tuple[str, ...]) -> Iterator[dict[str, np.ndarray]]:
        """The chunks in batch order, each as {field: array} (only the fields asked for are read)."""
        order = sorted((*chunk_batch_span(path), path) for path in self._chunk_paths())
        for (_, prev_max, prev), (next_min, _, path) in zip(order, order[1:]):
            if prev_max >= next_min:  # open() sets such chunks aside; this one appeared since
                raise ResumeError(f"{prev.name} and {path.name} in {self.dir} overlap; resume again with --resume")
        for _, _, path in order:
            yield read_chunk(path, fields)

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
