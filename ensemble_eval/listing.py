"""What --data holds: the samples to evaluate, the entries that are a problem, the rest counted.

One listing serves the run and `check-data` (`list_dataset` -> `Listing`), so both see the
same files:

- Regular files with an image extension become samples: JPEG's (.jpeg, .jpg, .jfif, .jpe)
  and every extension Pillow registers for a format it can decode (`image_extensions`).
- Hidden entries (names starting with '.') are skipped at every depth, and counted.
- Symlinked folders are followed, once: a link to one of its own ancestors (a loop) or to a
  folder already listed is a problem, not followed. Symlinked files are followed.
- Folders that cannot be listed, special files (FIFO, socket, device), broken or looping
  symlinks are problems: (relative path, reason), never read, never blocking.
- Every other file is counted by kind (its extension) for one summary line.

Labels files (CSV, Kaggle's LOC_val_solution.csv, the ILSVRC2012 devkit) are read here too,
with the rules of docs/protocol.md: names normalised before duplicates are checked, names
that leave --data refused, two columns, ASCII class indices.

Image files are read here as well (`read_image_file`, `file_identity`): without blocking,
refusing anything but a regular file, at most MAX_IMAGE_BYTES, with the identity of the
bytes read (size, mtime, 64-bit content digest) for --resume to check.

Shards (a folder of .parquet or .tar files, a glob, one shard file) are recognised here and
listed by shards.py into the same Listing; `read_sample` reads any sample, file or shard member.

Standard library only at module level (Pillow's registry is read on first use; scipy only
for a devkit): the CLI lists --data before torch is imported.
"""

from __future__ import annotations

import csv
import errno
import hashlib
import heapq
import io
import logging
import os
import posixpath
import stat
from collections import Counter
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from .errors import UserError, short_repr
from .fileio import FileTooLarge, NotRegularFile, file_kind, read_regular, read_regular_file, read_text

log = logging.getLogger(__name__)

# JPEG and its aliases plus the common formats; `image_extensions()` adds the rest of Pillow's.
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".jfif", ".jpe", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")

# Formats Pillow registers but that are never decoded from data: EPS is rendered by running
# Ghostscript (an external program) on the file; MPEG and the stub formats (BUFR, GRIB, HDF5,
# WMF/EMF off Windows) are only identified, their pixels cannot be read.
NOT_DECODED = frozenset({"EPS", "MPEG"})

# The largest image file read (far above any real photo: ImageNet's largest is ~16 MB).
# Bigger files are problems ("file too large"), never read into memory.
MAX_IMAGE_BYTES = 256 * 1024 * 1024
# The largest labels file or devkit member read (ImageNet-21k's file list is ~0.5 GB).
MAX_LABELS_BYTES = 1024 * 1024 * 1024
# Longest class index accepted in a labels file (digits).
MAX_INDEX_DIGITS = 9

# keys of Listing.ignored besides file extensions
HIDDEN = "hidden"
UNLABELLED = "unlabelled"
OUTSIDE_CLASSES = "outside class folders"
NO_EXTENSION = "without extension"
OTHER_EXTENSION = "with a long extension"  # extensions over 16 characters (or unprintable), together

NO_FILE = (-1, -1, -1)  # the identity of a file that could not be read at all


class DataError(UserError):
    """A dataset, label file or image that cannot be used; the message says what to do.

    For an image, `reason` is the problem alone (without the path), as recorded in `skipped`.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class ImageClass:
    index: int
    wnid: str
    name: str


IMAGENET_CLASSES = 1000  # ImageNet-1k: the classes of labels given as wnids


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageClass, ...]:
    """The 1000 ImageNet-1k classes in the canonical (sorted wnid) order."""
    text = resources.files("ensemble_eval.classes").joinpath("imagenet_classes.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    classes = tuple(ImageClass(int(i), w, n) for i, w, n in rows)
    assert [c.index for c in classes] == list(range(len(classes))), "class list out of order"
    return classes


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    return {c.wnid: c.index for c in imagenet_classes()}


@dataclass(frozen=True)
class Sample:
    path: Path
    rel_path: str  # relative to the data root, '/'-separated
    target: int
    wnid: str | None = None  # set when the label came from a WordNet id (ImageNet-1k class space)
    group: str | None = None  # the evaluation set within --data it belongs to (ImageNet-C: 'fog/3')
    member: tuple | None = None  # where in a shard file `path` its bytes are (shards.py); None: the file itself


# --- which files are images ---------------------------------------------------------------


@lru_cache(maxsize=1)
def decodable_formats() -> tuple[str, ...]:
    """Pillow's format ids that decoding tries, in Pillow's own order: every format with an
    opener, except NOT_DECODED and the stub formats (identified only)."""
    from PIL import Image, ImageFile

    Image.init()
    out = []
    for fmt in Image.ID:
        factory = Image.OPEN.get(fmt, (None,))[0]
        if factory is None or fmt in NOT_DECODED:
            continue
        if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
            continue
        out.append(fmt)
    return tuple(out)


@lru_cache(maxsize=1)
def image_extensions() -> frozenset[str]:
    """Lower-case extensions listed as images: IMAGE_EXTENSIONS and every extension Pillow
    registers for a decodable format (.gif, .ico, .jp2, .avif, ... as the installed Pillow has)."""
    from PIL import Image

    formats = set(decodable_formats())
    if "JPEG" in formats:
        formats.add("MPO")  # multi-picture JPEGs: opened by the JPEG opener
    registered = Image.registered_extensions()
    return frozenset(IMAGE_EXTENSIONS) | {ext.lower() for ext, fmt in registered.items() if fmt in formats}


def is_image_name(name: str) -> bool:
    """True for a non-hidden name with an image extension (see image_extensions)."""
    return not name.startswith(".") and posixpath.splitext(name)[1].lower() in image_extensions()


def _kind_of(name: str) -> str:
    ext = posixpath.splitext(name)[1].lower()
    if not ext:
        return NO_EXTENSION
    return ext if len(ext) <= 16 and ext.isprintable() else OTHER_EXTENSION


def display_path(rel: str) -> str:
    """`rel` printable on one line: control characters and undecodable bytes escaped."""
    return rel if rel.isprintable() else rel.encode("unicode_escape", "backslashreplace").decode("ascii")


# --- reading image files ----------------------------------------------------------------------


def _digest(data: bytes) -> int:
    """64-bit BLAKE2b of the bytes as a signed int64."""
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)


def _read_bounded(path: str | os.PathLike) -> tuple[bytes, tuple[int, int, int]]:
    """(bytes, (size, mtime_ns, digest)) of a regular file of at most MAX_IMAGE_BYTES.

    Opened without blocking, the type checked on the open descriptor (a FIFO put in place
    after the listing is refused, not read). OSError (fileio.NotRegularFile, FileTooLarge)."""
    try:
        data, st = read_regular(path, MAX_IMAGE_BYTES)
    except FileTooLarge:
        raise FileTooLarge(f"above the {MAX_IMAGE_BYTES >> 20} MiB bound on an image file") from None
    return data, (len(data), st.st_mtime_ns, _digest(data))


def file_identity(path: str | os.PathLike) -> tuple[int, int, int]:
    """(size in bytes, mtime in ns, 64-bit content digest as signed int64) of a file, read
    exactly as decoding reads it. Raises OSError (NotRegularFile, FileTooLarge included) when
    the file cannot be read."""
    return _read_bounded(path)[1]


def read_reason(exc: OSError, path: str | os.PathLike) -> str:
    """The reason, without the path, why an image file could not be read."""
    if isinstance(exc, NotRegularFile):
        text = str(exc)
        prefix = f"{path} is "
        return text[len(prefix) :] if text.startswith(prefix) else text
    if isinstance(exc, FileTooLarge):
        return f"file too large: {exc}"
    return f"cannot be read ({exc.strerror or type(exc).__name__})"


def read_image_file(path: str | os.PathLike) -> tuple[bytes, tuple[int, int, int]]:
    """(bytes, identity) of an image file (see file_identity); DataError with the reason."""
    try:
        return _read_bounded(path)
    except OSError as exc:
        reason = read_reason(exc, path)
        raise DataError(f"cannot read image {path}: {reason}", reason=reason) from exc


def read_sample(sample: Sample) -> tuple[bytes, tuple[int, int, int]]:
    """(bytes, identity) of a sample's image: its file, or its member of a shard file (shards.py).
    DataError with the reason when it cannot be read."""
    if sample.member is None:
        return read_image_file(sample.path)
    from .shards import read_member

    return read_member(sample)


# --- the listing -----------------------------------------------------------------------------


@dataclass
class Listing:
    """The dataset under `root`, every entry accounted for.

    samples: what is evaluated, sorted by rel_path.
    problems: (relative path, reason) of entries that cannot be used, sorted; folders end in '/'.
    ignored: entry counts by kind: a file extension ('.txt'), NO_EXTENSION, OTHER_EXTENSION,
        HIDDEN (hidden files and folders, not their contents), UNLABELLED (images a labels
        file does not name), OUTSIDE_CLASSES (images at the top of a class-folder layout).
    """

    root: Path
    samples: list[Sample]
    problems: list[tuple[str, str]] = field(default_factory=list)
    ignored: dict[str, int] = field(default_factory=dict)
    layout: str = "wnid folders"  # what --data was recognised as, for check-data and the log
    shards: int = 0  # shard files read (Parquet or tar), 0 for loose image files

    def recognised_line(self) -> str:
        """What --data was recognised as: 'Parquet shards: 3 files, 120 images, 40 classes',
        'wnid folders: 940 images, 940 classes'."""
        files = f"{_count(self.shards, 'file', 'files')}, " if self.shards else ""
        if self.layout == CORRUPTION_TREE:  # 'ImageNet-C tree: 15 corruptions x 5 severities, ...'
            corruptions = {s.group.rpartition("/")[0] for s in self.samples if s.group}
            severities = {s.group.rpartition("/")[2] for s in self.samples if s.group}
            files = f"{_count(len(corruptions), 'corruption', 'corruptions')} x {len(severities)} severities, "
        images = _count(len(self.samples), "image", "images")
        return f"{self.layout}: {files}{images}, {_count(len({s.target for s in self.samples}), 'class', 'classes')}"

    def ignored_line(self) -> str:
        """'ignored 3 files that are not images: 2 .txt, 1 .xml; 4 hidden entries', or ''."""
        kinds = {k: n for k, n in self.ignored.items() if k not in (HIDDEN, UNLABELLED, OUTSIDE_CLASSES)}
        parts = []
        if kinds:
            total = sum(kinds.values())
            ordered = sorted(kinds.items(), key=lambda kv: (-kv[1], kv[0]))
            shown = ", ".join(f"{n} {k}" for k, n in ordered[:8])
            if len(ordered) > 8:
                shown += f", {sum(n for _, n in ordered[8:])} of {len(ordered) - 8} other kinds"
            parts.append(f"{_count(total, 'file that is not an image', 'files that are not images')}: {shown}")
        for key, one, many in (
            (UNLABELLED, "image without a label", "images without a label"),
            (OUTSIDE_CLASSES, "image outside the class folders", "images outside the class folders"),
            (HIDDEN, "hidden entry", "hidden entries"),
        ):
            if self.ignored.get(key):
                parts.append(_count(self.ignored[key], one, many))
        return "ignored " + "; ".join(parts) if parts else ""

    def problem_lines(self) -> list[str]:
        """'relative/path: reason', one per problem, printable."""
        return [f"{display_path(rel)}: {why}" for rel, why in self.problems]

    def usable(self) -> list[Sample]:
        """The samples, after one warning line on what was ignored or cannot be used; DataError when
        nothing can be evaluated."""
        if not self.samples:
            if not self.problems:
                raise DataError(f"no images found under {self.root}; {self.ignored_line() or 'it is empty'}")
            rel, why = self.problems[0]
            raise DataError(
                f"nothing to evaluate under {self.root}: {_count(len(self.problems), 'entry', 'entries')} cannot "
                f"be used (first: {display_path(rel)[:200]}: {why}); `ensemble-eval check-data {self.root}` lists them"
            )
        if self.problems or self.ignored:
            log.warning("%s", self.summary_line())
        return self.samples

    def to_dict(self) -> dict:
        """For summary.json: what under --data was not evaluated, and why."""
        return {
            "problems": [{"path": display_path(rel), "reason": why} for rel, why in self.problems],
            "ignored": dict(sorted(self.ignored.items())),
        }

    def summary_line(self) -> str:
        """One line on what was ignored and what could not be used ('' when nothing)."""
        parts = [self.ignored_line()] if self.ignored else []
        if self.problems:
            rel, why = self.problems[0]
            parts.append(
                f"{_count(len(self.problems), 'entry', 'entries')} cannot be used "
                f"(first: {display_path(rel)[:200]}: {why}); `ensemble-eval check-data {self.root}` lists them"
            )
        return f"{self.root}: " + "; ".join(parts) if parts else ""


def _count(n: int, one: str, many: str) -> str:
    return f"{n} {one if n == 1 else many}"


def _scandir(path: str | os.PathLike) -> list[os.DirEntry]:
    """The entries of a folder (OSError when it cannot be listed)."""
    with os.scandir(path) as it:
        return list(it)


def _os_reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


@dataclass
class _Tree:
    files: list[tuple[str, str]]  # (rel path, path) of every regular file reached, any order
    problems: dict[str, str]
    ignored: Counter
    top_names: list[str]  # the non-hidden names directly under the root


def _walk(root: Path, root_entries: list[os.DirEntry] | None = None) -> _Tree:
    """Every entry under root (whose entries may be given): regular files, problems, hidden
    entries counted.

    Real folders first, then symlinked ones (in path order), so a link never takes the place
    of the real folder it points to; a folder is listed once (by device and inode)."""
    return _Walker(root).walk(root_entries)


class _Walker:
    """The state of one _walk: folders to list, symlinked folders deferred, folders seen."""

    def __init__(self, root: Path):
        self.root = root
        self.tree = _Tree([], {}, Counter(), [])
        root_st = os.stat(root)
        root_id = (root_st.st_dev, root_st.st_ino)
        self.visited: dict[tuple[int, int], str] = {root_id: ""}
        self.stack: list[tuple[Path, str, tuple]] = [(root, "", (root_id,))]
        self.deferred: list[tuple[str, str, tuple]] = []  # heap of (rel, path, chain of the folder holding the link)

    def walk(self, root_entries: list[os.DirEntry] | None) -> _Tree:
        while self.stack or self.deferred:
            if not self.stack:
                self._follow(*heapq.heappop(self.deferred))
                continue
            folder, rel, chain = self.stack.pop()
            try:
                given = folder is self.root and root_entries is not None
                entries = root_entries if given else _scandir(folder)
            except OSError as exc:
                what = f"{rel}/" if rel else "."
                self.tree.problems[what] = f"folder cannot be listed ({_os_reason(exc)})"
                continue
            for entry in entries:
                self._entry(entry, rel, chain)
        return self.tree

    def _follow(self, rel: str, link: str, chain: tuple) -> None:
        """A symlinked folder, after every real one: listed unless it loops or was listed."""
        try:
            st = os.stat(link)
        except OSError as exc:
            self.tree.problems[rel] = f"symbolic link cannot be followed ({_os_reason(exc)})"
            return
        ident = (st.st_dev, st.st_ino)
        target = self.visited.get(ident)
        if ident in chain:
            where = f"{display_path(target)}/" if target else "the --data folder"
            self.tree.problems[rel] = f"symbolic link to {where}, a folder holding it: not followed (it would loop)"
        elif target is not None:
            self.tree.problems[rel] = f"symbolic link to {display_path(target)}/, a folder already listed: not followed"
        else:
            self.visited[ident] = rel
            self.stack.append((Path(link), rel, (*chain, ident)))

    def _entry(self, entry: os.DirEntry, rel: str, chain: tuple) -> None:
        """One entry of a folder: a file kept, a folder queued, anything else a problem."""
        name = entry.name
        child = f"{rel}/{name}" if rel else name
        if name.startswith("."):
            self.tree.ignored[HIDDEN] += 1
            return
        if not rel:
            self.tree.top_names.append(name)
        try:
            mode = self._mode(entry, child, chain)
        except OSError as exc:
            self.tree.problems[child] = f"cannot be examined ({_os_reason(exc)})"
            return
        if mode is None:  # a folder (queued), or a link that cannot be followed (a problem)
            return
        if stat.S_ISREG(mode):
            self.tree.files.append((child, entry.path))
        else:
            self.tree.problems[child] = f"a {file_kind(mode)}, not a regular file"

    def _mode(self, entry: os.DirEntry, child: str, chain: tuple) -> int | None:
        """The file mode of a non-folder entry (through a symbolic link); None once a folder is
        queued or a link's problem noted."""
        if entry.is_symlink():
            try:
                st = os.stat(entry.path)
            except FileNotFoundError:
                self.tree.problems[child] = f"broken symbolic link (to {short_repr(os.readlink(entry.path))})"
                return None
            except OSError as exc:
                loop = exc.errno == errno.ELOOP
                why = "symbolic link loop" if loop else f"symbolic link cannot be followed ({_os_reason(exc)})"
                self.tree.problems[child] = why
                return None
            if stat.S_ISDIR(st.st_mode):
                heapq.heappush(self.deferred, (child, entry.path, chain))
                return None
            return st.st_mode
        if entry.is_dir(follow_symlinks=False):
            st = entry.stat(follow_symlinks=False)
            ident = (st.st_dev, st.st_ino)
            if ident in self.visited:  # a bind mount of a folder already listed
                self.tree.problems[f"{child}/"] = (
                    f"the same folder as {display_path(self.visited[ident])}/: not listed twice"
                )
            else:
                self.visited[ident] = child
                self.stack.append((Path(entry.path), child, (*chain, ident)))
            return None
        if entry.is_file(follow_symlinks=False):
            return stat.S_IFREG
        return entry.stat(follow_symlinks=False).st_mode


def _check_root(root: Path) -> list[os.DirEntry]:
    """The entries of the --data folder; DataError when it is not a folder this user can list."""
    try:
        st = os.stat(root)
    except FileNotFoundError:
        raise DataError(
            f"data directory {root} does not exist; pass --data DIR with one folder per WordNet id"
        ) from None
    except OSError as exc:
        raise DataError(f"cannot reach --data {root} ({_os_reason(exc)}); check the path and its permissions") from exc
    if not stat.S_ISDIR(st.st_mode):
        kind = "file" if stat.S_ISREG(st.st_mode) else file_kind(st.st_mode)
        raise DataError(f"--data {root} is a {kind}; pass the directory that holds the images")
    try:
        return _scandir(root)
    except OSError as exc:
        raise DataError(
            f"cannot list --data {root} ({_os_reason(exc)}); give this user read and execute permission on it"
        ) from exc


def list_dataset(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    image_column: str = "image",
    label_column: str = "label",
) -> Listing:
    """The dataset under `root`, every entry accounted for (see Listing and the module doc).

    Without `labels`, `root` holds one folder per class named by its WordNet id (ImageNet's
    layout). With `labels` (see `read_labels`), only the files labelled there are evaluated.
    Shards (a folder of .parquet or .tar files, a glob, one shard file) are listed by shards.py,
    Parquet's by `image_column` and `label_column`.
    DataError (exit 2) for a dataset that cannot be used at all: a missing root, a folder that
    is not a wnid, a bad labels file, labelled files that do not exist, nothing to evaluate
    and no problem to show for it."""
    from . import shards

    if shards.names_shards(root):
        return shards.list_shards(root, labels, image_column, label_column)
    root = Path(root)
    entries = _check_root(root)
    if shards.holds_shards(entries):
        return shards.list_shards(root, labels, image_column, label_column, entries)
    if labels is not None:
        listing = _list_labelled(root, Path(labels), entries)
        listing.layout = "folder with a labels file"
        return listing
    mapping = wnid_to_index()
    classes = []
    for entry in entries:
        if entry.name.startswith("."):
            continue
        try:
            is_dir = entry.is_dir()  # a symlinked class folder counts
        except OSError:
            is_dir = False  # reported by the walk
        if is_dir:
            classes.append(entry.name)
    if not classes:
        raise DataError(
            f"{root} has no class folders; use one folder per WordNet id (n01440764/...) "
            "or pass --labels FILE.csv for a flat folder"
        )
    unknown = sorted(d for d in classes if d not in mapping)
    layout = WNID_FOLDERS
    if unknown and all(_is_class_index(d) for d in classes):
        layout = INDEX_FOLDERS
    elif unknown and _is_corruption_tree(root, classes, mapping):
        layout = CORRUPTION_TREE
    elif unknown:
        raise DataError(
            f"folder {short_repr(unknown[0])} in {root} is not an ImageNet-1k WordNet id ({len(unknown)} such "
            "folder(s)); name class folders by wnid (e.g. n01440764) or by class index (0-999, ImageNet-V2), "
            "use an ImageNet-C tree (<corruption>/<severity>/<wnid>/), or pass --labels FILE.csv"
        )
    tree = _walk(root, entries)
    classes_of = {c.index: c.wnid for c in imagenet_classes()}
    depth = 3 if layout == CORRUPTION_TREE else 1  # folders above the image: class, or corruption/severity/class
    samples = []
    for rel, path in tree.files:
        parts = rel.split("/")
        name = parts[-1]
        if not is_image_name(name):
            tree.ignored[_kind_of(name)] += 1
        elif len(parts) <= depth or not _in_classes(parts, depth, layout, mapping):
            tree.ignored[OUTSIDE_CLASSES] += 1
        elif layout == INDEX_FOLDERS:
            samples.append(Sample(Path(path), rel, int(parts[0]), classes_of[int(parts[0])]))
        else:
            wnid = parts[depth - 1]
            group = "/".join(parts[:2]) if layout == CORRUPTION_TREE else None
            samples.append(Sample(Path(path), rel, mapping[wnid], wnid, group))
    listing = _finish(root, samples, tree)
    listing.layout = layout
    if not listing.samples and not listing.problems:
        raise DataError(f"no images found under {root} (looked for {', '.join(IMAGE_EXTENSIONS)} and Pillow's formats)")
    return listing


WNID_FOLDERS, INDEX_FOLDERS, CORRUPTION_TREE = "wnid folders", "index folders", "ImageNet-C tree"
SEVERITY_NAMES = frozenset("12345")


def _is_class_index(name: str) -> bool:
    """'0' ... '999' as written (ImageNet-V2's folders): no sign, no leading zero."""
    return name.isascii() and name.isdigit() and len(name) <= 3 and (name == "0" or name[0] != "0")


def _subfolders(path: Path) -> list[str] | None:
    """The names of the folders in `path` that are not hidden (None when it cannot be listed)."""
    try:
        return [e.name for e in _scandir(path) if not e.name.startswith(".") and e.is_dir()]
    except OSError:
        return None


def _is_corruption_tree(root: Path, tops: list[str], mapping: dict[str, int]) -> bool:
    """Whether `root` is laid out as ImageNet-C: <corruption>/<severity 1-5>/<wnid>/images, every
    corruption folder holding severity folders only, each of those wnid folders only."""
    first = None
    for top in tops:
        if top in mapping or _is_class_index(top):
            return False
        severities = _subfolders(root / top)
        if not severities or not set(severities) <= SEVERITY_NAMES:
            return False
        first = first or root / top / severities[0]
    classes = _subfolders(first)
    return bool(classes) and all(w in mapping for w in classes)


def _in_classes(parts: list[str], depth: int, layout: str, mapping: dict[str, int]) -> bool:
    """Whether the folders above an image are a class folder of the layout (an ImageNet-C tree:
    a severity folder 1-5 and a wnid; the top folder was checked with the root)."""
    if layout != CORRUPTION_TREE:
        return True
    return parts[1] in SEVERITY_NAMES and parts[2] in mapping


def _finish(root: Path, samples: list[Sample], tree: _Tree) -> Listing:
    return Listing(
        root,
        sorted(samples, key=lambda s: s.rel_path),
        sorted(tree.problems.items()),
        dict(sorted(tree.ignored.items())),
    )


def list_samples(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    image_column: str = "image",
    label_column: str = "label",
) -> list[Sample]:
    """The evaluation samples of a dataset, sorted by relative path (see `list_dataset`).

    Logs one warning line when files were ignored or entries cannot be used; DataError when
    nothing can be evaluated."""
    return list_dataset(root, labels, image_column, label_column).usable()


# --- labels -------------------------------------------------------------------------------------


class _Label(NamedTuple):
    target: int
    wnid: str | None
    where: str  # 'file:line' for messages


def _read_text(path: Path, what: str) -> str:
    """A labels file as text (UTF-8, a BOM allowed), read without blocking and bounded."""
    fix = "pass the labels of this dataset (a CSV with rows filename,wnid, LOC_val_solution.csv or the devkit)"
    return read_text(path, MAX_LABELS_BYTES, what, fix, DataError, encoding="utf-8-sig")  # -sig: a spreadsheet's BOM


def _rows(text: str, path: Path):
    """(line number, fields) of every non-blank CSV row; DataError for a malformed one."""
    reader = csv.reader(io.StringIO(text, newline=""))
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise DataError(f"{path}:{reader.line_num}: not a valid CSV row ({exc}); fix or remove that line") from exc
        if row and "".join(row).strip():
            yield reader.line_num, row


def _two_columns(row: list[str], where: str) -> tuple[str, str]:
    fields = [f.strip() for f in row]
    while len(fields) > 2 and not fields[-1]:  # trailing empty cells, as spreadsheets write them
        fields.pop()
    if len(fields) != 2:
        got = f"{len(fields)} columns" if len(fields) > 2 else f"{short_repr(row)}"
        raise DataError(f"{where}: expected 2 columns 'filename,label', got {got}; remove the other columns")
    return fields[0], fields[1]


@lru_cache(maxsize=8)
def _bases(root_abs: str) -> tuple[str, ...]:
    """The --data folder as given and as resolved (absolute names may use either)."""
    return tuple(dict.fromkeys((root_abs, os.path.realpath(root_abs))))


def _normalise(name: str, root_abs: str, where: str) -> str:
    """`name` as a '/'-separated path relative to --data; DataError when it leaves --data
    (lexically: '..' out of it, or an absolute path elsewhere)."""
    if "/" not in name and name not in ("", ".", "..") and "\0" not in name and len(name) <= 63:
        return name  # a plain file name (at most 4 bytes a character: under the 255-byte limit)
    if not name or "\0" in name:
        raise DataError(f"{where}: {short_repr(name)} is not a file name; fix that row")
    path = posixpath.normpath(name)
    if posixpath.isabs(path):
        for base in _bases(root_abs):
            if base == "/" or path == base or path.startswith(base + "/"):
                path = posixpath.relpath(path, base)
                break
        else:
            path = "../"
    if path in (".", "..") or path.startswith("../"):
        raise DataError(
            f"{where}: {short_repr(name)} is not a file under --data {root_abs}; "
            "name files relative to --data (e.g. ILSVRC2012_val_00000001.JPEG)"
        )
    if len(os.fsencode(path)) > 4000 or any(len(os.fsencode(part)) > 255 for part in path.split("/")):
        raise DataError(f"{where}: file name {short_repr(name)} is too long for a file system; fix that row")
    return path


def _parse_label(label: str, where: str, mapping: dict[str, int]) -> tuple[int, str | None]:
    if label in mapping:
        return mapping[label], label
    if label.isascii() and label.isdigit() and len(label) <= MAX_INDEX_DIGITS:
        return int(label), None
    raise DataError(
        f"{where}: label {short_repr(label)} is neither an ImageNet WordNet id nor a class index >= 0 "
        f"(ASCII digits, at most {MAX_INDEX_DIGITS}); fix that row"
    )


def _add(out: dict[str, _Label], rel: str, label: _Label) -> None:
    old = out.get(rel)
    if old is not None and (old.target, old.wnid) != (label.target, label.wnid):
        raise DataError(
            f"{label.where}: {short_repr(rel)} is labelled twice with different classes (also at {old.where}); "
            "keep one row"
        )
    if old is None:
        out[rel] = label


def _read_labels_csv(labels: Path, text: str, root_abs: str) -> dict[str, _Label]:
    """filename,wnid or filename,index (an optional header row such as filename,label)."""
    mapping = wnid_to_index()
    out: dict[str, _Label] = {}
    first = True
    source = str(labels)
    for lineno, row in _rows(text, labels):
        where = f"{source}:{lineno}"
        name, label = _two_columns(row, where)
        header = first and not is_image_name(name) and label not in mapping and label.replace("_", "").isalpha()
        first = False
        if header:
            continue
        target, wnid = _parse_label(label, where, mapping)
        _add(out, _normalise(name, root_abs, where), _Label(target, wnid, where))
    if not out:
        raise DataError(f"labels file {labels} holds no rows; expected lines 'filename,wnid' or 'filename,index'")
    return out


def _by_stem(names: list[str]) -> dict[str, str]:
    """Image file names keyed by name without extension (these labels files omit it)."""
    return {posixpath.splitext(n)[0]: n for n in names if is_image_name(n)}


def _read_loc_solution(path: Path, text: str, root_abs: str, top_names: list[str]) -> dict[str, _Label]:
    """Kaggle's LOC_val_solution.csv: ImageId,PredictionString ("wnid x y x y wnid ...")."""
    mapping = wnid_to_index()
    by_stem = _by_stem(top_names)
    out: dict[str, _Label] = {}
    rows = _rows(text, path)
    next(rows, None)
    for lineno, row in rows:
        where = f"{path}:{lineno}"
        image_id, boxes = _two_columns(row, where)
        wnid = boxes.split()[0] if boxes.split() else ""
        if wnid not in mapping:
            raise DataError(f"{where}: {short_repr(wnid)} is not an ImageNet-1k WordNet id; fix that row")
        name = by_stem.get(image_id, image_id + ".JPEG")
        _add(out, _normalise(name, root_abs, where), _Label(mapping[wnid], wnid, where))
    if not out:
        raise DataError(f"{path} holds no rows below its header ImageId,PredictionString")
    return out


def _devkit_member(devkit: Path, name: str) -> bytes:
    """data/<name> of the devkit folder or tarball, read without blocking and bounded."""
    import tarfile

    try:
        if devkit.is_dir():
            return read_regular_file(devkit / "data" / name, MAX_LABELS_BYTES)
        blob = read_regular_file(devkit, MAX_LABELS_BYTES)
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            for member in tar:
                if member.name.endswith("/data/" + name) or member.name == "data/" + name:
                    if not member.isfile() or member.size > MAX_LABELS_BYTES:
                        break
                    return tar.extractfile(member).read()
    except FileNotFoundError as exc:
        if devkit.exists():
            raise DataError(
                f"{devkit} has no data/{name}; pass the ILSVRC2012 devkit (ILSVRC2012_devkit_t12, dir or .tar.gz)"
            ) from exc
        raise DataError(
            f"labels {devkit} does not exist; pass --labels ILSVRC2012_devkit_t12 (dir or .tar.gz)"
        ) from exc
    except (OSError, tarfile.TarError, EOFError) as exc:
        raise DataError(
            f"cannot read the devkit {devkit} ({type(exc).__name__}: {str(exc)[:120]}); "
            "pass ILSVRC2012_devkit_t12 (dir or .tar.gz), downloaded again if damaged"
        ) from exc
    raise DataError(f"{devkit} has no data/{name}; pass the ILSVRC2012 devkit (ILSVRC2012_devkit_t12, dir or .tar.gz)")


def _devkit_leaves(devkit: Path, blob: bytes) -> dict[int, str]:
    """ILSVRC2012_ID -> wnid of the devkit's leaf synsets (meta.mat)."""
    import scipy.io

    damaged = f"the devkit's data/meta.mat in {devkit} is damaged"
    try:
        synsets = scipy.io.loadmat(io.BytesIO(blob), squeeze_me=True)["synsets"]
        leaves = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in synsets if int(s["num_children"]) == 0}
    except Exception as exc:  # a damaged .mat can fail in any way inside scipy
        raise DataError(f"{damaged} ({type(exc).__name__}); download ILSVRC2012_devkit_t12 again") from exc
    mapping = wnid_to_index()
    if not leaves or any(w not in mapping for w in leaves.values()):
        raise DataError(f"{damaged} (its leaf classes are not ImageNet-1k's); download ILSVRC2012_devkit_t12 again")
    return leaves


def _read_devkit(devkit: Path, root_abs: str, top_names: list[str]) -> dict[str, _Label]:
    """The ILSVRC2012 devkit's ground truth (ILSVRC2012_ID per val image, in file-number order)
    mapped through the devkit's meta.mat (ILSVRC2012_ID -> wnid) onto the sorted-wnid indices
    models use. The two orders differ: using the IDs directly is the classic labels bug."""
    truth_name = "ILSVRC2012_validation_ground_truth.txt"
    leaves = _devkit_leaves(devkit, _devkit_member(devkit, "meta.mat"))
    try:
        truth = _devkit_member(devkit, truth_name).decode("ascii").split()
    except UnicodeDecodeError as exc:
        raise DataError(
            f"the devkit's data/{truth_name} in {devkit} is not text; download ILSVRC2012_devkit_t12 again"
        ) from exc
    mapping = wnid_to_index()
    by_stem = _by_stem(top_names)
    out: dict[str, _Label] = {}
    for number, token in enumerate(truth, start=1):
        where = f"{devkit}: data/{truth_name} line {number}"
        if not (token.isdigit() and len(token) <= MAX_INDEX_DIGITS) or int(token) not in leaves:
            raise DataError(
                f"{where}: {short_repr(token)} is not the ILSVRC2012_ID of a class in meta.mat (1-{len(leaves)}); "
                "the devkit is damaged: download ILSVRC2012_devkit_t12 again"
            )
        name = by_stem.get(f"ILSVRC2012_val_{number:08d}")
        if name is not None:
            wnid = leaves[int(token)]
            _add(out, _normalise(name, root_abs, where), _Label(mapping[wnid], wnid, where))
    if not out:
        raise DataError(
            "no file in the --data folder is named like the devkit's ILSVRC2012_val_00000001.JPEG; "
            "check --data and --labels"
        )
    return out


def _read_label_table(labels: Path, root: Path, top_names: list[str]) -> dict[str, _Label]:
    root_abs = posixpath.normpath(os.path.abspath(root))
    if labels.is_dir() or labels.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _read_devkit(labels, root_abs, top_names)
    text = _read_text(labels, "labels file")
    first = text.split("\n", 1)[0].strip().replace(" ", "").lower()
    if first == "imageid,predictionstring":
        return _read_loc_solution(labels, text, root_abs, top_names)
    return _read_labels_csv(labels, text, root_abs)


def read_labels(labels: str | os.PathLike, root: str | os.PathLike) -> dict[str, tuple[int, str | None]]:
    """Labels for a flat folder: {path relative to root (normalised): (class index, wnid or None)}.

    Accepts a CSV of filename,wnid or filename,index; Kaggle's LOC_val_solution.csv; or the
    ILSVRC2012 devkit (its directory or .tar.gz), which labels the official val folder.
    """
    root = Path(root)
    try:
        top = [e.name for e in _scandir(root) if not e.name.startswith(".")]
    except OSError:
        top = []
    return {rel: (lab.target, lab.wnid) for rel, lab in _read_label_table(Path(labels), root, top).items()}


def _list_labelled(root: Path, labels: Path, entries: list[os.DirEntry]) -> Listing:
    tree = _walk(root, entries)
    table = _read_label_table(labels, root, tree.top_names)
    root_str = os.fspath(root)
    root_real = os.path.realpath(root_str)
    inside_prefix = root_real.rstrip(os.sep) + os.sep
    parents: dict[str, str] = {}  # rel folder -> its resolved path
    samples = []
    missing = []
    seen: dict[tuple[int, int], tuple[str, _Label]] = {}
    for rel, label in table.items():
        path = os.path.join(root_str, rel)
        try:
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                st = os.stat(path)
                real = os.path.realpath(path)
            else:
                folder, _, name = rel.rpartition("/")
                if folder not in parents:
                    parents[folder] = os.path.realpath(os.path.join(root_str, folder))
                real = os.path.join(parents[folder], name)
        except FileNotFoundError:
            missing.append(rel)
            continue
        except OSError as exc:
            if exc.errno == errno.ENAMETOOLONG:
                raise DataError(f"{label.where}: file name {short_repr(rel)} is too long; fix that row") from exc
            tree.problems[rel] = f"cannot be reached ({_os_reason(exc)})"
            continue
        if not (real == root_real or real.startswith(inside_prefix)):
            raise DataError(
                f"{label.where}: {short_repr(rel)} resolves to {short_repr(real)}, outside --data {root}; "
                "label only files under --data (copy it in, or point --data at the folder that holds it)"
            )
        if not stat.S_ISREG(st.st_mode):
            tree.problems[rel] = f"a {file_kind(st.st_mode)}, not a regular file"
            continue
        ident = (st.st_dev, st.st_ino)
        if ident in seen:
            other, old = seen[ident]
            if (old.target, old.wnid) != (label.target, label.wnid):
                raise DataError(
                    f"{label.where}: {short_repr(rel)} is the same file as {short_repr(other)} ({old.where}) "
                    "with another class; keep one row"
                )
        seen.setdefault(ident, (rel, label))
        samples.append(Sample(Path(path), rel, label.target, label.wnid))
    if missing:
        raise DataError(
            f"{len(missing)} file(s) listed in {labels} are not in {root}, e.g. {short_repr(sorted(missing)[0])}; "
            "check --data and --labels"
        )
    for rel, _ in tree.files:
        if rel not in table:
            name = rel.rsplit("/", 1)[-1]
            tree.ignored[UNLABELLED if is_image_name(name) else _kind_of(name)] += 1
    return _finish(root, samples, tree)
