"""Shared fixtures: real test images, small crop schemes, input-sensitive checkpoints."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from ensemble_eval.crops import CropScheme
from ensemble_eval.data import decode_image, list_samples
from tools.demo import make_demo_googlenet, make_demo_model

TESTS = Path(__file__).parent
DATA = TESTS / "data" / "imagenet"
SHARED = TESTS.parent.parent / "shared" / "data" / "imagenet-sample"
QUICK = str(TESTS.parent / "ensemble_eval" / "presets" / "quick-72px.yaml")
sys.path.insert(0, str(TESTS))  # for reference_protocol
# the architecture signature cache of this test session (subprocesses inherit it); never the user's
CACHE = os.environ["ENSEMBLE_EVAL_CACHE"] = tempfile.mkdtemp(prefix="ensemble-eval-cache-")


def pytest_sessionfinish(session, exitstatus):
    import shutil

    shutil.rmtree(CACHE, ignore_errors=True)


HAS_CUDA = torch.cuda.is_available()
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU")]),
]

# The ILSVRC 2014 geometry at a quarter of the cost: 64 px crops, two scales, 72 crops.
SMALL = CropScheme(
    scales=(72, 88),
    crop_size=64,
    crop_sets={
        "1": {"scales": (72,), "squares": ("center",), "crops": ("center",), "flips": ("none",)},
        "10": {"scales": (72,), "squares": ("center",), "crops": ("tl", "tr", "bl", "br", "center")},
        "72": {},
    },
)


def set_sums(crops, runners, set_positions, chunk_size, channels_last=True, precision="fp32") -> torch.Tensor:
    """Per member, image and crop set: the sum of softmax probabilities over the set's crops,
    from the tool's batched forward passes. crops uint8 [B, K, 3, S, S] -> float32 [M, B, S, C]."""
    from ensemble_eval.ensemble import member_logits

    probs = torch.softmax(member_logits(crops, runners, chunk_size, channels_last, precision), dim=-1)
    return torch.stack([probs[:, :, list(pos)].sum(dim=2) for pos in set_positions], dim=2)


HANG_GUARD_S = 1800  # far beyond any plausible run: each test using `deadline` takes seconds even on a slow CPU


@pytest.fixture
def deadline():
    """Fail, never hang: a test that blocks (a FIFO read) is interrupted after HANG_GUARD_S seconds.

    A hang guard, not a speed limit: no test fails because the machine is slow."""
    import signal

    def expired(signum, frame):
        raise TimeoutError(f"blocked for {HANG_GUARD_S} s: a FIFO was read?")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(HANG_GUARD_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="session")
def samples():
    return list_samples(DATA)


@pytest.fixture(scope="session")
def images(samples):
    return [decode_image(s.path) for s in samples]


def save_checkpoint(model: torch.nn.Module, path: Path, wrap: str | None = None, prefix: str = "") -> Path:
    state = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({wrap: state, "epoch": 3} if wrap else state, path)
    return path


@pytest.fixture(scope="session")
def demo_models(samples, images):
    """Two input-sensitive 1000-class GoogLeNets (with and without aux heads)."""
    targets = [s.target for s in samples]
    return [
        make_demo_googlenet(images, targets, seed=0, aux_heads=True),
        make_demo_googlenet(images, targets, seed=1, aux_heads=False),
    ]


@pytest.fixture(scope="session")
def demo_ckpts(demo_models, tmp_path_factory):
    """The demo models as files: a bare state dict and a DDP-style wrapped one."""
    d = tmp_path_factory.mktemp("ckpts")
    return [
        save_checkpoint(demo_models[0], d / "a.pt"),
        save_checkpoint(demo_models[1], d / "b.pt", wrap="state_dict", prefix="module."),
    ]


@pytest.fixture(scope="session")
def mixed_models(samples, images, demo_models):
    """Input-sensitive GoogLeNet, ResNet-18 and MobileNetV3-small (random weights, heads fitted to the images)."""
    targets = [s.target for s in samples]
    return {
        "googlenet": demo_models[1],
        "resnet18": make_demo_model("resnet18", images, targets, seed=2),
        "mobilenet_v3_small": make_demo_model("mobilenet_v3_small", images, targets, seed=3),
    }
