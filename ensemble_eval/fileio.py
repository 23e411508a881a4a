"""Reading and writing files safely: one atomic write, strict JSON, bounded reads of regular files.

- Every file the tool writes goes through `atomic_write_bytes`: a temporary name in the same
  directory, fsync, then `os.replace`. A kill at any moment leaves the old file or the new
  one, never half of either; a symlink at the target is replaced, never followed.
- Every JSON file is strict JSON (`allow_nan=False`): a value that does not exist (NaN, an
  infinity) is written as `null`, never as the bare `NaN` that strict parsers reject.
- `read_regular_file` opens without blocking and refuses what is not a regular file (a FIFO
  would hang the reader forever, a device has no end) and files above a size bound.

Standard library only: the CLI uses it before torch is imported.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any


class NotRegularFile(OSError):
    """A path that is a FIFO, socket, device or directory where a regular file was expected."""


class FileTooLarge(OSError):
    """A file above the size bound its reader sets."""


def file_kind(mode: int) -> str:
    """'FIFO', 'socket', 'character device', 'block device', 'directory', 'symlink' or 'regular file'."""
    for test, name in (
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISDIR, "directory"),
        (stat.S_ISLNK, "symlink"),
    ):
        if test(mode):
            return name
    return "regular file"


def open_regular(path: str | os.PathLike, follow_links: bool = True) -> tuple[int, os.stat_result]:
    """(read-only file descriptor, its fstat) of a regular file; NotRegularFile otherwise.

    Opened with O_NONBLOCK, so a FIFO does not block the open, and O_CLOEXEC; the type is
    checked on the opened descriptor (no race between a check and the open)."""
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_links:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(path, flags)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise NotRegularFile(f"{path} is a {file_kind(st.st_mode)}, not a regular file")
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def read_regular(path: str | os.PathLike, max_bytes: int, follow_links: bool = True) -> tuple[bytes, os.stat_result]:
    """(bytes, fstat of the open file) of a regular file of at most `max_bytes`: NotRegularFile,
    FileTooLarge (with `size` and `limit`) or OSError otherwise."""
    fd, st = open_regular(path, follow_links)
    try:
        if st.st_size > max_bytes:
            raise FileTooLarge(f"{path} has {st.st_size:,} bytes, more than the {max_bytes:,} allowed")
        chunks = []
        total = 0
        while block := os.read(fd, 1 << 20):
            total += len(block)
            if total > max_bytes:  # grew while being read
                raise FileTooLarge(f"{path} has more than the {max_bytes:,} bytes allowed")
            chunks.append(block)
        return b"".join(chunks), st
    finally:
        os.close(fd)


def read_regular_file(path: str | os.PathLike, max_bytes: int, follow_links: bool = True) -> bytes:
    """The bytes of a regular file of at most `max_bytes` (NotRegularFile, FileTooLarge, OSError)."""
    return read_regular(path, max_bytes, follow_links)[0]


def read_text(
    path: str | os.PathLike, max_bytes: int, what: str, fix: str, error: type[Exception], encoding: str = "utf-8"
) -> str:
    """The text of a small file a user gives (a --config, a sidecar, a labels file): a regular
    file of at most `max_bytes` in `encoding`; anything else is one `error` naming `what`, the
    path and `fix`."""
    try:
        raw = read_regular_file(path, max_bytes)
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist; {fix}") from None
    except (NotRegularFile, FileTooLarge) as exc:
        raise error(f"{what} {exc}; {fix}") from None
    except OSError as exc:
        raise error(f"{what} {path} cannot be read ({exc.strerror or exc}); {fix}") from None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise error(
            f"{what} {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}); save it as UTF-8"
        ) from None


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path` for the block to write; when the block ends it is fsynced
    and renamed onto `path` (a link there is replaced, not followed); if the block raises, it is
    removed, so no partial file stays."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write `data` to `path` atomically (see atomic_path)."""
    with atomic_path(path) as tmp:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC, 0o644)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        finally:
            os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_ready(value: Any) -> Any:
    """`value` with every non-finite float replaced by None and numpy scalars/arrays made plain."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if hasattr(value, "tolist") and callable(value.tolist):  # numpy scalars and arrays
        return json_ready(value.tolist())
    return value


def strict_json(value: Any, indent: int | None = 2, sort_keys: bool = False) -> str:
    """Strict JSON text (no NaN/Infinity tokens), with a final newline."""
    return json.dumps(json_ready(value), indent=indent, sort_keys=sort_keys, allow_nan=False) + "\n"


def write_json(path: str | os.PathLike, value: Any, indent: int | None = 2, sort_keys: bool = False) -> None:
    """`value` as strict JSON, written atomically."""
    atomic_write_text(path, strict_json(value, indent, sort_keys))
