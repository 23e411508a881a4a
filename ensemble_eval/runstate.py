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

import contextlib
import hashlib
import json
import os
import shutil
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from .ensemble import PER_IMAGE_FIELDS, Accumulator, BatchResult, per_image_layout
from .errors import UserError

PROGRESS_DIR = "progress"


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


class RunLock:
    """One run per directory: an exclusive lock on RUN_DIR/.lock for the life of the run.

    flock(2) locks belong to the open file, so the kernel releases them when the process
    dies (kill -9 included): a killed run never blocks its own --resume. The file holds the
    holder's pid, for the refusal message. (Network file systems may not honour flock.)
    """

    def __init__(self, out: Path):
        self.out = out
        self.path = out / ".lock"
        self.fd: int | None = None
        self.created_out = False

    def acquire(self) -> RunLock:
        import fcntl

        self.created_out = not self.out.exists()
        self.out.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ResumeError(
                f"--out {self.out} is in use by another ensemble-eval run (pid {holder}); wait for it to "
                "finish (then --resume if it was stopped), or choose another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            self.path.unlink()
            if self.created_out and not any(self.out.iterdir()):
                self.out.rmdir()  # nothing was written: leave no empty run directory behind
        os.close(self.fd)
        self.fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def samples_digest(samples) -> str:
    digest = hashlib.sha256()
    for s in samples:
        digest.update(f"{s.rel_path}\t{s.target}\n".encode())
    return digest.hexdigest()


def fingerprint(members, samples, plan) -> dict:
    """Everything that decides the numbers of a run (not where or how fast it runs)."""
    return {
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
    try:
        data, why = json.loads(manifest.read_text()), "not the run's description"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        data, why = None, f"{type(exc).__name__}: {str(exc)[:80]}"
    if not isinstance(data, dict) or "models" not in data:
        raise ResumeError(
            f"{manifest} is damaged ({why}), so the finished chunks cannot be matched to this run; "
            "start over with --overwrite, or use another --out"
        )
    return data


def check_chunk(path: Path, plan, num_samples: int, num_classes: int) -> tuple[set[int], str | None]:
    """(batch ids, None) for a whole chunk of this run, or (set(), what is wrong with it).

    Checked: a readable zip with good CRCs, every array the layout names with its dtype and
    shape, known batch ids, and exactly the sample positions those batches hold."""
    try:
        with zipfile.ZipFile(path) as zf:
            bad = zf.testzip()
        if bad is not None:
            return set(), f"bad CRC in {bad}"
        with np.load(path, allow_pickle=False) as z:
            arrays = {name: z[name] for name in z.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        return set(), f"unreadable: {type(exc).__name__}"
    layout = per_image_layout(plan, num_classes)
    needed = {"batches", "indices", "skipped_indices", "skipped_reasons", "subset_correct", *layout}
    missing = sorted(needed - set(arrays))
    if missing:
        return set(), f"no {missing[0]} array"
    batches, indices, skipped = arrays["batches"], arrays["indices"], arrays["skipped_indices"]
    if batches.dtype != np.int64 or indices.dtype != np.int64 or skipped.dtype != np.int64:
        return set(), "batch ids or positions are not int64"
    for name, (dtype, shape) in layout.items():
        a = arrays[name]
        if a.dtype != np.dtype(dtype) or a.shape != (len(indices), *shape):
            return set(), f"{name} is {a.dtype} {list(a.shape)}, expected {np.dtype(dtype)} {[len(indices), *shape]}"
    counts = (len(plan.subsets), len(plan.set_names), len(plan.merges), 2)
    if arrays["subset_correct"].dtype != np.int64 or arrays["subset_correct"].shape != counts:
        return set(), "subset_correct has the wrong shape"
    if len(arrays["skipped_reasons"]) != len(skipped):
        return set(), "skipped images and reasons differ in number"
    ids = set(batches.tolist())
    if len(ids) != len(batches) or not all(0 <= b < plan.num_batches(num_samples) for b in ids):
        return set(), "unknown or repeated batch ids"
    per = plan.images_per_batch
    expected = sorted(i for b in ids for i in range(b * per, min((b + 1) * per, num_samples)))
    if sorted(indices.tolist() + skipped.tolist()) != expected or np.any(np.diff(indices) <= 0):
        return set(), "its image positions do not match its batches"
    return ids, None


def _atomic_savez(path: Path, **arrays) -> None:
    tmp = path.with_name("." + path.name + ".tmp.npz")
    try:
        np.savez(tmp, **arrays)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a partial chunk never stays behind
        raise


class ProgressStore:
    """Chunks of finished batches under RUN_DIR/progress (written by the main process only)."""

    def __init__(self, out: Path):
        self.out = out
        self.dir = out / PROGRESS_DIR
        self.seq = 0

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
        self, fp: dict, plan, num_samples: int, num_classes: int, resume: bool, overwrite: bool
    ) -> tuple[set[int], list[str]]:
        """Start or continue the run: (batch ids already finished, one line per damaged chunk).

        On --resume every chunk is checked (see check_chunk); a damaged one is set aside as
        `.damaged-<name>` and its batches are computed again.
        """
        manifest = self.dir / "manifest.json"
        if manifest.exists() and overwrite and not resume:
            shutil.rmtree(self.dir)
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
            tmp = manifest.with_name(".manifest.json.tmp")
            tmp.write_text(json.dumps(fp, indent=2) + "\n")
            os.replace(tmp, manifest)
        for leftover in self.dir.glob(".*.tmp*"):  # a write cut short by a kill
            leftover.unlink()
        done: set[int] = set()
        damaged: list[str] = []
        for path in self._chunk_paths():
            self.seq = max(self.seq, int(path.stem.split("-")[1]) + 1)
            batches, problem = check_chunk(path, plan, num_samples, num_classes)
            if problem is None and done & batches:
                problem = f"batch {min(done & batches)} is also in an earlier chunk"
            if problem is None:
                done |= batches
                continue
            path.rename(path.with_name(".damaged-" + path.name))
            damaged.append(f"{path.name} in {self.dir} is damaged ({problem}); its batches will be computed again")
        return done, damaged

    def _chunk_paths(self) -> list[Path]:
        return sorted(self.dir.glob("chunk-*.npz"))

    def write(self, results: list[BatchResult]) -> None:
        """One chunk from finished batches (any order; stored sorted by batch id)."""
        if not results:
            return
        results = sorted(results, key=lambda r: r.batch)
        failures = [f for r in results for f in r.failures]
        _atomic_savez(
            self.dir / f"chunk-{self.seq:08d}.npz",
            batches=np.array([r.batch for r in results], dtype=np.int64),
            indices=np.concatenate([r.indices for r in results]),
            skipped_indices=np.array([i for i, _ in failures], dtype=np.int64),
            skipped_reasons=np.array([m for _, m in failures], dtype=str),
            subset_correct=sum(r.subset_correct for r in results),
            **{f: np.concatenate([getattr(r, f) for r in results]) for f in PER_IMAGE_FIELDS},
            **{f"stat_{n}": np.concatenate([r.statistics[n] for r in results]) for n in results[0].statistics},
        )
        self.seq += 1

    def chunks(self, fields: tuple[str, ...]) -> Iterator[dict[str, np.ndarray]]:
        """The chunks in batch order, each as {field: array} (only the fields asked for are read)."""
        order = []
        for path in self._chunk_paths():
            with np.load(path) as z:
                batches = z["batches"]
                order.append((int(batches.min()), int(batches.max()), path))
        order.sort()
        for (_, prev_max, _), (next_min, _, _) in zip(order, order[1:]):
            assert prev_max < next_min, "progress chunks overlap"
        for _, _, path in order:
            with np.load(path) as z:
                yield {f: z[f] for f in fields}

    def finish(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


def _write_npy_stream(zf: zipfile.ZipFile, name: str, dtype: np.dtype, shape: tuple, blocks: Iterator[np.ndarray]):
    with zf.open(name + ".npy", "w", force_zip64=True) as fh:
        np.lib.format.write_array_header_2_0(
            fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
        )
        for block in blocks:
            fh.write(np.ascontiguousarray(block, dtype=dtype).tobytes())


def assemble(store: ProgressStore, samples, plan, member_names: list[str], num_classes: int, out: Path) -> Accumulator:
    """Counts and skipped images from the chunks; predictions.npz (and logits.npz) streamed from them.

    predictions.npz holds, for the evaluated images in sample order (undecodable ones left out):
    paths, targets, probs (float32 [N, C]: the ensemble, requested crop set, first merge) and the
    per-image records every table, test and curve is computed from (see analysis.load_records).
    logits.npz (--save-logits) holds the float16 group statistics [N, M, G, C] per merge mode.
    """
    acc = Accumulator(len(member_names), plan.set_names)
    evaluated: list[np.ndarray] = []
    subset_correct = np.zeros((len(plan.subsets), len(plan.set_names), len(plan.merges), 2), np.int64)
    for chunk in store.chunks(("indices", "hits", "skipped_indices", "skipped_reasons", "subset_correct")):
        acc.add_hits(chunk["hits"], list(zip(chunk["skipped_indices"].tolist(), chunk["skipped_reasons"].tolist())))
        evaluated.append(chunk["indices"])
        subset_correct += chunk["subset_correct"]
    positions = np.concatenate(evaluated) if evaluated else np.zeros(0, dtype=np.int64)
    assert np.all(np.diff(positions) > 0), "chunks out of sample order"
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
    _write_npz(
        out / "predictions.npz",
        common | fixed,
        {f: layout[f] for f in layout if not f.startswith("stat_") and f != "hits"},  # hits: from top5
        store,
        n,
    )
    if plan.save_statistics:
        groups = plan.groups
        set_groups = np.array([[g in s for g in range(len(groups.positions))] for s in groups.sets], dtype=bool)
        stats = {f: layout[f] for f in layout if f.startswith("stat_")}
        extra = {"group_sizes": np.array(groups.sizes, dtype=np.int64), "set_groups": set_groups}
        _write_npz(out / "logits.npz", common | extra, stats, store, n)
    return acc


def _write_npz(path: Path, arrays: dict[str, np.ndarray], streamed: dict, store: ProgressStore, n: int) -> None:
    """An uncompressed .npz: small arrays as they are, per-image arrays streamed chunk by chunk."""
    tmp = path.with_name("." + path.name + ".tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                with zf.open(name + ".npy", "w", force_zip64=True) as fh:
                    np.lib.format.write_array(fh, array, allow_pickle=False)
            for name, (dtype, shape) in streamed.items():
                blocks = (chunk[name] for chunk in store.chunks((name,)))
                _write_npy_stream(zf, name.removeprefix("stat_"), dtype, (n, *shape), blocks)
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # no partial result file; the chunks are still there
        raise
