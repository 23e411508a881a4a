"""Member names on the command line -> checkpoint paths and model specs, checked before torch is imported.

Standard library only: a mistyped path is reported at once, not after the seconds that
importing torch takes. Model specs (`torchvision:...`, `timm:...`: the prefixes of the member
registry, read without importing torch) are checked by members.registry.resolve_spec, which
needs torchvision or timm, when `check_specs` is set.
"""

from __future__ import annotations

import glob
import os

from .errors import CheckpointError, short_repr
from .members.registry import spec_prefixes

SPEC_PREFIXES = spec_prefixes()
SIDECAR_SUFFIXES = (".yaml", ".yml")


class ModelPathError(CheckpointError):
    """A --models entry that names no usable file."""


def expand_model_paths(patterns: list[str], lenient: bool = False, check_specs: bool = True) -> list[str]:
    """Paths, shell globs and model specs -> checkpoint names, in the order given (globs sorted).

    `lenient` (validate) keeps explicit paths that are missing or not regular files, so each
    gets its own ERROR row instead of stopping the whole report. `check_specs`: resolve
    `torchvision:`/`timm:` specs now (a typo fails before any download or image).
    """
    paths: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise ModelPathError(f"--models entries must be paths, got {short_repr(pattern)}")
        if pattern.startswith(SPEC_PREFIXES):
            if check_specs:
                from .members.registry import resolve_spec

                resolve_spec(pattern)
            paths.append(pattern)
        elif glob.has_magic(pattern):
            matched = sorted(p for p in glob.glob(pattern) if os.path.isfile(p) and not p.endswith(SIDECAR_SUFFIXES))
            if not matched:
                raise ModelPathError(
                    f"--models pattern {short_repr(pattern)} matched no files; check the path or the glob"
                )
            paths.extend(matched)
        elif lenient and not _is_file(pattern):
            paths.append(pattern)
        elif _is_dir(pattern):
            raise ModelPathError(
                f"--models {short_repr(pattern)} is a directory; pass files, e.g. {pattern.rstrip('/')}/*.pt"
            )
        elif not _is_file(pattern):
            what = "is not a regular file" if os.path.lexists(pattern) else "does not exist"
            raise ModelPathError(f"checkpoint {short_repr(pattern)} {what}; check the path")
        else:
            paths.append(pattern)
    if not paths:
        raise ModelPathError("no checkpoints given; pass --models A.pt [B.pt ...] (globs allowed)")
    seen: dict[str, str] = {}
    for p in paths:
        key = p if p.startswith(SPEC_PREFIXES) else os.path.realpath(p)
        if key in seen:
            raise ModelPathError(
                f"checkpoint {short_repr(p)} is given twice (also as {short_repr(seen[key])}); "
                "each member must appear once in --models"
            )
        seen[key] = p
    return paths


def _is_file(path: str) -> bool:
    try:
        return os.path.isfile(path)
    except (OSError, ValueError):  # a name too long, a NUL byte
        return False


def _is_dir(path: str) -> bool:
    try:
        return os.path.isdir(path)
    except (OSError, ValueError):
        return False
