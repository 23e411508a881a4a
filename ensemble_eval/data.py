"""Decoding and the crop loader; the listing of files and labels lives in `listing`.

Class indices always come from the canonical ImageNet-1k list shipped in
`ensemble_eval/classes/imagenet_classes.tsv` (sorted-wnid order, as torchvision and Caffe
models use), never from folder enumeration: a folder holding 10 classes still maps
n01440764 -> 0.

Every image is read by `listing.read_sample` (a file: without blocking, a regular file of at
most MAX_IMAGE_BYTES; a member of a Parquet or tar shard: shards.read_member, as bounded), with
its identity (size, mtime_ns, content digest), and decoded from the bytes read, so what is
decoded is exactly what was identified.
"""

from __future__ import annotations

import io
import logging
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .crops import CropScheme, extract_crops, extract_views, resized_size
from .listing import (  # noqa: F401  (re-exported: `from .data import ...` keeps working)
    IMAGE_EXTENSIONS,
    MAX_IMAGE_BYTES,
    NO_FILE,
    DataError,
    ImageClass,
    Listing,
    Sample,
    decodable_formats,
    file_identity,
    image_extensions,
    imagenet_classes,
    is_image_name,
    list_dataset,
    list_samples,
    read_image_file,
    read_labels,
    read_sample,
    wnid_to_index,
)

log = logging.getLogger(__name__)


# The largest image (in pixels) a scale resize may produce; beyond it the aspect ratio is so
# extreme (e.g. 1 x 50,000) that one resize would need gigabytes. Such files are skipped.
MAX_RESIZED_PIXELS = 64 * 1024 * 1024


def _to_rgb(img: Image.Image) -> np.ndarray:
    """uint8 [H, W, 3] from any PIL mode; 16/32-bit images are scaled to 8 bits, not clipped."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        wide = np.asarray(img).astype(np.float64)
        full = 65535.0 if wide.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        gray = np.clip(np.round(wide * (255.0 / full)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "F":
        gray = np.clip(np.round(np.asarray(img, dtype=np.float64)), 0, 255).astype(np.uint8)
        return np.repeat(gray[:, :, None], 3, axis=2)
    return np.asarray(img.convert("RGB"), dtype=np.uint8)


_BYTES_REPR = re.compile(r" ?<_io\.BytesIO object at 0x[0-9a-fA-F]+>")


def decode_bytes(data: bytes, path: str | os.PathLike = "") -> torch.Tensor:
    """Decode an image file's bytes to uint8 RGB [3, H, W] (grayscale, palette, CMYK, 16-bit
    become RGB).

    Uses PIL, the decoder of torchvision's ImageFolder and timm, so pixels match the
    reference evaluation scripts. The content decides the format, not the file's name, among
    `listing.decodable_formats()` (never EPS, which Pillow renders by running Ghostscript).
    Anything undecodable (truncated, empty, not an image, above PIL's decompression-bomb
    limit) raises DataError with the reason; `path` only names the file in the message.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # palette-transparency notices
            with Image.open(io.BytesIO(data), formats=decodable_formats()) as img:
                img.load()
                array = _to_rgb(img)
    except Exception as exc:  # a hostile or broken file can make a decoder fail in any way
        if isinstance(exc, UnidentifiedImageError):
            reason = "empty file (0 bytes)" if not data else "not an image PIL can identify"
        else:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = _BYTES_REPR.sub("", reason)
        raise DataError(f"cannot decode image {path}: {reason}", reason=reason) from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def decode_image(path: str | os.PathLike) -> torch.Tensor:
    """Read (`read_image_file`) and decode (`decode_bytes`) an image file: uint8 RGB [3, H, W].
    DataError with the reason when the file cannot be read or decoded."""
    data, _ = read_image_file(path)
    return decode_bytes(data, path)


def sample_name(sample: Sample) -> str | os.PathLike:
    """How messages name a sample's image: its file, or its shard and place in it."""
    return sample.path if sample.member is None else f"{sample.path} ({sample.rel_path})"


def decode_sample(sample: Sample) -> torch.Tensor:
    """Read (`read_sample`: a file or a shard member) and decode a sample's image: uint8 RGB [3, H, W]."""
    data, _ = read_sample(sample)
    return decode_bytes(data, sample_name(sample))


def check_resizable(image: torch.Tensor, scheme: CropScheme, path: str | os.PathLike) -> None:
    """DataError when the largest scale resize would be absurdly large (extreme aspect ratio)."""
    height, width = image.shape[-2:]
    rh, rw = resized_size(height, width, max(scheme.scales))
    if rh * rw > MAX_RESIZED_PIXELS:
        reason = f"aspect ratio too extreme: {width}x{height} would resize to {rw}x{rh} pixels"
        raise DataError(f"cannot use image {path}: {reason}", reason=reason)


class CropItem(NamedTuple):
    """One image as the loader makes it."""

    position: int  # in the sample list
    views: torch.Tensor | list | tuple | None  # uint8 [K, 3, S, S] or extract_views groups (a tuple of
    # them, one per geometry, when the members have several), or None on failure
    target: int
    reason: str | None  # why the image cannot be used, None when it can
    file: tuple[int, int, int]  # (size, mtime_ns, digest) of the bytes read; NO_FILE when unreadable


class CropDataset(torch.utils.data.Dataset):
    """Item i: a CropItem (i, the views of sample i or None, target, reason or None, file identity).

    The views are uint8 crops [K, 3, S, S], or, where some view is uncropped (sized by the
    image), `extract_views` groups of equal shape. Failures are returned, not raised, so the
    main process decides what to do with them and reports them in one line (a worker's
    exception would arrive as a traceback). The file identity is that of the bytes decoded,
    for evaluated and undecodable-but-readable images alike (NO_FILE: not readable at all).
    """

    def __init__(
        self,
        samples: list[Sample],
        scheme: CropScheme | list[CropScheme] | tuple[CropScheme, ...],
        indices: list[int],
        backend: str = "tensor",
    ):
        self.samples = samples
        self.schemes = list(scheme) if isinstance(scheme, (list, tuple)) else [scheme]
        self.indices = indices
        self.backend = backend
        self.uncropped = self.schemes[0].uncropped(indices)  # every geometry has the same kinds of view

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> CropItem:
        sample = self.samples[i]
        try:
            data, identity = read_sample(sample)
        except DataError as exc:
            return CropItem(i, None, sample.target, exc.reason, NO_FILE)
        name = sample_name(sample)
        try:
            image = decode_bytes(data, name)
            del data
            for scheme in self.schemes:
                check_resizable(image, scheme, name)
        except DataError as exc:
            return CropItem(i, None, sample.target, exc.reason, identity)
        extract = extract_views if self.uncropped else extract_crops
        views = tuple(extract(image, scheme, self.indices, self.backend) for scheme in self.schemes)
        return CropItem(i, views[0] if len(views) == 1 else views, sample.target, None, identity)


@dataclass
class Views:
    """The views of B images, K per image, that do not all share one shape, as groups of
    equal shape: each (uint8 [n, 3, h, w], int64 [n] flat positions b * K + k)."""

    num_images: int
    per_image: int
    crop_size: int  # the scheme's crop size: a forward pass holds --batch-size crops' worth of pixels
    groups: list[tuple[torch.Tensor, torch.Tensor]]

    def to(self, device: torch.device, non_blocking: bool = False) -> Views:
        moved = [(v.to(device, non_blocking=non_blocking), w) for v, w in self.groups]
        return Views(self.num_images, self.per_image, self.crop_size, moved)

    def pin_memory(self) -> Views:
        return Views(self.num_images, self.per_image, self.crop_size, [(v.pin_memory(), w) for v, w in self.groups])


def _group_views(per_image: list[list[tuple[list[int], torch.Tensor]]], k: int, crop_size: int) -> Views:
    """Merge the images' shape groups: views of one shape from every image share one tensor."""
    by_shape: dict[tuple[int, int], list[tuple[torch.Tensor, torch.Tensor]]] = {}
    for b, groups in enumerate(per_image):
        for positions, views in groups:
            where = b * k + torch.tensor(positions, dtype=torch.int64)
            by_shape.setdefault(tuple(views.shape[-2:]), []).append((views, where))
    merged = [(torch.cat([v for v, _ in g]), torch.cat([w for _, w in g])) for g in by_shape.values()]
    return Views(len(per_image), k, crop_size, merged)


@dataclass
class CropBatch:
    """One loader batch: the decodable images' views plus the failures, each with the
    identity of its file as read: (size in bytes, mtime_ns, 64-bit content digest)."""

    indices: torch.Tensor  # int64 [B], positions in the sample list
    crops: torch.Tensor | Views | list  # uint8 [B, K, 3, S, S], or Views where some view is sized by its
    # image; with several geometries (members of other view sizes) a list of those, one per geometry
    targets: torch.Tensor  # int64 [B]
    failures: list[tuple[int, str]]  # (sample position, reason)
    files: torch.Tensor  # int64 [B, 3] (size, mtime_ns, digest), aligned with indices
    failure_files: torch.Tensor  # int64 [F, 3], aligned with failures; rows of -1: the file could not be read

    def pin_memory(self) -> CropBatch:
        crops = [c.pin_memory() for c in self.crops] if isinstance(self.crops, list) else self.crops.pin_memory()
        return CropBatch(
            self.indices.pin_memory(),
            crops,
            self.targets.pin_memory(),
            self.failures,
            self.files,
            self.failure_files,
        )


def _identities(items: list[CropItem]) -> torch.Tensor:
    """int64 [N, 3] of the items' file identities."""
    return torch.tensor([item.file for item in items], dtype=torch.int64).reshape(len(items), 3)


def _stack(views: list, per_image: int, crop_size: int, uncropped: bool) -> torch.Tensor | Views:
    if not views:
        return torch.empty((0,), dtype=torch.uint8)
    if uncropped:
        return _group_views(views, per_image, crop_size)
    return torch.stack(views)


def _collate(batch: list[CropItem], per_image: int, crop_sizes: list[int], uncropped: bool) -> CropBatch:
    ok = [b for b in batch if b.views is not None]
    failed = [b for b in batch if b.views is None]
    if len(crop_sizes) == 1:
        crops = _stack([b.views for b in ok], per_image, crop_sizes[0], uncropped)
    else:
        crops = [_stack([b.views[g] for b in ok], per_image, c, uncropped) for g, c in enumerate(crop_sizes)]
    return CropBatch(
        torch.tensor([b.position for b in ok], dtype=torch.int64),
        crops,
        torch.tensor([b.target for b in ok], dtype=torch.int64),
        [(b.position, b.reason) for b in failed],
        _identities(ok),
        _identities(failed),
    )


def crop_loader(
    samples: list[Sample],
    scheme: CropScheme | list[CropScheme] | tuple[CropScheme, ...],
    indices: list[int],
    batches: list[list[int]],
    workers: int,
    pin_memory: bool = False,
    backend: str = "tensor",
) -> torch.utils.data.DataLoader:
    """One `CropBatch` per list of sample positions in `batches`, in that order; with several
    schemes (the geometries of members of other view sizes) the views of each, per image."""
    dataset = CropDataset(samples, scheme, indices, backend)
    sizes = [s.crop_size for s in dataset.schemes]
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=partial(_collate, per_image=len(indices), crop_sizes=sizes, uncropped=dataset.uncropped),
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
        worker_init_fn=_quiet_when_orphaned if workers > 0 else None,
    )


def _quiet_when_orphaned(_worker_id: int) -> None:
    """In a loader process: when the main process stops (Ctrl-C, SIGTERM) while this one is
    handing it a batch's shared memory, multiprocessing's handle-sharing thread reports the
    closed connection through sys.excepthook, a traceback under the one-line message. A
    connection the main process closed is not a problem of this process: say nothing."""
    import sys

    default = sys.excepthook

    def hook(kind, value, tb) -> None:
        if not issubclass(kind, (ConnectionError, EOFError)):
            default(kind, value, tb)

    sys.excepthook = hook


def _check_one(args: tuple[Sample, CropScheme]) -> str | None:
    sample, scheme = args
    try:
        check_resizable(decode_sample(sample), scheme, sample_name(sample))
    except DataError as exc:
        return exc.reason
    return None


def scan_images(samples: list[Sample], scheme: CropScheme, workers: int) -> Iterator[tuple[Sample, str | None]]:
    """Decode every sample (nothing else) and yield (sample, problem or None), in order."""
    jobs = [(s, scheme) for s in samples]
    if workers <= 0:
        yield from zip(samples, map(_check_one, jobs))
        return
    import multiprocessing

    # forkserver, not fork: a fork of this process copies its threads' locks (pyarrow's allocator
    # thread after a Parquet listing, tqdm's monitor) and pool workers forked from it were seen to
    # die at once, leaving check-data waiting for their results
    with multiprocessing.get_context("forkserver").Pool(workers, initializer=_quiet_pool_worker) as pool:
        yield from zip(samples, pool.imap(_check_one, jobs, chunksize=16))


def _quiet_pool_worker() -> None:
    """In a decoding pool process: die quietly on the SIGTERM the pool sends at its close, and
    leave Ctrl-C to the main process. (Forked from the command, a worker inherited its handlers,
    which made that SIGTERM a KeyboardInterrupt with a traceback, seen once in three check-data
    runs; the forkserver start no longer inherits them, and this keeps it so whatever the start.)"""
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
