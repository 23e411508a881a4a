"""Hostile checkpoints: nothing runs, nothing a file declares is allocated before it is checked,
no number comes from outputs that are not finite, and every file gets one line, never a traceback.

Every file is built here, small, in tmp_path: zip and pickle bombs, pickled shell commands,
a torchvision cache file that is not the published one, conventions and weights that cannot
give finite outputs, programs returning NaN, a corrupt torch.export archive.
"""

from __future__ import annotations

import functools
import io
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from conftest import DATA
from torch import nn
from torchvision.models import GoogLeNet, GoogLeNet_Weights

from ensemble_eval import preload
from ensemble_eval.cli import main
from ensemble_eval.members import registry, tensors
from ensemble_eval.members.convention import input_range_problem, parse_convention
from ensemble_eval.members.inspection import check_together, inspect_checkpoint
from ensemble_eval.preload import is_code_global

GIB = 1 << 30

# ---------------------------------------------------------------------------------------
# Building hostile files (small on disk)


@functools.cache
def _deflated_zeros(mib: int) -> tuple[bytes, int]:
    """(raw deflate stream of `mib` MiB of zeros, its CRC-32), made from one compressed MiB: after a
    full flush the compressor starts afresh, so the same bytes encode every further MiB (~1 KB each)."""
    block_maker = zlib.compressobj(9, zlib.DEFLATED, -15)
    zeros = bytes(1 << 20)
    block = block_maker.compress(zeros) + block_maker.flush(zlib.Z_FULL_FLUSH)
    final = zlib.compressobj(9, zlib.DEFLATED, -15).flush()  # an empty last block
    crc = 0
    for _ in range(mib):
        crc = zlib.crc32(zeros, crc)
    return block * mib + final, crc


def _write_zip(path: Path, entries: list[tuple[str, bytes | int]]) -> Path:
    """A zip archive written by hand: (name, bytes) entries stored, (name, n) entries n MiB of zeros,
    deflated (zipfile would have to compress the whole GiB to write one)."""
    out = bytearray()
    central = bytearray()
    for name, data in entries:
        raw = name.encode()
        if isinstance(data, int):
            payload, crc = _deflated_zeros(data)
            method, size = 8, data << 20
        else:
            payload, crc, method, size = data, zlib.crc32(data), 0, len(data)
        offset = len(out)
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, method, 0, 33, crc, len(payload), size, len(raw), 0)
        out += raw + payload
        central += struct.pack(
            "<IHHHHHHIIIHHHHHII",
            0x02014B50,
            20,
            20,
            0,
            method,
            0,
            33,
            crc,
            len(payload),
            size,
            len(raw),
            0,
            0,
            0,
            0,
            0,
            offset,
        )
        central += raw
    start = len(out)
    out += central
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(entries), len(entries), len(central), start, 0)
    path.write_bytes(bytes(out))
    return path


def _entries(buffer: io.BytesIO) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(buffer.getvalue())) as zf:
        return {name: zf.read(name) for name in zf.namelist()}


def _zip_bomb_pt(path: Path, gib: int = 1) -> Path:
    """A torch.save file whose one float32 storage is `gib` GiB of zeros, deflated into ~1 MB:
    torch.load would allocate and inflate all of it."""
    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(4)}, buffer)
    numel = (gib * GIB) // 4
    entries = []
    for name, data in _entries(buffer).items():
        if name.endswith("/data.pkl"):
            assert data.count(b"K\x04") == 2  # the storage's numel and the tensor's size
            data = data.replace(b"K\x04", b"J" + struct.pack("<i", numel))
        entries.append((name, gib << 10 if name.endswith("/data/0") else data))
    return _write_zip(path, entries)


def _torchscript_bomb(path: Path) -> Path:
    """A TorchScript archive (torch.jit.trace of a Linear) whose tensor record declares 1 GiB of zeros."""
    buffer = io.BytesIO()
    torch.jit.save(torch.jit.trace(nn.Linear(2, 2), torch.zeros(1, 2)), buffer)
    entries = _entries(buffer)
    record = next(n for n in entries if "/data/" in n and not n.endswith(".pkl"))
    return _write_zip(path, [(n, 1024 if n == record else d) for n, d in entries.items()])


def _pickle_in_zip(path: Path, pickle_bytes: bytes) -> Path:
    """A torch.save zip whose data.pkl is `pickle_bytes`."""
    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(4)}, buffer)
    entries = [(n, pickle_bytes if n.endswith("/data.pkl") else d) for n, d in _entries(buffer).items()]
    return _write_zip(path, entries)


def _unicode(text: str) -> bytes:
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def _bytearray_bomb(path: Path) -> Path:
    """bytearray(2**31 - 1): 2 GiB of zeros from a 20-byte pickle that torch's weights_only allows."""
    return _pickle_in_zip(path, b"\x80\x02cbuiltins\nbytearray\nJ" + struct.pack("<i", 2**31 - 1) + b"\x85R.")


def _codec_bomb(path: Path) -> Path:
    """_codecs.encode(..., 'hex') 30 times over: each doubles the bytes (2**30 from one letter)."""
    body = b"c_codecs\nencode\n(" + _unicode("a") + _unicode("latin1") + b"tR"
    for _ in range(30):
        body = b"c_codecs\nencode\n(" + body + _unicode("hex") + b"tR"
    return _pickle_in_zip(path, b"\x80\x02" + body + b".")


def _legacy_bomb(path: Path) -> Path:
    """A pre-1.6 torch.save file whose pickle declares a 2 GiB storage followed by 16 bytes."""
    buffer = io.BytesIO()
    torch.save({"fc.weight": torch.zeros(4)}, buffer, _use_new_zipfile_serialization=False)
    data = buffer.getvalue()
    at = data.index(_unicode("cpu")) + len(_unicode("cpu"))
    at = data.index(b"K\x04", at)  # the storage's numel, after its location
    path.write_bytes(data[:at] + b"J" + struct.pack("<i", 2**29) + data[at + 2 :])
    return path


def _tar_torch_file(path: Path) -> Path:
    """The pre-0.4 tar format (torch.load would extract it into a temporary folder), its first
    byte 0x80 like a pickle's."""
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tar:
        info = tarfile.TarInfo("\x80storages")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"1234"))
    assert path.read_bytes()[:1] == b"\x80"
    return path


def _safetensors_liar(path: Path) -> Path:
    """A safetensors header declaring 1 GiB of float32 in a 100-byte file (the library refuses it)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [GIB // 4], "data_offsets": [0, GIB]}}).encode()
    path.write_bytes(struct.pack("<Q", len(header)) + header + bytes(16))
    return path


class _Shell:
    """Pickles as os.system(command): unpickling it would run the command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


class _Exec:
    def __reduce__(self):
        return exec, ("open('should-not-exist', 'w')",)


@pytest.fixture(scope="module")
def small_state():
    """A 10-class torchvision GoogLeNet whose BatchNorm statistics are those of one noise batch, so
    its activations are of order 1 (a fresh network's vanish; a trained one's do not)."""
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=10, aux_logits=False, init_weights=False)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = 1.0
    model.train()
    with torch.no_grad():
        model(torch.rand(4, 3, 64, 64))
    return model.eval().state_dict()


def _save(state: dict, path: Path) -> Path:
    torch.save(state, path)
    return path


def _script(module: nn.Module, path: Path) -> Path:
    torch.jit.save(torch.jit.script(module), str(path))
    return path


class _Means(nn.Module):
    def forward(self, x):
        return x.mean(dim=(2, 3)).repeat(1, 4)


class _Maxima(nn.Module):
    def forward(self, x):
        return x.amax(dim=(2, 3)).repeat(1, 4)


class _LogOfMinimum(nn.Module):  # log of a negative number: NaN for normalised images (-inf for zeros)
    def forward(self, x):
        return torch.log(x.amin(dim=(2, 3))).repeat(1, 4)


class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 10)

    def forward(self, x):
        return self.fc(x.mean(dim=(2, 3)))


def _corrupt_pt2(path: Path) -> Path:
    """A torch.export archive whose first weight payload is cut to 8 bytes: torch.export.load logs
    a traceback before it raises."""
    buffer = io.BytesIO()
    torch.export.save(torch.export.export(_Tiny().eval(), (torch.zeros(2, 3, 8, 8),)), buffer)
    entries = _entries(buffer)
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in entries.items():
            zf.writestr(name, data[:8] if name.endswith("/weights/weight_0") else data)
    return path


# ---------------------------------------------------------------------------------------
# A. Resource bombs, refused before they cost anything

BOMBS = {
    "zip_bomb.pt": (_zip_bomb_pt, "declares 1,073,741,824 bytes compressed into"),
    "script_bomb.pt": (_torchscript_bomb, "declares 1,073,741,824 bytes compressed into"),
    "bytearray.pt": (_bytearray_bomb, "would build 2,147,483,647 bytes"),
    "codec_chain.pt": (_codec_bomb, "would build"),
    "legacy_bomb.pt": (_legacy_bomb, "declares storages of 2,147,483,656 bytes but only"),
    "tar_format.pt": (_tar_torch_file, "tar-format torch.save file"),
    "liar.safetensors": (_safetensors_liar, "cannot be read as safetensors"),
}


@pytest.fixture(scope="module")
def bomb_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bombs")
    for name, (make, _) in BOMBS.items():
        make(folder / name)
        assert (folder / name).stat().st_size < 2_000_000, name
    return folder


def test_bombs_are_refused_before_any_loader(bomb_dir, monkeypatch):
    def never(*args, **kwargs):
        raise AssertionError("a loader was reached")

    monkeypatch.setattr(torch, "load", never)
    monkeypatch.setattr(torch.jit, "load", never)
    for name, (_, needle) in BOMBS.items():
        if name.endswith(".safetensors"):
            continue  # read by the safetensors library, which checks its header against the file
        ins = inspect_checkpoint(str(bomb_dir / name))
        assert ins.verdict == "ERROR" and needle in ins.errors[0], (name, ins.errors)
        assert len(ins.errors[0]) < 400
    assert registry.sniff_format(str(bomb_dir / "script_bomb.pt")) == "torchscript"


def _validate_in_child(args: list[str], env: dict | None = None, cwd: Path | None = None):
    """(completed validate process, its peak RSS in bytes): run from a wrapper process, whose only
    child it is, so earlier children of the test session do not count."""
    wrapper = (
        "import resource, subprocess, sys\n"
        "p = subprocess.run([sys.executable, '-m', 'ensemble_eval', 'validate', *sys.argv[1:]], "
        "capture_output=True, text=True)\n"
        "sys.stdout.write(p.stdout); sys.stderr.write(p.stderr)\n"
        "print('RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
        "sys.exit(p.returncode)\n"
    )
    proc = subprocess.run([sys.executable, "-c", wrapper, *args], capture_output=True, text=True, env=env, cwd=cwd)
    rss_line = proc.stdout.strip().splitlines()[-1]
    assert rss_line.startswith("RSS_KB"), proc.stdout + proc.stderr
    return proc, int(rss_line.split()[1]) * 1024


def test_bombs_cost_no_memory_in_validate(bomb_dir):
    proc, rss = _validate_in_child(sorted(str(p) for p in bomb_dir.iterdir()))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert rss < GIB, f"validate peaked at {rss / GIB:.2f} GiB"
    for name, (_, needle) in BOMBS.items():
        (line,) = [x for x in proc.stdout.splitlines() if x.startswith(f"{name}: ")]
        assert line.startswith(f"{name}: ERROR: ") and needle in line, line
    assert "Traceback" not in proc.stderr and "0 of 7 checkpoint(s) usable" in proc.stdout


def test_real_archives_pass_the_directory_check(tmp_path, small_state):
    """Every real format passes: torch.save (zip and legacy), TorchScript, a deflated copy."""
    good = _save(small_state, tmp_path / "good.pt")
    legacy = tmp_path / "legacy.pt"
    torch.save(small_state, legacy, _use_new_zipfile_serialization=False)
    deflated = tmp_path / "deflated.pt"  # someone re-zipped it: float weights deflate about 1.1:1
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(deflated, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            out.writestr(info.filename, src.read(info))
    for path in (good, legacy, deflated):
        with open(path, "rb") as fh:
            preload.check_torch_file(fh, path.stat().st_size)
    ins = inspect_checkpoint(str(deflated))  # and torch reads the deflated entries
    assert ins.verdict == "OK", ins.errors


# ---------------------------------------------------------------------------------------
# B. Honest messages


@pytest.mark.parametrize("trust", [False, True])
def test_pickled_code_is_named_and_not_run_even_with_trust(tmp_path, small_state, trust):
    marker = tmp_path / "ran"
    command = f"touch {marker}"
    assert os.system(command) == 0 and marker.exists()  # the command does create the marker ...
    marker.unlink()
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": small_state, "hook": _Shell(command)}, path)
    ins = inspect_checkpoint(str(path), trust=trust)
    system = f"{os.system.__module__}.system"  # posix.system
    assert ins.verdict == "ERROR"
    assert ins.errors[0].startswith(f"holds pickled code (calls {system}), which was not run;"), ins.errors
    assert "--trust-checkpoints does not load it either" in ins.errors[0]
    assert not marker.exists()  # ... and nothing ran it
    other = tmp_path / "exec.pt"
    torch.save({"state_dict": small_state, "x": _Exec()}, other)
    assert "calls builtins.exec" in inspect_checkpoint(str(other), trust=trust).errors[0]
    assert not (tmp_path / "should-not-exist").exists() and not Path("should-not-exist").exists()


def test_which_globals_are_code():
    for name in ("posix.system", "nt.system", "subprocess.Popen", "builtins.eval", "builtins.__import__",
                 "importlib.import_module", "runpy.run_path", "socket.socket", "shutil.rmtree", "ctypes.CDLL",
                 "marshal.loads", "pickle.loads", "torch.serialization.os", "webbrowser.open", "pty.spawn",
                 "sys.modules", "torch.hub.load", "torch.serialization.load", "operator.methodcaller"):  # fmt: skip
        assert is_code_global(name), name
    for name in ("collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torchvision.models.resnet.ResNet",
                 "argparse.Namespace", "builtins.set", "numpy.core.multiarray._reconstruct", "pathlib.PurePosixPath",
                 "types.SimpleNamespace", "torch.nn.modules.conv.Conv2d", "functools.partial"):  # fmt: skip
        assert not is_code_global(name), name


def test_enum_members_by_name_are_data_but_getattr_elsewhere_is_code(tmp_path):
    """Python pickles some enum members as getattr(TheEnum, 'NAME'): data. Any other getattr is code."""

    def scan(body: bytes):
        return preload._scan(io.BytesIO(b"\x80\x02" + body + b"."))

    enum_member = b"cbuiltins\ngetattr\n(cenum\nRegexFlag\n" + _unicode("IGNORECASE") + b"tR"
    assert scan(enum_member).code == []
    method = b"cbuiltins\ngetattr\n(ctorch\nnn\n" + _unicode("Module") + b"tR"
    with pytest.raises(preload.Refusal, match="calls builtins.getattr"):
        scan(method)
    handed_on = b"cfunctools\npartial\ncbuiltins\ngetattr\n\x85R"
    with pytest.raises(preload.Refusal, match="calls builtins.getattr"):
        scan(handed_on)


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """torch's cache in tmp_path; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_download(*args, **kwargs):
        raise AssertionError("a test tried to download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_download)
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_a_torchvision_file_that_is_not_the_published_one(torch_home):
    name = GoogLeNet_Weights.IMAGENET1K_V1.url.rsplit("/", 1)[1]
    assert name == "googlenet-1378be20.pth"  # the name torchvision publishes, sha256 prefix included
    torch_home.mkdir(parents=True)
    torch.manual_seed(0)
    model = GoogLeNet(num_classes=1000, aux_logits=False, init_weights=False)
    torch.save(model.state_dict(), torch_home / name)  # the published name, other bytes
    ins = inspect_checkpoint("torchvision:googlenet")
    assert ins.verdict == "ERROR" and "not the published file" in ins.errors[0], ins.errors
    assert str(torch_home / name) in ins.errors[0] and "--trust-checkpoints" in ins.errors[0]
    trusted = inspect_checkpoint("torchvision:googlenet", trust=True)
    assert trusted.verdict == "WARN" and "without the published accuracy" in trusted.warnings[0]
    assert trusted.convention.published is None and not any("acc@1" in n for n in trusted.notes)
    assert trusted.convention.transform_input  # the rest of torchvision's convention still applies
    assert trusted.to_dict()["input"]["published"] is None


def test_different_programs_without_parameters_are_not_the_same(tmp_path):
    means = _script(_Means(), tmp_path / "means.ts")
    maxima = _script(_Maxima(), tmp_path / "maxima.ts")
    again = tmp_path / "means_again.ts"
    again.write_bytes(means.read_bytes())
    # trusted: the operator allow-list (programs.py) is not what this test is about
    ins = [inspect_checkpoint(str(p), trust=True) for p in (means, maxima)]
    assert [i.num_params for i in ins] == [0, 0]
    check_together(ins)
    assert [i.warnings for i in ins] == [[], []]
    copies = [inspect_checkpoint(str(p), trust=True) for p in (means, again)]
    check_together(copies)
    assert "byte-identical to means.ts" in copies[1].warnings[0]


# ---------------------------------------------------------------------------------------
# C. No silently wrong numbers


@pytest.mark.parametrize(
    "sidecar,field",
    [
        ("std: [1.0e-45, 1.0e-45, 1.0e-45]\n", "std"),
        ("std: [0.229, 1.0e-30, 0.225]\n", "std"),
        ("mean: [1.0e+308, 0.456, 0.406]\n", "mean"),
        ("mean: [1.0e+30, 0, 0]\n", "mean"),
        ("input_scale: 1.0e+20\n", "input_scale"),
    ],
)
def test_conventions_that_cannot_give_finite_inputs(tmp_path, small_state, sidecar, field):
    path = _save(small_state, tmp_path / "m.pt")
    (tmp_path / "m.pt.yaml").write_text(sidecar)
    ins = inspect_checkpoint(str(path))
    assert ins.verdict == "ERROR" and ins.errors[0].startswith(f"sidecar m.pt.yaml: {field} "), ins.errors


def test_real_conventions_pass_the_bound():
    caffe = parse_convention({"color": "BGR", "input_scale": 255, "mean": [104, 117, 123], "std": [1, 1, 1]}, "caffe")
    assert input_range_problem(caffe) is None
    assert input_range_problem(parse_convention({}, "defaults")) is None
    inception = parse_convention({"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}, "timm inception")
    assert input_range_problem(inception) is None


def test_a_final_layer_row_of_3e38(tmp_path, small_state, monkeypatch):
    state = dict(small_state)
    state["fc.weight"] = state["fc.weight"].clone()
    state["fc.weight"][3] = 3e38
    path = _save(state, tmp_path / "row.pt")
    (error,) = inspect_checkpoint(str(path)).errors
    assert error.startswith("tensor 'fc.weight' holds values of magnitude 3e+38 (above 1e+30)")
    # the probe catches it too: the row times order-1 features overflows float32
    monkeypatch.setattr(tensors, "MAX_WEIGHT_MAGNITUDE", float("inf"))
    (error,) = inspect_checkpoint(str(path)).errors
    assert error.startswith("outputs are not finite (inf at class 3 of a 224x224 probe image);"), error


def test_a_program_returning_nan(tmp_path):
    path = _script(_LogOfMinimum(), tmp_path / "log.ts")
    (error,) = inspect_checkpoint(str(path), trust=True).errors
    assert error.startswith("outputs are not finite (nan at class 0 of a 224x224 probe image)"), error
    assert error.endswith("the weights or the input convention are broken")


def test_the_probe_uses_the_members_own_convention(tmp_path):
    """The same program is finite on 0-1 input and not on the ImageNet-normalised one."""
    path = _script(_LogOfMinimum(), tmp_path / "log.ts")
    (tmp_path / "log.ts.yaml").write_text("mean: [-1, -1, -1]\nstd: [1, 1, 1]\n")  # inputs 1-2: log is finite
    assert inspect_checkpoint(str(path), trust=True).verdict == "OK"


# ---------------------------------------------------------------------------------------
# D. One line, never a traceback


@pytest.fixture(scope="module")
def corrupt_pt2(tmp_path_factory):
    return _corrupt_pt2(tmp_path_factory.mktemp("pt2") / "cut.pt2")


@pytest.mark.parametrize("trust", [False, True])
def test_a_corrupt_pt2_is_one_line_without_torchs_log(corrupt_pt2, tmp_path, capfd, trust):
    flag = ["--trust-checkpoints"] if trust else []
    code = main(["validate", str(corrupt_pt2), *flag])
    out, err = capfd.readouterr()
    assert code == 1 and err == "", err  # torch.export.load's logged traceback does not get through
    (line,) = [x for x in out.splitlines() if x.startswith("cut.pt2: ")]
    assert line.startswith("cut.pt2: ERROR: ") and "Traceback" not in out
    if trust:  # straight to torch.export.load, which fails on the cut payload
        assert line.startswith("cut.pt2: ERROR: cannot be read as a torch.export program"), line
    code = main(["--models", str(corrupt_pt2), "--data", str(DATA), "--out", str(tmp_path / "o"), *flag])
    out, err = capfd.readouterr()
    assert code == 2 and len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert err.startswith("ensemble-eval: error: checkpoint ") and "cut.pt2" in err
    assert not (tmp_path / "o").exists()


# ---------------------------------------------------------------------------------------
# E. All of it at once


def _hostile_programs(folder: Path, targets: Path) -> None:
    """TorchScript archives writing a file inside torch.jit.load and in forward, one printing, and a .pt2
    whose graph names aten::from_file (see test_hostile_programs.py, which shows each one writing)."""
    from test_hostile_programs import Prints, Tiny, WritesOnForward, WritesOnLoad, _pt2_with_target
    from test_hostile_programs import _save as save_program

    save_program(torch.nn.Sequential(WritesOnLoad(str(targets / "by_setstate.bin")), Tiny()), folder / "load.ts")
    save_program(WritesOnForward(str(targets / "by_forward.bin")).eval(), folder / "forward.ts")
    save_program(Prints().eval(), folder / "prints.ts")
    plain = targets / "tiny.pt2"
    torch.export.save(torch.export.export(Tiny().eval(), (torch.zeros(2, 3, 8, 8),)), str(plain))
    inputs = [
        {"name": "filename", "arg": {"as_string": str(targets / "by_graph.bin")}, "kind": 1},
        {"name": "shared", "arg": {"as_bool": True}, "kind": 1},
        {"name": "size", "arg": {"as_int": 8}, "kind": 1},
    ]
    _pt2_with_target(plain, folder / "graph.pt2", "torch.ops.aten.from_file.default", inputs)
    plain.unlink()


def test_validate_on_a_folder_of_hostile_files(tmp_path, bomb_dir, corrupt_pt2, small_state):
    folder = tmp_path / "hostile"
    folder.mkdir()
    for path in bomb_dir.iterdir():
        (folder / path.name).write_bytes(path.read_bytes())
    marker = tmp_path / "ran"
    torch.save({"state_dict": small_state, "hook": _Shell(f"touch {marker}")}, folder / "evil.pt")
    _save(small_state, folder / "tiny_std.pt")
    (folder / "tiny_std.pt.yaml").write_text("std: [1.0e-45, 1.0e-45, 1.0e-45]\n")
    state = dict(small_state)
    state["fc.weight"] = state["fc.weight"].clone()
    state["fc.weight"][0] = 3e38
    _save(state, folder / "row.pt")
    _script(_LogOfMinimum(), folder / "nan.ts")
    (folder / "cut.pt2").write_bytes(corrupt_pt2.read_bytes())
    pickled = folder / "plain.pkl"
    pickled.write_bytes(pickle.dumps({"not": "torch"}, protocol=2))
    _hostile_programs(folder, tmp_path)  # the programs of section 1: each would write a file or print
    files = sorted(p.name for p in folder.iterdir() if not p.name.endswith(".yaml"))
    home = tmp_path / "home"
    home.mkdir()
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
    for var in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "TORCH_HOME", "ENSEMBLE_EVAL_CACHE"):
        env[var] = str(home / var.lower())
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    proc, rss = _validate_in_child([str(folder / "*")], env=env, cwd=home)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert rss < GIB, f"validate peaked at {rss / GIB:.2f} GiB"
    assert "Traceback" not in proc.stdout + proc.stderr and proc.stderr.strip() == "", proc.stderr
    lines = proc.stdout.splitlines()
    for name in files:
        rows = [x for x in lines if x.split()[:1] == [name]]
        assert len(rows) == 1 and rows[0].split()[-1] == "ERROR", (name, rows)
        assert any(x.startswith(f"{name}: ERROR: ") for x in lines), name
    assert f"0 of {len(files)} checkpoint(s) usable" in proc.stdout
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert after == before and not marker.exists()  # nothing written, nothing run
