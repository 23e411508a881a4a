"""torch.export programs (`torch.export.save`, .pt2): run as they are (programs.read_exported)."""

from __future__ import annotations

from ..programs import is_pt2_archive
from .format import FileHead
from .program_format import ProgramFormat


class TorchExport(ProgramFormat):
    kind = "torch.export"
    header = "torch.export"

    def sniff(self, head: FileHead) -> bool:
        return bool(head.zip_names) and is_pt2_archive(head.zip_names)


FORMAT = TorchExport()
