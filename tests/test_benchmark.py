"""The benchmark runs and reports sane, self-consistent figures (no timing assertions)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import DATA

ROOT = Path(__file__).parent.parent


def test_benchmark_script_on_a_tiny_setting(tmp_path):
    out = tmp_path / "bench.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "benchmark.py"),
            "--data",
            str(DATA),
            "--images",
            "2",
            "--models",
            "1",
            "--crops",
            "1",
            "--config",
            str(ROOT / "configs" / "quick-72px.yaml"),
            "--repeats",
            "1",
            "--workers",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = json.loads(out.read_text())
    assert record["settings"]["crops_per_image"] == 1 and record["settings"]["images"] == 2
    assert record["machine"]["cpu_cores"] >= 1 and record["machine"]["device"] == "cpu"
    for part in ("model", "end_to_end", "naive", "reference_1crop"):
        assert record[part]["crops_per_s"] > 0
    assert record["ceiling_gflops"]["fp32"] > 0
    # GoogLeNet at 64 x 64: the flop counter's figure scales with the pixel count (~3.0 GFLOP at 224)
    assert 0.15 < record["model"]["gflop_per_crop"] < 0.4
    r = record["ratios"]
    assert abs(r["e2e_over_model"] - record["end_to_end"]["crops_per_s"] / record["model"]["crops_per_s"]) < 1e-9
    assert abs(r["e2e_over_naive"] - record["end_to_end"]["crops_per_s"] / record["naive"]["crops_per_s"]) < 1e-9
    assert abs(r["model_over_ceiling"] - record["model"]["gflops"] / record["ceiling_gflops"]["fp32"]) < 1e-9
    assert set(record["targets"]) == {"model_over_ceiling", "e2e_over_reference_1crop"}  # the 1-crop targets
    assert "model alone" in proc.stdout and "ensemble-eval" in proc.stdout
    st = record["startup"]  # fresh processes: the import alone, --help, a 1-image 1-crop run
    assert 0 < st["help_s"] < st["one_image_one_crop_run_s"] and st["import_torch_torchvision_s"] > 0
    assert abs(st["run_over_import_s"] - (st["one_image_one_crop_run_s"] - st["import_torch_torchvision_s"])) < 1e-9
    assert {k: t["at_most"] for k, t in st["targets"].items()} == {"help_s": 0.3, "run_over_import_s": 1.0}
    assert "run_over_import_s" in proc.stdout


def test_protocol_costs_count_views_and_pixels(samples):
    import torch

    from ensemble_eval.benchmark import protocol_costs, random_members, view_pixels
    from ensemble_eval.config import build_config

    dense = build_config(str(ROOT / "configs" / "resnet-dense.yaml"), {}).protocol
    spotlight = [s for s in samples if s.rel_path.startswith("n04286575")]  # 320x240
    # 224x298 + 256x341 + 384x512 + 480x640 + 640x853 pixels, in 224 x 224 crops
    assert abs(view_pixels(spotlight, dense, "5") - 1203776 / 224**2) < 1e-9
    quick = build_config(str(ROOT / "configs" / "quick-72px.yaml"), {}).protocol
    rows = protocol_costs(
        samples[:4], random_members(1), [("quick", quick, "1"), ("quick", quick, "10")], torch.device("cpu"), 16, 0, 2
    )
    assert [(r["views"], r["images"]) for r in rows] == [(1, 4), (10, 4)]
    assert rows[0]["cost_vs_first"] == 1.0 and abs(rows[1]["crops_224_equivalent"] - 10 * 64**2 / 224**2) < 1e-9
