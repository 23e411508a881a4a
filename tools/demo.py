"""Input-sensitive demo checkpoints (GoogLeNet, or any torchvision classifier) made from real images, offline.

No pretrained weights can be downloaded here, and a randomly initialised network is useless
for checking an evaluator: its outputs are near-uniform, so a wrong crop or a wrong class
order goes unnoticed. These models are randomly initialised torchvision networks (GoogLeNet by default) whose
BatchNorm statistics are recalibrated on real images and whose final layer is a
nearest-class-mean classifier over the given images' features, scaled so the softmax is
peaked. They predict the given images' classes on the standard 1-crop view and react
strongly to every change of crop. They are demo and test fixtures, not trained models.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision.transforms.v2 import functional as TF

from ensemble_eval.members.convention import IMAGENET_MEAN, IMAGENET_STD


def _standard_view(image: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [3,H,W] -> float [3,size,size]: Resize(size*8/7) + CenterCrop(size) + Normalize."""
    x = TF.resize(image, [round(size * 8 / 7)], antialias=True)
    x = TF.center_crop(x, [size, size]).float().div(255)
    return TF.normalize(x, list(IMAGENET_MEAN), list(IMAGENET_STD))


@torch.no_grad()
def make_demo_googlenet(
    images: list[torch.Tensor],
    targets: list[int],
    num_classes: int = 1000,
    seed: int = 0,
    aux_heads: bool = True,
    sharpness: float = 12.0,
    crop_size: int = 224,
) -> nn.Module:
    """A torchvision-layout GoogLeNet (eval mode) fitted to `images` as described above.

    images: uint8 [3, H, W] each (at least 2); targets: class index of each image.
    """
    from torchvision.models import GoogLeNet

    torch.manual_seed(seed)
    model = GoogLeNet(num_classes=num_classes, aux_logits=aux_heads, transform_input=False, init_weights=True)
    return fit_demo_head(model, images, targets, seed, sharpness, crop_size)


@torch.no_grad()
def make_demo_model(
    builder: str,
    images: list[torch.Tensor],
    targets: list[int],
    num_classes: int = 1000,
    seed: int = 0,
    sharpness: float = 12.0,
    crop_size: int = 224,
) -> nn.Module:
    """Any torchvision classification builder (`resnet18`, ...), made input-sensitive the same way."""
    import torchvision.models as tvm

    if builder == "googlenet":
        return make_demo_googlenet(images, targets, num_classes, seed, True, sharpness, crop_size)
    torch.manual_seed(seed)
    model = tvm.get_model(builder, weights=None, num_classes=num_classes)
    return fit_demo_head(model, images, targets, seed, sharpness, crop_size)


@torch.no_grad()
def fit_demo_head(
    model: nn.Module,
    images: list[torch.Tensor],
    targets: list[int],
    seed: int = 0,
    sharpness: float = 12.0,
    crop_size: int = 224,
) -> nn.Module:
    """Recalibrate `model`'s BatchNorm statistics on `images` and make its last Linear layer a
    nearest-class-mean classifier over its input features; returns the model in eval mode."""
    if len(images) < 2 or len(images) != len(targets):
        raise ValueError("need at least two images and one target per image")
    head = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    num_classes = head.out_features
    views = torch.stack([_standard_view(im, crop_size) for im in images])
    batch = torch.cat([views, views.flip(-1)])

    # BatchNorm statistics from real images (cumulative average of one pass).
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    model.train()
    model(batch)
    model.eval()

    # Features entering the last Linear layer, then a nearest-class-mean head on them.
    captured: list[torch.Tensor] = []
    handle = head.register_forward_hook(lambda mod, inp, out: captured.append(inp[0]))
    model(views)
    handle.remove()
    feats = captured[0]  # [N, features]
    mu = feats.mean(dim=0)
    centered = feats - mu
    scale = centered.norm(dim=1).mean().clamp_min(1e-6)
    gen = torch.Generator().manual_seed(seed + 1)
    weight = torch.randn(num_classes, feats.shape[1], generator=gen) / feats.shape[1] ** 0.5
    for cls in sorted(set(targets)):
        rows = centered[[i for i, t in enumerate(targets) if t == cls]].mean(dim=0)
        weight[cls] = rows / rows.norm().clamp_min(1e-6)
    weight = weight * (sharpness / scale)
    head.weight.copy_(weight)
    head.bias.copy_(-(weight @ mu))
    return model
