"""Datasets, decoding and the crop loader.

Class indices always come from the canonical ImageNet-1k list shipped in
`ensemble_eval/classes/imagenet_classes.tsv` (sorted-wnid order, as torchvision and Caffe
models use), never from folder enumeration: a folder holding 10 classes still maps
n01440764 -> 0.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache, partial
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .crops import CropScheme, extract_crops, extract_views, resized_size
from .errors import UserError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


class DataError(UserError):
    """A dataset, label file or image that cannot be used; the message says what to do.

    For an image, `reason` is the problem alone (without the path), as recorded in `skipped`.
    """

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


@dataclass(frozen=True)
class ImageClass:
    index: int
    wnid: str
    name: str


@lru_cache(maxsize=1)
def imagenet_classes() -> tuple[ImageClass, ...]:
    """The 1000 ImageNet-1k classes in the canonical (sorted wnid) order."""
    text = resources.files("ensemble_eval.classes").joinpath("imagenet_classes.tsv").read_text()
    rows = [line.split("\t") for line in text.splitlines()[1:] if line.strip()]
    classes = tuple(ImageClass(int(i), w, n) for i, w, n in rows)
    assert [c.index for c in classes] == list(range(len(classes))), "class list out of order"
    return classes


@lru_cache(maxsize=1)
def wnid_to_index() -> dict[str, int]:
    return {c.wnid: c.index for c in imagenet_classes()}


@dataclass(frozen=True)
class Sample:
    path: Path
    rel_path: str  # relative to the data root, '/'-separated
    target: int
    wnid: str | None = None  # set when the label came from a WordNet id (ImageNet-1k class space)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _read_labels_csv(labels: Path) -> dict[str, tuple[int, str | None]]:
    """filename,wnid or filename,index (header optional) -> {filename: (class index, wnid or None)}."""
    if not labels.is_file():
        raise DataError(f"labels file {labels} does not exist; pass --labels FILE.csv with rows filename,wnid")
    mapping = wnid_to_index()
    out: dict[str, tuple[int, str | None]] = {}
    try:
        text = labels.read_text(encoding="utf-8-sig")  # -sig: spreadsheets write a BOM
    except UnicodeDecodeError as exc:
        raise DataError(f"labels file {labels} is not UTF-8 text ({exc.reason}); save it as UTF-8 CSV") from exc
    for lineno, row in enumerate(csv.reader(text.splitlines()), start=1):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise DataError(f"{labels}:{lineno}: expected 'filename,wnid' or 'filename,index', got {row!r}")
        name, label = row[0].strip(), row[1].strip()
        if label in mapping:
            value: tuple[int, str | None] = (mapping[label], label)
        elif label.isdigit():
            value = (int(label), None)
        elif lineno == 1 and not _is_image(name) and label.replace("_", "").isalpha():
            continue  # a header row such as "filename,label"
        else:
            raise DataError(
                f"{labels}:{lineno}: label {label!r} is neither an ImageNet WordNet id nor a class index >= 0"
            )
        if name in out and out[name] != value:
            raise DataError(f"{labels}:{lineno}: {name!r} is labelled twice with different classes; keep one row")
        out[name] = value
    if not out:
        raise DataError(f"labels file {labels} holds no rows; expected lines 'filename,wnid' or 'filename,index'")
    return out


def _files_by_stem(root: Path) -> dict[str, str]:
    """Image file names in a flat folder keyed by name without extension (label files omit it)."""
    return {Path(n).stem: n for n in os.listdir(root) if _is_image(n)}


def _read_loc_solution(path: Path, root: Path) -> dict[str, tuple[int, str | None]]:
    """Kaggle's LOC_val_solution.csv: ImageId,PredictionString ("wnid x y x y wnid ...")."""
    mapping = wnid_to_index()
    by_stem = _files_by_stem(root)
    out: dict[str, tuple[int, str | None]] = {}
    rows = csv.reader(path.read_text(encoding="utf-8-sig").splitlines())
    next(rows, None)
    for lineno, row in enumerate(rows, start=2):
        if not row:
            continue
        wnid = row[1].split()[0] if len(row) > 1 and row[1].split() else ""
        if wnid not in mapping:
            raise DataError(f"{path}:{lineno}: {wnid!r} is not an ImageNet-1k WordNet id")
        name = by_stem.get(row[0], row[0] + ".JPEG")
        out[name] = (mapping[wnid], wnid)
    return out


def _read_devkit(devkit: Path, root: Path) -> dict[str, tuple[int, str | None]]:
    """The ILSVRC2012 devkit's ground truth (ILSVRC2012_ID per val image, in file-number order)
    mapped through the devkit's meta.mat (ILSVRC2012_ID -> wnid) onto the sorted-wnid indices
    models use. The two orders differ: using the IDs directly is the classic labels bug."""
    import tarfile

    import scipy.io

    def member(name: str) -> bytes:
        if devkit.is_dir():
            return (devkit / "data" / name).read_bytes()
        with tarfile.open(devkit) as tar:
            found = next((m for m in tar.getmembers() if m.name.endswith("/data/" + name)), None)
            if found is None:
                raise DataError(f"{devkit} has no data/{name}; pass the ILSVRC2012 devkit (dir or .tar.gz)")
            return tar.extractfile(found).read()

    try:
        meta = scipy.io.loadmat(io.BytesIO(member("meta.mat")), squeeze_me=True)["synsets"]
        truth = member("ILSVRC2012_validation_ground_truth.txt").decode().split()
    except (OSError, KeyError, ValueError, tarfile.TarError) as exc:
        raise DataError(
            f"cannot read the devkit {devkit} ({exc}); pass ILSVRC2012_devkit_t12 (dir or .tar.gz)"
        ) from exc
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in meta if int(s["num_children"]) == 0}
    mapping = wnid_to_index()
    by_stem = _files_by_stem(root)
    out: dict[str, tuple[int, str | None]] = {}
    for number, ilsvrc_id in enumerate(truth, start=1):
        stem = f"ILSVRC2012_val_{number:08d}"
        if stem in by_stem:
            wnid = id_to_wnid[int(ilsvrc_id)]
            out[by_stem[stem]] = (mapping[wnid], wnid)
    if not out:
        raise DataError(f"no file in {root} is named like the devkit's ILSVRC2012_val_00000001.JPEG")
    return out


def read_labels(labels: Path, root: Path) -> dict[str, tuple[int, str | None]]:
    """Labels for a flat folder: {filename: (class index, wnid or None)}.

    Accepts a CSV of filename,wnid or filename,index; Kaggle's LOC_val_solution.csv; or the
    ILSVRC2012 devkit (its directory or .tar.gz), which labels the official val folder.
    """
    if labels.is_dir() or labels.name.endswith((".tar.gz", ".tgz", ".tar")):
        return _read_devkit(labels, root)
    if labels.is_file():
        with labels.open(encoding="utf-8-sig", errors="replace") as fh:
            first = fh.readline().strip().replace(" ", "")
        if first.lower() == "imageid,predictionstring":
            return _read_loc_solution(labels, root)
    return _read_labels_csv(labels)


def list_samples(root: str | os.PathLike, labels: str | os.PathLike | None = None) -> list[Sample]:
    """The evaluation samples of a dataset, sorted by relative path.

    Without `labels`, `root` holds one folder per class named by its WordNet id (ImageNet's
    layout). With `labels` (see `read_labels`), `root` is a flat folder and only the files
    labelled there are evaluated.
    """
    root = Path(root)
    if root.exists() and not root.is_dir():
        raise DataError(f"--data {root} is a file; pass the directory that holds the images")
    if not root.is_dir():
        raise DataError(f"data directory {root} does not exist; pass --data DIR with one folder per WordNet id")
    if labels is not None:
        table = read_labels(Path(labels), root)
        missing = [n for n in table if not (root / n).is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} file(s) listed in {labels} are not in {root}, e.g. {missing[0]!r}; "
                "check --data and --labels"
            )
        extra = [n for n in os.listdir(root) if _is_image(n) and n not in table]
        if extra:
            log.warning("%d image(s) in %s have no label in %s and are ignored", len(extra), root, labels)
        samples = [Sample(root / n, n.replace(os.sep, "/"), t, w) for n, (t, w) in table.items()]
        return sorted(samples, key=lambda s: s.rel_path)

    mapping = wnid_to_index()
    subdirs = sorted(e.name for e in os.scandir(root) if e.is_dir() and not e.name.startswith("."))
    if not subdirs:
        raise DataError(
            f"{root} has no class folders; use one folder per WordNet id (n01440764/...) "
            "or pass --labels FILE.csv for a flat folder"
        )
    unknown = [d for d in subdirs if d not in mapping]
    if unknown:
        raise DataError(
            f"folder {unknown[0]!r} in {root} is not an ImageNet-1k WordNet id ({len(unknown)} such folder(s)); "
            "name class folders by wnid (e.g. n01440764) or pass --labels FILE.csv"
        )
    samples = []
    for d in subdirs:
        for dirpath, dirnames, filenames in os.walk(root / d):
            dirnames.sort()
            for name in sorted(filenames):
                if _is_image(name):
                    path = Path(dirpath) / name
                    samples.append(Sample(path, path.relative_to(root).as_posix(), mapping[d], d))
    if not samples:
        raise DataError(f"no images found under {root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return sorted(samples, key=lambda s: s.rel_path)


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


def decode_image(path: str | os.PathLike) -> torch.Tensor:
    """Decode a file to uint8 RGB [3, H, W] (grayscale, palette, CMYK, 16-bit become RGB).

    Uses PIL, the decoder of torchvision's ImageFolder and timm, so pixels match the
    reference evaluation scripts. The file's content decides the format, not its name.
    Anything undecodable (truncated, empty, not an image, above PIL's decompression-bomb
    limit) raises DataError with the reason.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)  # palette-transparency notices
            with Image.open(path) as img:
                img.load()
                array = _to_rgb(img)
    except Exception as exc:  # a hostile or broken file can make a decoder fail in any way
        if isinstance(exc, UnidentifiedImageError):
            reason = "empty file (0 bytes)" if os.path.getsize(path) == 0 else "not an image PIL can identify"
        else:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            reason = reason.replace(f" '{path}'", "").replace(f" {path}", "")
        raise DataError(f"cannot decode image {path}: {reason}", reason=reason) from exc
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()


def check_resizable(image: torch.Tensor, scheme: CropScheme, path: str | os.PathLike) -> None:
    """DataError when the largest scale resize would be absurdly large (extreme aspect ratio)."""
    height, width = image.shape[-2:]
    rh, rw = resized_size(height, width, max(scheme.scales))
    if rh * rw > MAX_RESIZED_PIXELS:
        reason = f"aspect ratio too extreme: {width}x{height} would resize to {rw}x{rh} pixels"
        raise DataError(f"cannot use image {path}: {reason}", reason=reason)


class CropDataset(torch.utils.data.Dataset):
    """Item i: (i, the views of sample i or None, target, decode error or None).

    The views are uint8 crops [K, 3, S, S], or, where some view is uncropped (sized by the
    image), `extract_views` groups of equal shape. Decode failures are returned, not raised,
    so the main process decides what to do with them and reports them in one line (a
    worker's exception would arrive as a traceback).
    """

    def __init__(self, samples: list[Sample], scheme: CropScheme, indices: list[int]):
        self.samples = samples
        self.scheme = scheme
        self.indices = indices
        self.uncropped = scheme.uncropped(indices)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        sample = self.samples[i]
        try:
            image = decode_image(sample.path)
            check_resizable(image, self.scheme, sample.path)
        except DataError as exc:
            return i, None, sample.target, exc.reason
        extract = extract_views if self.uncropped else extract_crops
        return i, extract(image, self.scheme, self.indices), sample.target, None


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
    """One loader batch: the decodable images' views plus the failures."""

    indices: torch.Tensor  # int64 [B], positions in the sample list
    crops: torch.Tensor | Views  # uint8 [B, K, 3, S, S], or Views where some view is sized by its image
    targets: torch.Tensor  # int64 [B]
    failures: list[tuple[int, str]]  # (sample position, message)

    def pin_memory(self) -> CropBatch:
        return CropBatch(self.indices.pin_memory(), self.crops.pin_memory(), self.targets.pin_memory(), self.failures)


def _collate(batch, per_image: int, crop_size: int, uncropped: bool) -> CropBatch:
    ok = [b for b in batch if b[1] is not None]
    failures = [(b[0], b[3]) for b in batch if b[1] is None]
    if not ok:
        crops = torch.empty((0,), dtype=torch.uint8)
    elif uncropped:
        crops = _group_views([b[1] for b in ok], per_image, crop_size)
    else:
        crops = torch.stack([b[1] for b in ok])
    return CropBatch(
        torch.tensor([b[0] for b in ok], dtype=torch.int64),
        crops,
        torch.tensor([b[2] for b in ok], dtype=torch.int64),
        failures,
    )


def crop_loader(
    samples: list[Sample],
    scheme: CropScheme,
    indices: list[int],
    batches: list[list[int]],
    workers: int,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:
    """One `CropBatch` per list of sample positions in `batches`, in that order."""
    dataset = CropDataset(samples, scheme, indices)
    return torch.utils.data.DataLoader(
        dataset,
        batch_sampler=batches,
        num_workers=workers,
        collate_fn=partial(_collate, per_image=len(indices), crop_size=scheme.crop_size, uncropped=dataset.uncropped),
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if workers > 0 else None,
    )


def _check_one(args: tuple[str, CropScheme]) -> str | None:
    path, scheme = args
    try:
        check_resizable(decode_image(path), scheme, path)
    except DataError as exc:
        return exc.reason
    return None


def scan_images(samples: list[Sample], scheme: CropScheme, workers: int) -> Iterator[tuple[Sample, str | None]]:
    """Decode every sample (nothing else) and yield (sample, problem or None), in order."""
    jobs = [(str(s.path), scheme) for s in samples]
    if workers <= 0:
        yield from zip(samples, map(_check_one, jobs))
        return
    import multiprocessing

    with multiprocessing.get_context("fork").Pool(workers) as pool:
        yield from zip(samples, pool.imap(_check_one, jobs, chunksize=16))
