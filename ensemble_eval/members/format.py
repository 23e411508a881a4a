"""What a member format is: the interface each file format or named source implements.

A format is one class in one file of this package, listed once in registry.py:

- a `FileFormat` is recognised from a file's first bytes (`sniff`) and reads it safely
  (`read`: the loaded object and any embedded convention entry, never running code unless
  `trust`); the file's convention then comes from its sidecar or that entry;
- a `PublishedSource` is named by a spec prefix (`torchvision:`, `timm:`; the prefix is its
  registry line), is checked without any download (`resolve`), and reads its cached file
  with the file formats' readers (`read`, which also sets the convention it publishes);
- either hands over the weights it read (`weights`: found in the loaded object, their
  tensor kinds checked), which are rebuilt into their architecture (`build_from_state`);
  programs make their network themselves and run as they are (program_format.py);
- a source may own an architecture namespace (`arch_prefix`, e.g. `timm/`): models.py asks
  the registry for it to identify and create such architectures.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from ..models import ArchitectureError, build_model, count_parameters
from .convention import TRANSFORM_INPUT_ARCHS, Convention, convention_problems, file_convention
from .tensors import check_tensor_kinds, state_digest, tensor_problem, unwrap_state_dict

if TYPE_CHECKING:
    from .inspection import Inspection


@dataclass
class Loaded:
    """What a format read: the object holding the weights (None for programs, read later), the
    convention entry the file carries, the architecture the source names, and the format's
    label once read (e.g. "state dict" or "pickle (trusted)"; None: its label as sniffed)."""

    obj: object = None
    embedded: object = None
    arch: str | None = None
    label: str | None = None


class FileHead:
    """The first bytes of a file, and the names in it when it is a zip archive (read once)."""

    def __init__(self, path: str):
        self.path = path
        with open(path, "rb") as fh:
            self.bytes = fh.read(9)

    @property
    def is_zip(self) -> bool:
        return self.bytes[:4] == b"PK\x03\x04"

    @cached_property
    def zip_names(self) -> list[str] | None:
        """The archive's entry names; None when it is not a zip or a damaged one."""
        if not self.is_zip:
            return None
        try:
            with zipfile.ZipFile(self.path) as zf:
                return zf.namelist()
        except (zipfile.BadZipFile, OSError):
            return None


class MemberFormat:
    """One kind of member; subclasses say how it is recognised and read."""

    kind: str = "?"  # its name in the registry (and what sniff_format returns for files)
    is_program = False  # the member is its own program: no architecture is rebuilt
    arch_prefix: str | None = None  # an architecture namespace it owns ("timm/")

    @property
    def label(self) -> str:
        """How an Inspection names the format before (or without) reading it."""
        return self.kind

    def read(self, path: str, trust: bool, ins: Inspection) -> Loaded:
        raise NotImplementedError

    def convention(self, path: str, loaded: Loaded) -> Convention | None:
        """The member's input convention, or None where `read` set it."""
        return None

    def weights(self, ins: Inspection, path: str, trust: bool, loaded: Loaded, prefer: str | None) -> dict | None:
        """The state dict to rebuild a network from (found in what was read, its tensor kinds
        checked), or None where the format made the network itself (programs). Problems of
        the file raise (Refusal, UserError): the caller makes them ERRORs."""
        state, ins.weights, notes = unwrap_state_dict(loaded.obj, prefer or ins.convention.weights)
        ins.notes += notes
        check_tensor_kinds(state)
        return state

    # an architecture namespace (`arch_prefix`): state dicts with `arch: <prefix><name>`

    def arch_convention(self, name: str) -> Convention:
        """The input convention the family publishes for architecture `name`."""
        raise NotImplementedError

    def arch_spec(self, name: str, state: dict):
        """The models.ArchSpec of weights `state` for architecture `name` (ArchitectureError if
        they do not fit)."""
        raise NotImplementedError

    def create(self, name: str, spec):
        """An untrained network of architecture `name` for `spec` (a models.ArchSpec)."""
        raise NotImplementedError


class FileFormat(MemberFormat):
    header: str = "?"  # how 'not a checkpoint' names it: "no torch.save, ... header"
    catch_all = False  # claims what no other file format does (tried last)

    def sniff(self, head: FileHead) -> bool:
        raise NotImplementedError

    def convention(self, path: str, loaded: Loaded) -> Convention | None:
        return arch_convention(file_convention(path, loaded.embedded))


class PublishedSource(MemberFormat):
    """Weights named by a spec (`<prefix><name>`), downloaded once into a cache."""

    def resolve(self, spec: str):
        """Check `spec` without any download; CheckpointError naming the closest names."""
        raise NotImplementedError


def arch_convention(conv: Convention) -> Convention:
    """`conv` over the defaults of the architecture family it names (timm/<name>), if any."""
    from .registry import arch_family

    family = arch_family(conv.arch)
    if family is None:
        return conv
    return conv.over(family.arch_convention(conv.arch[len(family.arch_prefix) :]))


def build_from_state(ins: Inspection, state: dict, arch: str | None) -> None:
    """Check the tensors of `state` and rebuild their network (eval mode) into `ins`."""
    ins.num_params = count_parameters(state)
    ins.state_digest = state_digest(state)
    problem = tensor_problem(state)
    if problem:
        ins.errors.append(problem)
    try:
        ins.model, ins.arch = build_model(state, arch, ins.convention.input_size)
    except ArchitectureError as exc:
        ins.errors.append(str(exc))
        return
    if ins.convention.transform_input and ins.arch.name in TRANSFORM_INPUT_ARCHS:
        ins.model.transform_input = True
    add_convention_verdict(ins)


def add_convention_verdict(ins: Inspection) -> None:
    errors, warnings = convention_problems(ins.convention, ins.arch)
    ins.errors += errors
    ins.warnings += warnings


def download_hint(what: str, where: str, arch: str) -> str:
    return (
        f"cannot download {what}; offline, {where}, or pass a local file "
        f"(--models FILE.pth with 'arch: {arch}' in FILE.pth.yaml)"
    )
