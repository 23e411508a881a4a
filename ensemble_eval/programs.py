"""Members that are programs: TorchScript archives and torch.export programs (``.pt2``), run as they are.

No architecture is rebuilt: the file's own program is the network, whatever it holds.

Unless ``--trust-checkpoints``, every archive is checked before torch reads it
(opcheck.check_program_archive): every operator, builtin and type its code or graph names must
be on a fixed allow-list of pure tensor operators (no file, memory-mapping, process, network,
printing or custom-namespace operator), a TorchScript ``__setstate__`` (run inside
``torch.jit.load``) may only assign its state, and the pickles may name only the globals
TorchScript's own pickler writes. Then:

- TorchScript (``torch.jit.save``): ``torch.jit.load`` compiles the archive's TorchScript code
  (no Python runs) and reads its tensors with TorchScript's own restricted unpickler.
- torch.export (``torch.export.save``): a graph of ATen operators. ``torch.export.load`` would
  fall back to full unpickling for some payloads, so the archive is also checked for that
  (check_pt2_archive): every weight and constant must be a plain tensor payload, every ``.pt``
  inside must load with ``weights_only=True``, and AOTInductor (compiled native code) is
  refused.

What the check cannot bound: the compute and memory a program spends and the numbers it returns.

The input convention (mean, std, ...) comes from the sidecar. Programs exported with a static
batch size run in pieces of that size (the last one padded, the padding's outputs dropped);
a static image size is the only crop size the program accepts.
"""

from __future__ import annotations

import io
import json
import warnings
import zipfile

import torch
from torch import nn

from .errors import UserError, first_line
from .opcheck import check_program_archive

DEFAULT_PROBE_SIZE = 224


class ProgramError(UserError):
    """A program file that cannot be used as a member; the message says why."""


def is_pt2_archive(names: list[str]) -> bool:
    return any(n.endswith("/archive_format") or n == "archive_format" for n in names) and any(
        "/models/" in n or n.startswith("models/") for n in names
    )


def check_pt2_archive(path: str) -> None:
    """Refuse a .pt2 archive whose loading would unpickle anything but plain tensors."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
            if any("/aotinductor/" in n or n.startswith("aotinductor/") for n in names):
                raise ProgramError(
                    "holds AOTInductor compiled code (native libraries), which is not run; "
                    "pass the torch.export program itself (torch.export.save)"
                )
            for name in names:
                if name.endswith("_config.json") and ("/weights/" in name or "/constants/" in name):
                    config = json.loads(zf.read(name)).get("config", {})
                    for fqn, meta in config.items():
                        path_name = str(meta.get("path_name", ""))
                        if meta.get("use_pickle") or path_name.startswith(("custom_obj", "opaque_obj")):
                            raise ProgramError(
                                f"entry {fqn!r} is stored as a pickle, which could run code; if you trust the "
                                "file pass --trust-checkpoints"
                            )
                elif name.endswith(".pt"):
                    try:
                        torch.load(io.BytesIO(zf.read(name)), map_location="cpu", weights_only=True)
                    except Exception as exc:
                        raise ProgramError(
                            f"{name.split('/', 1)[-1]} inside the archive is not plain tensors ({first_line(exc)}); "
                            "if you trust the file pass --trust-checkpoints"
                        ) from exc
    except (zipfile.BadZipFile, OSError, ValueError, KeyError) as exc:
        raise ProgramError(f"cannot be read as a torch.export archive ({first_line(exc)}); re-save it") from exc


def read_torchscript(path: str, trust: bool) -> torch.jit.ScriptModule:
    """The ScriptModule of a TorchScript archive (its operators checked first unless `trust`)."""
    if not trust:
        check_program_archive(path, "torchscript")  # before torch.jit.load: __setstate__ runs inside it
    try:
        with warnings.catch_warnings():  # torch.jit.load's deprecation notice is not the user's business
            warnings.simplefilter("ignore")
            return torch.jit.load(path, map_location="cpu")
    except Exception as exc:
        raise ProgramError(f"cannot be read as TorchScript ({first_line(exc)}); the archive is truncated") from exc


def read_exported(path: str, trust: bool):
    """The ExportedProgram of a .pt2 file (its operators and payloads checked first unless `trust`)."""
    if not trust:
        check_program_archive(path, "torch.export")
        check_pt2_archive(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return torch.export.load(path)
    except ProgramError:
        raise
    except Exception as exc:
        raise ProgramError(f"cannot be read as a torch.export program ({first_line(exc)}); re-save it") from exc


def exported_input_shape(program) -> tuple[int | None, int | None]:
    """(static batch, static square image size) of an ExportedProgram's one image input; None where dynamic."""
    users = list(program.graph_signature.user_inputs)
    if len(users) != 1:
        raise ProgramError(f"the program takes {len(users)} inputs; a classifier program takes one image batch")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == users[0])
    val = node.meta.get("val")
    shape = tuple(getattr(val, "shape", ()))
    if len(shape) != 4:
        raise ProgramError(f"the program's input has shape {list(shape)}; expected an image batch [B, 3, H, W]")
    static = [d if isinstance(d, int) else None for d in shape]
    batch, channels, height, width = static
    if channels not in (None, 3):
        raise ProgramError(f"the program's input has {channels} channels; expected 3 (RGB or BGR)")
    if height is not None and width is not None and height != width:
        raise ProgramError(f"the program takes {height}x{width} images; crops are square")
    return batch, height if height is not None and width is not None else None


class ProgramModule(nn.Module):
    """A program as a member's network: float [B, 3, S, S] -> logits float [B, C].

    A tuple output (TorchScript GoogLeNet and Inception return (logits, aux...)) gives its
    first element. `fixed_batch`: the program only takes that many images at once.
    """

    def __init__(self, kind: str, program, exported=None, fixed_batch: int | None = None):
        super().__init__()
        self.kind = kind
        self.program = program
        self._exported = exported  # the ExportedProgram, to move to another device
        self.fixed_batch = fixed_batch

    def to(self, *args, **kwargs):  # devices only: a program keeps its own memory format and dtypes
        device = torch._C._nn._parse_to(*args, **kwargs)[0]
        if device is not None:
            if self._exported is not None:
                from torch.export.passes import move_to_device_pass

                self._exported = move_to_device_pass(self._exported, device)
                self.program = self._exported.module()
            else:
                self.program = self.program.to(device)
        return self

    def train(self, mode: bool = True):
        self.training = mode
        if self.kind == "torchscript":
            self.program.train(mode)
        return self  # an exported program runs as it was exported (eval mode, if exported so)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():  # a program's aten::warn text (anything, escape codes too) stays unseen
            warnings.simplefilter("ignore")
            out = self.program(x.contiguous())
        if isinstance(out, (tuple, list)) and out:
            out = out[0]
        if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != x.shape[0]:
            what = f"shape {list(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
            raise ProgramError(f"the program returned {what}; a classifier returns logits [batch, classes]")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fixed_batch is None:
            return self._run(x)
        pieces = []
        for start in range(0, x.shape[0], self.fixed_batch):
            piece = x[start : start + self.fixed_batch]
            short = self.fixed_batch - piece.shape[0]
            if short:
                piece = torch.cat([piece, piece.new_zeros(short, *piece.shape[1:])])
            pieces.append(self._run(piece)[: self.fixed_batch - short])
        return torch.cat(pieces)

    def state_dict_tensors(self) -> dict[str, torch.Tensor]:
        if self._exported is not None:
            return dict(self._exported.state_dict)
        return dict(self.program.state_dict())


@torch.inference_mode()
def probe(module: nn.Module, size: int | tuple[int, int], batch: int = 2) -> torch.Tensor:
    """One forward pass of zeros [batch, 3, size, size] or [batch, 3, height, width] (a member's
    shape check); returns the output."""
    height, width = (size, size) if isinstance(size, int) else size
    return module(torch.zeros(batch, 3, height, width))


def load_program(path: str, kind: str, trust: bool, input_size: int | None) -> tuple[ProgramModule, int, int | None]:
    """(module in eval mode, number of outputs, the one input size it takes or None)."""
    fixed_size = None
    if kind == "torch.export":
        exported = read_exported(path, trust)
        fixed_batch, fixed_size = exported_input_shape(exported)
        module = ProgramModule(kind, exported.module(), exported, fixed_batch)
    else:
        module = ProgramModule(kind, read_torchscript(path, trust))
    module.eval()
    size = fixed_size or input_size or DEFAULT_PROBE_SIZE
    try:
        out = probe(module, size, module.fixed_batch or 2)
    except ProgramError:
        raise
    except Exception as exc:
        if module.fixed_batch is None:  # a TorchScript program traced for one image at a time?
            try:
                out = probe(module, size, 1)
                module.fixed_batch = 1
            except Exception:
                out = None
        else:
            out = None
        if out is None:
            hint = "" if input_size else " (set input_size: in the sidecar if it takes another size)"
            raise ProgramError(f"the program fails on a {size}x{size} batch ({first_line(exc)}){hint}") from exc
    return module, int(out.shape[1]), fixed_size
