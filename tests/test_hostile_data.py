"""Hostile datasets and labels files: every entry accounted for, nothing hangs, one line per mistake.

The listing (`list_dataset`, `list_samples`), `check-data` (through `cli.main`) and the loader's
file identities, on trees built in tmp_path from the images in tests/data/imagenet.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, SMALL
from PIL import Image

from ensemble_eval import fileio, listing
from ensemble_eval.cli import main
from ensemble_eval.data import (
    NO_FILE,
    CropDataset,
    DataError,
    crop_loader,
    decode_image,
    file_identity,
    image_extensions,
    imagenet_classes,
    list_dataset,
    list_samples,
    scan_images,
    wnid_to_index,
)

STOPWATCH = DATA / "n04328186" / "n04328186_stopwatch.JPEG"
SCREEN = DATA / "n03347037" / "n03347037_fire_screen.JPEG"
GOLDFISH = "n01443537"
STOPWATCH_CLASS, SCREEN_CLASS = 826, 556  # n04328186, n03347037 in the sorted-wnid order


def _permissions_bind() -> bool:
    """Whether chmod 000 stops this process from listing a folder (not for root, which may bypass it)."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe"
        probe.mkdir()
        probe.chmod(0)
        try:
            os.listdir(probe)
            return False
        except PermissionError:
            return True
        finally:
            probe.chmod(0o700)


PERMISSIONS_BIND = _permissions_bind()


pytestmark = pytest.mark.usefixtures("deadline")  # a FIFO read fails the test instead of hanging the suite


def _check(capsys, *args: str) -> tuple[int, list[str], str]:
    """check-data through the CLI: (exit status, stdout lines after the recognised-layout line, stderr)."""
    code = main(["check-data", *map(str, args), "--workers", "0", "--no-progress"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = out.splitlines()
    if lines:
        assert re.fullmatch(r"(wnid folders|folder with a labels file): \d+ images?, \d+ class(es)?", lines[0]), lines
    return code, lines[1:], err


def _one_error_line(capsys, *args: str) -> str:
    code, out, err = _check(capsys, *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("ensemble-eval: error: "), (code, out, err)
    assert len(lines[0]) < 700, lines[0][:200]
    return lines[0]


def _hostile_tree(tmp_path: Path) -> Path:
    """Class folders seeded with every kind of entry (see test_every_entry_is_accounted_for)."""
    root = tmp_path / "data"
    gold = root / GOLDFISH
    (gold / "sub").mkdir(parents=True)
    (gold / ".ipynb_checkpoints").mkdir()
    shutil.copy(STOPWATCH, gold / ".ipynb_checkpoints" / "x.JPEG")  # hidden below the top level
    (root / ".git").mkdir()
    shutil.copy(STOPWATCH, root / ".git" / "y.JPEG")
    (gold / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    shutil.copy(STOPWATCH, gold / "sub" / ".f.JPEG")
    for name in ("a.JPEG", "b.jfif", "c.jpe", "sub/e.JPEG"):
        shutil.copy(STOPWATCH, gold / name)
    Image.open(STOPWATCH).convert("P").save(gold / "d.gif")
    (gold / "notes.txt").write_text("notes\n")
    (gold / "more.txt").write_text("more\n")
    (gold / "meta.xml").write_text("<a/>\n")
    (root / "README").write_text("a dataset\n")  # top level, no extension
    shutil.copytree(DATA / "n03347037", root / "n03347037")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(SCREEN, elsewhere / "g.JPEG")
    (gold / "linked").symlink_to(elsewhere)  # a symlinked folder: followed
    (gold / "loop").symlink_to("..")  # to an ancestor: not followed
    (gold / "dup").symlink_to("../n03347037")  # to a folder listed anyway: not followed
    (gold / "broken.JPEG").symlink_to("nowhere.JPEG")
    os.mkfifo(gold / "pipe.JPEG")
    return root


EXPECTED_SAMPLES = [
    f"{GOLDFISH}/a.JPEG",
    f"{GOLDFISH}/b.jfif",
    f"{GOLDFISH}/c.jpe",
    f"{GOLDFISH}/d.gif",
    f"{GOLDFISH}/linked/g.JPEG",
    f"{GOLDFISH}/sub/e.JPEG",
    "n03347037/n03347037_fire_screen.JPEG",
]
IGNORED_LINE = "ignored 4 files that are not images: 2 .txt, 1 .xml, 1 without extension; 4 hidden entries"


def test_every_entry_is_accounted_for(tmp_path):
    root = _hostile_tree(tmp_path)
    found = list_dataset(root)
    assert [s.rel_path for s in found.samples] == EXPECTED_SAMPLES
    assert all(s.target == wnid_to_index()[s.rel_path.split("/")[0]] for s in found.samples)
    problems = dict(found.problems)
    assert list(problems) == sorted(problems)
    assert set(problems) == {f"{GOLDFISH}/{n}" for n in ("broken.JPEG", "dup", "loop", "pipe.JPEG")}
    assert "broken symbolic link" in problems[f"{GOLDFISH}/broken.JPEG"]
    assert "loop" in problems[f"{GOLDFISH}/loop"] and "not followed" in problems[f"{GOLDFISH}/loop"]
    assert "n03347037/, a folder already listed: not followed" in problems[f"{GOLDFISH}/dup"]
    assert problems[f"{GOLDFISH}/pipe.JPEG"] == "a FIFO, not a regular file"
    assert found.ignored == {".txt": 2, ".xml": 1, "without extension": 1, "hidden": 4}
    assert found.ignored_line() == IGNORED_LINE


def test_check_data_and_the_run_agree_and_nothing_hangs(tmp_path, capsys, caplog):
    root = _hostile_tree(tmp_path)
    code, out, _ = _check(capsys, root)
    assert code == 1
    assert out[:4] == [
        f"{GOLDFISH}/broken.JPEG: broken symbolic link (to 'nowhere.JPEG')",
        f"{GOLDFISH}/dup: symbolic link to n03347037/, a folder already listed: not followed",
        f"{GOLDFISH}/loop: symbolic link to the --data folder, a folder holding it: not followed (it would loop)",
        f"{GOLDFISH}/pipe.JPEG: a FIFO, not a regular file",
    ]
    assert out[4] == IGNORED_LINE
    assert out[5].startswith("7 images checked in ")
    assert out[5].endswith(f"7 usable, 0 with problems; 4 other entries of {root} cannot be used")
    # the run lists the same samples, with one warning line for the rest
    caplog.clear()
    samples = list_samples(root)
    assert [s.rel_path for s in samples] == EXPECTED_SAMPLES
    warnings = [r for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert IGNORED_LINE in warnings[0].getMessage() and "4 entries cannot be used" in warnings[0].getMessage()


def test_image_extensions_follow_pillow():
    exts = image_extensions()
    assert {".jpeg", ".jpg", ".jfif", ".jpe", ".png", ".gif", ".webp", ".tif", ".bmp", ".ico"} <= exts
    # EPS runs Ghostscript; MPEG, HDF5, BUFR, GRIB, WMF are only identified, never decoded
    assert not {".eps", ".ps", ".mpg", ".h5", ".bufr", ".grib", ".wmf", ".txt", ".pdf"} & exts


def test_eps_content_is_never_rendered(tmp_path):
    fake = tmp_path / "x.JPEG"
    fake.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    with pytest.raises(DataError) as info:
        decode_image(fake)
    assert info.value.reason == "not an image PIL can identify"


def test_top_level_images_in_a_class_layout_are_counted(tmp_path):
    root = tmp_path / "data"
    shutil.copytree(DATA / "n04328186", root / "n04328186")
    shutil.copy(STOPWATCH, root / "stray.JPEG")
    found = list_dataset(root)
    assert len(found.samples) == 1 and found.ignored == {"outside class folders": 1}
    assert found.ignored_line() == "ignored 1 image outside the class folders"


def _deny(monkeypatch, names: set[str]):
    """Make folders with these names unlistable, as mode 000 or 311 does for a non-root user."""
    real = listing._scandir

    def scandir(path):
        if Path(path).name in names:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(listing, "_scandir", scandir)


def test_unreadable_class_folder_is_a_problem_not_dropped(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    shutil.copytree(DATA / "n04328186", root / "n04328186")
    shutil.copytree(DATA / "n03347037", root / GOLDFISH)
    _deny(monkeypatch, {GOLDFISH})
    found = list_dataset(root)
    assert [s.rel_path for s in found.samples] == ["n04328186/n04328186_stopwatch.JPEG"]
    assert found.problems == [(f"{GOLDFISH}/", "folder cannot be listed (Permission denied)")]
    code, out, _ = _check(capsys, root)
    assert code == 1 and out[0] == f"{GOLDFISH}/: folder cannot be listed (Permission denied)"
    assert out[-1].startswith("1 images checked") and "1 other entry" in out[-1]
    # nothing left to evaluate: the run stops in one line naming the problem
    _deny(monkeypatch, {GOLDFISH, "n04328186"})
    with pytest.raises(DataError, match="nothing to evaluate.*2 entries cannot be used.*Permission denied"):
        list_samples(root)
    code, out, _ = _check(capsys, root)
    assert code == 1 and len([line for line in out if "Permission denied" in line]) == 2
    # the data folder itself: one line, exit 2
    _deny(monkeypatch, {"data"})
    assert "cannot list --data" in _one_error_line(capsys, root)


def test_unreadable_file_is_a_problem_with_no_identity(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    shutil.copytree(DATA / "n04328186", root / "n04328186")
    shutil.copy(SCREEN, root / "n04328186" / "locked.JPEG")
    real = fileio.open_regular

    def open_regular(path, *args):
        if Path(path).name == "locked.JPEG":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args)

    monkeypatch.setattr(fileio, "open_regular", open_regular)
    samples = list_samples(root)
    item = CropDataset(samples, SMALL, SMALL.set_indices("1"))[0]
    assert item.reason == "cannot be read (Permission denied)" and item.file == NO_FILE
    code, out, _ = _check(capsys, root)
    assert code == 1 and out[0] == "n04328186/locked.JPEG: cannot be read (Permission denied)"


@pytest.mark.skipif(not PERMISSIONS_BIND, reason="chmod 000 does not stop root (the monkeypatched tests cover it)")
def test_unreadable_folders_and_files_for_real(tmp_path, capsys):
    root = tmp_path / "data"
    for wnid in ("n04328186", "n03347037", "n03804744"):
        shutil.copytree(DATA / wnid, root / wnid)
    shutil.copy(STOPWATCH, root / "n04328186" / "locked.JPEG")
    modes = {root / "n03347037": 0o000, root / "n03804744": 0o311, root / "n04328186" / "locked.JPEG": 0o000}
    try:
        for path, mode in modes.items():
            path.chmod(mode)
        found = list_dataset(root)
        assert dict(found.problems) == {
            "n03347037/": "folder cannot be listed (Permission denied)",
            "n03804744/": "folder cannot be listed (Permission denied)",
        }
        code, out, _ = _check(capsys, root)
        assert code == 1 and "n04328186/locked.JPEG: cannot be read (Permission denied)" in out
    finally:
        for path in modes:
            path.chmod(0o755)


def test_special_files_are_problems_never_read(tmp_path, monkeypatch, capsys):
    root = tmp_path / "data"
    folder = root / "n04328186"
    shutil.copytree(DATA / "n04328186", folder)
    monkeypatch.chdir(folder)  # a socket's path must be short
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind("sock.JPEG")
        os.symlink("/dev/null", "null.JPEG")  # a character device behind a link
        os.symlink("self.JPEG", "self.JPEG")  # a link to itself
        found = list_dataset(root)
        assert dict(found.problems) == {
            "n04328186/null.JPEG": "a character device, not a regular file",
            "n04328186/self.JPEG": "symbolic link loop",
            "n04328186/sock.JPEG": "a socket, not a regular file",
        }
        assert len(found.samples) == 1
        code, out, _ = _check(capsys, root)
        assert code == 1 and len(out) == 4
    finally:
        sock.close()


def test_fifo_swapped_in_after_the_listing_is_refused(tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(DATA / "n04328186", root / "n04328186")
    shutil.copy(STOPWATCH, root / "n04328186" / "b.JPEG")
    samples = list_samples(root)
    swapped = samples[0].path
    swapped.unlink()
    os.mkfifo(swapped)
    with pytest.raises(DataError) as info:
        decode_image(swapped)
    assert info.value.reason == "a FIFO, not a regular file"
    assert list(scan_images(samples, SMALL, 0))[0][1] == "a FIFO, not a regular file"
    (batch,) = crop_loader(samples, SMALL, SMALL.set_indices("1"), [[0, 1]], workers=0)
    assert batch.failures == [(0, "a FIFO, not a regular file")]
    assert batch.failure_files.tolist() == [list(NO_FILE)]
    assert batch.indices.tolist() == [1] and batch.files.shape == (1, 3)


def test_file_identities_of_evaluated_and_undecodable_images(tmp_path):
    root = tmp_path / "data"
    folder = root / "n04328186"
    shutil.copytree(DATA / "n04328186", folder)
    good = STOPWATCH.read_bytes()
    (folder / "a_truncated.JPEG").write_bytes(good[: len(good) // 2])
    (folder / "b_text.JPEG").write_text("not an image\n")
    samples = list_samples(root)
    (batch,) = crop_loader(samples, SMALL, SMALL.set_indices("1"), [[0, 1, 2]], workers=0)
    assert batch.files.dtype == batch.failure_files.dtype == torch.int64
    assert batch.indices.tolist() == [2] and [p for p, _ in batch.failures] == [0, 1]
    for row, position in zip(batch.files.tolist() + batch.failure_files.tolist(), [2, 0, 1]):
        path = samples[position].path
        data = path.read_bytes()
        digest = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little", signed=True)
        assert tuple(row) == (len(data), path.stat().st_mtime_ns, digest) == file_identity(path)
    with pytest.raises(OSError):
        file_identity(folder / "missing.JPEG")


def test_size_bound(tmp_path, monkeypatch):
    monkeypatch.setattr(listing, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(DataError) as info:
        decode_image(STOPWATCH)
    assert info.value.reason.startswith("file too large: ") and "bound on an image file" in info.value.reason
    assert "\n" not in info.value.reason


# --- labels files ------------------------------------------------------------------------------


def _flat(tmp_path: Path, folder: str = "flat", names: tuple[str, str] = ("a.JPEG", "b.JPEG")) -> Path:
    """A flat folder of two real images (the stopwatch, then the fire screen) under `names`."""
    flat = tmp_path / folder
    flat.mkdir()
    shutil.copy(STOPWATCH, flat / names[0])
    shutil.copy(SCREEN, flat / names[1])
    return flat


def _labels(tmp_path: Path, text: str | bytes, name: str = "labels.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_label_paths_are_normalised_before_duplicates(tmp_path):
    flat = _flat(tmp_path)
    same = _labels(tmp_path, "a.JPEG,n04328186\n./a.JPEG,n04328186\nsub/../b.JPEG,n03347037\n")
    assert [(s.rel_path, s.target) for s in list_samples(flat, same)] == [
        ("a.JPEG", STOPWATCH_CLASS),
        ("b.JPEG", SCREEN_CLASS),
    ]
    clash = _labels(tmp_path, "a.JPEG,n04328186\n.//a.JPEG,n03347037\n")
    with pytest.raises(DataError, match=r"labels.csv:2: 'a.JPEG' is labelled twice with different classes"):
        list_samples(flat, clash)
    # absolute paths inside --data are the same files
    inside = _labels(tmp_path, f"{flat / 'a.JPEG'},n04328186\na.JPEG,n04328186\n")
    assert [s.rel_path for s in list_samples(flat, inside)] == ["a.JPEG"]


def test_label_paths_that_leave_data_are_refused(tmp_path, capsys):
    flat = _flat(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(SCREEN, outside / "x.JPEG")
    for row in ("../outside/x.JPEG", str(outside / "x.JPEG"), "sub/../../outside/x.JPEG", ".", ".."):
        labels = _labels(tmp_path, f"a.JPEG,n04328186\n{row},n03347037\n")
        assert "is not a file under --data" in _one_error_line(capsys, flat, "--labels", labels), row
    # and after resolving symlinks
    (flat / "link.JPEG").symlink_to(outside / "x.JPEG")
    (flat / "dir").symlink_to(outside)
    for row in ("link.JPEG", "dir/x.JPEG"):
        labels = _labels(tmp_path, f"{row},n03347037\n")
        assert "outside --data" in _one_error_line(capsys, flat, "--labels", labels), row
    # one file under two names with two classes
    os.link(flat / "a.JPEG", flat / "hard.JPEG")
    labels = _labels(tmp_path, "a.JPEG,n04328186\nhard.JPEG,n03347037\n")
    assert "is the same file as 'a.JPEG'" in _one_error_line(capsys, flat, "--labels", labels)


@pytest.mark.parametrize(
    "rows, needle",
    [
        ("a.JPEG,n04328186,extra\n", "expected 2 columns 'filename,label', got 3 columns"),
        ("filename,label,split\na.JPEG,n04328186\n", "got 3 columns"),
        ("a.JPEG,\uff11\n", "label '\uff11' is neither"),  # full-width digit one
        ("a.JPEG,\u00b2\n", "label '\u00b2' is neither"),  # superscript two
        ("a.JPEG,1" + "0" * 20 + "\n", "is neither"),
        ("a.JPEG,-1\n", "is neither"),
        ("a.JPEG\n", "expected 2 columns"),
        ("x" * 200_000 + ",1\n", "labels.csv:1: not a valid CSV row (field larger than field limit"),
        ("y" * 100_000 + ".JPEG,1\n", "is too long for a file system"),
        ("a\0.JPEG,1\n", "is not a file name"),
        ('"a.JPEG\n,1\n', "expected 2 columns"),
    ],
)
def test_bad_labels_rows_are_one_line(tmp_path, capsys, rows, needle):
    flat = _flat(tmp_path)
    labels = _labels(tmp_path, rows)
    line = _one_error_line(capsys, flat, "--labels", labels)
    assert needle in line, line[:300]


def test_good_labels_rows(tmp_path):
    flat = _flat(tmp_path)
    labels = _labels(
        tmp_path, "\ufefffilename,label\r\na.JPEG, n04328186 ,\r\nb.JPEG,0001\r\n\r\n"
    )  # BOM, CRLF, trailing cell
    assert [(s.rel_path, s.target, s.wnid) for s in list_samples(flat, labels)] == [
        ("a.JPEG", STOPWATCH_CLASS, "n04328186"),
        ("b.JPEG", 1, None),
    ]


def test_labelled_folder_accounts_for_every_file(tmp_path, capsys):
    flat = _flat(tmp_path)
    shutil.copy(STOPWATCH, flat / "unlabelled.JPEG")
    (flat / "notes.txt").write_text("x\n")
    (flat / ".hidden").write_text("x\n")
    os.mkfifo(flat / "pipe.JPEG")
    labels = _labels(tmp_path, "a.JPEG,n04328186\nb.JPEG,n03347037\npipe.JPEG,n03347037\n")
    found = list_dataset(flat, labels)
    assert [s.rel_path for s in found.samples] == ["a.JPEG", "b.JPEG"]
    assert found.problems == [("pipe.JPEG", "a FIFO, not a regular file")]
    assert found.ignored_line() == (
        "ignored 1 file that is not an image: 1 .txt; 1 image without a label; 1 hidden entry"
    )
    code, out, _ = _check(capsys, flat, "--labels", labels)
    assert code == 1 and out[0] == "pipe.JPEG: a FIFO, not a regular file" and out[1] == found.ignored_line()


def test_labels_file_that_is_a_fifo_or_missing(tmp_path, capsys):
    flat = _flat(tmp_path)
    os.mkfifo(tmp_path / "labels.csv")
    assert "is a FIFO, not a regular file" in _one_error_line(capsys, flat, "--labels", tmp_path / "labels.csv")
    assert "does not exist" in _one_error_line(capsys, flat, "--labels", tmp_path / "nope.csv")
    assert "does not exist" in _one_error_line(capsys, tmp_path / "nowhere")
    assert "is a file" in _one_error_line(capsys, flat / "a.JPEG")


def _val_folder(tmp_path: Path) -> Path:
    return _flat(tmp_path, "val", ("ILSVRC2012_val_00000001.JPEG", "ILSVRC2012_val_00000002.JPEG"))


def test_loc_solution_that_is_not_utf8(tmp_path, capsys):
    val = _val_folder(tmp_path)
    good = "ImageId,PredictionString\n" + "".join(
        f"ILSVRC2012_val_0000000{n},{wnid} 1 2 3 4\n" for n, wnid in ((1, "n04328186"), (2, "n03347037"))
    )
    loc = _labels(tmp_path, good, "LOC_val_solution.csv")
    assert [s.target for s in list_samples(val, loc)] == [STOPWATCH_CLASS, SCREEN_CLASS]
    _labels(tmp_path, good.encode() + b"ILSVRC2012_val_00000003,n0\xe9\xff 1 2 3 4\n", "LOC_val_solution.csv")
    assert "is not UTF-8 text" in _one_error_line(capsys, val, "--labels", loc)
    _labels(tmp_path, good + "../x,n04328186 1 2 3 4\n", "LOC_val_solution.csv")
    assert "is not a file under --data" in _one_error_line(capsys, val, "--labels", loc)


def _devkit(tmp_path: Path, truth: list[int]) -> Path:
    """A devkit whose ILSVRC2012_ID i + 1 is the sorted-wnid class 999 - i (the orders differ)."""
    import scipy.io

    devkit = tmp_path / "ILSVRC2012_devkit_t12"
    (devkit / "data").mkdir(parents=True)
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    wnids = [c.wnid for c in imagenet_classes()]
    rows = [(i + 1, wnids[999 - i], "x", 0) for i in range(1000)] + [(1001, "n00001740", "entity", 7)]
    scipy.io.savemat(devkit / "data" / "meta.mat", {"synsets": np.array(rows, dtype=dtype)})
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, truth)) + "\n")
    return devkit


def test_devkit_damage_is_one_line(tmp_path, capsys):
    val = _val_folder(tmp_path)
    devkit = _devkit(tmp_path, [1000 - STOPWATCH_CLASS, 1000 - SCREEN_CLASS])
    assert [s.target for s in list_samples(val, devkit)] == [STOPWATCH_CLASS, SCREEN_CLASS]
    truth = devkit / "data" / "ILSVRC2012_validation_ground_truth.txt"
    for text, needle in (
        (b"174\n5000\n", "'5000' is not the ILSVRC2012_ID of a class in meta.mat"),
        (b"174\nabc\n", "'abc' is not the ILSVRC2012_ID"),
        (b"174\n" + b"9" * 5000 + b"\n", "is not the ILSVRC2012_ID"),
        (b"\xff\xfe1\x00", "is not text"),
    ):
        truth.write_bytes(text)
        assert needle in _one_error_line(capsys, val, "--labels", devkit), text[:20]
    truth.write_text("174\n444\n")
    meta = devkit / "data" / "meta.mat"
    good_meta = meta.read_bytes()
    for damaged in (good_meta[: len(good_meta) // 3], b"MATLAB 5.0 MAT-file" + b"\0" * 200, b""):
        meta.write_bytes(damaged)
        assert "meta.mat in" in _one_error_line(capsys, val, "--labels", devkit)
    meta.write_bytes(good_meta)
    tar = tmp_path / "devkit.tar.gz"
    with tarfile.open(tar, "w:gz") as out:
        out.add(devkit, arcname="ILSVRC2012_devkit_t12")
    assert [s.target for s in list_samples(val, tar)] == [STOPWATCH_CLASS, SCREEN_CLASS]
    tar.write_bytes(tar.read_bytes()[:100])
    assert "cannot read the devkit" in _one_error_line(capsys, val, "--labels", tar)
    (devkit / "data" / "meta.mat").unlink()
    assert "has no data/meta.mat" in _one_error_line(capsys, val, "--labels", devkit)
