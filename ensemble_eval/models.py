"""Architectures and building them from a state dict's names and shapes.

Two GoogLeNet variants are recognised from the keys, never from a flag:

- ``torchvision-googlenet``: torchvision's layout (BatchNorm after every conv, its "5x5"
  branch is really 3x3, ceil_mode pools), keys like ``inception3a.branch1.conv.weight``;
- ``paper-googlenet``: the paper-faithful BN GoogLeNet common in tutorials, with a real 5x5
  branch, padding-1 pools and ``conv_block`` naming (``inception3a.branch1.conv_block.0.weight``),
  defined below.

Both with or without the two auxiliary heads, any number of classes. Every other torchvision
classification builder is recognised by its cached key/shape signature (signatures.py), or
named with ``arch:`` in a sidecar; ``arch: timm/<name>`` builds a timm model (optional
extra; the `timm/` namespace belongs to members/timm_published.py, found through the
member registry). Aux heads are checked against the weights and then dropped: they play no part at
evaluation.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import dataclass, replace

import torch
from torch import nn

from .errors import UserError
from .signatures import AUX_PREFIXES


class ArchitectureError(UserError):
    """Weights that fit no known architecture; the message names the first mismatch."""


@dataclass(frozen=True)
class ArchSpec:
    """What the weights say about the network they belong to."""

    name: str  # "torchvision-googlenet", "paper-googlenet", a torchvision builder, "timm/<name>", a program kind
    num_classes: int
    aux_heads: bool
    input_size: int | None = None  # the one crop size the network accepts, where it has one (ViTs)


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


GOOGLENETS = {
    # name: (key that identifies the layout, builder)
    "torchvision-googlenet": ("inception3a.branch1.conv.weight", _torchvision_googlenet),
    "paper-googlenet": ("inception3a.branch1.conv_block.0.weight", lambda n, aux: PaperGoogLeNet(n, aux)),
}
ARCH_ALIASES = {"googlenet": "torchvision-googlenet"}


def _googlenet_spec(name: str, state: dict[str, torch.Tensor]) -> ArchSpec:
    fc = state.get("fc.weight")
    if fc is None or fc.ndim != 2 or fc.shape[1] != 1024:
        got = "no fc.weight" if fc is None else f"fc.weight has shape {list(fc.shape)}"
        raise ArchitectureError(f"{got}, a GoogLeNet needs [num_classes, 1024]")
    return ArchSpec(name, int(fc.shape[0]), any(k.startswith(AUX_PREFIXES) for k in state))


def _unknown(state: dict[str, torch.Tensor]) -> ArchitectureError:
    from .signatures import matches

    if not state:
        return ArchitectureError("unknown architecture: the state dict holds no tensors")
    closest = matches(state)[:3]
    named = "; ".join(
        f"{c.signature.builder} ({c.shared} of {len(c.signature.shapes)} keys, {c.difference})" for c in closest
    )
    return ArchitectureError(
        f"unknown architecture; closest: {named}. Name it with arch: in a sidecar (a torchvision builder, "
        "timm/<name>), or re-save the network as TorchScript or torch.export"
    )


def identify(state: dict[str, torch.Tensor], arch: str | None = None) -> ArchSpec:
    """Recognise the architecture of a (prefix-stripped) state dict.

    `arch` (from a sidecar or embedded entry) names it: a torchvision builder
    (`resnet50`), `paper-googlenet`, or `timm/<name>`. Without it, the two GoogLeNet layouts are
    recognised by their keys and every other torchvision builder by its cached signature.
    """
    arch = ARCH_ALIASES.get(arch, arch)
    family = _arch_family(arch)
    if family is not None:  # a namespace a member source owns (timm/<name>)
        return family.arch_spec(arch[len(family.arch_prefix) :], state)
    if arch in GOOGLENETS or arch is None:
        for name, (marker, _) in GOOGLENETS.items():
            if (arch is None or arch == name) and marker in state:
                return _googlenet_spec(name, state)
        if arch is not None:
            raise ArchitectureError(f"weights do not fit {arch}: missing key {GOOGLENETS[arch][0]!r}")
    from .signatures import builder_names, matches, signatures_of, vit_image_size

    if arch is not None and arch not in builder_names():
        close = difflib.get_close_matches(arch, builder_names() + list(GOOGLENETS), n=3)
        raise ArchitectureError(
            f"arch {arch!r} is not a torchvision classification builder"
            + (f" (closest: {', '.join(close)})" if close else "")
            + "; for timm models write timm/<name>"
        )
    if arch is not None:  # named: the class count from its classifier; build_model names any mismatch
        sigs = signatures_of(arch)
        aux = any(k.startswith(AUX_PREFIXES) for k in state)
        sig = next((s for s in sigs if s.aux_heads == aux), sigs[0])
        key, dim = next(iter(sig.class_dims.items()))
        if key not in state or state[key].ndim <= dim:
            raise ArchitectureError(f"weights do not fit {arch}: missing key {key!r} (its classifier)")
        return ArchSpec(arch, int(state[key].shape[dim]), sig.aux_heads)
    found = matches(state)
    fitting = [c for c in found if c.difference is None]
    if len(fitting) > 1:
        names = ", ".join(c.signature.builder for c in fitting)
        raise ArchitectureError(f"ambiguous architecture: the weights fit {names}; name one with arch: in a sidecar")
    if fitting:
        sig = fitting[0].signature
        size = vit_image_size(state) if sig.builder.startswith("vit_") else None
        return ArchSpec(sig.builder, int(fitting[0].num_classes or 0), sig.aux_heads, size)
    raise _unknown(state)


def _arch_family(arch: str | None):
    """The member source owning the architecture namespace of `arch` (timm/<name>), or None."""
    from .members.registry import arch_family

    return arch_family(arch)


def _build(spec: ArchSpec, input_size: int | None = None) -> nn.Module:
    if spec.name in GOOGLENETS:
        return GOOGLENETS[spec.name][1](spec.num_classes, spec.aux_heads)
    family = _arch_family(spec.name)
    if family is not None:
        return family.create(spec.name[len(family.arch_prefix) :], spec)
    import torchvision.models as tvm

    from .signatures import builder_kwargs

    kwargs = builder_kwargs(spec.name, **({"aux_logits": spec.aux_heads} if spec.name == "inception_v3" else {}))
    if spec.name.startswith("vit_") and input_size:
        kwargs["image_size"] = input_size
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return tvm.get_model(spec.name, weights=None, num_classes=spec.num_classes, **kwargs)


def first_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str | None:
    """The first missing key, unexpected key or shape mismatch between `state` and `model`."""
    expected = model.state_dict()
    for key, tensor in expected.items():
        if key not in state:
            if key.endswith("num_batches_tracked"):
                continue  # absent from old BatchNorm states; not used at evaluation
            return f"missing key {key!r}"
        if tuple(state[key].shape) != tuple(tensor.shape):
            return f"{key!r} has shape {list(state[key].shape)}, the architecture needs {list(tensor.shape)}"
    for key in state:
        if key not in expected:
            return f"unexpected key {key!r}"
    return None


def build_model(
    state: dict[str, torch.Tensor], arch: str | None = None, input_size: int | None = None
) -> tuple[nn.Module, ArchSpec]:
    """A model in eval mode with `state` loaded strictly, plus what it is (see `identify`).

    `input_size` builds torchvision ViTs for that image size (their position embeddings
    depend on it; without it, the size is read from the position embedding)."""
    spec = identify(state, arch)
    model = _build(spec, input_size or spec.input_size)
    problem = first_mismatch(model, state)
    if problem:
        raise ArchitectureError(f"weights do not fit {spec.name}: {problem}")
    expected = model.state_dict()
    state = {k: v for k, v in expected.items() if k.endswith("num_batches_tracked") and k not in state} | state
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # e.g. a tensor kind load_state_dict cannot copy
        first = str(exc).strip().splitlines()[-1].strip()[:160]
        raise ArchitectureError(f"weights do not load into {spec.name}: {first}") from exc
    if spec.aux_heads:  # training-only heads: checked against the weights, then dropped
        if hasattr(model, "aux_logits"):
            model.aux_logits = False
        for name in ("aux1", "aux2", "AuxLogits"):
            if hasattr(model, name):
                setattr(model, name, None)
    return model.eval(), replace(spec, input_size=required_size(model))


def required_size(model: nn.Module) -> int | None:
    """The one input size a network accepts, where it says so (ViTs: torchvision's image_size,
    timm's strict patch embedding)."""
    size = getattr(model, "image_size", None)
    if isinstance(size, int):
        return size
    embed = getattr(model, "patch_embed", None)
    img = getattr(embed, "img_size", None)
    if img is not None and getattr(embed, "strict_img_size", False) and not getattr(embed, "dynamic_img_size", False):
        return int(img[0]) if isinstance(img, (tuple, list)) else int(img)
    return None


def count_parameters(state: dict[str, torch.Tensor]) -> int:
    """Learnable parameters (BatchNorm running statistics and counters excluded)."""
    skip = ("running_mean", "running_var", "num_batches_tracked")
    return sum(v.numel() for k, v in state.items() if not k.endswith(skip))
