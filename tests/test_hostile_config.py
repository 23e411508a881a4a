"""Resource bombs and hostile files refused before they cost anything: crop schemes past their
bounds, --workers past the machine, --config files that are not small UTF-8 YAML mappings
(FIFO, directory, huge, deep, alias bombs), and cache files that are not what they should be."""

from __future__ import annotations

import json
import math
import os
import re
import time
import tracemalloc
from pathlib import Path

import pytest
import torch

from ensemble_eval import autobatch, config, crops, signatures
from ensemble_eval.cli import main
from ensemble_eval.config import ConfigError, build_config
from ensemble_eval.crops import CropScheme, SchemeError, extract_crops, extract_views

CONFIGS = Path(__file__).parent.parent / "ensemble_eval" / "presets"


def _one_line_exit_2(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit status 2 and one stderr line without a traceback; return it."""
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ensemble-eval: error: ") and "Traceback" not in err, err
    return err


# --- crop schemes ---------------------------------------------------------------------------


def _views(n_scales: int) -> dict:
    return {
        "scales": list(range(300, 300 + n_scales)),
        "crop_size": 8,
        "regions": ["whole"],
        "crops": {"grid": 32},
        "flips": ["none"],
    }


@pytest.mark.parametrize(
    "protocol,match",
    [
        ({"crops": {"grid": 100000}}, r"grid: 100000 is not an N from 1 to 32"),
        ({"crops": {"grid": 100}}, r"grid: 100 is not an N from 1 to 32"),
        ({"grid": 10**30, "crops": ["tl"]}, r"grid: 1000000000000000000000000000000 is not an N"),
        ({"crops": {"grid": 10}}, r"4 scales x 3 regions x 100 crops x 2 flips = 2,400 views per image, more than"),
        (_views(200), r"200 scales x 1 regions x 1024 crops x 1 flips = 204,800 views per image, more than the 1,024"),
        ({"scales": list(range(300, 2300))}, r"scales: 2,000 values, more than the 1,024"),
        ({"scales": [100000]}, r"scales: 100000 is not a size from 8 to 4096 pixels"),
        ({"scales": [1], "crop_size": 1}, r"crop_size: 1 is not a size from 8 to 4096 pixels"),
        ({"scales": [7], "crop_size": 8, "crops": ["uncropped"], "crop_sets": {"a": {}}}, r"scales: 7 is not a size"),
        ({"crop_size": 100000}, r"crop_size: 100000 is not a size from 8 to 4096"),
        ({"scales": [4096], "crop_size": 4096, "regions": ["center"], "crops": ["tl", "tr", "center"]}, "pixels"),
        ({"scales": [4096, 4095, 4094, 4093], "regions": ["whole"], "crops": ["center"], "flips": ["none"]}, "pixels"),
        ({"crop_sets": {f"s{i}": {} for i in range(65)}}, r"crop_sets: 65 sets, more than the 64 allowed"),
        ({"crop_sets": {"x" * 65: {}}}, r"crop set name 'xxx.* must be a string of 1 to 64 characters"),
        ({1: 2, "a": "b"}, r"unknown protocol keys \['1', 'a'\]"),
        ({"crops": [["tl"]]}, r"crops must be a list of str values"),
    ],
)
def test_schemes_past_their_bounds_are_one_line(protocol, match):
    with pytest.raises(SchemeError, match=match) as err:
        CropScheme.from_dict(protocol)
    assert "\n" not in str(err.value) and len(str(err.value)) < 400


def test_a_huge_grid_is_refused_at_once_without_allocating():
    tracemalloc.start()
    start = time.perf_counter()
    try:
        for grid in (100000, 10**9):
            with pytest.raises(SchemeError, match="grid"):
                CropScheme.from_dict({"crops": {"grid": grid}})
            with pytest.raises(SchemeError, match="grid"):
                CropScheme(grid=grid, crops=("tl",))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 0.5 and peak < 256 * 1024, (time.perf_counter() - start, peak)


def test_bounds_hold_in_code_too():
    with pytest.raises(SchemeError, match="= 1,050 views per image"):
        CropScheme(
            scales=tuple(range(256, 277)), grid=5, crops=crops.grid_cells(5), regions=("whole",), crop_sets={"a": {}}
        )
    with pytest.raises(SchemeError, match="crops: 1,025 values"):
        CropScheme(crops=("tl",) * 1025)
    with pytest.raises(SchemeError, match="an integer of 1001 bits"):
        CropScheme(crop_size=2**1000)


def test_every_preset_is_well_inside_the_bounds():
    for path in sorted(CONFIGS.glob("*.yaml")):
        scheme = build_config(str(path), {}).protocol
        assert scheme.num_crops <= 150 and scheme.pixels_per_image() <= crops.MAX_PIXELS / 4, path.name
    assert CropScheme().pixels_per_image() == 374_784 + 144 * 224**2


def test_the_largest_allowed_schemes_build():
    grid = {"scales": [256], "crop_size": 8, "regions": ["whole"], "crops": {"grid": 32}, "flips": ["none"]}
    grid["crop_sets"] = {"all": {}}
    assert CropScheme.from_dict(grid).num_crops == crops.MAX_VIEWS
    CropScheme.from_dict(
        {"scales": [4096], "crop_size": 4096, "regions": ["center"], "crops": ["center", "full"], "flips": ["none"]}
        | {"crop_sets": {"a": {}}}
    )
    CropScheme.from_dict({"scales": [600, 650, 700, 750], "crop_size": 600, "crop_sets": {"144": {}}})  # 600 px
    CropScheme.from_dict({"crop_sets": {f"s{i}": {} for i in range(64)}})


@pytest.mark.parametrize("crop", [["center", "tl"], ["full"], ["uncropped"]])
def test_the_smallest_sizes_extract_from_any_image(crop):
    """MIN_SIZE works for every crop kind, even from a 1 x 1 image; 1 did not (an internal
    assert of the uint8 antialiased resize)."""
    small = crops.MIN_SIZE
    scheme = CropScheme(scales=(small,), crop_size=small, crops=tuple(crop), crop_sets={"a": {}})
    for h, w in ((1, 1), (1, 40), (40, 1), (3, 4), (375, 500)):
        image = torch.randint(0, 256, (3, h, w), dtype=torch.uint8)
        if crop == ["uncropped"]:
            assert all(min(v.shape[-2:]) == small for _, v in extract_views(image, scheme))
        else:
            assert extract_crops(image, scheme).shape[-2:] == (small, small)


# --- --config files -------------------------------------------------------------------------


def _cli(path, *extra) -> list[str]:
    return ["--config", str(path), "--models", "a.pt", "--data", "nowhere", *extra]


def _lol(levels: int = 9) -> str:
    lines = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


HOSTILE_FILES = {
    "not-utf8": (b'crops: "\xff\xfe"\n', r"is not UTF-8 text \(byte 0xff at offset 8\); save it as UTF-8"),
    "deep": (b"a: " + b"[" * 20000 + b"]" * 20000 + b"\n", r"nests deeper than 64 levels"),
    "deep-block": (b"".join(b"  " * i + b"k:\n" for i in range(100)), r"nests deeper than 64 levels"),
    "billion-laughs": (_lol().encode(), r"expands to more than 100,000 values"),
    "alias-cycle": (b"a: &a [*a]\n", r"alias that refers to itself"),
    "huge": (b"# " + b"x" * 10_000_000 + b"\n", r"has 10,000,003 bytes, more than the 131,072 allowed"),
    "huge-int": (b"workers: " + b"9" * 5000 + b"\n", r"cannot be read as YAML \(ValueError: Exceeds the limit"),
    "bad-date": (b"seed: 2001-13-45\n", r"cannot be read as YAML \(ValueError: month must be in 1..12\)"),
    "nul": (b"crops: 1\x00\n", r"is not valid YAML"),
    "many-keys": (
        "".join(f"k{i}: 1\n" for i in range(5000)).encode(),
        r"unknown config option\(s\) \['k0', .*\.\.\.\]",
    ),
    "grid": (b"protocol:\n  crops: {grid: 100000}\n", r"grid: 100000 is not an N from 1 to 32"),
    "workers": (b"workers: 99999\n", r"workers \(--workers\) 99999 is more than the \d+ allowed"),
}


@pytest.mark.parametrize("name", list(HOSTILE_FILES))
def test_hostile_config_files_are_one_line(tmp_path, capsys, name):
    content, match = HOSTILE_FILES[name]
    path = tmp_path / f"{name}.yaml"
    path.write_bytes(content)
    start = time.perf_counter()
    with pytest.raises(ConfigError, match=match):
        build_config(str(path), {})
    err = _one_line_exit_2(capsys, _cli(path))
    assert len(err) < 1200 and time.perf_counter() - start < 10


def test_a_small_legitimate_alias_is_fine(tmp_path):
    path = tmp_path / "alias.yaml"
    path.write_text("protocol:\n  scales: &s [256, 288]\n  crop_sets:\n    a: {scales: *s}\n    b: {}\n")
    assert build_config(str(path), {}).protocol.scales == (256, 288)
    path.write_text(_lol(4))  # 9^3 aliased values: inside the bound, then refused as unknown options
    with pytest.raises(ConfigError, match="unknown config option"):
        build_config(str(path), {})


@pytest.mark.parametrize("kind", ["fifo", "link-to-fifo", "directory"])
def test_a_config_that_is_not_a_regular_file_does_not_hang(tmp_path, capsys, deadline, kind):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    path = {"fifo": fifo, "link-to-fifo": tmp_path / "link.yaml", "directory": tmp_path}[kind]
    if kind == "link-to-fifo":
        path.symlink_to(fifo)
    err = _one_line_exit_2(capsys, _cli(path))
    assert ("is a directory" if kind == "directory" else "is a FIFO, not a regular file") in err


def test_workers_are_capped_from_yaml_and_the_command_line(capsys):
    cap = config.max_workers()
    assert 1 <= config.DEFAULT_WORKERS <= cap <= config.MAX_WORKERS
    assert build_config(None, {"workers": cap}).workers == cap
    with pytest.raises(ConfigError, match=rf"99999 is more than the {cap} allowed on this machine"):
        build_config(None, {"workers": 99999})
    err = _one_line_exit_2(capsys, ["--workers", "99999", "--models", "a.pt", "--data", "nowhere"])
    assert f"give --workers {cap} or fewer" in err


def test_workers_follow_the_cpus_this_process_may_use(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2}, raising=False)
    assert config.usable_cpus() == 3 and config.max_workers() == 12
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(512)), raising=False)
    assert config.max_workers() == 64


# --- the caches -----------------------------------------------------------------------------


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("ENSEMBLE_EVAL_CACHE", str(tmp_path))
    monkeypatch.setattr(autobatch, "_warned", set())
    return tmp_path


@pytest.mark.parametrize("kind", ["fifo", "link-to-fifo", "directory"])
def test_a_batch_cache_that_is_not_a_regular_file_is_no_cache(cache_dir, capsys, deadline, kind):
    path = cache_dir / autobatch.CACHE_NAME
    if kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        os.mkfifo(cache_dir / "fifo")
        path.symlink_to(cache_dir / "fifo")
    start = time.perf_counter()
    assert autobatch.read_cache() == {} and autobatch.read_cache() == {}
    assert time.perf_counter() - start < 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: ignoring the batch-size cache" in err and "not a regular file" in err
    choice = autobatch.Choice(8, "timed", 60.0, {4: 50.0, 8: 60.0})
    assert autobatch.write_cache("k", choice) is (kind != "directory")  # a FIFO or link is replaced
    if kind != "directory":
        assert path.is_file() and not path.is_symlink() and json.loads(path.read_text())["k"]["batch_size"] == 8


def test_a_huge_batch_cache_is_ignored_then_rewritten(cache_dir, capsys):
    path = cache_dir / autobatch.CACHE_NAME
    path.write_bytes(b" " * (autobatch.MAX_CACHE_BYTES + 1))
    assert autobatch.read_cache() == {}
    assert "has 4,194,305 bytes, more than the 4,194,304 allowed" in capsys.readouterr().err
    assert autobatch.write_cache("k", autobatch.Choice(8, "timed", 60.0, {8: 60.0}))
    assert list(json.loads(path.read_text())) == ["k"]


SOUND = {"batch_size": 8, "crops_per_s": 64.0, "tried": {"4": 60.0, "8": 64.0}, "measured": "2025-01-01"}


@pytest.mark.parametrize(
    "entry",
    [
        SOUND | {"batch_size": 1_000_000_000},
        SOUND | {"batch_size": 2},
        SOUND | {"batch_size": 8.0},
        SOUND | {"batch_size": True},
        SOUND | {"crops_per_s": "NaN"},
        SOUND | {"crops_per_s": -1},
        SOUND | {"crops_per_s": 1e999},
        SOUND | {"tried": {"1000000000": 64.0}},
        SOUND | {"tried": {"8": 0}},
        SOUND | {"tried": [8]},
        SOUND | {"measured": "x" * 1000},
        "8",
    ],
)
def test_an_absurd_cache_entry_is_not_used(cache_dir, entry):
    key = "the key"
    (cache_dir / autobatch.CACHE_NAME).write_text(json.dumps({key: entry}))
    assert autobatch.cached_choice(key, autobatch.CANDIDATES["cpu"]) is None


def test_a_sound_cache_entry_is_used_and_non_strict_json_is_not(cache_dir):
    path = cache_dir / autobatch.CACHE_NAME
    path.write_text(json.dumps({"k": SOUND}))
    found = autobatch.cached_choice("k", autobatch.CANDIDATES["cpu"])
    assert found.batch_size == 8 and found.source == "cache" and found.tried == {4: 60.0, 8: 64.0}
    assert autobatch.cached_choice("k", autobatch.CANDIDATES["cuda"]) is None  # 8 is below CUDA's range
    path.write_text(json.dumps({"k": SOUND | {"crops_per_s": math.nan}}))  # a bare NaN token
    assert autobatch.read_cache() == {} and autobatch.cached_choice("k", autobatch.CANDIDATES["cpu"]) is None


def test_choose_times_again_rather_than_use_an_absurd_size(cache_dir):
    scheme = CropScheme()
    cpu = torch.device("cpu")
    key = autobatch.cache_key([], cpu, scheme.crop_size, False, "fp32", True)
    args = ("auto", [], [], autobatch.Workload(scheme, [0], cpu, True, "fp32"), 16)
    (cache_dir / autobatch.CACHE_NAME).write_text(json.dumps({key: SOUND | {"batch_size": 10**9}}))
    choice = autobatch.choose(*args)  # no sample to time on: the default, not a billion
    assert choice.source == "default" and choice.batch_size == 16
    (cache_dir / autobatch.CACHE_NAME).write_text(json.dumps({key: SOUND}))
    assert autobatch.choose(*args).batch_size == 8


def test_a_signature_cache_that_is_not_a_regular_file_or_is_unsound_is_no_cache(cache_dir, capsys, deadline):
    path = signatures._cache_file()
    os.mkfifo(path)
    start = time.perf_counter()
    assert signatures._read_cache(path) is None and time.perf_counter() - start < 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ignoring the signature cache" in err and "FIFO" in err
    path.unlink()
    row = {"builder": "resnet18", "kwargs": {}, "shapes": {"fc.weight": [1000, 512]}, "class_dims": {"fc.weight": 0}}
    for rows, usable in (
        ([row], True),
        ([row | {"builder": "os.system"}], False),
        ([row | {"kwargs": {"num_classes": 10**9}}], False),
        ([row | {"shapes": {"fc.weight": [-1]}}], False),
        ([row | {"class_dims": {"fc.weight": 5}}], False),
        ([], False),
    ):
        path.write_text(json.dumps({"format": signatures.FORMAT_VERSION, "signatures": rows}))
        assert (signatures._read_cache(path) is not None) is usable, rows
    path.write_bytes(b'{"format": 1, "signatures": NaN}')
    assert signatures._read_cache(path) is None


@pytest.mark.parametrize("name", ["not-utf8", "deep", "billion-laughs", "alias-cycle", "huge", "fifo"])
def test_a_checkpoint_sidecar_is_read_with_the_same_bounds(tmp_path, name):
    """a.pt.yaml is a file from a stranger too: the --config bounds, as the checkpoint's ERROR."""
    import torch
    from torchvision.models import GoogLeNet

    from ensemble_eval.checkpoints import inspect_checkpoint

    ckpt = tmp_path / "m.pt"
    torch.save(GoogLeNet(num_classes=10, aux_logits=False, init_weights=False).state_dict(), ckpt)
    sidecar = tmp_path / "m.pt.yaml"
    if name == "fifo":
        os.mkfifo(sidecar)
    else:
        sidecar.write_bytes(HOSTILE_FILES[name][0])
    start = time.perf_counter()
    ins = inspect_checkpoint(str(ckpt))
    assert time.perf_counter() - start < 30
    if name == "fifo":  # not a regular file: no sidecar is read (and nothing hangs)
        assert ins.convention.source == "default"
        return
    assert ins.verdict == "ERROR" and ins.errors[0].startswith("sidecar ") and len(ins.errors[0]) < 400, ins.errors
    assert re.search(HOSTILE_FILES[name][1].replace("131,072", "1,048,576"), ins.errors[0]), ins.errors[0]
