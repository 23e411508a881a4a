"""`torch.save` files (.pt, .pth, .bin; zip or legacy pickle), read with `weights_only=True`.

The file is checked first (preload.check_torch_file): declared sizes that do not fit, and
pickled code, are refused before torch.load reads anything, with or without `trust`. An
`argparse.Namespace` beside the weights (torchvision's reference scripts save one) is plain
data; anything else that needs full unpickling (a whole pickled module) needs `trust`.
"""

from __future__ import annotations

import argparse
import os
import re

import torch
from torch import nn

from ..errors import first_line
from ..preload import Refusal, check_torch_file
from .convention import META_KEY
from .format import FileFormat, FileHead, Loaded


def torch_load(path: str, trust: bool) -> tuple[object, bool]:
    """(object, was_trusted_load). Raises Refusal with the reason."""
    with open(path, "rb") as fh:
        check_torch_file(fh, os.fstat(fh.fileno()).st_size)
    try:
        # argparse.Namespace (saved beside the weights by torchvision's reference scripts) is
        # plain data; allowing it keeps weights_only's protection against everything else.
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True), False
    except Exception as exc:  # an untrusted file can make the unpickler fail in any way
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        if found is None:  # not an unsafe object: a damaged or foreign file
            detail = first_line(exc).split("WeightsUnpickler error: ")[-1]
            raise Refusal(f"cannot be read ({detail}); the file is truncated or corrupt") from exc
        what = f"objects of type {found.group(1)}"
        if not trust:
            raise Refusal(
                f"holds {what}, which cannot be loaded without unpickling code (unsafe for untrusted files); "
                "if you trust the file pass --trust-checkpoints, or re-save it as a state dict: "
                "torch.save(model.state_dict(), path)"
            ) from exc
    try:
        return torch.load(path, map_location="cpu", weights_only=False), True
    except Exception as exc:
        raise Refusal(f"cannot be read even with --trust-checkpoints ({first_line(exc)})") from exc


class TorchSave(FileFormat):
    kind = "torch"
    header = "torch.save"
    catch_all = True  # any zip archive the program formats do not claim, any pickle

    @property
    def label(self) -> str:
        return "torch.save"

    def sniff(self, head: FileHead) -> bool:
        return head.is_zip or head.bytes[:1] == b"\x80"  # zip (torch >= 1.6), or a legacy pickle

    def read(self, path: str, trust: bool, ins) -> Loaded:
        obj, trusted = torch_load(path, trust)
        if trusted:
            label = "pickled module (trusted)" if isinstance(obj, nn.Module) else "pickle (trusted)"
        else:
            label = "state dict"
        return Loaded(obj, obj.get(META_KEY) if isinstance(obj, dict) else None, label=label)


FORMAT = TorchSave()
