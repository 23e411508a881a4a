"""Architectures and building them from a state dict's names and shapes.

First cut: torchvision's GoogLeNet layout (BatchNorm after every conv, its "5x5" branch is
really 3x3), with or without the two auxiliary heads, any number of classes. The variant
is recognised from the keys, never from a flag.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .errors import UserError


class ArchitectureError(UserError):
    """Weights that fit no known architecture; the message names the first mismatch."""


@dataclass(frozen=True)
class ArchSpec:
    """What the weights say about the network they belong to."""

    name: str  # "torchvision-googlenet"
    num_classes: int
    aux_heads: bool


def _torchvision_googlenet(num_classes: int, aux_heads: bool) -> nn.Module:
    from torchvision.models import GoogLeNet

    # init_weights=False: the weights are loaded right after; skips a slow random init.
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_heads, transform_input=False, init_weights=False)


def identify(state: dict[str, torch.Tensor]) -> ArchSpec:
    """Recognise the architecture of a (prefix-stripped) state dict."""
    if "fc.weight" in state and "inception3a.branch1.conv.weight" in state:
        fc = state["fc.weight"]
        if fc.ndim != 2:
            raise ArchitectureError(f"fc.weight has shape {list(fc.shape)}, expected [num_classes, 1024]")
        aux = any(k.startswith(("aux1.", "aux2.")) for k in state)
        return ArchSpec("torchvision-googlenet", int(fc.shape[0]), aux)
    sample = ", ".join(sorted(state)[:3]) or "no tensors at all"
    raise ArchitectureError(
        f"unknown architecture (keys start {sample}); supported: torchvision GoogLeNet "
        "(keys conv1.conv.weight, inception3a.branch1.conv.weight, fc.weight)"
    )


def _first_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            return f"missing key {key!r}"
        if tuple(state[key].shape) != tuple(tensor.shape):
            return f"{key!r} has shape {list(state[key].shape)}, the architecture needs {list(tensor.shape)}"
    for key in state:
        if key not in expected:
            return f"unexpected key {key!r}"
    return None


def build_model(state: dict[str, torch.Tensor]) -> tuple[nn.Module, ArchSpec]:
    """A model in eval mode with `state` loaded strictly, plus what it is.

    Auxiliary heads are checked against the weights and then dropped: they play no part at
    evaluation and would only hold memory.
    """
    spec = identify(state)
    model = _torchvision_googlenet(spec.num_classes, spec.aux_heads)
    problem = _first_mismatch(model, state)
    if problem:
        raise ArchitectureError(f"weights do not fit {spec.name}: {problem}")
    model.load_state_dict(state, strict=True)
    if spec.aux_heads:
        model.aux_logits = False
        model.aux1 = None
        model.aux2 = None
    return model.eval(), spec
