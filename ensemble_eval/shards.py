"""--data as shards: Parquet files or WebDataset tar files, listed and read where they are, never extracted.

Recognised, not configured (`names_shards`, `holds_shards`; listing.list_dataset hands over):
`--data` may be a folder whose usable entries are `.parquet` files (or `.tar` files), a glob
pattern (`'val-*.parquet'`, quoted), or one shard file. One kind per --data: Parquet and tar
shards together, shards beside image folders or loose images, and compressed tars (.tar.gz,
...) are one-line DataErrors saying what was found.

- **Parquet** (pyarrow, the `[parquet]` extra, imported when a shard is read): the image
  column (`--image-column`, default `image`) holds the encoded file's bytes, either as a
  binary column or as Hugging Face's struct `{bytes: binary, path: string}`; the label
  column (`--label-column`, default `label`) an integer class index (Hugging Face's
  imagenet-1k index is the canonical sorted-wnid one), or strings (a WordNet id or ASCII
  digits). A label of -1 (imagenet-1k's test split) or null is an unlabelled row: counted,
  not evaluated. Listing reads the footer and the label column only; an image is read by
  reading its row group's image column once per process (the last ROW_GROUPS_CACHED row
  groups are kept) and slicing its row. Samples are `SHARD/row NNN` in file order.
- **WebDataset tar** (tarfile only; uncompressed): members grouped by key (the member path
  up to the first dot of its basename); the image is the member `KEY.jpg/.jpeg/.png/.webp`,
  the label `KEY.cls` (an ASCII integer) or `KEY.json` (an object with an integer `label` or
  `cls`). The shard is indexed once by reading its headers (offset and size of each member);
  an image is read by one positioned read of its bytes. Samples are `SHARD/MEMBER`.
  Links, devices and FIFOs inside a tar, a key with two images or a member named twice are
  problems (never followed, never read); a truncated tar (a member's data past the end of
  the file, or no end-of-archive marker) is a problem for that shard.

Every shard file is opened as listing opens an image (fileio.open_regular: without blocking,
a regular file only, so a FIFO named x.tar is a problem, never a wait); every image read is
bounded by listing.MAX_IMAGE_BYTES and gives the identity `read_image_file` gives: (bytes of
the image, mtime_ns of the shard, digest of the image's bytes), which --resume checks.

Standard library only at module level: the CLI lists --data before torch is imported.
"""

from __future__ import annotations

import glob
import json
import os
import posixpath
import re
import tarfile
import threading
from collections import Counter, OrderedDict
from pathlib import Path

from .errors import first_line, short_repr
from .fileio import FileTooLarge, NotRegularFile, open_regular
from .listing import (
    HIDDEN,
    MAX_IMAGE_BYTES,
    MAX_INDEX_DIGITS,
    MAX_LABELS_BYTES,
    UNLABELLED,
    DataError,
    Listing,
    Sample,
    _count,
    _digest,
    _kind_of,
    _parse_label,
    display_path,
    imagenet_classes,
    is_image_name,
    read_reason,
    wnid_to_index,
)

PARQUET_LAYOUT = "Parquet shards"
TAR_LAYOUT = "tar shards"
COMPRESSED_TARS = (".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tbz2", ".tar.xz", ".txz", ".tar.zst", ".tar.lz4")
# leading bytes of the compressions a tar is commonly written with, for a compressed file named .tar
COMPRESSION_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2", b"\xfd7zXZ\x00": "xz", b"\x28\xb5\x2f\xfd": "zstd"}
TAR_IMAGE_SUFFIXES = frozenset({"jpg", "jpeg", "png", "webp"})
TAR_LABEL_SUFFIXES = ("cls", "json")
UNLABELLED_INDEX = -1  # Hugging Face's label of the test split (no ground truth)

MAX_LABEL_MEMBER_BYTES = 64 * 1024  # a .cls or .json label member
MAX_TAR_HEADER_BYTES = 16 * 1024 * 1024  # a long name or pax header (a hostile one may declare gigabytes)
MAX_SHARD_ROWS = 100_000_000  # rows of one Parquet file (ImageNet-21k has 14 M images in all)
MAX_ROW_GROUP_BYTES = 2 * 1024 * 1024 * 1024  # the image column of one row group, uncompressed, as declared
ROW_GROUPS_CACHED = 2  # row groups' image columns kept per process


def _pyarrow():
    """pyarrow.parquet (and pyarrow); one line naming the extra when it is not installed."""
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise DataError(
            "reading Parquet shards needs pyarrow, which is not installed; pip install 'ensemble-eval[parquet]'"
        ) from None
    return pyarrow, pyarrow.parquet


# --- recognition ----------------------------------------------------------------------------


def shard_kind(name: str) -> str | None:
    """'parquet', 'tar' or 'compressed' (a compressed tar) for a shard file's name; None otherwise."""
    lower = name.lower()
    if lower.endswith(".parquet"):
        return "parquet"
    if lower.endswith(".tar"):
        return "tar"
    if lower.endswith(COMPRESSED_TARS):
        return "compressed"
    return None


def names_shards(root: str | os.PathLike) -> bool:
    """Whether --data names shards without being a folder: a glob pattern that is not itself an
    existing path, or an existing non-folder named like a shard (a FIFO named x.tar included:
    listing it is a problem, never a wait)."""
    text = os.fspath(root)
    if not os.path.lexists(text):
        return glob.has_magic(text)
    return not os.path.isdir(text) and shard_kind(os.path.basename(text)) is not None


def holds_shards(entries: list[os.DirEntry]) -> bool:
    """Whether a --data folder holds shard files (among its non-hidden entries)."""
    return any(not e.name.startswith(".") and shard_kind(e.name) is not None for e in entries)


def _candidates(root: str, entries: list[os.DirEntry] | None) -> tuple[list[tuple[str, str]], Counter]:
    """(shard name, path) of every shard file --data names, sorted by name, and the other entries
    counted by kind; DataError when --data mixes kinds or names no shard."""
    ignored: Counter = Counter()
    if entries is not None:  # a folder
        shards, folders, images = [], [], []
        for e in entries:
            if e.name.startswith("."):
                ignored[HIDDEN] += 1
            elif shard_kind(e.name) is not None:
                shards.append((e.name, e.path))
            elif _is_dir(e):
                folders.append(e.name)
            elif is_image_name(e.name):
                images.append(e.name)
            else:
                ignored[_kind_of(e.name)] += 1
        if folders or images:
            found = [_count(len(folders), "folder", "folders")] if folders else []
            found += [_count(len(images), "image file", "image files")] if images else []
            raise DataError(
                f"--data {root} holds {_count(len(shards), 'shard file', 'shard files')} and "
                f"{' and '.join(found)} (e.g. {short_repr((folders or images)[0])}); keep shards and image folders "
                "in separate folders, or select the shards with a quoted glob ('DIR/*.parquet')"
            )
    elif glob.has_magic(root) and not os.path.lexists(root):  # a pattern
        matches = sorted(glob.glob(root))
        if not matches:
            raise DataError(
                f"--data pattern {short_repr(root)} matches no file; check the pattern (quote it so the shell "
                "does not expand it) or pass the folder that holds the shards"
            )
        base = os.path.commonpath(matches) if len(matches) > 1 else os.path.dirname(matches[0])
        shards = []
        for path in matches:
            name = os.path.relpath(path, base) if base else path
            if shard_kind(os.path.basename(path)) is not None and not os.path.isdir(path):
                shards.append((name, path))
            else:
                ignored[_kind_of(name) if not os.path.isdir(path) else "folders"] += 1
        if not shards:
            raise DataError(
                f"--data pattern {short_repr(root)} matches {_count(len(matches), 'entry', 'entries')} but no "
                ".parquet or .tar file; a pattern selects shard files (pass an image folder as the folder itself)"
            )
    else:  # one shard file
        shards = [(os.path.basename(root), root)]
    kinds = Counter(shard_kind(name) for name, _ in shards)
    if kinds["compressed"]:
        name = next(n for n, _ in shards if shard_kind(n) == "compressed")
        raise DataError(
            f"{short_repr(name)} in --data {root} is a compressed tar; shards are read in place only when "
            "uncompressed: decompress it (e.g. gunzip) or write uncompressed .tar shards"
        )
    if kinds["parquet"] and kinds["tar"]:
        raise DataError(
            f"--data {root} holds {kinds['parquet']} .parquet and {kinds['tar']} .tar shards; use one kind per "
            "run (select them with a quoted glob such as 'DIR/*.parquet')"
        )
    return sorted(shards), ignored


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


# --- the listing ------------------------------------------------------------------------------


def list_shards(
    root: str | os.PathLike,
    labels: str | os.PathLike | None = None,
    image_column: str = "image",
    label_column: str = "label",
    entries: list[os.DirEntry] | None = None,
) -> Listing:
    """The samples of the shards --data names (a folder's `entries`, a glob or one file), every
    shard and member accounted for: damaged shards and unusable members are problems, unlabelled
    rows and other entries counted in `ignored`. DataError for what cannot be used at all (see
    the module doc)."""
    root_text = os.fspath(root)
    if labels is not None:
        raise DataError(
            f"--labels is for a flat image folder; the shards of {root_text} carry their labels "
            "(Parquet: --label-column NAME; tar: KEY.cls or KEY.json members): drop --labels"
        )
    shards, ignored = _candidates(root_text, entries)
    layout = PARQUET_LAYOUT if shard_kind(shards[0][0]) == "parquet" else TAR_LAYOUT
    samples: list[Sample] = []
    problems: dict[str, str] = {}
    read = 0
    for name, path in shards:
        shown = display_path(name)
        try:
            fd, _ = open_regular(path)
        except OSError as exc:
            problems[shown] = read_reason(exc, path)
            continue
        with os.fdopen(fd, "rb") as fh:
            if layout == PARQUET_LAYOUT:
                found = _list_parquet(shown, path, fh, image_column, label_column, ignored)
            else:
                found = _list_tar(shown, path, fh, ignored, problems)
        if isinstance(found, str):
            problems[shown] = found
            continue
        read += 1
        samples.extend(found)
    listing = Listing(
        Path(root_text),
        sorted(samples, key=lambda s: s.rel_path),
        sorted(problems.items()),
        dict(sorted(ignored.items())),
        layout=layout,
        shards=read,
    )
    if not listing.samples and not listing.problems:
        what = listing.ignored_line() or "they hold no rows or members"
        raise DataError(f"no labelled images in the {layout} of {root_text}: {what}")
    return listing


# --- Parquet ------------------------------------------------------------------------------------


def _image_field(pa, column_type) -> str | None | bool:
    """None for a binary column, 'bytes' for a struct {bytes: binary, ...}; False for anything else."""
    binary = (pa.types.is_binary, pa.types.is_large_binary)
    if any(test(column_type) for test in binary):
        return None
    if pa.types.is_struct(column_type):
        index = column_type.get_field_index("bytes")
        if index >= 0 and any(test(column_type.field(index).type) for test in binary):
            return "bytes"
    return False


def _check_columns(pa, shown: str, schema, image_column: str, label_column: str) -> str | None:
    """The image column's struct field (see _image_field); DataError for a missing or unusable column."""
    names = schema.names
    for column, option in ((image_column, "--image-column"), (label_column, "--label-column")):
        if column not in names:
            raise DataError(
                f"Parquet shard {shown} has no column {short_repr(column)} (its columns: "
                f"{short_repr(', '.join(names))}); name the {option[2:-7]} column with {option} NAME"
            )
    field = _image_field(pa, schema.field(image_column).type)
    if field is False:
        raise DataError(
            f"column {short_repr(image_column)} of Parquet shard {shown} is {schema.field(image_column).type}, not "
            "image bytes; pass --image-column NAME of a binary column or a struct {bytes, path} (Hugging Face's)"
        )
    label_type = schema.field(label_column).type
    if not (pa.types.is_integer(label_type) or pa.types.is_string(label_type) or pa.types.is_large_string(label_type)):
        raise DataError(
            f"column {short_repr(label_column)} of Parquet shard {shown} is {label_type}, not integer class "
            "indices (or WordNet ids); pass --label-column NAME of the labels"
        )
    return field


def _declared_bytes(metadata, column: str) -> list[int]:
    """Per row group: the uncompressed bytes the footer declares for `column` (all its leaves)."""
    out = []
    for g in range(metadata.num_row_groups):
        rg = metadata.row_group(g)
        total = 0
        for j in range(rg.num_columns):
            path = rg.column(j).path_in_schema
            if path == column or path.startswith(column + "."):
                total += max(0, rg.column(j).total_uncompressed_size)
        out.append(total)
    return out


def _list_parquet(shown: str, path: str, fh, image_column: str, label_column: str, ignored: Counter):
    """The samples of one Parquet shard, or the reason (a str) the shard cannot be used."""
    pa, pq = _pyarrow()
    try:
        pf = pq.ParquetFile(fh)
        metadata = pf.metadata
        schema = pf.schema_arrow
    except Exception as exc:  # a damaged footer can fail in any way inside pyarrow
        return f"not a readable Parquet file ({first_line(exc)})"
    field = _check_columns(pa, shown, schema, image_column, label_column)
    num_rows = metadata.num_rows
    group_rows = [metadata.row_group(g).num_rows for g in range(metadata.num_row_groups)]
    if num_rows > MAX_SHARD_ROWS or sum(group_rows) != num_rows or min(group_rows, default=0) < 0:
        groups = len(group_rows)
        return f"its footer declares {num_rows:,} rows in {groups} row groups (damaged, or above {MAX_SHARD_ROWS:,})"
    image_bytes = _declared_bytes(metadata, image_column)
    if max(image_bytes, default=0) > MAX_ROW_GROUP_BYTES:
        g = image_bytes.index(max(image_bytes))
        return (
            f"row group {g} declares {image_bytes[g]:,} bytes of images, above the {MAX_ROW_GROUP_BYTES >> 30} GiB "
            "read at once; write the shard with smaller row groups (pyarrow's row_group_size)"
        )
    if sum(_declared_bytes(metadata, label_column)) > MAX_LABELS_BYTES:
        return f"its label column declares more than {MAX_LABELS_BYTES >> 20} MiB (damaged?)"
    try:
        column = pf.read(columns=[label_column], use_threads=False).column(0)
        labels = column.to_pylist()
    except Exception as exc:  # damaged pages, a truncated file
        return f"its label column cannot be read ({first_line(exc)})"
    if len(labels) != num_rows:
        return f"its label column holds {len(labels):,} values for {num_rows:,} rows (damaged)"
    classes = imagenet_classes()
    mapping = wnid_to_index()
    width = len(str(max(num_rows - 1, 0)))
    samples = []
    row = 0
    for g, n in enumerate(group_rows):
        for i in range(n):
            target = _parquet_label(labels[row], mapping, shown, label_column, row)
            if target is None:
                ignored[UNLABELLED] += 1
            else:
                wnid = classes[target].wnid if target < len(classes) else None
                rel = f"{shown}/row {row:0{width}d}"
                samples.append(Sample(Path(path), rel, target, wnid, member=("parquet", image_column, field, g, i)))
            row += 1
    return samples


def _parquet_label(value, mapping: dict, shown: str, column: str, row: int) -> int | None:
    """A row's class index; None when unlabelled (-1 or null); DataError for anything else."""
    if value is None:
        return None
    if isinstance(value, str):
        return _parse_label(value, f"Parquet shard {shown} row {row} column {column!r}", mapping)[0]
    if value == UNLABELLED_INDEX:
        return None
    if not 0 <= value < 10**MAX_INDEX_DIGITS:
        raise DataError(
            f"Parquet shard {shown} row {row}: label {value} in column {column!r} is not a class index >= 0 "
            f"(or {UNLABELLED_INDEX} for an unlabelled row); fix the shard or pass --label-column NAME of the labels"
        )
    return value


_cache_lock = threading.Lock()
_row_groups: OrderedDict = OrderedDict()  # (file identity, row group, column) -> (array, struct field)


def _row_group(pq, fh, st: os.stat_result, path: str, member: tuple):
    """The image column of a row group, as (pyarrow array, struct field or None): cached per process."""
    _, column, field, group, _ = member
    key = (os.fspath(path), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, group, column)
    with _cache_lock:
        if key in _row_groups:
            _row_groups.move_to_end(key)
            return _row_groups[key]
    pf = pq.ParquetFile(fh)
    metadata = pf.metadata
    if not 0 <= group < metadata.num_row_groups:
        raise _Gone(f"row group {group} is not in the shard any more (it changed since it was listed)")
    declared = _declared_bytes(metadata, column)[group]
    if declared > MAX_ROW_GROUP_BYTES:
        raise _Gone(
            f"its row group declares {declared:,} bytes of images, above the {MAX_ROW_GROUP_BYTES >> 30} GiB bound"
        )
    array = pf.read_row_group(group, columns=[column], use_threads=False).column(0).combine_chunks()
    value = (array, field)
    with _cache_lock:
        _row_groups[key] = value
        while len(_row_groups) > ROW_GROUPS_CACHED:
            _row_groups.popitem(last=False)
    return value


class _Gone(Exception):
    """The reason a member cannot be read (the shard changed, a bound exceeded)."""


def _parquet_bytes(pq, fh, st, path: str, member: tuple) -> bytes:
    array, field = _row_group(pq, fh, st, path, member)
    index = member[4]
    if not 0 <= index < len(array):
        raise _Gone(
            f"row {index} of row group {member[3]} is not in the shard any more (it changed since it was listed)"
        )
    if not array[index].is_valid:
        raise _Gone("no image in this row (null)")
    value = array.field(field)[index] if field is not None else array[index]
    if not value.is_valid:
        raise _Gone(f"no image in this row (its {field or 'image'} is null)")
    if value.as_buffer().size > MAX_IMAGE_BYTES:
        raise _Gone(f"file too large: above the {MAX_IMAGE_BYTES >> 20} MiB bound on an image file")
    return value.as_py()


# --- WebDataset tar -------------------------------------------------------------------------------


class _Bounded:
    """A tar shard's file for tarfile: reads of at most MAX_TAR_HEADER_BYTES (a header that declares
    a long name or pax record of gigabytes is refused, not read into memory)."""

    def __init__(self, fh):
        self.fh = fh

    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0 or n > MAX_TAR_HEADER_BYTES:
            raise tarfile.ReadError(f"a header declares {'all' if n is None or n < 0 else f'{n:,}'} bytes of names")
        return self.fh.read(n)

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.fh.seek(offset, whence)

    def tell(self) -> int:
        return self.fh.tell()


def _member_kind(info: tarfile.TarInfo) -> str:
    if info.issym():
        return f"a symbolic link member (to {short_repr(info.linkname)}): not followed"
    if info.islnk():
        return f"a hard link member (to {short_repr(info.linkname)}): not followed"
    kind = {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device", tarfile.FIFOTYPE: "FIFO"}
    return f"a {kind.get(info.type, 'special')} member, not a regular file"


def _split_key(name: str) -> tuple[str, str, str]:
    """(key, suffix, basename) of a member name, by WebDataset's rule: the key is the path up to
    the first dot of the basename, the suffix the rest (lower case)."""
    folder, base = posixpath.split(name)
    stem, _, suffix = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), suffix.lower(), base


def _list_tar(shown: str, path: str, fh, ignored: Counter, problems: dict[str, str]):
    """The samples of one tar shard (its unusable members into `problems`), or the reason (a str)
    the whole shard cannot be used."""
    size = os.fstat(fh.fileno()).st_size
    head = fh.read(8)
    for magic, name in COMPRESSION_MAGIC.items():
        if head.startswith(magic):
            return f"compressed ({name}), not a plain tar; decompress it or write uncompressed .tar shards"
    fh.seek(0)
    keys: dict[str, dict[str, tarfile.TarInfo]] = {}
    bad_keys: dict[str, str] = {}
    found: dict[str, str] = {}  # member problems of this shard (kept only if the shard is whole)
    try:
        tar = tarfile.TarFile(fileobj=_Bounded(fh), mode="r")
        count = 0
        while (info := tar.next()) is not None:
            tar.members.clear()  # an index of millions of members would otherwise stay in memory
            count += 1
            if info.isdir():
                continue
            rel = f"{shown}/{display_path(info.name)}"
            if not info.isfile():
                found[rel] = _member_kind(info)
                continue
            if info.offset_data + info.size > size:
                return f"truncated: member {display_path(info.name)[:200]} ends past the end of the file"
            key, suffix, base = _split_key(info.name)
            if base.startswith("."):
                ignored[HIDDEN] += 1
            elif suffix in TAR_IMAGE_SUFFIXES or suffix in TAR_LABEL_SUFFIXES:
                group = keys.setdefault(key, {})
                if suffix in group:
                    bad_keys[key] = f"member {display_path(base)} appears twice in the shard"
                group[suffix] = info
            else:
                ignored[_suffix_kind(suffix, base)] += 1
        fh.seek(tar.offset)
        end = fh.read(512)
    except (tarfile.TarError, OSError, ValueError, EOFError, OverflowError, UnicodeError) as exc:
        return f"not a readable tar file ({first_line(exc)})"
    if count and (len(end) < 512 or end.count(0) != 512):
        return "truncated or damaged: no end-of-archive marker after its last whole member"
    if not count:
        return "not a tar file (no member)"
    problems.update(found)
    samples = []
    for key, group in keys.items():
        images = sorted(s for s in group if s in TAR_IMAGE_SUFFIXES)
        rel_key = f"{shown}/{display_path(key)}"
        if key in bad_keys:
            problems[rel_key] = bad_keys[key]
            continue
        if len(images) > 1:
            problems[rel_key] = f"key with {len(images)} images ({', '.join(images)}): which one is meant?"
            continue
        try:
            target = _tar_label(fh, group)
        except ValueError as exc:
            problems[rel_key] = str(exc)
            continue
        if not images:
            for suffix in group:
                ignored[_suffix_kind(suffix, suffix)] += 1
            continue
        if target is None:
            ignored[UNLABELLED] += 1
            continue
        info = group[images[0]]
        wnid = imagenet_classes()[target].wnid if target < len(imagenet_classes()) else None
        rel = f"{shown}/{display_path(info.name)}"
        samples.append(Sample(Path(path), rel, target, wnid, member=("tar", info.offset_data, info.size)))
    return samples


def _suffix_kind(suffix: str, base: str) -> str:
    """How a member that is not used is counted: its WebDataset suffix ('.seg.png'), as listing counts files."""
    return f".{suffix}" if suffix and len(suffix) < 16 and suffix.isprintable() else _kind_of(base)


_CLS = re.compile(rf"-?[0-9]{{1,{MAX_INDEX_DIGITS}}}")


def _tar_label(fh, group: dict[str, tarfile.TarInfo]) -> int | None:
    """The class index of a key's label members (.cls, .json); None when it has none or -1;
    ValueError with the reason for a label that cannot be used."""
    found = {}
    for suffix in TAR_LABEL_SUFFIXES:
        info = group.get(suffix)
        if info is None:
            continue
        member = display_path(posixpath.basename(info.name))
        if info.size > MAX_LABEL_MEMBER_BYTES:
            raise ValueError(f"label member {member} has {info.size:,} bytes (a label is a few)")
        fh.seek(info.offset_data)
        raw = fh.read(info.size)
        found[suffix] = _parse_tar_label(raw, suffix, member)
    values = set(found.values())
    if len(values) > 1:
        raise ValueError(f"its .cls and .json labels differ ({found['cls']} and {found['json']})")
    value = values.pop() if values else None
    if value is None or value == UNLABELLED_INDEX:
        return None
    if value < 0:
        raise ValueError(f"label {value} is not a class index >= 0 (or {UNLABELLED_INDEX}: unlabelled)")
    return value


def _parse_tar_label(raw: bytes, suffix: str, member: str) -> int:
    if suffix == "cls":
        text = raw.decode("ascii", "replace").strip()
        if not _CLS.fullmatch(text):
            raise ValueError(f"label member {member} holds {short_repr(text[:40])}, not an ASCII integer class index")
        return int(text)

    def no_constant(name: str):
        raise ValueError(name)

    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=no_constant)
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"label member {member} is not JSON ({type(exc).__name__})") from None
    value = None
    if isinstance(data, dict):
        value = data.get("label", data.get("cls"))
    if type(value) is not int or abs(value) >= 10**MAX_INDEX_DIGITS:
        raise ValueError(f"label member {member} has no integer 'label' or 'cls' (class index)")
    return value


# --- reading one image --------------------------------------------------------------------------


def read_member(sample: Sample) -> tuple[bytes, tuple[int, int, int]]:
    """(bytes, (size, mtime_ns of the shard, digest of the bytes)) of a sample's image in its shard,
    as listing.read_image_file gives them for a file; DataError with the reason when it cannot be read."""
    kind = sample.member[0]
    path = sample.path
    try:
        fd, st = open_regular(path)
    except OSError as exc:
        reason = read_reason(exc, path)
        raise DataError(f"cannot read shard {path}: {reason}", reason=f"shard {reason}") from exc
    try:
        if kind == "tar":
            data = _tar_bytes(fd, sample.member)
        else:
            _, pq = _pyarrow()
            with os.fdopen(os.dup(fd), "rb") as fh:
                data = _parquet_bytes(pq, fh, st, os.fspath(path), sample.member)
    except DataError:
        raise
    except _Gone as exc:
        reason = str(exc)
        raise DataError(f"cannot read {sample.rel_path}: {reason}", reason=reason) from None
    except (FileTooLarge, NotRegularFile) as exc:
        raise DataError(f"cannot read {sample.rel_path}: {exc}", reason=str(exc)) from None
    except Exception as exc:  # a shard damaged since it was listed can fail in any way inside pyarrow
        reason = f"the shard cannot be read ({first_line(exc)})"
        raise DataError(f"cannot read {sample.rel_path}: {reason}", reason=reason) from None
    finally:
        os.close(fd)
    return data, (len(data), st.st_mtime_ns, _digest(data))


def _tar_bytes(fd: int, member: tuple) -> bytes:
    _, offset, size = member
    if size > MAX_IMAGE_BYTES:
        raise _Gone(f"file too large: {size:,} bytes, above the {MAX_IMAGE_BYTES >> 20} MiB bound on an image file")
    chunks = []
    got = 0
    while got < size:
        block = os.pread(fd, min(size - got, 1 << 24), offset + got)
        if not block:
            raise _Gone("the shard ends before this member does (truncated since it was listed)")
        chunks.append(block)
        got += len(block)
    return b"".join(chunks)
