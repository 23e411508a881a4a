"""How a pass runs, as one value: where, in how many processes, in what memory format, how
strictly. None of it changes a number (what a pass computes, precision included, is the
ensemble.Plan); the engine, the loader and the member placement take it by keyword.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .distributed import World

if TYPE_CHECKING:
    import torch


def _cpu() -> torch.device:
    import torch

    return torch.device("cpu")


@dataclass(frozen=True)
class Execution:
    device: torch.device = field(default_factory=_cpu)
    workers: int = 0  # image decoding/cropping processes (0: in this process)
    channels_last: bool = True  # models in channels_last memory format (else NCHW)
    compile: bool = False  # torch.compile each member for inference
    strict: bool = False  # an undecodable image stops the pass (else it is skipped and listed)
    progress: bool = False  # a progress bar (on the main process)
    world: World = field(default_factory=World)  # the torchrun processes sharing the pass

    @classmethod
    def of(cls, config: Any, device: torch.device, world: World | None = None) -> Execution:
        """The execution options of a RunConfig, on the resolved `device`."""
        return cls(
            device=device,
            workers=config.workers,
            channels_last=config.channels_last,
            compile=config.compile,
            strict=config.strict,
            progress=config.progress,
            world=world or World(),
        )
