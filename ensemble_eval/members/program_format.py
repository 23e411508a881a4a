"""What TorchScript and torch.export members share: archives that are their own network.

The archive's declared sizes are checked when it is recognised (preload.check_archive_sizes);
the program is read by programs.load_program (its operators checked first unless `trust`)
once the sidecar is known, and probed once for its outputs. No architecture is rebuilt, so
an `arch:` in the sidecar names no defaults here.
"""

from __future__ import annotations

import hashlib

from ..models import ArchSpec, count_parameters
from ..preload import check_archive_sizes
from ..programs import load_program
from .convention import Convention, file_convention
from .format import FileFormat, Loaded, add_convention_verdict
from .tensors import state_digest, tensor_problem


def program_text(module) -> str:
    """The program's own code (TorchScript's inlined graph, an exported program's graph code)."""
    program = module.program
    try:
        graph = program.inlined_graph if module.kind == "torchscript" else program.graph
        return str(graph)
    except Exception:  # a program kind without a printable graph: its tensors alone tell
        return ""


class ProgramFormat(FileFormat):
    is_program = True

    def read(self, path: str, trust: bool, ins) -> Loaded:
        check_archive_sizes(path)  # declared sizes, and the .pt files inside a .pt2, before any loader
        return Loaded()  # read by programs.load_program once the sidecar is known

    def convention(self, path: str, loaded: Loaded) -> Convention:
        return file_convention(path, loaded.embedded)

    def weights(self, ins, path: str, trust: bool, loaded: Loaded, prefer: str | None) -> None:
        """Its own program, probed once for its outputs, as the Inspection's network."""
        module, outputs, fixed_size = load_program(path, self.kind, trust, ins.convention.input_size)
        state = module.state_dict_tensors()
        ins.num_params = count_parameters(state)
        # two programs are the same member only with the same code and the same tensors (none, for some)
        ins.state_digest = hashlib.sha256(
            (state_digest(state) or "no tensors").encode() + program_text(module).encode()
        ).hexdigest()
        problem = tensor_problem(state)
        if problem:
            ins.errors.append(problem)
        ins.model, ins.arch = module, ArchSpec(self.kind, outputs, False, fixed_size)
        if module.fixed_batch:
            ins.notes.append(
                f"the program takes batches of exactly {module.fixed_batch}; it runs in pieces of that size"
            )
        add_convention_verdict(ins)
        return None
