"""The benchmark runs and reports sane, self-consistent figures (no timing assertions)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import DATA, HAS_CUDA

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
            str(ROOT / "ensemble_eval" / "presets" / "quick-72px.yaml"),
            "--repeats",
            "1",
            "--workers",
            "0",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    output = json.loads(out.read_text())
    (record,) = output["runs"]
    assert record["settings"]["crops_per_image"] == 1 and record["settings"]["images"] == 2
    assert record["machine"]["cpu_cores"] >= 1 and record["machine"]["device"] == "cpu"
    for part in ("model", "end_to_end", "naive", "reference_1crop"):
        assert record[part]["crops_per_s"] > 0
    assert record["ceiling_gflops"]["fp32"] > 0
    # GoogLeNet at 64 x 64: the flop counter's figure scales with the pixel count (~3.0 GFLOP at 224)
    assert 0.15 < record["model"]["gflop_per_crop"] < 0.4
    model, tool = record["model"], record["end_to_end"]
    batches = {int(b): v for b, v in model["batches"].items()}  # every candidate of --batch-size auto
    assert list(batches) == [4, 8, 16, 32, 64] and model["crops_per_s"] == batches[model["best_batch"]] == max(
        batches.values()
    )
    assert tool["choice"]["source"] == "timed" and tool["batch_size"] == tool["choice"]["batch_size"]
    assert abs(tool["crops_per_s"] - 1 / tool["seconds_per_image"]) < 1e-6  # 1 crop x 1 model per image
    r = record["ratios"]
    assert abs(r["e2e_over_model"] - tool["crops_per_s"] / model["crops_per_s"]) < 1e-9
    assert abs(r["e2e_over_naive"] - tool["crops_per_s"] / record["naive"]["crops_per_s"]) < 1e-9
    assert abs(r["model_over_ceiling"] - model["gflops"] / record["ceiling_gflops"]["fp32"]) < 1e-9
    assert set(record["targets"]) == {"model_over_ceiling", "e2e_over_reference_1crop"}  # the 1-crop targets
    assert "models alone" in proc.stdout and "steady state" in proc.stdout
    st = output["startup"]  # fresh processes: the import alone, --help, a 1-image 1-crop run
    assert 0 < st["help_s"] < st["one_image_one_crop_run_s"] and st["import_torch_torchvision_s"] > 0
    assert abs(st["run_over_import_s"] - (st["one_image_one_crop_run_s"] - st["import_torch_torchvision_s"])) < 1e-9
    assert {k: t["at_most"] for k, t in st["targets"].items()} == {"help_s": 0.3, "run_over_import_s": 1.0}
    assert "run_over_import_s" in proc.stdout


def test_protocol_costs_count_views_and_pixels(samples):
    import torch

    from ensemble_eval.config import build_config
    from tools.benchmark import protocol_costs, random_members, view_pixels

    dense = build_config(str(ROOT / "ensemble_eval" / "presets" / "resnet-dense.yaml"), {}).protocol
    spotlight = [s for s in samples if s.rel_path.startswith("n04286575")]  # 320x240
    # 224x298 + 256x341 + 384x512 + 480x640 + 640x853 pixels, in 224 x 224 crops
    assert abs(view_pixels(spotlight, dense, "5") - 1203776 / 224**2) < 1e-9
    quick = build_config(str(ROOT / "ensemble_eval" / "presets" / "quick-72px.yaml"), {}).protocol
    rows = protocol_costs(
        samples[:4], random_members(1), [("quick", quick, "1"), ("quick", quick, "10")], torch.device("cpu"), 16, 0, 2
    )
    assert [(r["views"], r["images"]) for r in rows] == [(1, 4), (10, 4)]
    assert rows[0]["cost_vs_first"] == 1.0 and abs(rows[1]["crops_224_equivalent"] - 10 * 64**2 / 224**2) < 1e-9


def test_precision_agreement_rows(samples, demo_models):
    import torch

    from ensemble_eval.config import build_config
    from ensemble_eval.members.convention import Convention
    from ensemble_eval.members.inspection import Member
    from ensemble_eval.models import ArchSpec
    from tools.benchmark import Setting, precision_agreement

    quick = build_config(str(ROOT / "ensemble_eval" / "presets" / "quick-72px.yaml"), {}).protocol
    members = [Member("m", "", ArchSpec("torchvision-googlenet", 1000, False), demo_models[1], Convention())]
    setting = Setting(samples[:3], members, quick, "", torch.device("cpu"), 16, 0)
    rows = precision_agreement(setting, {"1": 3, "10": 2}, ("bf16",))
    assert [(r["precision"], r["crop_set"], r["images"]) for r in rows] == [("bf16", "1", 3), ("bf16", "10", 2)]
    for r in rows:
        assert 0 < r["max_abs_diff"] < 0.2  # bf16 moves the probabilities, a little
        assert 0 <= r["top1_changed"] <= r["images"] and 0 <= r["top5_changed"] <= r["images"]
        assert set(r["top1_err"]) == {"fp32", "bf16"} and all(0 <= e <= 1 for e in r["top5_err"].values())
        assert r["seconds"]["fp32"] > 0 and r["seconds"]["bf16"] > 0


@pytest.mark.skipif(HAS_CUDA, reason="on a CUDA machine the script runs in full")
def test_gpu_check_refuses_in_one_line_without_cuda():
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_check.sh")],
        env={**os.environ, "PYTHON": sys.executable},
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert proc.stderr.strip() == "gpu_check.sh: no CUDA GPU is visible; run it on a CUDA machine"


def test_the_loader_measurement_reads_the_same_images_from_a_folder_and_shards(tmp_path):
    from ensemble_eval.crops import CropScheme
    from ensemble_eval.data import list_samples
    from ensemble_eval.listing import read_sample
    from tools.benchmark import loader_throughput, write_shards

    samples = list_samples(DATA)[:3]
    folders = write_shards(samples, tmp_path, per_shard=2, row_group_size=1)
    for path in folders.values():
        got = list_samples(path)
        assert [read_sample(s)[0] for s in got] == [read_sample(s)[0] for s in samples]
        assert [s.target for s in got] == [s.target for s in samples]
    record = loader_throughput(samples, CropScheme(), "1", workers=0, repeats=1)
    assert (
        record["images"] == 3
        and record["crops_per_image"] == 1
        and set(record["images_per_s"])
        == {
            "folder",
            "parquet",
            "tar",
        }
    )
    assert all(rate > 0 for rate in record["images_per_s"].values())
    assert set(record["read_ms_per_image"]) == {"folder", "parquet", "tar"}
    assert record["tar_over_folder"] == record["images_per_s"]["tar"] / record["images_per_s"]["folder"]
