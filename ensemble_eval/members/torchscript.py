"""TorchScript archives (`torch.jit.save`): run as they are (programs.read_torchscript)."""

from __future__ import annotations

from ..programs import is_pt2_archive
from .format import FileHead
from .program_format import ProgramFormat


class TorchScript(ProgramFormat):
    kind = "torchscript"
    header = "TorchScript"

    def sniff(self, head: FileHead) -> bool:
        names = head.zip_names
        if not names or is_pt2_archive(names):  # a torch.export archive is not TorchScript
            return False
        return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


FORMAT = TorchScript()
