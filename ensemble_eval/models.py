"""Architectures and building them from a state dict's names and shapes.

Two GoogLeNet variants are recognised from the keys, never from a flag:

- ``torchvision-googlenet``: torchvision's layout (BatchNorm after every conv, its "5x5"
  branch is really 3x3, ceil_mode pools), keys like ``inception3a.branch1.conv.weight``;
- ``paper-googlenet``: the paper-faithful BN GoogLeNet common in tutorials, with a real 5x5
  branch, padding-1 pools and ``conv_block`` naming (``inception3a.branch1.conv_block.0.weight``),
  defined below.

Both with or without the two auxiliary heads, any number of classes. Aux heads are checked
against the weights and then dropped: they play no part at evaluation.
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

    name: str  # "torchvision-googlenet" or "paper-googlenet"
    num_classes: int
    aux_heads: bool


# ---------------------------------------------------------------------------------------
# The paper-faithful BN GoogLeNet ("Going deeper with convolutions", Table 1, plus BatchNorm)


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm(eps=0.001) + ReLU, as `conv_block` (keys conv_block.0/1)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.conv_block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False),
            nn.BatchNorm2d(out_channels, eps=0.001),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_block(x)


class Inception(nn.Module):
    """Inception(in, 1x1, 3x3red, 3x3, 5x5red, 5x5, pool_proj) with a real 5x5 branch."""

    def __init__(self, in_ch: int, ch1: int, ch3red: int, ch3: int, ch5red: int, ch5: int, pool_proj: int):
        super().__init__()
        self.branch1 = BasicConv2d(in_ch, ch1, 1)
        self.branch2 = nn.Sequential(BasicConv2d(in_ch, ch3red, 1), BasicConv2d(ch3red, ch3, 3, padding=1))
        self.branch3 = nn.Sequential(BasicConv2d(in_ch, ch5red, 1), BasicConv2d(ch5red, ch5, 5, padding=2))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, stride=1, padding=1), BasicConv2d(in_ch, pool_proj, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)], dim=1)


class InceptionAux(nn.Module):
    """Training-only head: AvgPool 5/3, 1x1 conv -> 128, fc 2048 -> 1024, ReLU, dropout 0.7, fc."""

    def __init__(self, in_ch: int, num_classes: int):
        super().__init__()
        self.avgpool = nn.AvgPool2d(5, stride=3)
        self.conv = BasicConv2d(in_ch, 128, 1)
        self.fc1 = nn.Linear(2048, 1024)
        self.relu = nn.ReLU(inplace=True)
        self.dropout = nn.Dropout(0.7)
        self.fc2 = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.conv(self.avgpool(x)), 1)
        return self.fc2(self.dropout(self.relu(self.fc1(x))))


class PaperGoogLeNet(nn.Module):
    """BN GoogLeNet with the paper's 5x5 branches; 13,385,816 parameters with aux heads at 1000 classes.

    Input float [B, 3, H, W] (normalized); output logits [B, num_classes]. Aux heads, when
    present, are used only in training mode.
    """

    def __init__(self, num_classes: int = 1000, aux_heads: bool = True):
        super().__init__()
        self.conv1 = BasicConv2d(3, 64, 7, stride=2, padding=3)
        self.maxpool1 = nn.MaxPool2d(3, stride=2, padding=1)
        self.conv2a = BasicConv2d(64, 64, 1)
        self.conv2b = BasicConv2d(64, 192, 3, padding=1)
        self.maxpool2 = nn.MaxPool2d(3, stride=2, padding=1)
        self.inception3a = Inception(192, 64, 96, 128, 16, 32, 32)
        self.inception3b = Inception(256, 128, 128, 192, 32, 96, 64)
        self.maxpool3 = nn.MaxPool2d(3, stride=2, padding=1)
        self.inception4a = Inception(480, 192, 96, 208, 16, 48, 64)
        self.inception4b = Inception(512, 160, 112, 224, 24, 64, 64)
        self.inception4c = Inception(512, 128, 128, 256, 24, 64, 64)
        self.inception4d = Inception(512, 112, 144, 288, 32, 64, 64)
        self.inception4e = Inception(528, 256, 160, 320, 32, 128, 128)
        self.maxpool4 = nn.MaxPool2d(3, stride=2, padding=1)
        self.inception5a = Inception(832, 256, 160, 320, 32, 128, 128)
        self.inception5b = Inception(832, 384, 192, 384, 48, 128, 128)
        self.aux1 = InceptionAux(512, num_classes) if aux_heads else None
        self.aux2 = InceptionAux(528, num_classes) if aux_heads else None
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.4)
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor):
        x = self.maxpool1(self.conv1(x))
        x = self.maxpool2(self.conv2b(self.conv2a(x)))
        x = self.maxpool3(self.inception3b(self.inception3a(x)))
        x = self.inception4a(x)
        aux1 = self.aux1(x) if self.aux1 is not None and self.training else None
        x = self.inception4d(self.inception4c(self.inception4b(x)))
        aux2 = self.aux2(x) if self.aux2 is not None and self.training else None
        x = self.maxpool4(self.inception4e(x))
        x = self.inception5b(self.inception5a(x))
        x = self.fc(self.dropout(torch.flatten(self.avgpool(x), 1)))
        if aux1 is not None or aux2 is not None:
            return x, aux2, aux1
        return x


def _torchvision_googlenet(num_classes: int, aux_heads: bool) -> nn.Module:
    from torchvision.models import GoogLeNet

    # init_weights=False: the weights are loaded right after; skips a slow random init.
    return GoogLeNet(num_classes=num_classes, aux_logits=aux_heads, transform_input=False, init_weights=False)


ARCHITECTURES = {
    # name: (key that identifies the layout, builder)
    "torchvision-googlenet": ("inception3a.branch1.conv.weight", _torchvision_googlenet),
    "paper-googlenet": ("inception3a.branch1.conv_block.0.weight", lambda n, aux: PaperGoogLeNet(n, aux)),
}


def identify(state: dict[str, torch.Tensor]) -> ArchSpec:
    """Recognise the architecture of a (prefix-stripped) state dict."""
    for name, (marker, _) in ARCHITECTURES.items():
        if marker in state and "fc.weight" in state:
            fc = state["fc.weight"]
            if fc.ndim != 2 or fc.shape[1] != 1024:
                raise ArchitectureError(f"fc.weight has shape {list(fc.shape)}, a GoogLeNet needs [num_classes, 1024]")
            aux = any(k.startswith(("aux1.", "aux2.")) for k in state)
            return ArchSpec(name, int(fc.shape[0]), aux)
    sample = ", ".join(sorted(state)[:3]) or "no tensors at all"
    raise ArchitectureError(
        f"unknown architecture (keys start {sample}); supported: torchvision GoogLeNet "
        "(inception3a.branch1.conv.weight, fc.weight) and paper-style BN GoogLeNet "
        "(inception3a.branch1.conv_block.0.weight, fc.weight)"
    )


def first_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """The first missing key, unexpected key or shape mismatch between `state` and `model`."""
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
    """A model in eval mode with `state` loaded strictly, plus what it is."""
    spec = identify(state)
    model = ARCHITECTURES[spec.name][1](spec.num_classes, spec.aux_heads)
    problem = first_mismatch(model, state)
    if problem:
        raise ArchitectureError(f"weights do not fit {spec.name}: {problem}")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a tensor kind load_state_dict cannot copy
        first = str(exc).strip().splitlines()[-1].strip()[:160]
        raise ArchitectureError(f"weights do not load into {spec.name}: {first}") from exc
    if spec.aux_heads:
        if hasattr(model, "aux_logits"):
            model.aux_logits = False
        model.aux1 = None
        model.aux2 = None
    return model.eval(), spec


def count_parameters(state: dict[str, torch.Tensor]) -> int:
    """Learnable parameters (BatchNorm running statistics and counters excluded)."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in state.items() if not k.endswith(skip))
