"""safetensors files: tensors only, and string metadata that may carry the input convention."""

from __future__ import annotations

import json

import torch

from ..errors import first_line
from ..preload import Refusal
from .convention import META_KEY
from .format import FileFormat, FileHead, Loaded


def read_safetensors(path: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt", device="cpu") as f:
            meta = f.metadata() or {}
            return {k: f.get_tensor(k) for k in f.keys()}, meta
    except (SafetensorError, OSError, ValueError) as exc:
        raise Refusal(f"cannot be read as safetensors ({first_line(exc)}); the file is truncated or corrupt") from exc


class Safetensors(FileFormat):
    kind = "safetensors"
    header = "safetensors"

    def sniff(self, head: FileHead) -> bool:
        # 8-byte header length, then the JSON header (maybe truncated); checked before the pickle
        # test: a length like 0x8d80 starts with 0x80 too, and a legacy torch.save file has its
        # magic number there
        return not head.is_zip and len(head.bytes) == 9 and head.bytes[8:9] == b"{"

    def read(self, path: str, trust: bool, ins) -> Loaded:
        tensors, meta = read_safetensors(path)
        if META_KEY not in meta:
            return Loaded(tensors)
        try:
            return Loaded(tensors, json.loads(meta[META_KEY]))
        except (json.JSONDecodeError, RecursionError) as exc:
            what = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise Refusal(f"safetensors metadata '{META_KEY}' is not usable JSON ({what})") from exc


FORMAT = Safetensors()
