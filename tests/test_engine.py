"""The engine: live progress, saves by images and by time, self-healing resume, one run per
directory, and a full disk or lost permissions mid-run."""

from __future__ import annotations

import errno
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import DATA, QUICK, SMALL
from test_scale import ENV, _chunks, _kill_after, _run

from ensemble_eval import records
from ensemble_eval.cli import main
from ensemble_eval.engine import Progress, Saving, evaluate_batches
from ensemble_eval.ensemble import Plan
from ensemble_eval.execution import Execution
from ensemble_eval.rundir import RunLock


def _base(ckpts, *extra):
    return ["--models", *map(str, ckpts), "--data", str(DATA), "--config", QUICK, "--workers", "0", *extra]


@pytest.mark.slow
def test_the_bar_moves_after_every_image_at_144_crops(tmp_path, demo_ckpts):
    """1 member x 144 crops x 5 images on this CPU: the bar shows every count 1..5, with rates and an ETA."""
    exe = Path(sys.executable).parent / "ensemble-eval"
    args = ["--models", str(demo_ckpts[0]), "--data", str(DATA), "--limit", "5", "--crops", "144"]
    proc = subprocess.run(
        [str(exe), *args, "--workers", "0", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    frames = re.split(r"[\r\n]", proc.stderr)
    counts = [int(m.group(1)) for f in frames if (m := re.search(r"\| (\d)/5 \[", f))]
    assert [c for c in range(1, 6) if c in counts] == [1, 2, 3, 4, 5], counts
    third = next(f for f in frames if "| 3/5 [" in f)
    assert re.search(r"\[\d\d:\d\d<\d\d:\d\d, +[\d.]+s/img, crops/s=[\d.]+, top1_err=[\d.]+%, top5_err=[\d.]+%", third)


def test_saves_by_images_and_by_time(demo_models, samples):
    from ensemble_eval.members.convention import Convention
    from ensemble_eval.members.inspection import Member
    from ensemble_eval.models import ArchSpec

    members = [Member("m", "", ArchSpec("torchvision-googlenet", 1000, False), demo_models[1], Convention())]
    plan = Plan.make(SMALL, ["1"], "1", batch_size=1)  # one image per batch: 4 batches
    subset = samples[:4]
    for every, interval, expected in ((10**6, 10**6, [4]), (2, 10**6, [2, 2]), (10**6, 0.0, [1] * 4)):
        calls = []
        saving = Saving(calls.append, every, interval)
        bar = Progress(4, False, plan.crops_per_image, 1)
        evaluate_batches(subset, plan, members, [0, 1, 2, 3], saving=saving, execution=Execution(), progress=bar)
        assert [len(c) for c in calls] == expected, saving
        assert bar.images == 4 and 0 <= bar.top1 <= bar.top5 <= 4


@pytest.mark.slow
def test_kill_9_then_damaged_chunks_are_named_and_recomputed(tmp_path, demo_ckpts):
    base = _base(demo_ckpts, "--table", "--batch-size", "24", "--save-every", "1", "--no-progress")
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    out = tmp_path / "killed"
    assert _kill_after([*base, "--out", str(out)], out, 4), "the run finished before it could be killed"
    chunks = sorted((out / "progress").glob("chunk-*.npz"))
    flipped, truncated = chunks[0], chunks[1]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped bit pattern in the middle of the arrays
    flipped.write_bytes(bytes(data))
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    resumed = _run([*base, "--out", str(out), "--resume"])
    stdout, stderr = resumed.communicate()
    assert resumed.returncode == 0, stderr
    assert "Traceback" not in stderr
    named = [line for line in stderr.splitlines() if "is damaged" in line]
    assert len(named) == 2 and flipped.name in named[0] and truncated.name in named[1]
    assert "bad CRC" in named[0] and "computed again" in named[1]
    pa, pb = (np.load(d / "predictions.npz") for d in (tmp_path / "plain", out))
    for key in pa.files:
        assert np.array_equal(pa[key], pb[key]), key


def test_chunks_with_wrong_contents_are_set_aside(tmp_path, demo_ckpts, capsys):
    """Readable chunks whose arrays do not fit the run (dtype, shape, positions) are damaged too."""
    out = tmp_path / "run"
    base = _base(demo_ckpts[:1], "--batch-size", "24", "--save-every", "1", "--no-progress", "--out", str(out))
    assert _kill_after(base, out, 3)
    chunks = sorted((out / "progress").glob("chunk-*.npz"))
    with np.load(chunks[0]) as z:
        arrays = dict(z)
    np.savez(chunks[0], **(arrays | {"probs": arrays["probs"].astype(np.float64)}))
    np.savez(chunks[1], **(arrays | {"batches": np.array([5], dtype=np.int64)}))  # positions of batch 0
    capsys.readouterr()
    assert main([*base, "--resume"]) == 0
    named = [line for line in capsys.readouterr().err.splitlines() if "is damaged" in line]
    assert "probs is float64 [1, 1000], expected float32 [1, 1000]" in named[0]
    assert "image positions do not match its batches" in named[1] and len(named) == 2


def test_a_damaged_manifest_is_one_line_naming_the_fix(tmp_path, demo_ckpts, capsys):
    out = tmp_path / "run"
    base = _base(demo_ckpts[:1], "--batch-size", "24", "--save-every", "1", "--no-progress", "--out", str(out))
    assert _kill_after(base, out, 2)
    manifest = out / "progress" / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    assert main([*base, "--resume"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(manifest) in err and "is damaged" in err and "--overwrite" in err
    assert main([*base, "--overwrite"]) == 0  # the fix it names works


@pytest.mark.slow
def test_a_second_run_on_the_same_out_is_refused_while_the_first_runs(tmp_path, demo_ckpts, capsys):
    out = tmp_path / "run"
    args = ["--models", str(demo_ckpts[0]), "--data", str(DATA), "--limit", "4", "--crops", "144"]
    args += ["--workers", "0", "--no-progress", "--save-every", "1", "--out", str(out)]
    first = _run(args)
    while _chunks(out) < 1 and first.poll() is None:
        time.sleep(0.05)
    assert first.poll() is None, "the first run ended before the test could start a second one"
    for extra in (["--resume"], ["--overwrite"], []):
        assert main([*args, *extra]) == 2  # refused at once: a waiting run would end 0 once the first is done
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"in use by another ensemble-eval run (pid {first.pid})" in err, err
    _, stderr = first.communicate()
    assert first.returncode == 0, stderr
    assert json.loads((out / "summary.json").read_text())["num_images"] == 4
    RunLock(out).acquire().release()  # released by the finished run (the file itself stays)


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EACCES])
def test_a_full_disk_mid_run_keeps_progress_and_resume_finishes(tmp_path, demo_ckpts, monkeypatch, capsys, code):
    base = _base(demo_ckpts[:1], "--batch-size", "24", "--save-every", "1", "--no-progress")
    assert main([*base, "--out", str(tmp_path / "plain")]) == 0
    out = tmp_path / "run"
    real = np.savez
    calls = []

    def fails_on_the_third(file, **arrays):
        calls.append(file)
        if len(calls) == 3:
            Path(file).write_bytes(b"PK\x03\x04 half a chunk")  # what a write cut short leaves
            raise OSError(code, "No space left on device" if code == errno.ENOSPC else "Permission denied")
        real(file, **arrays)

    monkeypatch.setattr(records.np, "savez", fails_on_the_third)
    capsys.readouterr()
    assert main([*base, "--out", str(out)]) == 2
    monkeypatch.setattr(records.np, "savez", real)
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot write" in err and "--resume" in err and "Traceback" not in err
    assert _chunks(out) == 2 and not list((out / "progress").glob(".*.tmp*"))
    assert main([*base, "--out", str(out), "--resume"]) == 0
    pa, pb = (np.load(d / "predictions.npz") for d in (tmp_path / "plain", out))
    assert np.array_equal(pa["probs"], pb["probs"])


def test_a_full_disk_while_writing_the_results_keeps_every_chunk(tmp_path, demo_ckpts, monkeypatch, capsys):
    base = _base(demo_ckpts[:1], "--no-progress", "--out", str(tmp_path / "run"))
    real = records._write_npy_stream

    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(records, "_write_npy_stream", no_space)
    assert main(base) == 2
    assert "No space left on device" in capsys.readouterr().err
    assert _chunks(tmp_path / "run") >= 1 and not (tmp_path / "run" / "predictions.npz").exists()
    assert not list((tmp_path / "run").glob(".*.tmp"))
    monkeypatch.setattr(records, "_write_npy_stream", real)
    assert main([*base, "--resume"]) == 0 and (tmp_path / "run" / "predictions.npz").exists()


def test_a_failed_start_leaves_no_empty_run_directory(tmp_path, demo_ckpts):
    out = tmp_path / "new"
    assert main(["--models", str(tmp_path / "missing.pt"), "--data", str(DATA), "--out", str(out)]) == 2
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    assert main(["--models", str(bad), "--data", str(DATA), "--out", str(out)]) == 2
    assert not out.exists()
