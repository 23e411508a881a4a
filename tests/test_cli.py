"""End to end through the command line, on real JPEGs and real checkpoint files."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import DATA, HAS_CUDA, save_checkpoint
from reference_protocol import crop_keys, decode, reference_probs
from torchvision.transforms import v2

from ensemble_eval.cli import main
from ensemble_eval.members.convention import IMAGENET_MEAN, IMAGENET_STD

QUICK = str(Path(__file__).parent.parent / "ensemble_eval" / "presets" / "quick-72px.yaml")


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script as a user would."""
    exe = shutil.which("ensemble-eval") or str(Path(sys.executable).parent / "ensemble-eval")
    return subprocess.run([exe, *args], capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def full_runs(demo_ckpts, tmp_path_factory):
    """A --table run and a plain --crops 144 run over 2 images, full paper geometry."""
    out = tmp_path_factory.mktemp("runs")
    a, b = map(str, demo_ckpts)
    table = cli(
        "--models",
        a,
        b,
        "--data",
        str(DATA),
        "--limit",
        "2",
        "--crops",
        "144",
        "--table",
        "--out",
        str(out / "run1"),
        "--workers",
        "1",
    )
    plain = main(
        [
            "--models",
            str(Path(a).parent / "*.pt"),
            "--data",
            str(DATA),
            "--limit",
            "2",
            "--out",
            str(out / "run2"),
            "--no-progress",
            "--workers",
            "0",
        ]
    )
    return table, plain, out


@pytest.mark.slow
def test_table_run_prints_and_writes_everything(full_runs, demo_ckpts):
    proc, _, out = full_runs
    assert proc.returncode == 0, proc.stderr
    assert "Table 3 reproduction: 2 images" in proc.stdout
    table = proc.stdout.split("p: exact McNemar")[0]
    assert table.count("best member (") == 3 and table.count("all members") == 3
    assert "img/s" in proc.stderr and "crops/s" in proc.stderr and "top5_err" in proc.stderr  # progress bar
    run = out / "run1"
    assert sorted(p.name for p in run.iterdir() if not p.name.startswith(".")) == [
        "curve.csv",
        "curve.png",
        "per_class.csv",
        "predictions.npz",
        "summary.json",
        "table.csv",
        "table.md",
    ]
    summary = json.loads((run / "summary.json").read_text())
    assert summary["num_images"] == 2 and summary["num_classes"] == 1000
    assert summary["crops"] == "144" and summary["num_crops"] == 144 and summary["num_models"] == 2
    assert summary["device"] == "cpu" and summary["seconds"] > 0
    for entry, path in zip(summary["models"], demo_ckpts):
        assert entry["path"] == str(path)
        assert entry["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    cells = summary["table"]
    assert [(c["models"], c["crops"], c["cost"]) for c in cells] == [
        (1, 1, 1),
        (1, 10, 10),
        (1, 144, 144),
        (2, 1, 2),
        (2, 10, 20),
        (2, 144, 288),
    ]
    assert all(0.0 <= c["top1_err"] <= 1.0 and c["top5_err"] <= c["top1_err"] for c in cells)
    assert cells[-1]["top1_err"] == summary["top1_err"] and cells[-1]["top5_err"] == summary["top5_err"]
    assert (run / "table.csv").read_text().count("\n") == 7
    assert "| all members | 2 | 144 | 288 |" in (run / "table.md").read_text()

    pred = np.load(run / "predictions.npz")
    assert list(pred["paths"]) == ["n03347037/n03347037_fire_screen.JPEG", "n03498962/n03498962_hatchet_cmyk.JPEG"]
    assert pred["targets"].dtype == np.int64 and pred["probs"].dtype == np.float32
    assert pred["probs"].shape == (2, 1000)
    assert np.allclose(pred["probs"].sum(1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_table_probabilities_equal_an_independent_per_crop_computation(full_runs, demo_models):
    _, _, out = full_runs
    pred = np.load(out / "run1" / "predictions.npz")
    image = decode(DATA / pred["paths"][1])  # the CMYK landscape image: three distinct squares
    models = [(m.eval(), IMAGENET_MEAN, IMAGENET_STD) for m in demo_models]
    ref = reference_probs(image, models, crop_keys())
    assert np.abs(pred["probs"][1] - ref.numpy()).max() < 1e-5


@pytest.mark.slow
def test_table_cell_equals_plain_144_crop_run(full_runs):
    _, plain_code, out = full_runs
    assert plain_code == 0
    t = json.loads((out / "run1" / "summary.json").read_text())
    p = json.loads((out / "run2" / "summary.json").read_text())
    cell = t["table"][-1]
    assert (cell["top1_err"], cell["top5_err"]) == (p["top1_err"], p["top5_err"])
    assert "table" not in p and not (out / "run2" / "table.md").exists()
    a = np.load(out / "run1" / "predictions.npz")["probs"]
    b = np.load(out / "run2" / "predictions.npz")["probs"]
    assert np.abs(a - b).max() < 1e-6


def test_one_crop_equals_torchvision_eval_transform(demo_ckpts, demo_models, samples, tmp_path):
    code = main(
        [
            "--models",
            *map(str, demo_ckpts),
            "--data",
            str(DATA),
            "--crops",
            "1",
            "--out",
            str(tmp_path),
            "--no-progress",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    pred = np.load(tmp_path / "predictions.npz")
    standard = v2.Compose(
        [
            v2.Resize(256, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    assert list(pred["paths"]) == [s.rel_path for s in samples]
    assert list(pred["targets"]) == [s.target for s in samples]
    with torch.inference_mode():
        x = torch.stack([standard(decode(s.path)) for s in samples])
        expected = torch.stack([torch.softmax(m.eval()(x), 1) for m in demo_models]).mean(0)
    assert np.abs(pred["probs"] - expected.numpy()).max() < 1e-5
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["top1_correct"] == int((expected.argmax(1) == torch.tensor(pred["targets"])).sum())


def test_flat_folder_with_labels_and_yaml_scheme(demo_ckpts, samples, tmp_path):
    flat = tmp_path / "flat"
    flat.mkdir()
    lines = ["filename,wnid"]
    for s in samples:
        shutil.copy(s.path, flat / s.path.name)
        lines.append(f"{s.path.name},{s.rel_path.split('/')[0]}")
    (tmp_path / "labels.csv").write_text("\n".join(lines) + "\n")
    code = main(
        [
            "--config",
            QUICK,
            "--models",
            str(demo_ckpts[0]),
            "--data",
            str(flat),
            "--labels",
            str(tmp_path / "labels.csv"),
            "--table",
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--workers",
            "0",
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["crops"] == "72" and summary["num_images"] == 8 and summary["protocol"]["crop_size"] == 64
    assert [c["crops"] for c in summary["table"]] == [1, 10, 72]  # one member: single rows only
    pred = np.load(tmp_path / "run" / "predictions.npz")
    assert sorted(pred["paths"]) == list(pred["paths"]) and "/" not in pred["paths"][0]


def _error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


def test_bad_command_lines_exit_nonzero_with_one_line(demo_ckpts, tmp_path):
    """Through the console script: flag errors (answered before torch is imported) and missing inputs."""
    a = str(demo_ckpts[0])
    cases = [
        (["--models", a, "--data", str(tmp_path / "missing")], "data directory"),
        (["--models", str(tmp_path / "*.pt"), "--data", str(DATA)], "matched no files"),
        (["--models", a, "--data", str(DATA), "--crops", "12"], "--crops 12 is not a crop set"),
        (["--models", a, "--data", str(DATA), "--batch-size", "0"], "positive integer"),
        (["--models", a, "--data", str(DATA), "--device", "tpu"], "invalid choice"),
        (["--models", a, "--data", str(DATA), "--views", "mine"], "invalid choice: 'mine'"),
        (["--models", a, "--data", str(DATA), "--resize-backend", "cv2"], "invalid choice: 'cv2'"),
        (["--models", a, "--data", str(DATA), "--bogus"], "unrecognized arguments"),
    ]
    for args, needle in cases:
        proc = cli(*args, "--out", str(tmp_path / "out"))
        assert proc.returncode == 2, (args, proc.stderr)
        line = _error_line(proc.stderr)
        assert line.startswith("ensemble-eval: error:") and needle in line, line
    assert not (tmp_path / "out").exists()  # nothing written on failure


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--data", str(DATA)], "no checkpoints given"),
        (["--models", "A"], "no data given"),
        (["--models", "A", "--data", str(DATA), "--config", "/nonexistent/x.yaml"], "config file"),
        (["--models", "/nonexistent/a.pt", "--data", str(DATA)], "does not exist"),
        (["--models", "A", "--data", str(DATA), "--labels", "/nonexistent.csv"], "labels file"),
    ],
)
def test_missing_inputs_in_process(demo_ckpts, tmp_path, capsys, args, needle):
    args = [str(demo_ckpts[0]) if a == "A" else a for a in args]
    assert main([*args, "--out", str(tmp_path / "out")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert line.startswith("ensemble-eval: error:") and needle in line, line
    assert not (tmp_path / "out").exists()


def test_user_errors_in_process(demo_ckpts, tmp_path, capsys):
    a = str(demo_ckpts[0])
    # a broken checkpoint
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"PK\x03\x04 not a zip really")
    assert main(["--models", str(broken), "--data", str(DATA), "--out", str(tmp_path / "o1")]) == 2
    assert "broken.pt" in _error_line(capsys.readouterr().err)
    # an undecodable image: skipped and reported (exit 3), or the run stops with --strict (exit 2)
    data = tmp_path / "data" / "n04328186"
    data.mkdir(parents=True)
    (data / "bad.JPEG").write_bytes(b"\xff\xd8\xff garbage")
    shutil.copy(DATA / "n04328186" / "n04328186_stopwatch.JPEG", data / "good.JPEG")
    args = ["--models", a, "--data", str(tmp_path / "data"), "--crops", "1", "--no-progress", "--workers", "0"]
    assert main([*args, "--out", str(tmp_path / "o2")]) == 3
    out = capsys.readouterr().out
    assert "skipped 1 undecodable image(s)" in out and "n04328186/bad.JPEG: not an image PIL can identify" in out
    summary = json.loads((tmp_path / "o2" / "summary.json").read_text())
    assert summary["num_images"] == 1 and summary["skipped"][0]["path"] == "n04328186/bad.JPEG"
    assert list(np.load(tmp_path / "o2" / "predictions.npz")["paths"]) == ["n04328186/good.JPEG"]
    assert main([*args, "--strict", "--out", str(tmp_path / "o2s")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "cannot decode image n04328186/bad.JPEG" in line and "--resume" in line
    # a model with fewer classes than the data needs
    small = save_checkpoint(
        __import__("torchvision").models.GoogLeNet(num_classes=10, aux_logits=False, init_weights=False),
        tmp_path / "ten.pt",
    )
    assert main(["--models", str(small), "--data", str(DATA), "--out", str(tmp_path / "o3")]) == 2
    assert "has 10 classes but the data's labels" in _error_line(capsys.readouterr().err)
    # results already in --out are never overwritten silently
    (tmp_path / "o4").mkdir()
    (tmp_path / "o4" / "summary.json").write_text("{}")
    assert main(["--models", a, "--data", str(DATA), "--out", str(tmp_path / "o4")]) == 2
    assert "--overwrite" in _error_line(capsys.readouterr().err)
    assert (tmp_path / "o4" / "summary.json").read_text() == "{}"


@pytest.mark.skipif(HAS_CUDA, reason="checks the message shown when no GPU is present")
def test_cuda_requested_without_gpu(demo_ckpts, tmp_path, capsys):
    assert main(["--models", str(demo_ckpts[0]), "--data", str(DATA), "--device", "cuda", "--out", str(tmp_path)]) == 2
    assert "no CUDA GPU" in _error_line(capsys.readouterr().err)


def test_help_and_module_entry_point():
    proc = subprocess.run(
        [sys.executable, "-m", "ensemble_eval", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert proc.returncode == 0
    for heading in ("inputs:", "protocol:", "execution:", "outputs:", "examples:", "--models", "--table"):
        assert heading in proc.stdout
    assert "import torch" not in proc.stderr


def _googlenet_file(path: Path, num_classes: int) -> Path:
    from torchvision.models import GoogLeNet

    return save_checkpoint(GoogLeNet(num_classes=num_classes, aux_logits=False, init_weights=False), path)


def test_class_count_must_fit_the_labels_before_any_image(tmp_path, capsys):
    tf_port = _googlenet_file(tmp_path / "tf1001.pt", 1001)
    assert main(["--models", str(tf_port), "--data", str(DATA), "--out", str(tmp_path / "o")]) == 2
    line = _error_line(capsys.readouterr().err)
    assert "1001 classes" in line and "background class" in line
    ten = _googlenet_file(tmp_path / "ten.pt", 10)
    # --limit does not hide the mismatch: the whole label set is checked
    assert main(["--models", str(ten), "--data", str(DATA), "--limit", "1", "--out", str(tmp_path / "o")]) == 2
    assert "has 10 classes but the data's labels are ImageNet-1k" in _error_line(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_index_labels_must_fit_the_models(tmp_path, samples, capsys):
    ten = _googlenet_file(tmp_path / "ten.pt", 10)
    flat = tmp_path / "flat"
    flat.mkdir()
    shutil.copy(samples[0].path, flat / "a.JPEG")
    shutil.copy(samples[1].path, flat / "b.JPEG")
    (tmp_path / "labels.csv").write_text("a.JPEG,3\nb.JPEG,12\n")
    args = ["--models", str(ten), "--data", str(flat), "--labels", str(tmp_path / "labels.csv")]
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "b.JPEG has class index 12 but the models have 10 classes" in _error_line(capsys.readouterr().err)
    (tmp_path / "labels.csv").write_text("a.JPEG,-1\n")
    assert main([*args, "--out", str(tmp_path / "o")]) == 2
    assert "class index >= 0" in _error_line(capsys.readouterr().err)
    # a spreadsheet's UTF-8 BOM is fine; a non-UTF-8 file gets a message
    (tmp_path / "labels.csv").write_bytes("\ufeffa.JPEG,3\nb.JPEG,4\n".encode())
    assert main([*args, "--out", str(tmp_path / "o"), "--crops", "1", "--no-progress", "--workers", "0"]) == 0
    assert list(np.load(tmp_path / "o" / "predictions.npz")["targets"]) == [3, 4]
    (tmp_path / "labels.csv").write_bytes(b"a.JPEG,3\n\xff\xfe,4\n")
    assert main([*args, "--out", str(tmp_path / "o2")]) == 2
    assert "not UTF-8" in _error_line(capsys.readouterr().err)


def test_duplicate_members_are_refused_and_identical_files_warned(demo_ckpts, tmp_path, capsys, caplog):
    a = str(demo_ckpts[0])
    assert main(["--models", a, str(Path(a).parent / "*.pt"), "--data", str(DATA), "--out", str(tmp_path / "o")]) == 2
    assert "is given twice" in _error_line(capsys.readouterr().err)
    copy = tmp_path / "copy.pt"
    shutil.copy(a, copy)
    code = main(
        [
            "--models",
            a,
            str(copy),
            "--data",
            str(DATA),
            "--limit",
            "1",
            "--crops",
            "1",
            "--no-progress",
            "--workers",
            "0",
            "--out",
            str(tmp_path / "o"),
        ]
    )
    assert code == 0
    assert "byte-identical" in caplog.text


def test_out_dir_problems_are_found_before_evaluating(demo_ckpts, tmp_path, capsys):
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    for out, needle in [(blocker, "is a file"), (blocker / "sub", "is inside a file")]:
        assert main(["--models", str(demo_ckpts[0]), "--data", str(DATA), "--out", str(out)]) == 2
        assert needle in _error_line(capsys.readouterr().err)


def test_overwrite_replaces_every_file_of_the_earlier_run(demo_ckpts, tmp_path):
    args = [
        "--data",
        str(DATA),
        "--limit",
        "1",
        "--no-progress",
        "--workers",
        "0",
        "--out",
        str(tmp_path),
        "--config",
        QUICK,
    ]
    both = ["--models", str(demo_ckpts[0]), str(demo_ckpts[1])]
    assert main([*args, *both, "--table", "--compare-merges", "--save-logits"]) == 0
    for name in ("table.md", "table.csv", "curve.csv", "curve.png", "merges.csv", "logits.npz"):
        assert (tmp_path / name).exists()
    assert main([*args, "--models", str(demo_ckpts[0]), "--crops", "1", "--overwrite"]) == 0
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == [".ensemble-eval.json", ".lock", "per_class.csv", "predictions.npz", "summary.json"]
    assert json.loads((tmp_path / "summary.json").read_text())["crops"] == "1"


@pytest.mark.parametrize(
    "yaml_text,needle",
    [
        ('table: "no"\n', "table (--table) must be true or false"),
        ("data: 123\n", "data (--data) must be a string"),
        ("models: [a.pt, 5]\n", "models (--models) must be a list of paths"),
        ("batch_size: true\n", "batch_size (--batch-size) must be a positive integer"),
        ('protocol:\n  crop_sets: {"1": [256]}\n', "crop set '1' must be a mapping"),
        ("protocol:\n  scales: 256\n", "scales must be a list of int values"),
        ("protocol:\n  crops: center\n", "crops must be a list of str values"),
    ],
)
def test_bad_yaml_values_get_one_line(tmp_path, capsys, yaml_text, needle):
    (tmp_path / "c.yaml").write_text(yaml_text)
    args = ["--config", str(tmp_path / "c.yaml")]
    args += [] if yaml_text.startswith("models") else ["--models", "x.pt"]
    args += [] if yaml_text.startswith("data") else ["--data", str(DATA)]
    assert main(args) == 2
    assert needle in _error_line(capsys.readouterr().err)


def test_default_crop_set_is_the_largest_of_a_custom_scheme(tmp_path):
    from ensemble_eval.config import build_config

    (tmp_path / "c.yaml").write_text(
        "protocol:\n  scales: [72]\n  crop_size: 64\n  crop_sets:\n    one: {squares: [center], crops: [center]}\n"
        "    all: {}\n"
    )
    assert build_config(str(tmp_path / "c.yaml"), {}).crops == "all"


def test_abbreviated_flags_are_not_guessed(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "a.pt", "--data", str(DATA)])
    assert exc.value.code == 2
    assert "unrecognized arguments" in _error_line(capsys.readouterr().err)


@pytest.mark.parametrize("word,meant", [("valdate", "validate"), ("reprot", "report"), ("check_data", "check-data")])
def test_a_mistyped_command_gets_a_suggestion(capsys, word, meant):
    assert main([word, "x"]) == 2
    line = _error_line(capsys.readouterr().err)
    assert f"unknown command {word!r}; did you mean {meant}?" in line


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert all(f"ensemble-eval {c}" in out for c in ("validate", "check-data", "report"))
