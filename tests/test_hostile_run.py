"""Hostile and unlucky runs: directories the tool does not own, links, kills at every write of the
final assembly, changed images under --resume, interruptions, non-finite outputs, strict JSON, and
file-system failures that must be one line (issue 18, sections 2, 3, 4, 8, 10)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, QUICK
from test_scale import ENV

from ensemble_eval import engine, ensemble
from ensemble_eval.cli import main
from ensemble_eval.rundir import MARKER, RunLock


def _args(ckpt, out, *extra):
    return ["--models", str(ckpt), "--data", str(DATA), "--config", QUICK, "--crops", "1", "--workers", "0",
            "--no-progress", "--batch-size", "8", "--out", str(out), *extra]  # fmt: skip


def _strict(text: str):
    """json.loads that refuses NaN / Infinity, as strict parsers do."""

    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def _one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def _tree(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


# --------------------------------------------------------------------------- directories it does not own


def test_a_directory_of_someone_elses_files_is_refused_and_untouched(tmp_path, demo_ckpts, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    for name in ("table.md", "table.csv", "curve.png", "curve.csv", "per_class.csv", "logits.npz", "predictions.npz"):
        (out / name).write_text(f"my own {name}\n")
    (out / "notes.txt").write_text("mine\n")
    before = _tree(out)
    assert main(_args(demo_ckpts[0], out)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "did not write" in line and "--overwrite" in line
    assert _tree(out) == before  # nothing replaced, nothing deleted, no lock or marker left behind
    assert main(_args(demo_ckpts[0], out, "--resume")) == 2  # nor by a resume
    assert _tree(out) == before
    capsys.readouterr()
    assert main(_args(demo_ckpts[0], out, "--overwrite")) == 0  # the explicit way: results beside the others
    assert (out / "summary.json").is_file() and (out / "notes.txt").read_text() == "mine\n"


@pytest.mark.parametrize("value", ["", "   "])
def test_an_empty_out_is_refused(tmp_path, demo_ckpts, capsys, monkeypatch, value):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "notes.txt").write_text("keep")
    assert main(_args(demo_ckpts[0], value)) == 2
    assert "--out is empty" in _one_line(capsys.readouterr().err)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"]


def test_the_current_directory_with_work_in_it_is_refused(tmp_path, demo_ckpts, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "paper.tex").write_text("keep")
    assert main(_args(demo_ckpts[0], ".")) == 2
    assert "did not write ('paper.tex')" in _one_line(capsys.readouterr().err)


def test_an_empty_directory_is_taken_and_marked(tmp_path, demo_ckpts):
    out = tmp_path / "empty"
    out.mkdir()
    assert main(_args(demo_ckpts[0], out)) == 0
    marker = _strict((out / MARKER).read_text())
    assert marker["tool"] == "ensemble-eval" and marker["kind"] == "run"
    assert {"summary.json", "predictions.npz", "per_class.csv"} <= set(marker["files"])


@pytest.mark.parametrize(
    "where, needle",
    [
        ("/proc/ensemble-eval-test", "cannot"),
        ("/sys/ensemble-eval-test/bar", "cannot"),
        ("LONG", "name is too long"),
        ("FILE/sub", "inside a file"),
    ],
)
def test_out_places_that_cannot_be_written_are_one_line(tmp_path, demo_ckpts, capsys, where, needle):
    (tmp_path / "FILE").write_text("x")
    out = {"LONG": str(tmp_path / ("d" * 300)), "FILE/sub": str(tmp_path / "FILE" / "sub")}.get(where, where)
    assert main(_args(demo_ckpts[0], out)) == 2
    assert needle in _one_line(capsys.readouterr().err)


def test_an_existing_read_only_out_says_not_writable(tmp_path, demo_ckpts, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **kw: False if Path(p) == out else real(p, mode, **kw))
    assert main(_args(demo_ckpts[0], out)) == 2
    line = _one_line(capsys.readouterr().err)
    assert "is not writable" in line and "cannot be created" not in line


def test_a_report_directory_is_not_a_run_directory(tmp_path, demo_ckpts, capsys):
    run = tmp_path / "run"
    assert main(_args(demo_ckpts[0], run)) == 0
    assert main(["report", str(run)]) == 0
    capsys.readouterr()
    assert main(_args(demo_ckpts[0], run / "report")) == 2
    assert "holds a report" in _one_line(capsys.readouterr().err)


def test_a_read_only_progress_directory_is_one_line(tmp_path, demo_ckpts, capsys, monkeypatch):
    from ensemble_eval import records

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / "run" / "progress" / "chunk-00000000.npz"))

    monkeypatch.setattr(records, "_atomic_savez", refuse)
    assert main(_args(demo_ckpts[0], tmp_path / "run")) == 2
    line = _one_line(capsys.readouterr().err)
    assert "Permission denied" in line and "--resume" in line


# --------------------------------------------------------------------------- the lock


def test_a_lock_that_is_a_symlink_is_refused_and_its_target_untouched(tmp_path, demo_ckpts, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"tool": "ensemble-eval", "kind": "run", "files": {}}))
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    (out / ".lock").symlink_to(victim)
    assert main(_args(demo_ckpts[0], out)) == 2
    assert "symbolic link" in _one_line(capsys.readouterr().err)
    assert victim.read_text() == "precious\n"


def test_the_lock_is_released_by_closing_and_the_file_stays(tmp_path):
    lock = RunLock(tmp_path).acquire()
    with pytest.raises(Exception, match="in use by another ensemble-eval run"):
        RunLock(tmp_path).acquire()
    lock.release()
    assert (tmp_path / ".lock").exists()  # never unlinked: a second run could lock another file meanwhile
    RunLock(tmp_path).acquire().release()


def test_the_lock_is_not_held_by_children_of_a_killed_process(tmp_path):
    """A child forked after the lock (as the loader's workers are) outlives its parent's kill -9;
    the directory must be free at once."""
    code = textwrap.dedent(
        f"""
        import os, signal, sys, time
        from ensemble_eval.rundir import RunLock
        RunLock(__import__("pathlib").Path({str(tmp_path)!r})).acquire()
        if os.fork() == 0:
            time.sleep(30)
            os._exit(0)
        print("locked", flush=True)
        time.sleep(30)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, env=ENV)
    assert proc.stdout.readline().strip() == "locked"
    with pytest.raises(Exception, match="in use"):
        RunLock(tmp_path).acquire()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    children = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == 1 and _cmd(p) == code]
    try:
        RunLock(tmp_path).acquire().release()  # the orphaned child does not hold it
    finally:
        for child in children:
            os.kill(int(child.name), signal.SIGKILL)


def _ppid(proc: Path) -> int:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1


def _cmd(proc: Path) -> str:
    try:
        return (proc / "cmdline").read_bytes().split(b"\0")[2].decode()
    except (OSError, IndexError, UnicodeDecodeError):
        return ""


# --------------------------------------------------------------------------- kills during the final assembly


class Killed(BaseException):
    """Stands for SIGKILL: raised right after a file-system step succeeded; no handler catches it."""


def _kill_at(monkeypatch, k: int) -> list[str]:
    """Make the k-th rename, replace or unlink of the final assembly (engine._finish) the last thing
    the process does; returns the log of the steps seen."""
    steps: list[str] = []
    real_finish = engine._finish

    def hooked(name):
        real = getattr(os, name)

        def step(*args, **kwargs):
            result = real(*args, **kwargs)
            steps.append(f"{name} {args[-1] if name != 'unlink' else args[0]}")
            if len(steps) == k:
                raise Killed
            return result

        return step

    def finish(*args, **kwargs):
        for name in ("replace", "rename", "unlink", "rmdir"):
            monkeypatch.setattr(os, name, hooked(name))
        try:
            return real_finish(*args, **kwargs)
        finally:
            monkeypatch.undo()

    monkeypatch.setattr(engine, "_finish", finish)
    return steps


def test_a_kill_at_every_step_of_the_final_assembly_resumes_to_the_same_results(
    tmp_path, demo_ckpts, monkeypatch, capsys
):
    tiny = tmp_path / "tiny.yaml"  # two nested sets of 1 and 2 views: every output file, little compute
    tiny.write_text(
        "protocol:\n  scales: [72]\n  crop_size: 64\n  regions: [center]\n  crops: [center]\n"
        "  flips: [none, mirror]\n  crop_sets: {'1': {flips: [none]}, '2': {}}\n"
    )

    def args(out, *extra):
        base = _args(demo_ckpts[0], out, "--save-every", "1", "--table", "--save-logits", "--limit", "3", *extra)
        base += ["--batch-size", "2"]  # one image per batch: three chunks
        base[base.index("--models") + 1 : base.index("--models") + 2] = map(str, demo_ckpts)
        base[base.index("--config") + 1] = str(tiny)
        return base

    assert main(args(tmp_path / "plain")) == 0
    expected = np.load(tmp_path / "plain" / "predictions.npz")
    plain = _strict((tmp_path / "plain" / "summary.json").read_text())
    assert {"curve.png", "logits.npz", "table.md"} <= set(os.listdir(tmp_path / "plain"))
    k = 1
    while True:
        out = tmp_path / f"k{k}"
        steps = _kill_at(monkeypatch, k)
        try:
            code = main(args(out))
        except Killed:
            code = None
        monkeypatch.undo()
        if code is not None:  # k went past the last step: every point was covered
            assert code == 0 and k > 12, steps
            break
        capsys.readouterr()
        assert main(args(out, "--resume")) == 0, (k, steps[-1], capsys.readouterr().err)
        got = np.load(out / "predictions.npz")
        for name in ("probs", "top5", "target_prob", "paths", "files"):
            assert np.array_equal(got[name], expected[name]), (k, steps[-1], name)
        summary = _strict((out / "summary.json").read_text())
        assert summary["table"] == plain["table"] and summary["top5_err"] == plain["top5_err"], (k, steps[-1])
        assert not (out / "progress").exists() and not (out / ".progress-finished").exists(), (k, steps[-1])
        assert sorted(os.listdir(out)) == sorted(os.listdir(tmp_path / "plain")), (k, steps[-1])
        k += 1


@pytest.mark.slow
def test_sigkill_after_the_results_then_resume_finishes_the_run(tmp_path, demo_ckpts):
    """A real kill -9 between summary.json and the removal of progress/: --resume completes it."""
    out = tmp_path / "run"
    code = textwrap.dedent(
        """
        import os, signal, sys
        from ensemble_eval import cli, runstate
        def finish(self):
            os.kill(os.getpid(), signal.SIGKILL)
        runstate.ProgressStore.finish = finish
        sys.exit(cli.main(sys.argv[1:]))
        """
    )
    killed = subprocess.run([sys.executable, "-c", code, *_args(demo_ckpts[0], out)], env=ENV, capture_output=True)
    assert killed.returncode == -signal.SIGKILL and (out / "summary.json").exists() and (out / "progress").exists()
    again = subprocess.run(
        [sys.executable, "-m", "ensemble_eval", *_args(demo_ckpts[0], out, "--resume")],
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert again.returncode == 0, again.stderr
    assert "is finished" in again.stderr and "top-5 error" in again.stdout and not (out / "progress").exists()


# --------------------------------------------------------------------------- resume trusts contents


def _copy_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    return data


def _interrupt_after(monkeypatch, batches: int, signum=signal.SIGINT) -> None:
    real = engine.run_batches

    def run_batches(*args, **kwargs):
        for i, result in enumerate(real(*args, **kwargs), start=1):
            yield result
            if i == batches:
                os.kill(os.getpid(), signum)

    monkeypatch.setattr(engine, "run_batches", run_batches)


@pytest.mark.parametrize("same_size", [False, True])
def test_resume_recomputes_an_image_whose_content_changed(tmp_path, demo_ckpts, monkeypatch, capsys, same_size):
    data = _copy_data(tmp_path)
    args = [a if a != str(DATA) else str(data) for a in _args(demo_ckpts[0], tmp_path / "run", "--batch-size", "1")]
    _interrupt_after(monkeypatch, 4)
    assert main(args) == 130
    monkeypatch.undo()
    victim = sorted(data.rglob("*.JPEG"))[1]
    donor = sorted(data.rglob("*.JPEG"))[6]
    if same_size:  # same size, same mtime, other bytes: only the content tells
        stat = victim.stat()
        body = bytearray(victim.read_bytes())
        body[len(body) // 2] ^= 0xFF
        victim.write_bytes(bytes(body))
        os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    else:
        shutil.copyfile(donor, victim)
    capsys.readouterr()
    assert main([*args, "--resume"]) in (0, 3)
    err = capsys.readouterr().err
    rel = victim.relative_to(data).as_posix()
    assert f"holds {rel}, which changed since it was evaluated" in err, err
    assert ("content changed" if same_size else "size changed") in err
    assert main([a if a != str(tmp_path / "run") else str(tmp_path / "fresh") for a in args]) in (0, 3)
    resumed, fresh = (np.load(tmp_path / d / "predictions.npz") for d in ("run", "fresh"))
    assert np.array_equal(resumed["files"], fresh["files"]) and np.array_equal(resumed["paths"], fresh["paths"])
    assert np.allclose(resumed["probs"], fresh["probs"], atol=1e-6)  # the new bytes' result, not the old one's


# --------------------------------------------------------------------------- interruptions


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_an_interrupt_saves_the_finished_batches_and_says_how_many(tmp_path, demo_ckpts, monkeypatch, capsys, signum):
    out = tmp_path / "run"
    args = _args(demo_ckpts[0], out, "--batch-size", "1", "--save-every", "1000", "--save-interval", "1000")
    _interrupt_after(monkeypatch, 3, signum)
    assert main(args) == 130
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert f"interrupted: 3 of 8 images are saved in {out / 'progress'}" in err, err
    assert main([*args, "--resume"]) == 0
    assert "3 of 8 images already done" in capsys.readouterr().err


def test_a_run_started_with_sigint_ignored_still_stops_on_sigint(tmp_path, demo_ckpts):
    """`cmd &` from a script starts with SIGINT ignored; the handler is installed explicitly."""
    out = tmp_path / "run"
    code = textwrap.dedent(
        """
        import os, signal, sys
        from ensemble_eval import cli, engine
        real = engine.run_batches
        def run_batches(*a, **k):
            for i, r in enumerate(real(*a, **k), 1):
                yield r
                if i == 2:
                    os.kill(os.getpid(), signal.SIGINT)
        engine.run_batches = run_batches
        sys.exit(cli.main(sys.argv[1:]))
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, *_args(demo_ckpts[0], out, "--batch-size", "1")],
        env=ENV,
        capture_output=True,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    assert proc.returncode == 130, proc.stderr
    assert "interrupted: 2 of 8 images are saved" in proc.stderr


def test_a_resumed_run_reports_the_whole_run(tmp_path, demo_ckpts, monkeypatch, capsys):
    out = tmp_path / "run"
    args = _args(demo_ckpts[0], out, "--batch-size", "1", "--save-every", "1")
    _interrupt_after(monkeypatch, 3)
    assert main(args) == 130
    monkeypatch.undo()
    shown = []
    real = engine.Progress.add

    def add(self, *counts):
        real(self, *counts)
        shown.append((self.images, self.top1, self.top5))

    monkeypatch.setattr(engine.Progress, "add", add)
    assert main([*args, "--resume"]) == 0
    summary = _strict((out / "summary.json").read_text())
    images, top1, top5 = shown[-1]  # the bar's last running figures cover all 8 images
    assert images == summary["num_images"] == 8
    assert (top1, top5) == (summary["top1_correct"], summary["top5_correct"])
    assert summary["resumed"] is True and summary["sessions"] == 2
    assert summary["images_per_second"] == pytest.approx(8 / summary["seconds"], rel=1e-2)


# --------------------------------------------------------------------------- numbers that would be wrong


def test_non_finite_outputs_stop_the_run_naming_member_and_image(tmp_path, demo_ckpts, monkeypatch, capsys):
    real = ensemble.member_logits
    calls = []

    def poisoned(*args, **kwargs):
        logits = real(*args, **kwargs)
        if sys._getframe(1).f_code.co_name == "run_batches":  # the run's batches, not a validation probe
            calls.append(1)
        if len(calls) == 2 and sys._getframe(1).f_code.co_name == "run_batches":
            logits[0, 0, 0, 5] = float("nan")
        return logits

    monkeypatch.setattr(ensemble, "member_logits", poisoned)
    out = tmp_path / "run"
    assert main(_args(demo_ckpts[0], out, "--batch-size", "1")) == 2
    captured = capsys.readouterr()
    line = _one_line(captured.err)
    second = sorted(p.relative_to(DATA).as_posix() for p in DATA.rglob("*.JPEG"))[1]
    assert f"member {Path(demo_ckpts[0]).name} gives NaN on {second}" in line
    assert "error" not in captured.out and not (out / "summary.json").exists()


def test_overflowing_averages_are_caught_too():
    logits = torch.full((1, 2, 3, 4), 3e38)
    logits[0, 1, :, 0] = -3e38  # finite logits, but their log-softmax overflows
    stats = {"log_prob": torch.log_softmax(logits, dim=-1).mean(dim=2, keepdim=True)}
    problem = ensemble.nonfinite_problem(logits, stats, ["m.pt"], ["a.JPEG", "b.JPEG"], ["v0", "v1", "v2"])
    assert problem is not None and "m.pt" in problem and "b.JPEG" in problem and "average" in problem
    assert ensemble.nonfinite_problem(torch.zeros(1, 2, 3, 4), {}, ["m"], ["a", "b"], ["0", "1", "2"]) is None


def test_every_json_file_is_strict(tmp_path, demo_ckpts):
    out = tmp_path / "run"
    assert main(_args(demo_ckpts[0], out, "--table")) == 0
    assert main(["report", str(out)]) == 0
    assert main(["validate", str(demo_ckpts[0]), "--json", str(tmp_path / "v.json")]) == 0
    files = [out / "summary.json", out / MARKER, out / "report" / "summary.json", tmp_path / "v.json"]
    for path in files:
        _strict(path.read_text())
    summary = _strict((out / "summary.json").read_text())
    assert summary["calibration"] is not None


def test_json_ready_turns_non_finite_numbers_into_null():
    from ensemble_eval.fileio import strict_json

    text = strict_json({"a": float("nan"), "b": [float("inf"), 1.5], "c": np.float32("nan"), "d": np.int64(3)})
    assert _strict(text) == {"a": None, "b": [None, 1.5], "c": None, "d": 3}


# --------------------------------------------------------------------------- validate --json and report --out


def test_validate_json_never_replaces_a_checkpoint_or_a_foreign_file(tmp_path, demo_ckpts, capsys):
    ckpt = tmp_path / "a.pt"
    shutil.copyfile(demo_ckpts[0], ckpt)
    before = ckpt.read_bytes()
    assert main(["validate", str(ckpt), "--json", str(ckpt)]) == 2
    assert "is one of the checkpoints" in _one_line(capsys.readouterr().err) and ckpt.read_bytes() == before
    assert main(["validate", str(ckpt), "--json", str(ckpt), "--overwrite"]) == 2  # not even with --overwrite
    assert ckpt.read_bytes() == before
    capsys.readouterr()
    notes = tmp_path / "notes.json"
    notes.write_text('{"mine": true}\n')
    assert main(["validate", str(ckpt), "--json", str(notes)]) == 2
    assert "not a report of ensemble-eval validate" in _one_line(capsys.readouterr().err)
    assert notes.read_text() == '{"mine": true}\n'
    report = tmp_path / "report.json"
    assert main(["validate", str(ckpt), "--json", str(report)]) == 0
    assert main(["validate", str(ckpt), "--json", str(report)]) == 0  # its own earlier report: replaced
    assert main(["validate", str(ckpt), "--json", str(notes), "--overwrite"]) == 0
    assert _strict(notes.read_text())["tool"] == "ensemble-eval validate"
    link = tmp_path / "link.json"
    link.symlink_to(ckpt)
    capsys.readouterr()
    assert main(["validate", str(ckpt), "--json", str(link), "--overwrite"]) == 2
    assert ckpt.read_bytes() == before


def test_report_keeps_files_it_did_not_write_or_that_were_edited(tmp_path, demo_ckpts, capsys):
    run = tmp_path / "run"
    assert main(_args(demo_ckpts[0], run, "--table")) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "table.md").write_text("my table\n")
    assert main(["report", str(run), "--out", str(other)]) == 2
    assert "did not write" in _one_line(capsys.readouterr().err) and (other / "table.md").read_text() == "my table\n"
    assert main(["report", str(run)]) == 0
    assert main(["report", str(run)]) == 0  # its own, unchanged files: rebuilt
    edited = run / "report" / "table.md"
    edited.write_text(edited.read_text() + "\nmy notes\n")
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    assert "was changed after ensemble-eval wrote it" in _one_line(capsys.readouterr().err)
    assert edited.read_text().endswith("my notes\n")
    assert main(["report", str(run), "--overwrite"]) == 0 and "my notes" not in edited.read_text()


@pytest.mark.parametrize(
    "change, needle",
    [({"num_classes": "x"}, "num_classes"), ({"models": "a"}, "models"), ({"seconds": [1]}, "seconds")],
)
def test_report_on_a_damaged_summary_is_one_line(tmp_path, demo_ckpts, capsys, change, needle):
    run = tmp_path / "run"
    assert main(_args(demo_ckpts[0], run)) == 0
    summary = _strict((run / "summary.json").read_text())
    (run / "summary.json").write_text(json.dumps(summary | change))
    capsys.readouterr()
    assert main(["report", str(run)]) == 2
    assert needle in _one_line(capsys.readouterr().err)


# --------------------------------------------------------------------------- checks before torch


def test_a_missing_checkpoint_is_reported_before_torch_is_imported(tmp_path):
    code = textwrap.dedent(
        f"""
        import sys
        from ensemble_eval.cli import main
        code = main(["--models", {str(tmp_path / "missing.pt")!r}, "--data", {str(DATA)!r},
                     "--out", {str(tmp_path / "o")!r}])
        assert "torch" not in sys.modules, "torch was imported"
        sys.exit(code)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True)
    assert proc.returncode == 2, proc.stderr
    assert "missing.pt" in _one_line(proc.stderr) and "does not exist" in proc.stderr
    assert not (tmp_path / "o").exists()


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit() and int(proc.name) != os.getpid():
            try:
                if text.encode() in (proc / "cmdline").read_bytes():
                    found.append(int(proc.name))
            except OSError:
                pass
    return found


@pytest.mark.slow
def test_sigterm_ends_the_run_and_its_workers_with_progress_saved(tmp_path, demo_ckpts):
    out = tmp_path / "sigterm-run"
    args = _args(demo_ckpts[0], out, "--batch-size", "1", "--save-every", "1")
    args[args.index("--workers") + 1] = "2"
    exe = shutil.which("ensemble-eval") or str(Path(sys.executable).parent / "ensemble-eval")
    proc = subprocess.Popen([exe, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV)
    while proc.poll() is None and len(list((out / "progress").glob("chunk-*"))) < 2:
        time.sleep(0.02)
    assert proc.poll() is None, "the run ended before SIGTERM could be sent"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate()
    assert proc.returncode == 130, err
    assert "interrupted:" in err and "images are saved" in err and "Traceback" not in err
    time.sleep(1)
    assert _processes_mentioning(str(out)) == []  # no worker outlives the run
    resumed = subprocess.run([exe, *args, "--resume"], capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0 and "already done" in resumed.stderr, resumed.stderr


def test_a_name_with_newlines_and_escape_codes_stays_one_printable_line(tmp_path, capsys):
    hostile = str(tmp_path / "a\nb\x1b[2J\u2028.pt")
    assert main(["--models", hostile, "--data", str(DATA), "--out", str(tmp_path / "o")]) == 2
    line = _one_line(capsys.readouterr().err)
    assert "\x1b" not in line and "\\x1b[2J" in line and "\\n" in line


def test_checking_a_directory_never_drops_the_lock_this_process_holds(tmp_path):
    """POSIX record locks drop when the process closes any descriptor of the file: the checks that
    look for another run's lock must never open the lock this process holds."""
    from ensemble_eval.rundir import check_run_out, claim

    claim(tmp_path, "run")
    lock = RunLock(tmp_path).acquire()
    try:
        check_run_out(tmp_path, overwrite=False, resume=False)  # the re-check under the lock
        code = "import sys; from pathlib import Path; from ensemble_eval.rundir import RunLock; "
        code += "RunLock(Path(sys.argv[1])).acquire()"
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=ENV, capture_output=True, text=True)
        assert other.returncode != 0 and f"in use by another ensemble-eval run (pid {os.getpid()})" in other.stderr
    finally:
        lock.release()


def test_the_run_and_check_data_list_the_same_files_and_nothing_hangs(tmp_path, demo_ckpts, capsys, caplog, deadline):
    data = _copy_data(tmp_path)
    first = sorted(data.iterdir())[0]
    image = next(first.glob("*.JPEG"))
    (first / ".ipynb_checkpoints").mkdir()
    shutil.copyfile(image, first / ".ipynb_checkpoints" / "copy.JPEG")  # hidden: skipped
    (first / "notes.txt").write_text("not an image")
    (first / "alias.jfif").write_bytes(image.read_bytes())  # a JPEG alias: evaluated
    os.mkfifo(first / "pipe.JPEG")  # reading it would block forever
    assert main(["check-data", str(data), "--workers", "0", "--no-progress"]) == 1
    checked = capsys.readouterr().out
    assert "pipe.JPEG: a FIFO, not a regular file" in checked and "1 .txt" in checked and "1 hidden entry" in checked
    assert "9 images checked" in checked
    args = [a if a != str(DATA) else str(data) for a in _args(demo_ckpts[0], tmp_path / "run")]
    assert main(args) == 0
    warned = [r.getMessage() for r in caplog.records if r.name == "ensemble_eval.listing"]
    assert len(warned) == 1 and "pipe.JPEG" in warned[0]  # one warning line before the first image
    summary = _strict((tmp_path / "run" / "summary.json").read_text())
    assert summary["num_images"] == 9
    assert summary["data_listing"]["problems"] == [
        {"path": f"{first.name}/pipe.JPEG", "reason": "a FIFO, not a regular file"}
    ]
    assert summary["data_listing"]["ignored"] == {".txt": 1, "hidden": 1}
    assert main([*args[:-2], "--out", str(tmp_path / "strict"), "--strict"]) == 2
    assert "--strict: 1 entry of --data cannot be used" in _one_line(capsys.readouterr().err)
