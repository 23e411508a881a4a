"""The member formats, in one ordered list, and the dispatch that asks them.

Each line names a module of this package holding one format (its `FORMAT`), and for a
published source the spec prefix that names it. Adding a format is one module plus one line
here (plus its tests); removing one is deleting both. File formats are tried in this order,
catch-alls (torch.save) last; the order is also how 'not a checkpoint' lists their headers.

This module imports no torch: `spec_prefixes` serves modelpaths before torch is imported;
the format modules are imported on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .format import FileFormat, MemberFormat, PublishedSource


@dataclass(frozen=True)
class Entry:
    module: str  # members/<module>.py, defining FORMAT
    spec_prefix: str | None = None  # a source named on the command line (`torchvision:...`), not a file


FORMATS = (
    Entry("torch_pickle"),
    Entry("torchscript"),
    Entry("torch_export"),
    Entry("safetensors_file"),
    Entry("torchvision_published", spec_prefix="torchvision:"),
    Entry("timm_published", spec_prefix="timm:"),
)


def spec_prefixes() -> tuple[str, ...]:
    """The prefixes of model specs (`torchvision:`, `timm:`), without importing torch."""
    return tuple(e.spec_prefix for e in FORMATS if e.spec_prefix)


@cache
def formats() -> tuple[MemberFormat, ...]:
    """Every format, in registry order (imports the format modules)."""
    return tuple(importlib.import_module(f"{__package__}.{e.module}").FORMAT for e in FORMATS)


def _entries() -> list[tuple[Entry, MemberFormat]]:
    return list(zip(FORMATS, formats()))


def file_formats() -> list[FileFormat]:
    """The file formats in the order they are tried: specific ones first, catch-alls last."""
    found = [f for e, f in _entries() if e.spec_prefix is None]
    return sorted(found, key=lambda f: f.catch_all)


def source_of(spec: str) -> PublishedSource | None:
    """The published source a model spec names, or None for a path."""
    return next((f for e, f in _entries() if e.spec_prefix and spec.startswith(e.spec_prefix)), None)


def resolve_spec(spec: str):
    """`torchvision:<builder>[:<WEIGHTS>]` -> (builder, weights enum member); `timm:<name>` -> (name, None).

    Checked without any download: an unknown builder, weights or timm name is a CheckpointError
    naming the closest ones."""
    source = source_of(spec)
    if source is None:
        raise ValueError(f"not a model spec: {spec!r}")
    return source.resolve(spec)


def sniff(path: str) -> FileFormat | None:
    """The file format of `path` from its first bytes, or None (not a checkpoint)."""
    from .format import FileHead

    head = FileHead(path)
    return next((f for f in file_formats() if f.sniff(head)), None)


def sniff_format(path: str) -> str:
    """'torch', 'torchscript', 'torch.export', 'safetensors' or 'unknown', from the file's first bytes."""
    found = sniff(path)
    return found.kind if found is not None else "unknown"


def file_format(kind: str) -> FileFormat | None:
    return next((f for f in file_formats() if f.kind == kind), None)


def known_headers() -> str:
    """'torch.save, TorchScript, torch.export or safetensors': the headers a checkpoint can have."""
    names = [f.header for e, f in _entries() if e.spec_prefix is None]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]


def read_weights_file(path: str) -> object:
    """The loaded object of a downloaded weights file, read without trust by its file format
    (as torch.save when it is a program or none of them)."""
    from ..preload import Refusal

    fmt = sniff(path)
    if fmt is None or fmt.is_program:
        fmt = file_format("torch")
    if fmt is None:
        raise Refusal(f"{path} is not a weights file this tool reads")
    return fmt.read(path, False, None).obj


def is_program(kind: str) -> bool:
    """Whether members of format `kind` (an Inspection's format, a program's ArchSpec name) are
    their own programs."""
    return any(f.is_program and f.kind == kind for f in formats())


def arch_family(arch: str | None) -> MemberFormat | None:
    """The format owning the architecture namespace of `arch` (`timm/<name>`), or None."""
    if arch is None:
        return None
    return next((f for f in formats() if f.arch_prefix and arch.startswith(f.arch_prefix)), None)
