"""Which torchvision classification builder a state dict belongs to, from its key names and shapes.

A builder's *signature* is every key of its state dict with its shape, and the keys whose
shape follows the class count (the classifier). Signatures are made once per torchvision
version by building every classification model on the meta device (no memory, no weight
init) at two class counts, and cached as JSON in the user cache directory
(``$ENSEMBLE_EVAL_CACHE``, else ``$XDG_CACHE_HOME/ensemble-eval``, else
``~/.cache/ensemble-eval``). Later runs read the file (tens of milliseconds) instead of
building 80 models.

Matching ignores ``num_batches_tracked`` (old BatchNorm states lack it); every other key and
shape must agree, with one class count across the classifier keys.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import sys
import warnings
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import torch

from .fileio import FileTooLarge, NotRegularFile, read_regular_file, write_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
PROBE_CLASSES = (1000, 7)  # two class counts: the keys whose shape differs are the classifier's
# builders with structural switches that checkpoints hold either way: (variant suffix, kwargs)
VARIANTS = {"inception_v3": (("", {"aux_logits": True}), ("-no-aux", {"aux_logits": False}))}
NO_INIT = {"googlenet", "inception_v3"}  # builders that take init_weights (skips a slow scipy init)
AUX_PREFIXES = ("aux1.", "aux2.", "AuxLogits.")
SIZE_KEYS = ("encoder.pos_embedding",)  # torchvision ViTs: its length follows the image size
MAX_CACHE_BYTES = 64 * 1024 * 1024  # the cache is 1.4 MB for torchvision 0.29's 80 builders


def vit_image_size(state: dict[str, torch.Tensor]) -> int | None:
    """The image size a torchvision ViT state dict was made for, from its position embedding
    (1 + (size / patch)^2 tokens) and patch size; None for other networks."""
    pos, proj = state.get("encoder.pos_embedding"), state.get("conv_proj.weight")
    if pos is None or proj is None or pos.ndim != 3 or proj.ndim != 4:
        return None
    side = math.isqrt(max(pos.shape[1] - 1, 0))
    return side * int(proj.shape[-1]) if side and side * side == pos.shape[1] - 1 else None


@dataclass(frozen=True)
class Signature:
    builder: str
    kwargs: dict
    shapes: dict[str, tuple[int, ...]]  # key -> shape at PROBE_CLASSES[0] classes
    class_dims: dict[str, int]  # classifier key -> the dimension that holds the class count

    @property
    def aux_heads(self) -> bool:
        return any(k.startswith(AUX_PREFIXES) for k in self.shapes)


def builder_names() -> list[str]:
    """Every torchvision classification builder (`torchvision.models.list_models(module=torchvision.models)`)."""
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def builder_kwargs(builder: str, **extra) -> dict:
    return ({"init_weights": False} if builder in NO_INIT else {}) | extra


def cache_dir() -> Path:
    if os.environ.get("ENSEMBLE_EVAL_CACHE"):
        return Path(os.environ["ENSEMBLE_EVAL_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ensemble-eval"


def _cache_file() -> Path:
    import torchvision

    return cache_dir() / f"torchvision-{torchvision.__version__}-signatures-v{FORMAT_VERSION}.json"


@contextlib.contextmanager
def _on_meta():
    """Build on the meta device; RegNet computes its block widths with tensor arithmetic,
    which must run on the CPU."""
    from torchvision.models import regnet

    original = regnet.BlockParams.__dict__["from_init_params"]

    def widths_on_cpu(*args, **kwargs):
        with torch.device("cpu"):
            return original.__func__(regnet.BlockParams, *args, **kwargs)

    regnet.BlockParams.from_init_params = staticmethod(widths_on_cpu)
    try:
        with torch.device("meta"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        regnet.BlockParams.from_init_params = original


def _shapes(builder: str, num_classes: int, kwargs: dict) -> dict[str, list[int]]:
    import torchvision.models as tvm

    with _on_meta():
        model = tvm.get_model(builder, weights=None, num_classes=num_classes, **builder_kwargs(builder, **kwargs))
    return {k: list(v.shape) for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}


def _make_signatures() -> list[dict]:
    rows = []
    for builder in builder_names():
        if builder == "googlenet":
            continue  # recognised by models.identify (torchvision and paper-style layouts)
        for _suffix, kwargs in VARIANTS.get(builder, (("", {}),)):
            a, b = (_shapes(builder, n, kwargs) for n in PROBE_CLASSES)
            class_dims = {}
            for key, shape in a.items():
                diff = [d for d, (x, y) in enumerate(zip(shape, b[key])) if x != y]
                if diff:
                    class_dims[key] = diff[0]
            rows.append({"builder": builder, "kwargs": kwargs, "shapes": a, "class_dims": class_dims})
    return rows


def _no_constant(name: str):
    raise ValueError(f"{name} is not strict JSON")


def _sound(rows: object) -> bool:
    """Whether cached rows have the shape _make_signatures gives them (a damaged or edited
    cache is made again, never half-used): known builders with their known variants' kwargs,
    shapes of non-negative integers, class dimensions within those shapes."""
    if not isinstance(rows, list) or not rows:
        return False
    known = set(builder_names())
    for r in rows:
        if not isinstance(r, dict) or set(r) != {"builder", "kwargs", "shapes", "class_dims"}:
            return False
        builder, kwargs, shapes, dims = r["builder"], r["kwargs"], r["shapes"], r["class_dims"]
        if builder not in known or kwargs not in [k for _, k in VARIANTS.get(builder, (("", {}),))]:
            return False
        if not isinstance(shapes, dict) or not all(
            isinstance(shape, list) and all(type(n) is int and n >= 0 for n in shape) for shape in shapes.values()
        ):
            return False
        if not isinstance(dims, dict) or not all(
            k in shapes and type(d) is int and 0 <= d < len(shapes[k]) for k, d in dims.items()
        ):
            return False
    return True


def _read_cache(path: Path) -> list | None:
    """The cached rows, or None (make them again): only a regular file of at most
    MAX_CACHE_BYTES is read (a FIFO at the path would hang the reader; one warning line),
    strict JSON of this FORMAT_VERSION whose rows are sound."""
    try:
        raw = read_regular_file(path, MAX_CACHE_BYTES)
    except (NotRegularFile, FileTooLarge) as exc:
        print(f"ensemble-eval: warning: ignoring the signature cache: {exc}; making it again", file=sys.stderr)
        return None
    except OSError:  # missing (the first run), or unreadable
        return None
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (ValueError, RecursionError):
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION or not _sound(data.get("signatures")):
        return None
    return data["signatures"]


@lru_cache(maxsize=1)
def signatures() -> tuple[Signature, ...]:
    """Every builder's signature, from the cache file (made and written on first use)."""
    path = _cache_file()
    rows = _read_cache(path)
    if rows is None:
        log.info("making architecture signatures of the torchvision builders (once): %s", path)
        rows = _make_signatures()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, {"format": FORMAT_VERSION, "signatures": rows}, indent=None)  # atomic, strict JSON
        except OSError as exc:  # a read-only home: keep them in memory for this process
            log.debug("cannot cache signatures at %s: %s", path, exc)
    return tuple(
        Signature(r["builder"], r["kwargs"], {k: tuple(s) for k, s in r["shapes"].items()}, r["class_dims"])
        for r in rows
    )


@dataclass(frozen=True)
class Comparison:
    """How a state dict compares with one signature."""

    signature: Signature
    num_classes: int | None  # the class count the classifier keys agree on, if they fit
    shared: int  # keys present in both
    extra: int  # keys of the state dict the signature lacks
    difference: str | None  # the first missing / unexpected key or differing shape; None: it fits

    @property
    def score(self) -> float:
        """Shared keys over all keys of either (1.0: the same key set)."""
        total = len(self.signature.shapes) + self.extra
        return self.shared / total if total else 0.0


def compare(state: dict[str, torch.Tensor], sig: Signature) -> Comparison:
    keys = [k for k in state if not k.endswith("num_batches_tracked")]
    present = set(keys)
    shared = sum(k in present for k in sig.shapes)
    extra = sum(k not in sig.shapes for k in keys)
    num_classes = None
    difference = None
    for key, expected in sig.shapes.items():
        if key not in present:
            difference = difference or f"missing key {key!r}"
            continue
        got = tuple(state[key].shape)
        dim = sig.class_dims.get(key)
        if dim is not None and len(got) == len(expected):
            want = tuple(got[dim] if d == dim else x for d, x in enumerate(expected))
            if got == want and (num_classes is None or got[dim] == num_classes):
                num_classes = got[dim]
                continue
        if got != expected and not (key in SIZE_KEYS and vit_image_size(state) is not None):
            difference = difference or f"{key!r} has shape {list(got)}, {sig.builder} needs {list(expected)}"
    if difference is None and extra:
        difference = f"unexpected key {next(k for k in keys if k not in sig.shapes)!r}"
    return Comparison(sig, num_classes, shared, extra, difference)


def signatures_of(builder: str) -> list[Signature]:
    return [s for s in signatures() if s.builder == builder]


def matches(state: dict[str, torch.Tensor], builder: str | None = None) -> list[Comparison]:
    """Comparisons with every signature (or the named builder's), best first; fitting ones lead."""
    sigs = [s for s in signatures() if builder is None or s.builder == builder]
    found = [compare(state, s) for s in sigs]
    return sorted(found, key=lambda c: (c.difference is not None, -c.score))
