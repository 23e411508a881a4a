"""Runs that survive: bad images, kill -9 and --resume, torchrun sharding, flat memory, devkit labels."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, save_checkpoint
from PIL import Image
from torchvision.models import GoogLeNet

from ensemble_eval.cli import main
from ensemble_eval.data import imagenet_classes, list_samples

QUICK = str(Path(__file__).parent.parent / "ensemble_eval" / "presets" / "quick-72px.yaml")
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}


def _bad_image_folder(root: Path) -> dict[str, str | None]:
    """One class folder seeded with every kind of odd file; value: expected reason fragment or None (usable)."""
    src = DATA / "n04328186" / "n04328186_stopwatch.JPEG"
    folder = root / "n04328186"
    folder.mkdir(parents=True)
    good = src.read_bytes()
    (folder / "a_truncated.JPEG").write_bytes(good[: len(good) // 2])
    (folder / "b_empty.JPEG").write_bytes(b"")
    (folder / "c_text.JPEG").write_text("not an image at all\n")
    img = Image.open(src)
    img.save(folder / "d_png_named.JPEG", "PNG")
    img.convert("CMYK").save(folder / "e_cmyk.JPEG", "JPEG")
    img.convert("L").save(folder / "f_gray.JPEG", "JPEG")
    wide = (np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16)
    Image.fromarray(wide).save(folder / "g_16bit.png")
    img.convert("P", palette=Image.Palette.ADAPTIVE).save(folder / "h_palette.png")
    Image.new("RGB", (1, 1), (200, 10, 10)).save(folder / "i_1x1.png")
    Image.new("1", (600, 600)).save(folder / "j_bomb.png")  # above the (lowered) bomb limit
    Image.new("RGB", (1, 20000)).save(folder / "k_sliver.png")
    return {
        "a_truncated.JPEG": "truncated",
        "b_empty.JPEG": "empty file (0 bytes)",
        "c_text.JPEG": "not an image",
        "d_png_named.JPEG": None,
        "e_cmyk.JPEG": None,
        "f_gray.JPEG": None,
        "g_16bit.png": None,
        "h_palette.png": None,
        "i_1x1.png": None,
        "j_bomb.png": "decompression bomb",
        "k_sliver.png": "aspect ratio too extreme",
    }


def test_every_bad_image_kind(tmp_path, demo_ckpts, monkeypatch, capsys):
    expected = _bad_image_folder(tmp_path / "data")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100_000)  # j_bomb: 360,000 pixels; the others under 100,000
    bad = {n: why for n, why in expected.items() if why}
    code = main(
        [
            "--models",
            str(demo_ckpts[0]),
            "--data",
            str(tmp_path / "data"),
            "--crops",
            "1",
            "--workers",
            "0",
            "--no-progress",
            "--out",
            str(tmp_path / "run"),
        ]
    )
    out = capsys.readouterr().out
    assert code == 3 and f"skipped {len(bad)} undecodable image(s)" in out
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    skipped = {Path(s["path"]).name: s["reason"] for s in summary["skipped"]}
    assert set(skipped) == set(bad)
    for name, why in bad.items():
        assert why in skipped[name].lower() or why in skipped[name], (name, skipped[name])
    assert summary["num_images"] == len(expected) - len(bad) and summary["num_skipped"] == len(bad)
    pred = np.load(tmp_path / "run" / "predictions.npz")
    assert sorted(Path(p).name for p in pred["paths"]) == sorted(n for n, why in expected.items() if not why)
    assert np.isfinite(pred["probs"]).all()
    # check-data lists exactly the same problems, quickly, without a model
    assert main(["check-data", str(tmp_path / "data"), "--workers", "0", "--no-progress"]) == 1
    report = capsys.readouterr().out
    assert f"{len(expected)} images checked" in report and f"{len(bad)} with problems" in report
    for name in bad:
        assert f"n04328186/{name}:" in report


def _run(args, **kw) -> subprocess.Popen:
    exe = shutil.which("ensemble-eval") or str(Path(sys.executable).parent / "ensemble-eval")
    return subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, **kw)


def _chunks(out: Path) -> int:
    return len(list((out / "progress").glob("chunk-*.npz"))) if (out / "progress").exists() else -1


def _kill_after(args, out: Path, chunks: int) -> bool:
    """Start a run, SIGKILL it once `chunks` progress chunks exist (-1: once the manifest exists)."""
    proc = _run(args)
    while proc.poll() is None:
        if (chunks < 0 and (out / "progress" / "manifest.json").exists()) or (chunks >= 0 and _chunks(out) >= chunks):
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.005)
    proc.communicate()
    return False


@pytest.mark.slow
def test_kill_9_then_resume_equals_an_uninterrupted_run(tmp_path, demo_ckpts, capsys):
    base = [
        "--models",
        *map(str, demo_ckpts),
        "--data",
        str(DATA),
        "--config",
        QUICK,
        "--table",
        "--batch-size",
        "24",
        "--save-every",
        "1",
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    capsys.readouterr()
    for point in (-1, 1, 4):  # right after start, after one chunk, after four
        out = tmp_path / f"killed{point}"
        assert _kill_after([*base, "--out", str(out)], out, point), "the run finished before it could be killed"
        assert not (out / "summary.json").exists()
        resumed = _run([*base, "--out", str(out), "--resume"])
        stdout, stderr = resumed.communicate()
        assert resumed.returncode == 0, stderr
        if point >= 1:
            assert "already done" in stderr
        a, b = (json.loads((d / "summary.json").read_text()) for d in (tmp_path / "plain", out))
        assert a["table"] == b["table"] and a["crop_sets"] == b["crop_sets"] and b["resumed"] == (point >= 1)
        pa, pb = (np.load(d / "predictions.npz") for d in (tmp_path / "plain", out))
        assert list(pa["paths"]) == list(pb["paths"]) and np.array_equal(pa["probs"], pb["probs"])
        assert not (out / "progress").exists()  # cleaned up once the results are written


def test_resume_refusals(tmp_path, demo_ckpts, capsys):
    base = ["--models", str(demo_ckpts[0]), "--data", str(DATA), "--config", QUICK, "--workers", "0", "--no-progress"]
    out = tmp_path / "run"
    # an unfinished run: a manifest and no results (as a kill leaves it)
    from ensemble_eval.ensemble import Plan
    from ensemble_eval.members.inspection import load_members
    from ensemble_eval.runstate import ProgressStore, fingerprint

    samples = list_samples(DATA)
    plan = Plan.make(
        __import__("ensemble_eval.crops", fromlist=["x"]).CropScheme.from_dict(
            __import__("yaml").safe_load(open(QUICK))["protocol"]
        ),
        ["72"],
        "72",
        16,
    )
    fp = fingerprint(load_members([str(demo_ckpts[0])]), samples, plan)
    ProgressStore(out).open(fp, plan, samples, 1000, False, False)
    assert main([*base, "--out", str(out)]) == 2
    assert "holds an unfinished run; pass --resume" in capsys.readouterr().err
    for extra, needle in [
        (["--models", str(demo_ckpts[1])], "checkpoints or their input conventions changed"),
        (["--limit", "3"], "images or labels changed (was 8 images, now 3)"),
        (["--crops", "10"], "crop sets changed"),
        (["--batch-size", "8"], "batch size changed (resume with --batch-size 16)"),
    ]:
        args = [*base, "--out", str(out), "--resume", *extra]
        if extra[0] == "--models":
            args = [a if a != str(demo_ckpts[0]) else str(demo_ckpts[1]) for a in args[:-2]]
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"cannot resume {out}" in err and needle in err, err
    assert main([*base, "--out", str(out), "--resume"]) == 0  # the same settings continue
    assert main([*base, "--out", str(tmp_path / "fresh"), "--resume"]) == 2
    assert "nothing to resume" in capsys.readouterr().err


def test_two_cpu_runs_are_bit_identical(tmp_path, demo_ckpts):
    args = [
        "--models",
        *map(str, demo_ckpts),
        "--data",
        str(DATA),
        "--config",
        QUICK,
        "--workers",
        "0",
        "--no-progress",
    ]
    assert main([*args, "--out", str(tmp_path / "a")]) == 0
    assert main([*args, "--out", str(tmp_path / "b"), "--workers", "2"]) == 0
    a, b = (np.load(tmp_path / d / "predictions.npz") for d in "ab")
    assert np.array_equal(a["probs"], b["probs"]) and list(a["paths"]) == list(b["paths"])


@pytest.mark.slow
def _same_numbers(a, b) -> bool:
    """Equal structure and integers; floats within 1e-5 relative."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_numbers(a[k], b[k]) for k in a)
    if isinstance(a, list):
        return isinstance(b, list) and len(a) == len(b) and all(_same_numbers(x, y) for x, y in zip(a, b))
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-9) or (math.isnan(a) and math.isnan(b))
    return a == b


def test_torchrun_two_processes_equal_one(tmp_path, demo_ckpts):
    # 7 images in batches of 2 -> 4 batches over 2 processes; and 7 is not divisible by 2
    data = tmp_path / "data"
    for s in list_samples(DATA)[:7]:
        (data / s.rel_path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(s.path, data / s.rel_path)
    args = [
        "--models",
        *map(str, demo_ckpts),
        "--data",
        str(data),
        "--config",
        QUICK,
        "--batch-size",
        "144",
        "--workers",
        "0",
        "--no-progress",
        "--table",
    ]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_port=29517",
        "-m",
        "ensemble_eval",
    ]
    proc = subprocess.run([*torchrun, *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, env=ENV)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("Table 3 reproduction") == 1  # rank 0 alone prints and writes
    one, two = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("one", "two"))
    assert two["world_size"] == 2 and one["num_images"] == two["num_images"] == 7
    # integer counts equal; NLL/ECE and p-values to float precision (torchrun runs each process
    # on one thread, and float32 convolutions may round differently on another thread count)
    assert _same_numbers(one["crop_sets"], two["crop_sets"]) and _same_numbers(one["table"], two["table"])
    p1, p2 = (np.load(tmp_path / d / "predictions.npz") for d in ("one", "two"))
    assert list(p1["paths"]) == list(p2["paths"]) and len(set(p2["paths"])) == 7
    assert np.allclose(p1["probs"], p2["probs"], atol=1e-6, rtol=0)


@pytest.mark.slow
def test_memory_stays_flat_with_more_images(tmp_path):
    """Peak RSS for 1,000 images within a small margin of that for 100 (predictions stream to disk)."""
    flat = tmp_path / "flat"
    flat.mkdir()
    rng = np.random.default_rng(0)
    lines = []
    for i in range(1000):
        Image.fromarray(rng.integers(0, 255, (80, 96, 3), dtype=np.uint8)).save(flat / f"{i:04d}.jpg", quality=70)
        lines.append(f"{i:04d}.jpg,{i % 10}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    ckpt = save_checkpoint(GoogLeNet(num_classes=10, aux_logits=False, init_weights=False), tmp_path / "m.pt")
    probe = (
        "import resource, sys; from ensemble_eval.cli import main; code = main(sys.argv[1:]); "
        "print('MAXRSS', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, file=sys.stderr); sys.exit(code)"
    )
    peaks = {}
    for n in (100, 1000):
        proc = subprocess.run(
            [
                sys.executable,
                "-c",
                probe,
                "--models",
                str(ckpt),
                "--data",
                str(flat),
                "--labels",
                str(tmp_path / "labels.csv"),
                "--config",
                QUICK,
                "--crops",
                "1",
                "--limit",
                str(n),
                "--workers",
                "0",
                "--batch-size",
                "64",
                "--no-progress",
                "--out",
                str(tmp_path / f"run{n}"),
            ],
            capture_output=True,
            text=True,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        peaks[n] = int(proc.stderr.split("MAXRSS")[1].split()[0])  # KiB
    assert peaks[1000] - peaks[100] < 40 * 1024, peaks  # 40 MiB margin
    assert np.load(tmp_path / "run1000" / "predictions.npz")["probs"].shape == (1000, 10)


def _fake_devkit(root: Path, wnids_by_id: dict[int, str], truth: list[int]) -> Path:
    import scipy.io

    devkit = root / "ILSVRC2012_devkit_t12"
    (devkit / "data").mkdir(parents=True)
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("num_children", "O")]
    synsets = np.array([(i, w, w, 0) for i, w in wnids_by_id.items()] + [(1001, "n00001740", "entity", 7)], dtype=dtype)
    scipy.io.savemat(devkit / "data" / "meta.mat", {"synsets": synsets})
    (devkit / "data" / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, truth)) + "\n")
    return devkit


def test_official_val_folder_with_devkit_and_loc_solution(tmp_path):
    """ILSVRC2012_IDs are not the sorted-wnid indices: the devkit's meta.mat maps one to the other."""
    wnids = [c.wnid for c in imagenet_classes()]
    rng = np.random.default_rng(0)
    ids = rng.permutation(1000) + 1  # ILSVRC2012_ID of sorted class i, shuffled like the real devkit
    wnid_by_id = {int(ids[i]): wnids[i] for i in range(1000)}
    val = tmp_path / "val"
    val.mkdir()
    sources = list_samples(DATA)[:5]
    for n, s in enumerate(sources, start=1):
        shutil.copy(s.path, val / f"ILSVRC2012_val_{n:08d}.JPEG")
    truth = [int(ids[s.target]) for s in sources]
    devkit = _fake_devkit(tmp_path, wnid_by_id, truth)
    samples = list_samples(val, devkit)
    assert [s.target for s in samples] == [s.target for s in sources]  # the true sorted-wnid indices
    assert [s.target for s in samples] != [t - 1 for t in truth]  # not the raw IDs
    # the tarball works too
    tar = shutil.make_archive(str(tmp_path / "devkit"), "gztar", tmp_path, "ILSVRC2012_devkit_t12")
    assert [s.target for s in list_samples(val, tar)] == [s.target for s in sources]
    # Kaggle's LOC_val_solution.csv: ImageId without extension, boxes after the wnid
    rows = ["ImageId,PredictionString"] + [
        f"ILSVRC2012_val_{n:08d},{wnids[s.target]} 1 2 30 40 {wnids[s.target]} 5 6 70 80"
        for n, s in enumerate(sources, start=1)
    ]
    (tmp_path / "LOC_val_solution.csv").write_text("\n".join(rows) + "\n")
    assert [s.target for s in list_samples(val, tmp_path / "LOC_val_solution.csv")] == [s.target for s in sources]
    assert all(s.wnid for s in list_samples(val, tmp_path / "LOC_val_solution.csv"))
    _ = torch  # torch imported for the fixtures' models
