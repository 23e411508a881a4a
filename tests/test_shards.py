"""--data as shards (shards.py): Parquet and WebDataset tar files give the same numbers as the
folder of the same images; recognition, columns, labels; the hostile and damaged twin of each
input; check-data; resume after a kill; torchrun 2 == 1."""

from __future__ import annotations

import gzip
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pyarrow as pa  # the [parquet] extra; the test extra installs it
import pyarrow.parquet as pq
import pytest
from conftest import DATA
from test_scale import ENV, _kill_after, _run

from ensemble_eval import shards
from ensemble_eval.cli import main
from ensemble_eval.listing import DataError, imagenet_classes, list_dataset, list_samples, read_sample

HF_IMAGE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
TINY = "protocol:\n  scales: [72]\n  crop_size: 64\n  regions: [center]\n  crops: [center]\n  flips: [none, mirror]\n"


@pytest.fixture(scope="module")
def shots() -> list[tuple[bytes, int, str]]:
    """(bytes, class index, file name) of the committed test images, in the folder's sorted order."""
    return [(s.path.read_bytes(), s.target, s.path.name) for s in list_samples(DATA)]


def write_parquet(
    path: Path, rows, row_group_size: int = 2, image="image", label="label", struct=True, label_type=None
):
    """A Parquet shard of (bytes, label) rows: Hugging Face's layout (struct image, int64 label) by default."""
    if struct:
        column = pa.array([None if b is None else {"bytes": b, "path": f"{i}.JPEG"} for i, (b, _) in enumerate(rows)])
        column = column.cast(HF_IMAGE)
    else:
        column = pa.array([b for b, _ in rows], pa.binary())
    labels = pa.array([lab for _, lab in rows], label_type or pa.int64())
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table({image: column, label: labels}), path, row_group_size=row_group_size)
    return path


def add_member(tar: tarfile.TarFile, name: str, data: bytes = b"", **kind) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for k, v in kind.items():
        setattr(info, k, v)
    tar.addfile(info, io.BytesIO(data) if data else None)


def write_tar(path: Path, samples, extra=()) -> Path:
    """A WebDataset shard: KEY.jpg + KEY.cls per (bytes, label), then `extra` (name, data, kind) members."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w", format=tarfile.GNU_FORMAT) as tar:
        for i, (data, label) in enumerate(samples):
            add_member(tar, f"{i:04d}.jpg", data)
            if label is not None:
                add_member(tar, f"{i:04d}.cls", str(label).encode())
        for name, data, kind in extra:
            add_member(tar, name, data, **kind)
    return path


def pairs(shots, labels=None):
    return [(b, t if labels is None else labels[i]) for i, (b, t, _) in enumerate(shots)]


def run(ckpt, data, out, *extra):
    args = ["--models", str(ckpt), "--data", str(data), "--config", str(out.parent / "tiny.yaml"), "--crops", "2"]
    (out.parent / "tiny.yaml").write_text(TINY + "  crop_sets: {'1': {flips: [none]}, '2': {}}\n")
    return main([*args, "--workers", "0", "--no-progress", "--batch-size", "4", "--out", str(out), *extra])


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


# --------------------------------------------------------------------------- the same numbers


def test_folder_parquet_and_tar_give_identical_probabilities(tmp_path, demo_ckpts, shots, capsys):
    rows = pairs(shots)
    write_parquet(tmp_path / "pq" / "val-0.parquet", rows[:5] + [(rows[0][0], -1)], row_group_size=2)
    write_parquet(tmp_path / "pq" / "val-1.parquet", rows[5:], row_group_size=2)
    write_parquet(tmp_path / "pq-test" / "test-0.parquet", [(b, -1) for b, _ in rows[:2]])  # the test split
    write_tar(tmp_path / "tar" / "a.tar", rows[:3])
    write_tar(tmp_path / "tar" / "b.tar", rows[3:] + [(rows[0][0], None)])  # the last key unlabelled
    assert run(demo_ckpts[0], DATA, tmp_path / "folder") == 0
    assert run(demo_ckpts[0], tmp_path / "pq", tmp_path / "parquet", "--workers", "2") == 0  # loader processes
    assert run(demo_ckpts[0], str(tmp_path / "tar" / "*.tar"), tmp_path / "webdataset") == 0
    folder, parquet, webdataset = (
        np.load(tmp_path / d / "predictions.npz") for d in ("folder", "parquet", "webdataset")
    )
    assert len(folder["probs"]) == len(shots) == 8
    for got in (parquet, webdataset):
        assert np.array_equal(got["probs"], folder["probs"]) and np.array_equal(got["targets"], folder["targets"])
        assert np.array_equal(got["files"][:, 2], folder["files"][:, 2])  # the same bytes' digests
    assert list(parquet["paths"][:2]) == ["val-0.parquet/row 0", "val-0.parquet/row 1"]
    assert list(webdataset["paths"][:2]) == ["a.tar/0000.jpg", "a.tar/0001.jpg"]
    summary = json.loads((tmp_path / "parquet" / "summary.json").read_text())
    assert summary["num_images"] == 8 and summary["data_listing"]["ignored"] == {"unlabelled": 1}
    capsys.readouterr()
    with pytest.raises(DataError, match="no labelled images in the Parquet shards .* 2 images without a label"):
        list_dataset(tmp_path / "pq-test")


def test_check_data_says_what_it_recognised(tmp_path, shots, capsys):
    write_parquet(tmp_path / "pq" / "a.parquet", pairs(shots)[:5])
    write_parquet(tmp_path / "pq" / "b.parquet", pairs(shots)[5:])
    assert main(["check-data", str(tmp_path / "pq"), "--workers", "0", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "Parquet shards: 2 files, 8 images, 8 classes" and "8 usable" in out
    write_tar(tmp_path / "tar" / "a.tar", [(shots[0][0], 3), (shots[1][0], 3), (b"not an image", 4)])
    assert main(["check-data", str(tmp_path / "tar" / "a.tar"), "--workers", "2", "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "tar shards: 1 file, 3 images, 2 classes"
    assert "a.tar/0002.jpg: not an image PIL can identify" in out and "1 with problems" in out
    assert main(["check-data", str(DATA), "--workers", "0", "--no-progress"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "wnid folders: 8 images, 8 classes"


# --------------------------------------------------------------------------- Parquet columns and labels


def test_parquet_columns_labels_and_their_overrides(tmp_path, shots, capsys):
    rows = pairs(shots)[:3]
    plain = write_parquet(tmp_path / "a" / "x.parquet", rows, image="jpg", label="cls", struct=False)
    with pytest.raises(DataError, match=r"has no column 'image' \(its columns: 'jpg, cls'\).*--image-column NAME"):
        list_dataset(plain)
    listing = list_dataset(plain, image_column="jpg", label_column="cls")
    assert [s.target for s in listing.samples] == [t for _, t in rows]
    assert read_sample(listing.samples[2])[0] == rows[2][0]
    assert main(["check-data", str(plain), "--image-column", "jpg", "--label-column", "cls", "--no-progress"]) == 0
    assert main(["check-data", str(plain), "--label-column", "nope", "--image-column", "jpg"]) == 2
    assert "has no column 'nope'" in one_line(capsys.readouterr().err)
    # labels: WordNet ids or digits as strings, -1 or null unlabelled; floats, other negatives refused
    wnids = write_parquet(
        tmp_path / "w.parquet",
        [(b, w) for b, w in zip([r[0] for r in rows], ["n01440764", "7", None])],
        label_type=pa.string(),
    )
    assert [(s.target, s.wnid) for s in list_dataset(wnids).samples] == [
        (0, "n01440764"),
        (7, imagenet_classes()[7].wnid),
    ]
    for bad, label_type, needle in [
        ([1.0, 2.0, 3.0], pa.float64(), "is double, not integer class indices"),
        ([1, -5, 2], pa.int64(), "row 1: label -5 .* is not a class index >= 0"),
        ([1, 2, 10**12], pa.int64(), "row 2: label 1000000000000"),
        (["n01440764", "dog", "3"], pa.string(), "label 'dog' is neither an ImageNet WordNet id"),
    ]:
        f = write_parquet(
            tmp_path / "bad" / "b.parquet", [(b, lab) for (b, _), lab in zip(rows, bad)], label_type=label_type
        )
        with pytest.raises(DataError, match=needle):
            list_dataset(f)
    f = tmp_path / "c.parquet"
    pq.write_table(pa.table({"image": pa.array([1, 2, 3]), "label": pa.array([1, 2, 3])}), f)
    with pytest.raises(DataError, match="column 'image' of Parquet shard c.parquet is int64, not image bytes"):
        list_dataset(f)


def test_without_pyarrow_one_line_names_the_extra(tmp_path, shots, monkeypatch, capsys):
    f = write_parquet(tmp_path / "a.parquet", pairs(shots)[:1])
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    assert main(["check-data", str(f)]) == 2
    assert "pip install 'ensemble-eval[parquet]'" in one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- recognition


def test_recognition_and_its_refusals(tmp_path, shots, capsys):
    rows = pairs(shots)[:2]
    mixed = tmp_path / "mixed"
    write_parquet(mixed / "a.parquet", rows)
    write_tar(mixed / "b.tar", rows)
    (tmp_path / "notes").mkdir()
    cases = {
        str(mixed): "holds 1 .parquet and 1 .tar shards; use one kind per run",
        str(tmp_path / "nothing-*.parquet"): "matches no file",
    }
    beside = tmp_path / "beside"
    write_parquet(beside / "a.parquet", rows)
    (beside / "n01440764").mkdir()
    cases[str(beside)] = r"holds 1 shard file and 1 folder \(e.g. 'n01440764'\); keep shards and image folders"
    loose = tmp_path / "loose"
    write_tar(loose / "a.tar", rows)
    (loose / "x.jpg").write_bytes(rows[0][0])
    cases[str(loose)] = "holds 1 shard file and 1 image file"
    gz = tmp_path / "gz"
    gz.mkdir()
    (gz / "a.tar.gz").write_bytes(b"\x1f\x8b" + b"\0" * 100)
    cases[str(gz)] = "'a.tar.gz' in --data .* is a compressed tar; .* decompress it"
    cases[str(gz / "a.tar.gz")] = "is a compressed tar"
    cases[str(tmp_path / "n*")] = "matches 1 entry but no .parquet or .tar file"
    for data, needle in cases.items():
        assert main(["check-data", data, "--no-progress"]) == 2, data
        line = one_line(capsys.readouterr().err)
        assert re.search(needle, line), (data, line)
    folder = tmp_path / "pqs"
    write_parquet(folder / "a.parquet", rows)
    (folder / "README.md").write_text("about\n")
    (folder / ".cache").mkdir()
    listing = list_dataset(folder)
    assert listing.layout == "Parquet shards" and listing.ignored == {".md": 1, "hidden": 1}
    with pytest.raises(DataError, match="--labels is for a flat image folder; .* drop --labels"):
        list_dataset(folder, labels=tmp_path / "x.csv")
    assert list_dataset(str(folder / "*.parquet")).shards == 1


# --------------------------------------------------------------------------- hostile Parquet


def test_damaged_parquet_shards_are_problems_and_the_others_are_used(tmp_path, shots, capsys, monkeypatch):
    rows = pairs(shots)
    folder = tmp_path / "pq"
    write_parquet(folder / "a.parquet", rows[:4])
    body = write_parquet(folder / "b.parquet", rows[4:]).read_bytes()
    (folder / "b.parquet").write_bytes(body[: len(body) // 2])  # truncated
    (folder / "c.parquet").write_bytes(b"PAR1 this is not parquet")
    (folder / "d.parquet").write_bytes(b"")
    os.mkfifo(folder / "e.parquet")
    listing = list_dataset(folder)
    problems = dict(listing.problems)
    assert len(listing.samples) == 4 and listing.shards == 1
    assert set(problems) == {"b.parquet", "c.parquet", "d.parquet", "e.parquet"}
    assert all(p.startswith("not a readable Parquet file (") for k, p in problems.items() if k != "e.parquet")
    assert problems["e.parquet"] == "a FIFO, not a regular file"
    assert main(["check-data", str(folder), "--no-progress", "--workers", "0"]) == 1
    out = capsys.readouterr().out
    assert "Parquet shards: 1 file, 4 images, 4 classes" in out and "b.parquet: not a readable Parquet file" in out
    # declared sizes above the bounds: a problem, nothing read
    monkeypatch.setattr(shards, "MAX_ROW_GROUP_BYTES", 1000)
    assert "declares" in dict(list_dataset(folder / "a.parquet").problems)["a.parquet"]
    monkeypatch.setattr(shards, "MAX_SHARD_ROWS", 3)
    assert "footer declares 4 rows" in dict(list_dataset(folder / "a.parquet").problems)["a.parquet"]


def test_a_parquet_shard_damaged_during_the_run_is_that_images_failure(tmp_path, shots, demo_ckpts, capsys):
    rows = pairs(shots)[:4]
    f = write_parquet(tmp_path / "pq" / "a.parquet", [rows[0], (None, rows[1][1]), rows[2], rows[3]])
    listing = list_dataset(f)
    with pytest.raises(DataError) as info:
        read_sample(listing.samples[1])
    assert info.value.reason == "no image in this row (null)"
    body = f.read_bytes()
    footer = int.from_bytes(body[-8:-4], "little") + 8
    f.write_bytes(body[:4] + b"\0" * (len(body) - 4 - footer) + body[-footer:])  # pages damaged, footer whole
    reasons = []
    for s in listing.samples:
        try:
            read_sample(s)
        except DataError as exc:
            reasons.append(exc.reason)
    assert len(reasons) == 4 and all("\n" not in r and "Traceback" not in r for r in reasons), reasons
    assert all(r.startswith("the shard cannot be read (") and r.count(")") == 1 for r in reasons), reasons
    f.unlink()
    with pytest.raises(DataError, match="cannot read shard .*No such file"):
        read_sample(listing.samples[0])
    # in a run: the image is skipped with its reason, like an undecodable one
    write_parquet(f, [rows[0], (b"garbage", rows[1][1]), rows[2]])
    assert run(demo_ckpts[0], f, tmp_path / "run") == 3
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["skipped"] == [{"path": "a.parquet/row 1", "reason": "not an image PIL can identify"}]


# --------------------------------------------------------------------------- hostile tar


def test_tar_members_that_are_problems_or_not_samples(tmp_path, shots):
    jpg = shots[0][0]
    extra = [
        ("link.jpg", b"", {"type": tarfile.SYMTYPE, "linkname": "/etc/passwd"}),
        ("hard.jpg", b"", {"type": tarfile.LNKTYPE, "linkname": "0000.jpg"}),
        ("dev.jpg", b"", {"type": tarfile.CHRTYPE}),
        ("fifo.jpg", b"", {"type": tarfile.FIFOTYPE}),
        ("dir", b"", {"type": tarfile.DIRTYPE}),
        ("dir/k1.jpg", jpg, {}),
        ("dir/k1.json", b'{"label": 5}', {}),
        ("k2.jpg", jpg, {}),
        ("k2.json", b'{"cls": 6, "other": [1]}', {}),
        ("twice.jpg", jpg, {}),
        ("twice.jpg", jpg, {}),
        ("two.jpg", jpg, {}),
        ("two.png", jpg, {}),
        ("two.cls", b"1", {}),
        ("badcls.jpg", jpg, {}),
        ("badcls.cls", b"seven", {}),
        ("badjson.jpg", jpg, {}),
        ("badjson.json", b'{"label": NaN}', {}),
        ("booljson.jpg", jpg, {}),
        ("booljson.json", b'{"label": true}', {}),
        ("neg.jpg", jpg, {}),
        ("neg.cls", b"-3", {}),
        ("differ.jpg", jpg, {}),
        ("differ.cls", b"1", {}),
        ("differ.json", b'{"label": 2}', {}),
        ("biglabel.jpg", jpg, {}),
        ("biglabel.cls", b"1" + b" " * (shards.MAX_LABEL_MEMBER_BYTES + 1), {}),
        ("nolabel.jpg", jpg, {}),
        ("onlylabel.cls", b"3", {}),
        ("k3.seg.png", jpg, {}),
        ("._0000.jpg", jpg, {}),
        ("../../escape.jpg", jpg, {}),
        ("../../escape.cls", b"9", {}),
        ("caf\udce9.jpg", jpg, {}),  # a Latin-1 name: not UTF-8
        ("caf\udce9.cls", b"8", {}),
        ("new\nline.jpg", jpg, {}),
        ("new\nline.cls", b" 12\n", {}),
    ]
    f = write_tar(tmp_path / "s.tar", [(jpg, 1)], extra)
    listing = list_dataset(f)
    samples = {s.rel_path: s.target for s in listing.samples}
    assert samples == {
        "s.tar/0000.jpg": 1,
        "s.tar/dir/k1.jpg": 5,
        "s.tar/k2.jpg": 6,
        "s.tar/../../escape.jpg": 9,
        "s.tar/caf\\udce9.jpg": 8,
        "s.tar/new\\nline.jpg": 12,
    }
    assert all(s.rel_path.isprintable() for s in listing.samples)
    problems = dict(listing.problems)
    assert problems["s.tar/link.jpg"].startswith("a symbolic link member (to '/etc/passwd'): not followed")
    assert problems["s.tar/hard.jpg"].startswith("a hard link member")
    assert problems["s.tar/dev.jpg"] == "a character device member, not a regular file"
    assert problems["s.tar/fifo.jpg"] == "a FIFO member, not a regular file"
    assert problems["s.tar/twice"] == "member twice.jpg appears twice in the shard"
    assert problems["s.tar/two"].startswith("key with 2 images (jpg, png)")
    assert "not an ASCII integer" in problems["s.tar/badcls"] and "not JSON" in problems["s.tar/badjson"]
    assert "no integer 'label'" in problems["s.tar/booljson"]
    assert problems["s.tar/neg"].startswith("label -3 is not a class index")
    assert problems["s.tar/differ"] == "its .cls and .json labels differ (1 and 2)"
    assert "a label is a few" in problems["s.tar/biglabel"]
    assert len(problems) == 12, " ".join(sorted(problems))
    assert listing.ignored == {"unlabelled": 1, ".cls": 1, ".seg.png": 1, "hidden": 1}
    for s in listing.samples:
        assert read_sample(s)[0] == jpg


@pytest.mark.parametrize("cut", ["header", "data", "marker", "half-header", "empty"])
def test_a_truncated_tar_is_a_problem_of_that_shard(tmp_path, shots, cut):
    rows = pairs(shots)[:3]
    whole = write_tar(tmp_path / "w" / "a.tar", rows).read_bytes()
    with tarfile.open(tmp_path / "w" / "a.tar") as tar:
        last = tar.getmembers()[-1]
    at = {
        "header": last.offset,  # ends where the last member's header would start
        "half-header": last.offset + 200,
        "data": last.offset_data + last.size - 10,
        "marker": last.offset_data + last.size + 511 & ~511,  # every member whole, no end-of-archive blocks
        "empty": 0,
    }[cut]
    folder = tmp_path / "d"
    write_tar(folder / "good.tar", rows)
    (folder / "cut.tar").write_bytes(whole[:at])
    listing = list_dataset(folder)
    assert [p for p, _ in listing.problems] == ["cut.tar"] and len(listing.samples) == 3
    why = dict(listing.problems)["cut.tar"]
    assert why.startswith(("truncated", "not a readable tar file")), why


def test_hostile_tar_shards(tmp_path, shots, demo_ckpts, deadline, capsys):
    jpg = shots[0][0]
    folder = tmp_path / "d"
    write_tar(folder / "good.tar", [(jpg, 1)])
    # a GNU long-name header declaring 16 GiB of name: refused before any read of that size
    huge = tarfile.TarInfo("././@LongLink")
    huge.type, huge.size = tarfile.GNUTYPE_LONGNAME, 1 << 34
    (folder / "longname.tar").write_bytes(huge.tobuf(tarfile.GNU_FORMAT) + b"\0" * 2048)
    (folder / "gzipped.tar").write_bytes(gzip.compress((folder / "good.tar").read_bytes()))
    (folder / "text.tar").write_bytes(b"hello, not a tar\n" * 100)
    os.mkfifo(folder / "fifo.tar")
    os.symlink(folder / "missing", folder / "broken.tar")
    listing = list_dataset(folder)
    problems = dict(listing.problems)
    assert len(listing.samples) == 1 and listing.shards == 1
    assert "a header declares 17,179,869,184 bytes" in problems["longname.tar"]
    assert problems["gzipped.tar"].startswith("compressed (gzip), not a plain tar; decompress it")
    assert problems["text.tar"].startswith("not a readable tar file")
    assert problems["fifo.tar"] == "a FIFO, not a regular file"
    assert problems["broken.tar"].startswith("cannot be read")
    # one FIFO as --data: one line, no wait
    assert main(["--models", str(demo_ckpts[0]), "--data", str(folder / "fifo.tar"), "--out", str(tmp_path / "r")]) == 2
    line = one_line(capsys.readouterr().err)
    assert "nothing to evaluate" in line and "fifo.tar: a FIFO, not a regular file" in line, line
    assert main(["check-data", str(folder / "fifo.tar"), "--no-progress"]) == 1
    assert "fifo.tar: a FIFO, not a regular file" in capsys.readouterr().out
    # a member whose bytes are gone since the listing (the shard truncated): that image's reason
    sample = list_dataset(folder / "good.tar").samples[0]
    (folder / "good.tar").write_bytes((folder / "good.tar").read_bytes()[:1000])
    with pytest.raises(DataError) as info:
        read_sample(sample)
    assert info.value.reason == "the shard ends before this member does (truncated since it was listed)"


# --------------------------------------------------------------------------- resume and torchrun


def test_a_killed_shard_run_resumes_to_identical_results(tmp_path, demo_ckpts, shots):
    rows = pairs(shots)
    write_parquet(tmp_path / "pq" / "a.parquet", rows[:5], row_group_size=2)
    write_parquet(tmp_path / "pq" / "b.parquet", rows[5:], row_group_size=2)
    (tmp_path / "tiny.yaml").write_text(TINY + "  crop_sets: {'1': {flips: [none]}, '2': {}}\n")
    base = ["--models", str(demo_ckpts[0]), "--data", str(tmp_path / "pq"), "--config", str(tmp_path / "tiny.yaml")]
    base += ["--batch-size", "2", "--save-every", "1", "--workers", "0", "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    out = tmp_path / "killed"
    assert _kill_after([*base, "--out", str(out)], out, 2), "the run finished before it could be killed"
    assert not (out / "summary.json").exists()
    # one row changed since: its chunk is set aside and recomputed, the others are kept
    changed = [(rows[1][0], rows[1][1])] + rows[1:5]
    changed[0] = (rows[7][0], rows[0][1])  # row 0 of a.parquet: other bytes, same label
    write_parquet(tmp_path / "pq" / "a.parquet", changed, row_group_size=2)
    resumed = _run([*base, "--out", str(out), "--resume"])
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr
    assert "holds a.parquet/row 0, which changed since it was evaluated" in stderr
    assert main([*base, "--out", str(tmp_path / "fresh")]) == 0
    fresh, got = (np.load(tmp_path / d / "predictions.npz") for d in ("fresh", "killed"))
    for name in ("probs", "paths", "targets"):
        assert np.array_equal(got[name], fresh[name]), name
    # the images' sizes and digests; the mtime is the shard's when each was evaluated (rewritten since)
    assert np.array_equal(got["files"][:, [0, 2]], fresh["files"][:, [0, 2]])
    # and a resume of an unchanged shard run equals the uninterrupted run
    write_parquet(tmp_path / "pq" / "a.parquet", rows[:5], row_group_size=2)
    out = tmp_path / "killed2"
    assert _kill_after([*base, "--out", str(out)], out, 1)
    resumed = _run([*base, "--out", str(out), "--resume"])
    _, stderr = resumed.communicate()
    assert resumed.returncode == 0 and "already done" in stderr, stderr
    plain, got = (np.load(tmp_path / d / "predictions.npz") for d in ("plain", "killed2"))
    for name in ("probs", "paths", "targets"):
        assert np.array_equal(got[name], plain[name]), name
    assert np.array_equal(got["files"][:, [0, 2]], plain["files"][:, [0, 2]])


def test_torchrun_two_processes_equal_one_over_parquet_shards(tmp_path, demo_ckpts, shots):
    rows = pairs(shots)[:7]  # 7 images in batches of 2 over 2 processes: 4 batches, some across shards
    write_parquet(tmp_path / "pq" / "a.parquet", rows[:3], row_group_size=2)
    write_parquet(tmp_path / "pq" / "b.parquet", rows[3:], row_group_size=3)
    (tmp_path / "tiny.yaml").write_text(TINY + "  crop_sets: {'1': {flips: [none]}, '2': {}}\n")
    args = ["--models", str(demo_ckpts[0]), "--data", str(tmp_path / "pq"), "--config", str(tmp_path / "tiny.yaml")]
    args += ["--batch-size", "4", "--workers", "0", "--no-progress"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29533"]
    proc = subprocess.run(
        [*torchrun, "-m", "ensemble_eval", *args, "--out", str(tmp_path / "two")],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert two["world_size"] == 2 and one["num_images"] == two["num_images"] == 7
    assert (one["top1_correct"], one["top5_correct"]) == (two["top1_correct"], two["top5_correct"])
    p1, p2 = (np.load(tmp_path / d / "predictions.npz") for d in ("one", "two"))
    assert list(p1["paths"]) == list(p2["paths"]) and len(set(p2["paths"])) == 7
    assert np.array_equal(p1["files"], p2["files"])
    # the same images in the same batches; float32 convolutions round differently on another
    # thread count (torchrun gives each process its own), by up to ~1e-6 of a confident probability
    assert np.allclose(p1["probs"], p2["probs"], atol=1e-5, rtol=0)


def test_the_row_group_cache_reads_each_row_group_once(tmp_path, shots, monkeypatch):
    f = write_parquet(tmp_path / "a.parquet", pairs(shots), row_group_size=3)
    listing = list_dataset(f)
    reads = []
    real = pq.ParquetFile.read_row_group

    def counted(self, i, *a, **k):
        reads.append(i)
        return real(self, i, *a, **k)

    monkeypatch.setattr(pq.ParquetFile, "read_row_group", counted)
    shards._row_groups.clear()
    for s in listing.samples:
        read_sample(s)
    assert reads == [0, 1, 2]
    os.utime(f, ns=(1, 1))  # the shard changed (its mtime): read again, not served stale
    read_sample(listing.samples[0])
    assert reads == [0, 1, 2, 0]
