"""Directories the tool owns: which it may write into, which files it may replace, one run at a time.

A directory the tool writes results into (a run's `--out`, a report's or a comparison's
`--out`) carries a marker, `.ensemble-eval.json`: which tool made it (kind "run", "report" or
"compare"), when, and the files it wrote with their sizes and content hashes. The rules, checked before any slow work:

- a new path, or an existing empty directory, is taken (created, marked);
- a directory holding the marker of the same kind is the tool's own;
- anything else (a directory of someone else's files, the current directory full of work,
  another kind's directory) is refused in one line unless `--overwrite`;
- a report replaces only files it wrote and that nobody changed since (the hashes in the
  marker); a hand-edited `table.md` is refused unless `--overwrite`;
- a comparison likewise (check_compare_out), and never writes into a run's or a report's
  directory, even with `--overwrite` (its marker would replace theirs);
- `--out ''`, a file, an unwritable or uncreatable place: one line naming the fix;
- `validate --json FILE` (check_validate_json) replaces only an earlier validate report (or
  any file with --overwrite), never a checkpoint it validates, never through a link.

Run directories of earlier versions carry no marker; they are recognised by their own
files (a readable `progress/manifest.json` or `summary.json` of a run) and adopted.

`RunLock` holds one run per directory: a POSIX record lock (fcntl) on `.lock`, opened with
O_NOFOLLOW (a symlink there is refused, never followed) and O_CLOEXEC. POSIX record locks are
not inherited by forked children (the loader's workers), are released by the kernel when the
process dies (kill -9 included) and are released by closing the descriptor; the file itself
stays (removing it while another process opens it would let two runs lock two different
files). Standard library only: the CLI runs these checks before importing torch.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UserError
from .fileio import NotRegularFile, read_regular_file, write_json
from .outputs import OUTPUT_FILES, SUMMARY

MARKER = ".ensemble-eval.json"
LOCK = ".lock"
PROGRESS_DIR = "progress"
FINISHED_PROGRESS = ".progress-finished"  # progress/ renamed once the results are complete, then removed
HASHED_UP_TO = 64 << 20  # files up to this size are recorded by content hash; larger ones by size and mtime
MAX_MARKER_BYTES = 16 << 20
VALIDATE_TOOL = "ensemble-eval validate"  # the "tool" of a validate --json file: such a file may be replaced
KINDS = ("run", "report", "compare")  # the marker's kinds: who wrote the directory


class OutDirError(UserError):
    """An output directory (or file) that the tool must not, or cannot, write into."""


@dataclass
class OutDir:
    """What an output path holds now (read-only inspection)."""

    path: Path
    exists: bool = False
    entries: list[str] = field(default_factory=list)  # names in it, sorted
    kind: str | None = None  # the marker's kind ("run", "report", "compare"), "legacy-run", or None
    files: dict[str, dict] = field(default_factory=dict)  # the marker's record of written files

    @property
    def empty(self) -> bool:
        return not self.entries

    def has(self, name: str) -> bool:
        return name in self.entries


def _raise_os(exc: OSError, path: Path, what: str) -> None:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENAMETOOLONG:
        raise OutDirError(f"{what} {str(path)[:80]}... cannot be used: the name is too long; choose a shorter path")
    raise OutDirError(f"{what} {path} cannot be used ({reason}); choose another directory")


def read_marker(path: Path) -> dict | None:
    """The marker of directory `path`, or None (absent, not a regular file, not ours)."""
    try:
        data = json.loads(read_regular_file(path / MARKER, MAX_MARKER_BYTES, follow_links=False))
    except (OSError, ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("tool") != "ensemble-eval" or data.get("kind") not in KINDS:
        return None
    files = data.get("files")
    data["files"] = files if isinstance(files, dict) else {}
    return data


def _legacy_kind(path: Path, entries: list[str]) -> str | None:
    """The kind ("legacy-report" or "legacy-run") of a directory of a version before the marker (its
    summary.json or progress/manifest.json reads as a report's or a run's), else None."""
    for name in (SUMMARY.name, f"{PROGRESS_DIR}/manifest.json"):
        if name.split("/")[0] not in entries:
            continue
        try:
            data = json.loads(read_regular_file(path / name, 256 << 20, follow_links=False))
        except (OSError, ValueError, RecursionError):
            continue
        if isinstance(data, dict) and "rebuilt_from" in data:
            return "legacy-report"
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            return "legacy-run"
    return None


def inspect_out(path: str | os.PathLike | None, what: str = "--out") -> OutDir:
    """What `path` holds; OutDirError when it can never be an output directory."""
    if path is None or str(path).strip() == "":
        raise OutDirError(f"{what} is empty; name a directory for the results, e.g. {what} runs/my-run")
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        if os.path.islink(path):
            raise OutDirError(f"{what} {path} is a broken link; remove it or choose another directory") from None
        return OutDir(path)
    except NotADirectoryError:
        raise OutDirError(f"{what} {path} is inside a file; choose a directory") from None
    except OSError as exc:
        _raise_os(exc, path, what)
    if not stat.S_ISDIR(st.st_mode):
        raise OutDirError(f"{what} {path} is a file, not a directory; choose a directory")
    try:
        entries = sorted(os.listdir(path))
    except OSError as exc:
        _raise_os(exc, path, what)
    out = OutDir(path, True, entries)
    marker = read_marker(path) if MARKER in entries else None
    if marker is not None:
        out.kind, out.files = marker["kind"], marker["files"]
    else:
        out.kind = _legacy_kind(path, entries)
    return out


def _foreign(out: OutDir) -> str:
    more = len(out.entries) - 3
    return ", ".join(repr(e) for e in out.entries[:3]) + (f" and {more} more" if more > 0 else "")


def check_writable_place(out: OutDir, what: str = "--out") -> None:
    """The directory exists and is writable, or its nearest existing parent is a writable directory."""
    if out.exists:
        if not os.access(out.path, os.W_OK | os.X_OK):
            raise OutDirError(f"{what} {out.path} is not writable; fix its permissions or choose another directory")
        return
    parent = next((p for p in out.path.absolute().parents if p.exists()), None)
    if parent is None or not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutDirError(
            f"{what} {out.path} cannot be created ({parent} is not a writable directory); choose another directory"
        )


def check_run_out(path: str | os.PathLike | None, overwrite: bool, resume: bool) -> OutDir:
    """The rules for a run's --out (see the module docstring); read-only, before any slow work."""
    out = inspect_out(path)
    check_writable_place(out)
    if not out.exists or out.empty:
        if resume:
            raise OutDirError(f"nothing to resume in {out.path} (it holds no run); drop --resume")
        return out
    if out.kind in ("report", "legacy-report", "compare"):
        what = (
            "a comparison of `ensemble-eval compare`" if out.kind == "compare" else "a report of `ensemble-eval report`"
        )
        raise OutDirError(f"--out {out.path} holds {what}, not a run; choose another directory")
    if out.kind is None:
        if overwrite and not resume:
            return out
        raise OutDirError(
            f"--out {out.path} holds files ensemble-eval did not write ({_foreign(out)}); choose a new or empty "
            "directory, or pass --overwrite to write the results beside them (files of the same name are replaced)"
        )
    holder = lock_holder(out.path)
    if holder is not None:
        raise OutDirError(
            f"--out {out.path} is in use by another ensemble-eval run (pid {holder}); wait for it to "
            "finish (then --resume if it was stopped), or choose another --out"
        )
    finished, unfinished = out.has(SUMMARY.name), (out.path / PROGRESS_DIR / "manifest.json").is_file()
    if finished and not (overwrite or resume):
        raise OutDirError(
            f"--out {out.path} already holds results (summary.json); pass --overwrite or choose another --out"
        )
    if unfinished and not finished and not (overwrite or resume):
        raise OutDirError(
            f"--out {out.path} holds an unfinished run; pass --resume to continue it, or --overwrite to start it over"
        )
    if resume and not (finished or unfinished):
        raise OutDirError(f"nothing to resume in {out.path} (no {PROGRESS_DIR}/manifest.json); drop --resume")
    return out


def check_report_out(path: str | os.PathLike, overwrite: bool, outputs: tuple[str, ...] = OUTPUT_FILES) -> OutDir:
    """The rules for a report's --out: its own directory, and only unchanged files of its own
    (`outputs`: outputs.OUTPUT_FILES) replaced."""
    out = inspect_out(path)
    check_writable_place(out)
    if not out.exists or out.empty or overwrite:
        return out
    if out.kind in ("run", "legacy-run", "compare"):
        what = "a comparison of `ensemble-eval compare`" if out.kind == "compare" else "a run's results"
        raise OutDirError(f"--out {out.path} holds {what}, not a report; choose another --out")
    if out.kind is None:
        raise OutDirError(
            f"--out {out.path} holds files ensemble-eval did not write ({_foreign(out)}); choose a new or empty "
            "directory, or pass --overwrite"
        )
    for name in outputs:
        if not out.has(name):
            continue
        recorded = out.files.get(name)
        if out.kind == "legacy-report":
            continue  # written before files were recorded: the report's own names
        if recorded is None or not same_as_recorded(out.path / name, recorded):
            raise OutDirError(
                f"{out.path / name} was changed after ensemble-eval wrote it (or was not written by it); "
                "pass --overwrite to replace it, or choose another --out"
            )
    return out


def check_compare_out(path: str | os.PathLike, overwrite: bool, outputs: tuple[str, ...]) -> OutDir:
    """The rules for `compare --out`: a new or empty directory, or one a comparison wrote whose
    files `outputs` (outputs.COMPARE_FILES) are unchanged since; a directory of other files only
    with --overwrite; never a run's or a report's directory (not even with --overwrite: the
    comparison's marker would replace theirs, and a run given to compare is such a directory)."""
    out = inspect_out(path)
    check_writable_place(out)
    if not out.exists or out.empty:
        return out
    if out.kind in ("run", "legacy-run", "report", "legacy-report"):
        what = "a run's results" if "run" in out.kind else "a report of `ensemble-eval report`"
        raise OutDirError(f"--out {out.path} holds {what}; choose a new directory for the comparison")
    if overwrite:
        return out
    if out.kind is None:
        raise OutDirError(
            f"--out {out.path} holds files ensemble-eval did not write ({_foreign(out)}); choose a new or empty "
            "directory, or pass --overwrite"
        )
    for name in outputs:
        if out.has(name) and not same_as_recorded(out.path / name, out.files.get(name) or {}):
            raise OutDirError(
                f"{out.path / name} was changed after ensemble-eval wrote it (or was not written by it); "
                "pass --overwrite to replace it, or choose another --out"
            )
    return out


def file_record(path: Path) -> dict:
    """What identifies a file we wrote: size and mtime, plus the content hash of files up to 64 MiB."""
    st = path.stat()
    record: dict = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
    if st.st_size <= HASHED_UP_TO:
        record["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return record


def same_as_recorded(path: Path, recorded: dict) -> bool:
    try:
        st = path.lstat()
        if not stat.S_ISREG(st.st_mode) or st.st_size != recorded.get("size"):
            return False
        if "sha256" in recorded:
            return hashlib.sha256(path.read_bytes()).hexdigest() == recorded["sha256"]
        return st.st_mtime_ns == recorded.get("mtime_ns")
    except OSError:
        return False


def claim(path: Path, kind: str) -> None:
    """Create `path` (and its parents) and mark it as the tool's own (kind "run", "report", "compare")."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _raise_os(exc, path, "--out")
    marker = read_marker(path)
    if marker is not None and marker["kind"] == kind:
        return
    try:
        write_json(path / MARKER, _marker(kind, {}))
    except OSError as exc:
        _raise_os(exc, path, "--out")


def _marker(kind: str, files: dict) -> dict:
    from . import __version__

    return {
        "tool": "ensemble-eval",
        "kind": kind,
        "version": __version__,
        "note": "this directory was written by ensemble-eval; files listed here are replaced only by it",
        "updated_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "files": files,
    }


def record_files(path: Path, kind: str, names: list[str], forget: list[str] = ()) -> None:
    """Add (or refresh) `names` in the marker of `path`, as written by the tool now; drop `forget`."""
    marker = read_marker(path)
    files = dict(marker["files"]) if marker is not None else {}
    for name in forget:
        files.pop(name, None)
    for name in names:
        files[name] = file_record(path / name)
    write_json(path / MARKER, _marker(kind, files))


def remove_own(path: Path, names: tuple[str, ...] | list[str] = OUTPUT_FILES, unchanged_only: bool = False) -> None:
    """Remove the files `names` (default: every output file, outputs.OUTPUT_FILES) of `path` (regular
    files and links only; `unchanged_only`: only those the marker records and that are unchanged since)."""
    files = (read_marker(path) or {"files": {}})["files"]
    for name in names:
        target = path / name
        try:
            st = target.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISDIR(st.st_mode):
            continue
        if unchanged_only and not (name in files and same_as_recorded(target, files[name])):
            continue
        target.unlink()


def check_validate_json(target: str | None, inputs: list[str], overwrite: bool) -> None:
    """validate --json FILE: never one of the checkpoints given (`inputs`), never a file validate did
    not write (unless --overwrite), never through a link or into a FIFO; checked before any
    checkpoint is read."""
    if target in (None, "-"):
        return
    if not target.strip():
        raise OutDirError("--json is empty; name a file, or give --json alone for standard output")
    path = Path(target)
    try:
        exists = os.path.lexists(path)
        for given in inputs:
            if exists and os.path.exists(given) and os.path.samefile(given, path):
                raise OutDirError(f"--json {target} is one of the checkpoints being validated; choose another file")
        if not exists:
            parent = path.absolute().parent
            if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
                raise OutDirError(f"--json {target} cannot be written ({parent} is not a writable directory)")
            return
        if path.is_symlink() or not path.is_file():
            raise OutDirError(f"--json {target} exists and is not a regular file; choose another file")
        if overwrite:
            return
        try:
            data = json.loads(read_regular_file(path, 64 << 20, follow_links=False))
        except (OSError, ValueError, RecursionError):
            data = None
    except OSError as exc:
        raise OutDirError(f"--json {target[:80]} cannot be used ({exc.strerror or exc}); choose another file") from None
    ours = isinstance(data, dict) and (
        data.get("tool") == VALIDATE_TOOL or (isinstance(data.get("checkpoints"), list) and "usable" in data)
    )
    if not ours:
        raise OutDirError(
            f"--json {target} exists and is not a report of ensemble-eval validate; choose another file, "
            "or pass --overwrite to replace it"
        )


# ---------------------------------------------------------------------------------------
# One run per directory

_HELD: set[tuple[int, int]] = set()  # (device, inode) of the lock files this process holds


class RunLock:
    """One run per directory: a POSIX record lock on DIR/.lock for the life of the run (see the
    module docstring). The file holds the holder's pid, for the refusal message."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / LOCK
        self.fd: int | None = None
        self.key: tuple[int, int] | None = None

    def acquire(self) -> RunLock:
        import fcntl

        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0)
        try:
            fd = os.open(self.path, flags, 0o644)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise OutDirError(
                    f"{self.path} is a symbolic link; ensemble-eval never follows links there: remove it"
                ) from None
            _raise_os(exc, self.out, "--out")
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise NotRegularFile(f"{self.path} is not a regular file")
            key = (st.st_dev, st.st_ino)
            if key in _HELD:
                raise BlockingIOError
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except (BlockingIOError, PermissionError):
            holder = _holder(fd)
            os.close(fd)
            raise OutDirError(
                f"--out {self.out} is in use by another ensemble-eval run (pid {holder}); wait for it to "
                "finish (then --resume if it was stopped), or choose another --out"
            ) from None
        except NotRegularFile:
            os.close(fd)
            raise OutDirError(f"{self.path} is not a regular file; remove it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd, self.key = fd, key
        _HELD.add(key)
        return self

    def release(self) -> None:
        """Closing the descriptor releases the lock; the file stays (see the module docstring)."""
        if self.fd is None:
            return
        _HELD.discard(self.key)
        os.close(self.fd)
        self.fd = self.key = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()


def lock_holder(out: Path) -> str | None:
    """The pid (as its lock file says) of another process holding the run lock of `out`, else None.

    Tried by taking the lock and letting it go at once. Never on a lock this process holds:
    closing any descriptor of a file drops every POSIX lock the process has on it."""
    import fcntl

    try:
        st = os.lstat(out / LOCK)
    except OSError:
        return None  # no lock file
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) in _HELD:
        return None  # a link there (acquire() refuses it), or ours: not even opened
    try:
        fd = os.open(out / LOCK, os.O_RDWR | os.O_CLOEXEC | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return None
    try:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return _holder(fd)
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _holder(fd: int) -> str:
    try:
        return os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
    except OSError:
        return "unknown"
